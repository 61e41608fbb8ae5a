"""mamba-ssm's own hybrid format (``attn_layer_idx``/``attn_cfg``, ``d_intermediate``) on the plain-PyTorch ops.

The reference is transformers' Bamba (Mamba-2 layers, attention layers with partial rotary embeddings, a gated MLP
after every mixer): the same architecture as a mamba-ssm ``MambaLMHeadModel`` with attention layers and MLPs. A
Bamba model is built with transformers' own class; its weights are written under mamba-ssm's names and layout
(``backbone.layers.i.mixer.in_proj`` packing q, k, v; ``mlp.fc1`` holding the value half then the gate half) with a
mamba-ssm ``config.json``, as ``pytorch_model.bin`` the way mamba-ssm saves; the library loads that directory
through its real loading path, and its logits must equal Bamba's forward.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from hf_families import greedy_next_tokens, hf_model

from mamba_router.errors import CorruptCheckpointError
from mamba_router.models.hybrid import HybridLM
from mamba_router.models.registry import load_ssm_checkpoint
from mamba_router.models.torch_ops import TorchOps

TOLERANCE = 1e-4
HF_TORCH_PATH = importlib.util.find_spec("mamba_ssm") is None  # with mamba-ssm, transformers runs its kernels
BAMBA = dict(
    hidden_size=64,
    num_hidden_layers=4,
    attn_layer_indices=[1, 3],
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,  # mamba-ssm's GatedMLP widths are multiples of 128
    partial_rotary_factor=0.5,
    rope_theta=5000.0,
    mamba_n_heads=8,
    mamba_d_head=16,
    mamba_d_state=16,
    mamba_n_groups=2,
    mamba_chunk_size=8,
)


def as_mamba_ssm(hf: torch.nn.Module, config: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    """Bamba's weights and shapes under mamba-ssm's names, layout and config."""
    c = hf.config
    head_dim = c.hidden_size // c.num_attention_heads
    state: dict[str, torch.Tensor] = {}
    for name, tensor in hf.state_dict().items():
        name = name.replace("model.embed_tokens.", "backbone.embedding.").replace(
            "model.final_layernorm.", "backbone.norm_f."
        )
        name = name.replace("model.layers.", "backbone.layers.")
        name = name.replace(".input_layernorm.", ".norm.").replace(".pre_ff_layernorm.", ".norm2.")
        name = name.replace(".self_attn.o_proj.", ".mixer.out_proj.").replace(".mamba.", ".mixer.")
        state[name] = tensor.clone()
    for i in range(c.num_hidden_layers):
        layer = f"backbone.layers.{i}."
        if i in config["attn_layer_indices"]:
            qkv = [state.pop(f"{layer}self_attn.{p}.weight") for p in ("q_proj", "k_proj", "v_proj")]
            state[layer + "mixer.in_proj.weight"] = torch.cat(qkv)
        gate, up = state.pop(layer + "feed_forward.gate_proj.weight"), state.pop(layer + "feed_forward.up_proj.weight")
        state[layer + "mlp.fc1.weight"] = torch.cat([up, gate])  # mamba-ssm: value half, then gate half
        state[layer + "mlp.fc2.weight"] = state.pop(layer + "feed_forward.down_proj.weight")
    mamba_ssm_config = {
        "d_model": c.hidden_size,
        "d_intermediate": c.intermediate_size,
        "n_layer": c.num_hidden_layers,
        "vocab_size": c.vocab_size,
        "ssm_cfg": {
            "layer": "Mamba2",
            "d_state": c.mamba_d_state,
            "d_conv": c.mamba_d_conv,
            "expand": c.mamba_expand,
            "headdim": c.mamba_d_head,
            "ngroups": c.mamba_n_groups,
            "chunk_size": c.mamba_chunk_size,
        },
        "attn_layer_idx": list(config["attn_layer_indices"]),
        "attn_cfg": {
            "num_heads": c.num_attention_heads,
            "num_heads_kv": c.num_key_value_heads,
            "rotary_emb_dim": int(head_dim * config["partial_rotary_factor"]),
            "rotary_emb_base": config["rope_theta"],
            "qkv_proj_bias": False,
            "out_proj_bias": False,
            "causal": True,
        },
        "rms_norm": True,
        "residual_in_fp32": True,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": 1,
        "tie_embeddings": False,
        "norm_epsilon": c.rms_norm_eps,
    }
    return mamba_ssm_config, state


@pytest.fixture(scope="module")
def reference(offline_tokenizer) -> torch.nn.Module:
    hf = hf_model("bamba", len(offline_tokenizer), BAMBA, seed=11)
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.15)
    return hf


def _save(directory: Path, config: dict, state: dict[str, torch.Tensor], tokenizer) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    torch.save(state, directory / "pytorch_model.bin")  # mamba-ssm's save_pretrained writes this file
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def saved(reference, tmp_path_factory, offline_tokenizer) -> Path:
    config, state = as_mamba_ssm(reference, BAMBA)
    return _save(tmp_path_factory.mktemp("mamba-ssm-hybrid"), config, state, offline_tokenizer)


def test_the_format_is_recognised_as_mamba_ssm_s_hybrid(saved) -> None:
    loaded = load_ssm_checkpoint(saved, TorchOps())
    assert loaded.family.name == "mamba_ssm_hybrid" and loaded.checkpoint_format == "mamba-ssm"
    assert isinstance(loaded.model, HybridLM)
    assert loaded.model.cfg.layer_kinds == ("mamba", "attention", "mamba", "attention")
    assert loaded.model.cfg.attention.rotary_dim == 8


@pytest.mark.parametrize("length", [1, 9, 33])
def test_logits_equal_the_same_architecture_in_transformers(saved, reference, length: int) -> None:
    if not HF_TORCH_PATH:
        pytest.skip("transformers would use the mamba-ssm kernels here, not its torch path")
    ours = load_ssm_checkpoint(saved, TorchOps()).model
    ids = torch.randint(0, ours.cfg.vocab_size, (2, length), generator=torch.Generator().manual_seed(length))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), reference(ids).logits, rtol=0, atol=TOLERANCE)


def test_greedy_tokens_and_read_ask_on_the_mamba2_backend(saved, reference) -> None:
    from mamba_router_mps.backend import Mamba2Backend

    model = Mamba2Backend().load(str(saved), device="cpu", dtype="float32", segment=5)
    ours, expected = greedy_next_tokens(model, reference, "The appellant filed the notice of appeal within time.", 12)
    assert ours == expected[: len(ours)] and ours
    state = model.read("Page 1 of 2\nThe appeal is allowed with costs.")
    asked = model.ask(state, "Who won?", max_new_tokens=6)
    scratch = model.generate_with_state_space(
        "Who won?", context="Page 1 of 2\nThe appeal is allowed with costs.", max_new_tokens=6
    )
    assert asked.token_ids == scratch.token_ids


def test_without_mlps_the_layers_are_mixer_only(reference, tmp_path, offline_tokenizer) -> None:
    """d_intermediate = 0 (mamba-ssm's default): equal to the same model whose MLPs output zero."""
    config, state = as_mamba_ssm(reference, BAMBA)
    zeroed = {k: (torch.zeros_like(v) if ".mlp.fc2." in k else v) for k, v in state.items()}
    with_zero_mlp = load_ssm_checkpoint(_save(tmp_path / "zero", config, zeroed, offline_tokenizer), TorchOps())
    bare_state = {k: v for k, v in state.items() if ".mlp." not in k and ".norm2." not in k}
    bare = load_ssm_checkpoint(
        _save(tmp_path / "bare", {**config, "d_intermediate": 0}, bare_state, offline_tokenizer), TorchOps()
    )
    ids = torch.randint(0, bare.model.cfg.vocab_size, (1, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(bare.model(ids), with_zero_mlp.model(ids), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"attn_cfg": {"num_heads": 4, "causal": True, "d_conv": 4}}, "attn_cfg.d_conv=4 is not supported"),
        ({"attn_cfg": {"num_heads": 4}}, "attn_cfg.causal must be true"),  # mamba-ssm's MHA default: not causal
        ({"attn_cfg": {"num_heads": 4, "causal": True, "mlp_dim": 64}}, "attn_cfg.mlp_dim=64 is not supported"),
        ({"attn_cfg": {"num_heads": 4, "causal": True, "rotary_emb_interleaved": True}}, "rotary_emb_interleaved"),
        ({"attn_layer_idx": [7]}, "attn_layer_idx must list layer numbers below 4"),
        ({"attn_cfg": {"num_heads": 4, "causal": True, "num_heads_kv": 3}}, "not a multiple of num_heads_kv"),
    ],
)
def test_attention_variants_it_does_not_run_are_typed_errors(reference, tmp_path, offline_tokenizer, change, message):
    config, state = as_mamba_ssm(reference, BAMBA)
    directory = _save(tmp_path / "variant", {**config, **change}, state, offline_tokenizer)
    with pytest.raises(CorruptCheckpointError, match=message):
        load_ssm_checkpoint(directory, TorchOps())


def test_a_missing_attention_tensor_is_named(reference, tmp_path, offline_tokenizer) -> None:
    config, state = as_mamba_ssm(reference, BAMBA)
    del state["backbone.layers.1.mixer.out_proj.weight"]
    directory = _save(tmp_path / "missing", config, state, offline_tokenizer)
    with pytest.raises(CorruptCheckpointError, match=r"model.layers.1.self_attn.o_proj.weight"):
        load_ssm_checkpoint(directory, TorchOps())
