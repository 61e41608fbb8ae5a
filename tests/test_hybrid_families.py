"""Hybrid families (Granite-4.0-H, Bamba) on the plain-PyTorch ops: built with transformers' own classes, saved
with ``save_pretrained``, loaded through the library's loading path; same logits as transformers' forward, same
greedy tokens as its ``generate``, reading in segments then stepping equals one forward, batches of different
lengths equal each prompt alone, read/ask equals reading from scratch, broken checkpoints are typed errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from hf_families import greedy_next_tokens, hf_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mamba_router.errors import CorruptCheckpointError
from mamba_router.generation.ssm_model import EagerDecoder
from mamba_router.models.hybrid import HybridLM
from mamba_router.models.layers.attention import Attention
from mamba_router.models.layers.mamba1 import Mamba1Mixer
from mamba_router.models.layers.mamba2 import Mamba2Mixer
from mamba_router.models.registry import load_ssm_checkpoint
from mamba_router.models.torch_ops import TorchOps
from mamba_router.samples.synthetic import synthetic_judgment

TOLERANCE = 1e-4
HF_TORCH_PATH = importlib.util.find_spec("mamba_ssm") is None  # with mamba-ssm, transformers runs its kernels
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
MAMBA = dict(mamba_n_heads=8, mamba_d_head=16, mamba_d_state=16, mamba_n_groups=2, mamba_chunk_size=8)


MODELS = {  # test name -> (model_type, config): small, each with its family's distinctive parts
    "granite-moe-rope": (
        "granitemoehybrid",
        dict(
            hidden_size=64,
            num_hidden_layers=4,
            layer_types=["mamba", "attention", "mamba", "attention"],
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=32,
            shared_intermediate_size=48,
            num_local_experts=4,
            num_experts_per_tok=2,
            position_embedding_type="rope",
            embedding_multiplier=2.0,
            residual_multiplier=0.5,
            logits_scaling=3.0,
            attention_multiplier=0.2,
            **MAMBA,
        ),
    ),
    "granite-dense-nope": (  # Granite-4.0-H-350m's kind: dense, no position embedding, tied embeddings
        "granitemoehybrid",
        dict(
            hidden_size=64,
            num_hidden_layers=3,
            layer_types=["mamba", "attention", "mamba"],
            num_attention_heads=4,
            num_key_value_heads=1,
            shared_intermediate_size=96,
            num_local_experts=0,
            position_embedding_type="nope",
            tie_word_embeddings=True,
            residual_multiplier=0.22,  # as Granite-4.0-H's checkpoints
            **MAMBA,
        ),
    ),
    "bamba": (
        "bamba",
        dict(
            hidden_size=64,
            num_hidden_layers=3,
            attn_layer_indices=[1],
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=80,
            **MAMBA,
        ),
    ),
    "nemotron-h": (
        "nemotron_h",
        dict(
            hidden_size=64,
            num_hidden_layers=5,
            hybrid_override_pattern="M*-EM",
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            intermediate_size=96,
            mamba_num_heads=8,
            mamba_head_dim=16,
            ssm_state_size=16,
            n_groups=2,
            chunk_size=8,
            n_routed_experts=8,
            num_experts_per_tok=2,
            n_group=2,
            topk_group=1,
            routed_scaling_factor=1.5,
            moe_intermediate_size=32,
            moe_shared_expert_intermediate_size=40,
        ),
    ),
    "jamba": (
        "jamba",
        dict(
            hidden_size=64,
            num_hidden_layers=4,
            attn_layer_period=2,
            attn_layer_offset=1,
            expert_layer_period=2,
            expert_layer_offset=0,
            num_experts=4,
            num_experts_per_tok=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=48,
            mamba_d_state=8,
            mamba_dt_rank=8,
        ),
    ),
    "falcon-h1": (  # muP multipliers everywhere, a narrower SSM (mamba_d_ssm), norm before the gate
        "falcon_h1",
        dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=96,
            mamba_d_ssm=96,
            mamba_n_heads=6,
            mamba_d_head=16,
            mamba_d_state=16,
            mamba_n_groups=2,
            mamba_chunk_size=8,
            mamba_rms_norm=True,
            embedding_multiplier=2.0,
            lm_head_multiplier=0.5,
            ssm_multipliers=[0.5, 1.5, 0.8, 1.2, 0.9],
            ssm_in_multiplier=1.3,
            ssm_out_multiplier=0.7,
            attention_in_multiplier=0.9,
            attention_out_multiplier=1.1,
            key_multiplier=0.6,
            mlp_multipliers=[1.4, 0.6],
        ),
    ),
    "falcon-h1-plain-gate": (
        "falcon_h1",
        dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=96,
            mamba_d_ssm=128,
            mamba_n_heads=8,
            mamba_d_head=16,
            mamba_d_state=16,
            mamba_chunk_size=8,
            mamba_rms_norm=False,
        ),
    ),
    "zamba2": (  # two shared blocks used in turn by three layers, attention adapters, RoPE
        "zamba2",
        dict(
            hidden_size=32,
            num_hidden_layers=5,
            layers_block_type=["mamba", "hybrid", "mamba", "hybrid", "hybrid"],
            num_mem_blocks=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            intermediate_size=48,
            adapter_rank=4,
            use_shared_attention_adapter=True,
            use_mem_rope=True,
            mamba_d_state=8,
            mamba_headdim=8,
            n_mamba_heads=8,
            chunk_size=8,
        ),
    ),
}
FAMILY = {
    "bamba": "bamba",
    "nemotron-h": "nemotron_h",
    "jamba": "jamba",
    "falcon-h1": "falcon_h1",
    "falcon-h1-plain-gate": "falcon_h1",
    "zamba2": "zamba2",
}
BAD_LAYER_TYPES = {  # every family's way of naming its layer kinds, each with a kind no family has
    "layer_types": ["mamba", "conv"],
    "layers_block_type": ["mamba", "conv"],
    "attn_layer_indices": "x",
    "attn_layer_offset": 99,  # Jamba: attention every period layers, at this offset
    "ssm_multipliers": [1.0],  # Falcon-H1 (no layer kinds): five multipliers are needed
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def saved(request, tmp_path_factory, offline_tokenizer) -> tuple[str, Path, torch.nn.Module]:
    model_type, config = MODELS[request.param]
    hf = hf_model(model_type, len(offline_tokenizer), config, seed=5)
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() >= 2:  # larger weights than the init: logits that differ, so greedy choices are clear
                p.normal_(0.0, 0.15)
    directory = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(directory)
    offline_tokenizer.save_pretrained(directory)
    return request.param, directory, hf


@pytest.fixture(scope="module")
def ours(saved) -> HybridLM:
    _, directory, _ = saved
    loaded = load_ssm_checkpoint(directory, TorchOps())
    assert isinstance(loaded.model, HybridLM) and loaded.checkpoint_format == "transformers"
    return loaded.model


@pytest.fixture(scope="module")
def backend_model(saved):
    from mamba_router_mps.backend import Mamba2Backend

    _, directory, _ = saved
    return Mamba2Backend().load(str(directory), device="cpu", dtype="float32", segment=7)


def test_the_family_and_its_layers_are_recognised(saved, ours) -> None:
    name, directory, hf = saved
    family = load_ssm_checkpoint(directory, TorchOps()).family.name
    assert family == FAMILY.get(name, "granitemoehybrid")
    assert ours.cfg.mixers == ("mamba1" if name == "jamba" else "mamba2", "attention")
    cache = ours.new_cache(1)  # one key/value slot per use of attention (Zamba2's shared blocks are used per layer)
    attention, mamba = len(cache.keys), len(cache.conv)
    assert mamba == sum(1 for m in ours.modules() if isinstance(m, (Mamba1Mixer, Mamba2Mixer)))
    assert sum(1 for m in ours.modules() if isinstance(m, Attention)) <= attention
    assert attention == sum(1 for m in hf.modules() if type(m).__name__.endswith("Attention"))
    assert mamba == sum(1 for m in hf.modules() if type(m).__name__.endswith(("Mixer", "MambaLayer")))


@SETTINGS
@given(length=st.integers(1, 40), seed=st.integers(0, 10_000))
def test_logits_equal_transformers_forward(saved, ours, length: int, seed: int) -> None:
    if not HF_TORCH_PATH:
        pytest.skip("transformers would use the mamba-ssm kernels here, not its torch path")
    _, _, hf = saved
    ids = torch.randint(0, ours.cfg.vocab_size, (2, length), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, rtol=0, atol=TOLERANCE)


@SETTINGS
@given(length=st.integers(2, 40), segment=st.integers(1, 17), steps=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_reading_in_segments_then_stepping_equals_one_forward(ours, length, segment, steps, seed) -> None:
    ids = torch.randint(0, ours.cfg.vocab_size, (1, length + steps), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        whole = ours(ids)
        cache = ours.new_cache(1)
        torch.testing.assert_close(
            ours.read(ids[:, :length], cache, segment=segment), whole[:, length - 1], atol=TOLERANCE, rtol=0
        )
        for position in range(length, length + steps):
            stepped = ours.step(ids[:, position], cache)
            torch.testing.assert_close(stepped, whole[:, position], rtol=0, atol=TOLERANCE)


def test_greedy_tokens_equal_transformers_generate(saved, backend_model) -> None:
    _, _, hf = saved
    ours, expected = greedy_next_tokens(backend_model, hf, "The appellant filed the notice of appeal within time.", 16)
    assert ours == expected[: len(ours)] and len(ours) >= 1


def test_a_batch_of_different_lengths_equals_each_prompt_alone(backend_model) -> None:
    prompts = ["The court", "The appeal is dismissed with costs because", "Held:"]
    batch = backend_model.generate_batch(prompts, max_new_tokens=6)
    for prompt, result in zip(prompts, batch, strict=True):
        assert result.token_ids == backend_model.generate(prompt, max_new_tokens=6).token_ids


def test_asking_from_a_document_state_equals_reading_everything(backend_model) -> None:
    judgment = synthetic_judgment(1, seed=4)
    state = backend_model.read(judgment)
    assert any(name.startswith("key.") for name in state.tensors)  # the attention layers' keys and values
    for question in ("What did the court order?", "Who appealed?"):
        cached = backend_model.ask(state, question, max_new_tokens=8)
        scratch = backend_model.generate_with_state_space(question, context=judgment, max_new_tokens=8)
        assert cached.token_ids == scratch.token_ids


def test_a_missing_tensor_a_wrong_shape_and_a_bad_layer_type_are_typed_errors(saved, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    _, directory, _ = saved
    state = load_file(str(directory / "model.safetensors"))
    config = json.loads((directory / "config.json").read_text())
    cases = {
        "missing": ({k: v for k, v in state.items() if not k.endswith(".D")}, config, "missing"),
        "shape": ({**state, "lm_head.weight": torch.ones(3, 3)}, config, "wrong shapes"),
        "layer": (state, {**config, **BAD_LAYER_TYPES}, "hybrid config"),
    }
    for name, (tensors, cfg, message) in cases.items():
        broken = tmp_path / name
        broken.mkdir()
        save_file(tensors, str(broken / "model.safetensors"))
        (broken / "config.json").write_text(json.dumps(cfg))
        with pytest.raises(CorruptCheckpointError, match=message):
            load_ssm_checkpoint(broken, TorchOps())


def test_the_eager_decoder_streams_the_same_text(backend_model) -> None:
    assert isinstance(backend_model.decoder, EagerDecoder)
    streamed = "".join(backend_model.generate("The court held", max_new_tokens=10, stream=True))
    assert streamed == backend_model.generate("The court held", max_new_tokens=10).text


def test_the_transformer_backend_refuses_a_hybrid_checkpoint_with_a_typed_error(saved) -> None:
    import mamba_router as mr

    _, directory, _ = saved
    with pytest.raises(mr.WrongBackendError, match="checkpoint.*backend='mamba2'"):
        mr.get_backend("transformer").load(str(directory), device="cpu")


def test_a_hybrid_family_config_without_mamba_layers_runs_on_the_transformer_backend(
    tmp_path, offline_tokenizer
) -> None:
    """Granite-4.0's dense models are granitemoehybrid configs whose layers are all attention."""
    from transformers import GraniteMoeHybridConfig, GraniteMoeHybridForCausalLM

    import mamba_router as mr

    config = GraniteMoeHybridConfig(
        vocab_size=len(offline_tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        layer_types=["attention", "attention"],
        num_attention_heads=4,
        shared_intermediate_size=48,
        num_local_experts=0,
        position_embedding_type="rope",
        mamba_n_heads=4,
        mamba_d_head=16,
    )
    torch.manual_seed(1)
    hf = GraniteMoeHybridForCausalLM(config).eval()
    hf.save_pretrained(tmp_path)
    offline_tokenizer.save_pretrained(tmp_path)
    model = mr.get_backend("transformer").load(str(tmp_path), device="cpu")
    result = model.generate("The court held", max_new_tokens=5, prompt_format="plain")
    ids = offline_tokenizer("The court held", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = hf.generate(ids, max_new_tokens=5, do_sample=False, eos_token_id=offline_tokenizer.eos_token_id)
    assert result.token_ids == expected[0, ids.shape[1] :].tolist()[: len(result.token_ids)]


def test_a_static_cache_decodes_as_the_growing_one_through_regrowth_padding_and_states(ours, monkeypatch) -> None:
    """The CUDA-graph decoder's static path, run eagerly on the CPU: buffers regrow several times mid-decode."""
    import mamba_router_cuda.decode_graph as decode_graph

    monkeypatch.setattr(decode_graph, "CAPACITY_QUANTUM", 8)
    monkeypatch.setattr(decode_graph, "ROOM_AFTER_PROMPT", 3)
    generator = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, ours.cfg.vocab_size, (n,), generator=generator) for n in (5, 11)]
    document = ours.new_cache(1)
    ours.read(torch.randint(0, ours.cfg.vocab_size, (1, 9), generator=generator), document)

    def run(decoder, batch: list[torch.Tensor], start=None) -> list[torch.Tensor]:
        stepper = decoder.stepper(len(batch), start)
        logits = [stepper.prefill(batch)]
        for _ in range(20):
            logits.append(stepper.step(logits[-1].argmax(-1)).clone())
        return logits

    with torch.no_grad():
        static = decode_graph.CudaGraphDecoder(ours, use_graph=False)
        for batch, start in ((prompts, None), (prompts[:1], document)):
            expected = run(EagerDecoder(ours, None), batch, start)
            got = run(static, batch, start)
            for step, (a, b) in enumerate(zip(got, expected, strict=True)):
                torch.testing.assert_close(a, b, rtol=0, atol=TOLERANCE, msg=f"step {step}")
        assert static.graph(1).cache.kv_capacity > 8  # it grew


def _expert_layers():
    from mamba_router.models.hybrid_config import GroupedMoEConfig
    from mamba_router.models.layers import feed_forward

    grouped = GroupedMoEConfig(experts=8, top_k=3, expert_intermediate=20, shared_intermediate=12, groups=2, bias=True)
    return {
        "granite": lambda: feed_forward.MixtureOfExperts(16, 24, experts=6, top_k=2),
        "jamba": lambda: feed_forward.SoftmaxRoutedExperts(16, 24, experts=6, top_k=2),
        "nemotron-h": lambda: feed_forward.GroupRoutedExperts(16, grouped),
    }


@pytest.mark.parametrize("kind", sorted(_expert_layers()))
def test_gathered_experts_equal_the_per_expert_loop(kind: str, monkeypatch) -> None:
    """Decoding gathers each token's experts on the device (capturable); reading loops over experts. The gathered
    weights are views of one stacked tensor, restacked when the layer is moved or cast."""
    from mamba_router.models.layers import feed_forward

    torch.manual_seed(0)
    moe = _expert_layers()[kind]()
    for parameter in moe.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    hidden = torch.randn(3, 7, 16)
    with torch.no_grad():
        monkeypatch.setattr(feed_forward, "GATHERED_EXPERTS_LIMIT", 0)
        looped = moe(hidden)
        monkeypatch.setattr(feed_forward, "GATHERED_EXPERTS_LIMIT", 10**6)
        gathered = moe(hidden)
        torch.testing.assert_close(gathered, looped, rtol=0, atol=1e-5)
        moe.to(torch.float64)  # new parameters: the stacks must follow
        torch.testing.assert_close(moe(hidden.double()), looped.double(), rtol=0, atol=1e-5)
    if kind != "granite":
        experts = moe.experts
        assert experts[1].up_proj.weight.data_ptr() == experts.__dict__["_stacked"]["up_proj"][0][1].data_ptr()
        assert moe.state_dict().keys() == type(moe)(*_init_args(moe)).state_dict().keys()  # the checkpoint's names


def _init_args(moe):
    from mamba_router.models.layers import feed_forward

    if isinstance(moe, feed_forward.GroupRoutedExperts):
        return (16, moe.cfg)
    return (16, 24, len(moe.experts), moe.top_k)


@pytest.mark.parametrize("kind", ["jamba", "nemotron-h"])
def test_experts_wrapped_by_an_adapter_run_through_it(kind: str, monkeypatch) -> None:
    """An adapter (LoRA) around the experts' projections must see every token: such experts are not gathered."""
    from mamba_router.models.layers import feed_forward

    class Adapter(torch.nn.Module):
        def __init__(self, base: torch.nn.Linear) -> None:
            super().__init__()
            self.base_layer = base

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.base_layer(x) + 0.5

        @property
        def weight(self) -> torch.Tensor:
            return self.base_layer.weight

    torch.manual_seed(1)
    plain = _expert_layers()[kind]()
    torch.manual_seed(1)
    moe = _expert_layers()[kind]()
    for expert in moe.experts:
        expert.up_proj = Adapter(expert.up_proj)
    hidden = torch.randn(2, 3, 16)
    with torch.no_grad():
        monkeypatch.setattr(feed_forward, "GATHERED_EXPERTS_LIMIT", 0)
        looped = moe(hidden)
        assert not torch.allclose(looped, plain(hidden))  # the adapter shows in the output
        monkeypatch.setattr(feed_forward, "GATHERED_EXPERTS_LIMIT", 10**6)
        torch.testing.assert_close(moe(hidden), looped, rtol=0, atol=0)
