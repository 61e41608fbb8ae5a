"""The pure-PyTorch Mamba backend: same logits as HF transformers' torch path, state passing, loading, forcing."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mamba_router as mr
from mamba_router.backends.reports import PlatformFacts
from mamba_router.models.mamba import build_mamba
from mamba_router.models.mamba_config import config_from_json
from mamba_router.models.torch_ops import TorchOps
from mamba_router_mps.backend import Mamba2Backend

TOLERANCE = 1e-4
# Where mamba-ssm is installed, transformers runs its CUDA kernels instead of the torch path we compare against.
HF_TORCH_PATH = importlib.util.find_spec("mamba_ssm") is None
SLOW = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mamba2_configs(draw):
    from transformers import Mamba2Config

    d_model = draw(st.sampled_from([16, 24, 32]))
    headdim = draw(st.sampled_from([4, 8, 16]))
    heads = 2 * d_model // headdim
    groups = draw(st.sampled_from([g for g in (1, 2, 4, 8) if heads % g == 0]))  # 8: Codestral-Mamba
    return Mamba2Config(
        vocab_size=draw(st.integers(20, 90)),
        hidden_size=d_model,
        num_hidden_layers=draw(st.integers(1, 2)),
        num_heads=heads,
        head_dim=headdim,
        n_groups=groups,
        state_size=draw(st.sampled_from([4, 8, 16])),
        chunk_size=draw(st.sampled_from([2, 3, 5, 8, 16])),
        expand=2,
    )


@st.composite
def mamba1_configs(draw):
    from transformers import MambaConfig

    return MambaConfig(
        vocab_size=draw(st.integers(20, 90)),
        hidden_size=draw(st.sampled_from([8, 16, 32])),
        num_hidden_layers=draw(st.integers(1, 2)),
        state_size=draw(st.sampled_from([2, 4, 16])),
        conv_kernel=draw(st.sampled_from([2, 4])),
    )


@st.composite
def falcon_mamba_configs(draw):
    from transformers import FalconMambaConfig

    return FalconMambaConfig(
        vocab_size=draw(st.integers(20, 90)),
        hidden_size=draw(st.sampled_from([8, 16, 32])),
        num_hidden_layers=draw(st.integers(1, 2)),
        state_size=draw(st.sampled_from([2, 4, 16])),
        conv_kernel=draw(st.sampled_from([2, 4])),
        mixer_rms_eps=draw(st.sampled_from([1e-6, 1e-3])),
    )


def hf_class(model_type: str):
    from transformers import FalconMambaForCausalLM, Mamba2ForCausalLM, MambaForCausalLM

    return {"mamba": MambaForCausalLM, "mamba2": Mamba2ForCausalLM, "falcon_mamba": FalconMambaForCausalLM}[model_type]


def hf_and_ours(hf_config, seed: int):
    torch.manual_seed(seed)
    cls = hf_class(hf_config.model_type)
    hf = cls(hf_config).eval()
    with torch.no_grad():  # realistic time steps and decays, so the test sees real state carry-over
        for name, p in hf.named_parameters():
            if name.endswith("dt_bias"):
                p.uniform_(-3.0, 0.5)
    cfg, fmt = config_from_json(hf_config.to_dict(), "test config")
    assert fmt == "transformers"
    return hf, build_mamba(cfg, hf.state_dict(), TorchOps(), "test")


def check_against_hf(hf, ours, ids: torch.Tensor) -> None:
    if not HF_TORCH_PATH:
        pytest.skip("transformers would use the mamba-ssm kernels here, not its torch path")
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(ids)
    torch.testing.assert_close(got, expected, rtol=0, atol=TOLERANCE)


@SLOW
@given(config=mamba2_configs(), length=st.integers(1, 40), seed=st.integers(0, 10_000))
def test_mamba2_logits_equal_transformers_torch_path(config, length: int, seed: int) -> None:
    hf, ours = hf_and_ours(config, seed)
    check_against_hf(hf, ours, torch.randint(0, config.vocab_size, (2, length)))


@SLOW
@given(config=mamba1_configs(), length=st.integers(1, 30), seed=st.integers(0, 10_000))
def test_mamba1_logits_equal_transformers_torch_path(config, length: int, seed: int) -> None:
    hf, ours = hf_and_ours(config, seed)
    check_against_hf(hf, ours, torch.randint(0, config.vocab_size, (2, length)))


@SLOW
@given(config=falcon_mamba_configs(), length=st.integers(1, 30), seed=st.integers(0, 10_000))
def test_falcon_mamba_logits_equal_transformers_torch_path(config, length: int, seed: int) -> None:
    hf, ours = hf_and_ours(config, seed)
    assert ours.cfg.bcdt_rms_eps == config.mixer_rms_eps
    check_against_hf(hf, ours, torch.randint(0, config.vocab_size, (2, length)))


@SLOW
@given(
    config=st.one_of(mamba2_configs(), mamba1_configs(), falcon_mamba_configs()),
    length=st.integers(2, 50),
    chunk=st.integers(1, 20),
    segment=st.integers(1, 20),
    seed=st.integers(0, 10_000),
)
def test_chunked_segmented_and_stepwise_reading_agree(config, length: int, chunk: int, segment: int, seed: int) -> None:
    _, ours = hf_and_ours(config, seed)
    ids = torch.randint(0, config.vocab_size, (1, length))
    with torch.no_grad():
        whole = ours(ids, chunk_size=length)  # one chunk: unchunked
        chunked = ours(ids, chunk_size=chunk)
        torch.testing.assert_close(chunked, whole, rtol=0, atol=TOLERANCE)
        cache = ours.new_cache(1)
        last = ours.read(ids[:, :-1], cache, segment=segment, chunk_size=chunk)  # prefill ...
        torch.testing.assert_close(last, whole[:, -2], rtol=0, atol=TOLERANCE)
        stepped = ours.step(ids[:, -1], cache)  # ... then one step
        torch.testing.assert_close(stepped, whole[:, -1], rtol=0, atol=TOLERANCE)


@pytest.fixture(scope="module")
def hf_mamba2_dir(tmp_path_factory, offline_tokenizer) -> Path:
    from transformers import Mamba2Config, Mamba2ForCausalLM

    config = Mamba2Config(
        vocab_size=len(offline_tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_heads=8,
        head_dim=8,
        n_groups=1,
        state_size=16,
        chunk_size=16,
    )
    torch.manual_seed(3)
    directory = tmp_path_factory.mktemp("hf-mamba2")
    Mamba2ForCausalLM(config).save_pretrained(directory)
    offline_tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def mamba_ssm_dir(tmp_path_factory, offline_tokenizer) -> tuple[Path, torch.nn.Module]:
    """mamba-ssm's checkpoint format as its save_pretrained writes it: json.dump(config) + torch.save(state_dict)."""
    from transformers import MambaConfig, MambaForCausalLM

    hf_config = MambaConfig(vocab_size=len(offline_tokenizer), hidden_size=32, num_hidden_layers=2, state_size=8)
    torch.manual_seed(4)
    hf = MambaForCausalLM(hf_config).eval()
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in hf.state_dict().items()}
    directory = tmp_path_factory.mktemp("mamba-ssm-format")
    config = {
        "d_model": 32,
        "d_intermediate": 0,
        "n_layer": 2,
        "vocab_size": len(offline_tokenizer),
        "ssm_cfg": {"d_state": 8},
        "attn_layer_idx": [],
        "attn_cfg": {},
        "rms_norm": True,
        "residual_in_fp32": True,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": 8,
        "tie_embeddings": True,
    }
    (directory / "config.json").write_text(json.dumps(config, indent=4))
    padded = {**state}
    vocab = len(offline_tokenizer)
    rows = -(-vocab // 8) * 8
    for key in ("backbone.embedding.weight", "lm_head.weight"):
        padded[key] = torch.cat([state[key], torch.zeros(rows - vocab, 32)])
    torch.save(padded, directory / "pytorch_model.bin")
    offline_tokenizer.save_pretrained(directory)
    return directory, hf


def test_loads_a_transformers_checkpoint_with_the_same_logits(hf_mamba2_dir: Path) -> None:
    from transformers import Mamba2ForCausalLM

    model = Mamba2Backend().load(str(hf_mamba2_dir), device="cpu")
    assert (model.checkpoint_format, model.arch, model.device) == ("transformers", "mamba2", "cpu")
    reference = Mamba2ForCausalLM.from_pretrained(hf_mamba2_dir).eval()
    check_against_hf(reference, model.model, torch.randint(0, 300, (1, 37)))


def test_loads_a_mamba_ssm_checkpoint_with_weights_only(mamba_ssm_dir) -> None:
    directory, hf = mamba_ssm_dir
    model = Mamba2Backend().load(str(directory), device="cpu")
    assert (model.checkpoint_format, model.arch) == ("mamba-ssm", "mamba1")
    if not HF_TORCH_PATH:
        pytest.skip("transformers would use the mamba-ssm kernels here, not its torch path")
    ids = torch.randint(0, 300, (1, 23))
    with torch.no_grad():
        got = model.model(ids)
        torch.testing.assert_close(got[..., : hf.config.vocab_size], hf(ids).logits, rtol=0, atol=TOLERANCE)


def test_forcing_mamba2_here_answers_from_a_mamba_ssm_directory(mamba_ssm_dir, monkeypatch) -> None:
    directory, _ = mamba_ssm_dir
    monkeypatch.setenv("MAMBA_ROUTER_BACKEND", "mamba2")
    assert mr.detect().selected == "mamba2"
    model = mr.load_model(directory)
    answer = model.generate_with_state_space(
        prompt="What was ordered?", context="The appeal is allowed.", max_new_tokens=8
    )
    assert answer.backend == "mamba2" and answer.completion_tokens >= 1
    assert answer.text == model.generate("The appeal is allowed.\n\nWhat was ordered?", max_new_tokens=8).text
    if not torch.backends.mps.is_available() and not torch.cuda.is_available():
        assert model.device == "cpu"


def test_generation_features(hf_mamba2_dir: Path) -> None:
    model = Mamba2Backend().load(str(hf_mamba2_dir), device="cpu", segment=5)
    prompt = "The appeal is allowed and the respondent shall"
    whole = model.generate(prompt, max_new_tokens=20, temperature=0.8, seed=2)
    assert "".join(model.generate(prompt, max_new_tokens=20, temperature=0.8, seed=2, stream=True)) == whole.text
    greedy = model.generate(prompt, max_new_tokens=20)
    batch = model.generate_batch([prompt, "Page 2 of 3"], max_new_tokens=20)
    assert batch[0].token_ids == greedy.token_ids
    assert batch[1].token_ids == model.generate("Page 2 of 3", max_new_tokens=20).token_ids
    # decoding from states equals re-reading everything: the greedy continuation matches full forwards
    ids = model.encode(prompt).view(1, -1)
    with torch.no_grad():
        for token in greedy.token_ids[:5]:
            logits = model.model(ids)
            assert int(logits[0, -1, : model.vocab_size].argmax()) == token
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)


def test_probe_is_usable_on_apple_silicon_and_forceable_elsewhere() -> None:
    mac = PlatformFacts(
        system="darwin", machine="arm64", python_version="3.12", torch_version="2.13", mps_available=True
    )
    linux = PlatformFacts(system="linux", machine="x86_64", python_version="3.12", torch_version="2.13")
    assert Mamba2Backend().probe(mac).available
    out = Mamba2Backend().probe(linux)
    assert not out.available and out.forceable and "MPS is not available" in out.reason and "CPU" in out.reason


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"hidden_size": 8}, "neither a mamba-ssm config"),
        (
            {
                "model_type": "mamba2",
                "hidden_size": 16,
                "num_hidden_layers": 1,
                "vocab_size": 10,
                "num_heads": 3,
                "head_dim": 8,
            },
            "num_heads x head_dim",
        ),
        ({"d_model": 16, "n_layer": 1, "vocab_size": 10, "ssm_cfg": {"layer": "Mamba3"}}, "Mamba3"),
        ({"d_model": 16, "n_layer": 0, "vocab_size": 10}, "n_layer must be a positive int"),
        ({"d_model": 16, "n_layer": 1, "vocab_size": 10, "attn_layer_idx": [0]}, "attention"),
    ],
)
def test_bad_configs_are_named(tmp_path: Path, config: dict, message: str) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(mr.CorruptCheckpointError, match=message):
        Mamba2Backend().load(str(tmp_path), device="cpu")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda t: t.pop("backbone.layers.1.mixer.D"), "missing.*backbone.layers.1.mixer.D"),
        (lambda t: t.update({"backbone.layers.0.mixer.extra": torch.zeros(2)}), "unexpected.*mixer.extra"),
        (lambda t: t.update({"backbone.norm_f.weight": torch.ones(3)}), "wrong shapes.*norm_f.weight"),
    ],
)
def test_weights_that_do_not_match_the_config_are_named(mamba_dir: Path, tmp_path: Path, damage, message) -> None:
    """The stack is built on the meta device: a tensor the checkpoint lacks must be an error, never left empty."""
    import shutil

    from safetensors.torch import load_file, save_file

    target = tmp_path / "damaged"
    shutil.copytree(mamba_dir, target)
    tensors = load_file(str(target / "model.safetensors"))
    damage(tensors)
    save_file(tensors, str(target / "model.safetensors"))
    with pytest.raises(mr.CorruptCheckpointError, match=message):
        Mamba2Backend().load(str(target), device="cpu")


@pytest.fixture(scope="module")
def falcon_mamba_dir(tmp_path_factory, offline_tokenizer) -> Path:
    """A tiny FalconMamba written by transformers' own save_pretrained, with the offline tokenizer."""
    from transformers import FalconMambaConfig, FalconMambaForCausalLM

    config = FalconMambaConfig(
        vocab_size=len(offline_tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        state_size=8,
        initializer_range=0.5,
        eos_token_id=offline_tokenizer.eos_token_id,
        bos_token_id=offline_tokenizer.bos_token_id,
    )
    torch.manual_seed(6)
    directory = tmp_path_factory.mktemp("falcon-mamba")
    FalconMambaForCausalLM(config).save_pretrained(directory)
    offline_tokenizer.save_pretrained(directory)
    return directory


def test_a_falcon_mamba_checkpoint_answers_like_transformers(falcon_mamba_dir: Path, offline_tokenizer) -> None:
    """Loaded through load_model: greedy tokens equal transformers' generate; reading from a state equals scratch."""
    from transformers import FalconMambaForCausalLM

    model = mr.load_model(falcon_mamba_dir, backend="mamba2", device="cpu")
    assert (model.checkpoint_format, model.arch) == ("transformers", "mamba1")
    assert model.default_lora_targets() == ["in_proj", "x_proj", "dt_proj", "out_proj"]
    prompt = "The appeal is allowed and the respondent shall"
    ours = model.generate(prompt, max_new_tokens=16)
    if not HF_TORCH_PATH:
        pytest.skip("transformers would use the mamba-ssm kernels here, not its torch path")
    reference = FalconMambaForCausalLM.from_pretrained(falcon_mamba_dir).eval()
    ids = offline_tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = reference.generate(ids, max_new_tokens=16, do_sample=False)[0, ids.shape[1] :].tolist()
    assert ours.token_ids == expected[: len(ours.token_ids)] and len(ours.token_ids) >= 1
    judgment = "Page 1 of 2\nThe appeal is allowed. The respondent shall pay the costs."
    state = model.read(judgment)
    asked = model.ask(state, "Who pays the costs?", max_new_tokens=12)
    scratch = model.generate_with_state_space("Who pays the costs?", context=judgment, max_new_tokens=12)
    assert asked.token_ids == scratch.token_ids


def test_an_unknown_model_family_lists_the_known_ones(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "rwkv", "hidden_size": 8}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(mr.UnknownModelFamilyError, match="falcon_mamba") as info:
        Mamba2Backend().load(str(tmp_path), device="cpu")
    assert "'rwkv'" in str(info.value) and "transformer" in str(info.value)


def test_the_router_answers_with_a_falcon_mamba_on_mamba2(falcon_mamba_dir: Path, llama_dir: Path, tmp_path) -> None:
    """Configured with a FalconMamba checkpoint, a legal question is answered by it on mamba2, with no fallback."""
    overrides = {
        "mamba.backend": "mamba2",
        "mamba.mamba2_model": str(falcon_mamba_dir),
        "transformer.model": str(llama_dir),
        "generation.device": "cpu",
        "log.path": str(tmp_path / "routing.jsonl"),
    }
    router = mr.Router.from_config(environ={}, overrides=overrides)
    answer = router.generate("What did the court order?", context="The appeal is allowed.", max_new_tokens=6)
    assert (answer.model_used, answer.backend, answer.fallback_used) == ("mamba", "mamba2", False)
    assert answer.model == str(falcon_mamba_dir) and [a.ok for a in answer.attempts] == [True]


def test_a_codestral_shaped_mamba2_with_eight_groups_equals_transformers() -> None:
    """Mamba-Codestral's layout scaled down: 8 groups of B/C shared by 16 heads, untied embeddings."""
    from transformers import Mamba2Config

    config = Mamba2Config(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_heads=16, head_dim=4, n_groups=8, state_size=8,
        chunk_size=5, expand=2, tie_word_embeddings=False,
    )  # fmt: skip
    hf, ours = hf_and_ours(config, seed=11)
    assert (ours.cfg.ngroups, ours.cfg.tie_embeddings) == (8, False)
    check_against_hf(hf, ours, torch.randint(0, 64, (2, 23)))


def test_a_mamba1_checkpoint_answers_from_its_document_state_exactly(mamba_ssm_dir) -> None:
    directory, _ = mamba_ssm_dir
    model = Mamba2Backend().load(str(directory), device="cpu", segment=7)
    assert model.arch == "mamba1"
    judgment = "Page 1 of 2\nThe appeal is allowed. The respondent shall pay the costs of the appellant."
    state = model.read(judgment)
    for question in ("Who pays the costs?", "Was the appeal allowed?"):
        asked = model.ask(state, question, max_new_tokens=10)
        scratch = model.generate_with_state_space(question, context=judgment, max_new_tokens=10)
        assert asked.token_ids == scratch.token_ids
