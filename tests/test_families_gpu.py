"""Transformers-format families on real-mamba (GPU): FalconMamba, Mamba-2 with 8 groups (Codestral's shape) and the
hybrids (Granite-4.0-H, Bamba, Nemotron-H, Jamba, Falcon-H1, Zamba2), each checked against the plain-PyTorch reference ops on the same GPU
weights: logits in fp32, greedy tokens in fp32, read/ask exact, and bf16 logits within a stated tolerance.

The reference is our own TorchOps stack (itself equal to transformers' forward within 1e-4 on the CPU,
``test_hybrid_families.py``), because with mamba-ssm installed transformers runs the kernels under test too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hf_families import hf_model

import mamba_router as mr
from mamba_router.models.registry import load_ssm_checkpoint
from mamba_router.models.torch_ops import TorchOps
from mamba_router.samples.synthetic import synthetic_judgment

pytestmark = pytest.mark.gpu

# fp32: mamba-ssm's Triton SSD kernels multiply in TF32, so logits differ from the float32 reference by ~1e-3 on
# average (measured on the H100 for the 8-group Mamba-2: 2.3e-3 mean, 0.05 at worst); greedy tokens must agree.
FP32_LOGITS = (5e-3, 0.1)  # (mean, max) |difference|
BF16_LOGITS = (3e-2, 0.75)  # measured: 8-group Mamba-2 2.04e-2 mean, 0.54 max


MAMBA2_HEADS = dict(mamba_n_heads=16, mamba_d_head=32, mamba_d_state=64)
MODELS = {  # test name -> (model_type, config), 256 wide
    "falcon_mamba": ("falcon_mamba", dict(hidden_size=128, num_hidden_layers=3)),
    "codestral_shape": (
        "mamba2",
        dict(hidden_size=256, num_hidden_layers=3, num_heads=16, head_dim=32, n_groups=8, state_size=64),
    ),
    "granitemoehybrid": (
        "granitemoehybrid",
        dict(
            hidden_size=256,
            num_hidden_layers=4,
            layer_types=["mamba", "mamba", "attention", "mamba"],
            num_attention_heads=8,
            num_key_value_heads=2,
            shared_intermediate_size=512,
            num_local_experts=0,
            position_embedding_type="nope",
            embedding_multiplier=12.0,
            residual_multiplier=0.25,
            logits_scaling=2.0,
            attention_multiplier=1 / 32,
            tie_word_embeddings=True,
            **MAMBA2_HEADS,
        ),
    ),
    "bamba": (
        "bamba",
        dict(
            hidden_size=256,
            num_hidden_layers=3,
            attn_layer_indices=[1],
            num_attention_heads=8,
            num_key_value_heads=4,
            intermediate_size=512,
            **MAMBA2_HEADS,
        ),
    ),
    "nemotron_h": (
        "nemotron_h",
        dict(
            hidden_size=256,
            num_hidden_layers=5,
            hybrid_override_pattern="M*-EM",
            num_attention_heads=8,
            num_key_value_heads=2,
            head_dim=32,
            intermediate_size=512,
            mamba_num_heads=16,
            mamba_head_dim=32,
            ssm_state_size=64,
            n_groups=4,
            n_routed_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=128,
            moe_shared_expert_intermediate_size=128,
        ),
    ),
    "jamba": (
        "jamba",
        dict(
            hidden_size=256,
            num_hidden_layers=4,
            attn_layer_period=2,
            attn_layer_offset=1,
            expert_layer_period=2,
            expert_layer_offset=0,
            num_experts=4,
            num_experts_per_tok=2,
            num_attention_heads=8,
            num_key_value_heads=2,
            intermediate_size=512,
        ),
    ),
    "falcon_h1": (
        "falcon_h1",
        dict(
            hidden_size=256,
            num_hidden_layers=3,
            num_attention_heads=8,
            num_key_value_heads=2,
            intermediate_size=512,
            mamba_d_ssm=384,
            mamba_n_heads=12,
            mamba_d_head=32,
            mamba_d_state=64,
            mamba_rms_norm=True,
            ssm_multipliers=[0.5, 1.5, 0.8, 1.2, 0.9],
            key_multiplier=0.6,
            mlp_multipliers=[1.4, 0.6],
        ),
    ),
    "zamba2": (
        "zamba2",
        dict(
            hidden_size=256,
            num_hidden_layers=5,
            layers_block_type=["mamba", "hybrid", "mamba", "hybrid", "hybrid"],
            num_mem_blocks=2,
            num_attention_heads=8,
            intermediate_size=512,
            adapter_rank=16,
            use_shared_attention_adapter=True,
            use_mem_rope=True,
            mamba_d_state=64,
            mamba_headdim=32,
            n_mamba_heads=16,
        ),
    ),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def family_dir(request, tmp_path_factory, offline_tokenizer) -> Path:
    model_type, config = MODELS[request.param]
    hf = hf_model(model_type, len(offline_tokenizer), config, seed=9)
    directory = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(directory)
    offline_tokenizer.save_pretrained(directory)
    return directory


def _reference(directory: Path, dtype: torch.dtype):
    return load_ssm_checkpoint(directory, TorchOps()).model.to("cuda", dtype).eval()


def test_logits_equal_the_reference_ops_in_fp32_and_bf16(family_dir) -> None:
    ids = torch.randint(0, 300, (2, 160), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    for dtype, tolerance in ((torch.float32, FP32_LOGITS), (torch.bfloat16, BF16_LOGITS)):
        model = mr.load_model(str(family_dir), backend="real-mamba", dtype=dtype, device="cuda")
        with torch.inference_mode():
            got = model.forward_logits(ids).float()
            expected = _reference(family_dir, dtype)(ids)[..., : got.shape[-1]].float()
        difference = (got - expected).abs()
        mean, most = difference.mean().item(), difference.max().item()
        assert mean <= tolerance[0] and most <= tolerance[1], (dtype, mean, most)


def test_greedy_tokens_and_read_ask_equal_the_reference_in_fp32(family_dir) -> None:
    model = mr.load_model(str(family_dir), backend="real-mamba", dtype="float32", device="cuda")
    reference = mr.load_model(str(family_dir), backend="mamba2", dtype="float32", device="cuda")
    prompt = "The appeal is allowed. The respondent shall pay"
    assert (
        model.generate(prompt, max_new_tokens=16).token_ids == reference.generate(prompt, max_new_tokens=16).token_ids
    )
    judgment = synthetic_judgment(2, seed=8)
    state = model.read(judgment)
    for question in ("What did the court order?", "Who appealed?"):
        cached = model.ask(state, question, max_new_tokens=8)
        assert (
            cached.token_ids == model.generate_with_state_space(question, context=judgment, max_new_tokens=8).token_ids
        )
    assert model.backend == "real-mamba"


def test_the_router_answers_with_the_family_on_real_mamba(family_dir, llama_dir, tmp_path) -> None:
    """Issue 13: configured with the family's checkpoint, the router answers a legal question on real-mamba itself
    (no fallback), with the same tokens as the model loaded directly."""
    overrides = {
        "mamba.real_model": str(family_dir),
        "mamba.backend": "real-mamba",
        "transformer.model": str(llama_dir),
        "log.path": str(tmp_path / "routing.jsonl"),
        "generation.dtype": "float32",
    }
    router = mr.Router(mr.load_config(environ={}, overrides=overrides))
    question = "What did the court order in this appeal?"
    answer = router.generate(question, max_new_tokens=8)
    assert (answer.backend, answer.model_used, answer.fallback_used) == ("real-mamba", "mamba", False)
    direct = mr.load_model(str(family_dir), backend="real-mamba", dtype="float32", device="cuda")
    assert answer.generation.token_ids == direct.generate(question, max_new_tokens=8).token_ids


@pytest.mark.parametrize("name", ["jamba", "nemotron_h"])
def test_expert_hybrids_decode_the_same_through_a_captured_graph(name, tmp_path, offline_tokenizer) -> None:
    """Nemotron-H's and Jamba's expert layers gather each token's experts on the device, so their steps can be
    captured; until this passes on a GPU the backend decodes them eagerly (HybridLM.graph_capturable). fp32 greedy
    logits through a captured graph equal the eager decoder's for 16 steps at batch 1 and 3."""
    from mamba_router.generation.ssm_model import EagerDecoder
    from mamba_router_cuda.decode_graph import CudaGraphDecoder

    model_type, config = MODELS[name]
    hf_model(model_type, len(offline_tokenizer), config, seed=9).save_pretrained(tmp_path)
    offline_tokenizer.save_pretrained(tmp_path)
    lm = mr.load_model(str(tmp_path), backend="real-mamba", dtype="float32", device="cuda").model
    generator = torch.Generator().manual_seed(5)

    def run(decoder, prompts: list[torch.Tensor]) -> list[torch.Tensor]:
        stepper = decoder.stepper(len(prompts))
        logits = [stepper.prefill(prompts)]
        for _ in range(16):
            logits.append(stepper.step(logits[-1].argmax(-1)).clone())
        return logits

    for batch in (1, 3):
        prompts = [torch.randint(0, 300, (n,), generator=generator).cuda() for n in (7, 12, 9)[:batch]]
        with torch.inference_mode():
            expected = run(EagerDecoder(lm, None), prompts)
            captured = run(CudaGraphDecoder(lm, use_graph=True), prompts)
        for step, (got, want) in enumerate(zip(captured, expected, strict=True)):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-4, msg=f"{name} batch {batch} step {step}")
