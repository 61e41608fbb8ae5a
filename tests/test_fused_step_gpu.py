"""The fused decode step on the GPU, through the real-mamba backend: on by default, greedy tokens equal to the unfused
step's in float32 over 64 tokens (CUDA graphs), and in bfloat16 the same logits and states step after step within
bf16 rounding, for batch sizes across the serving engine's ladder. Mamba-1, Mamba-2 with 1 and 8 groups, a hybrid.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import mamba_router as mr
from mamba_router.models.ops import fused_step_ops

pytestmark = pytest.mark.gpu

PROMPT = "The appeal is allowed. The respondent shall pay the costs of the appellant in both courts"
SHAPES = {  # mamba-ssm configs: (layer, extra ssm_cfg)
    "mamba1": ("Mamba1", {}),
    "mamba2": ("Mamba2", {"headdim": 32}),
    "mamba2-8-groups": ("Mamba2", {"headdim": 32, "ngroups": 8}),
}


@pytest.fixture(scope="module", params=[*SHAPES, "granite-hybrid"])
def checkpoint(request, tmp_path_factory, offline_tokenizer) -> Path:
    directory = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(11)
    if request.param == "granite-hybrid":
        from hf_families import hf_model

        config = dict(
            hidden_size=256,
            num_hidden_layers=4,
            layer_types=["mamba", "attention", "mamba", "mamba"],
            num_attention_heads=8,
            num_key_value_heads=2,
            shared_intermediate_size=512,
            num_local_experts=0,
            position_embedding_type="nope",
            mamba_n_heads=16,
            mamba_d_head=32,
            mamba_d_state=64,
            mamba_n_groups=2,
        )
        hf_model("granitemoehybrid", len(offline_tokenizer), config, seed=11).save_pretrained(directory)
    else:
        from mamba_ssm.models.config_mamba import MambaConfig
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

        layer, extra = SHAPES[request.param]
        if layer == "Mamba1":
            pytest.importorskip("selective_scan_cuda")
        config = MambaConfig(
            d_model=256, n_layer=4, vocab_size=len(offline_tokenizer), ssm_cfg={"layer": layer, **extra}
        )
        MambaLMHeadModel(config).save_pretrained(str(directory))
    offline_tokenizer.save_pretrained(directory)
    return directory


def _load(directory: Path, dtype: str, fused: bool, monkeypatch: pytest.MonkeyPatch, *, pdl: bool = False):
    monkeypatch.setenv("MAMBA_ROUTER_FUSED_STEP", "1" if fused else "0")
    monkeypatch.setenv("MAMBA_ROUTER_PDL", "1" if pdl else "0")
    model = mr.get_backend("real-mamba").load(str(directory), dtype=dtype)
    assert (fused_step_ops(model.model.ops, 1) is not None) == fused
    if fused:
        assert model.model.ops.fused_step.pdl == pdl
    return model


@pytest.mark.parametrize("pdl", [False, True], ids=["launched-in-turn", "pdl"])
def test_fused_greedy_tokens_equal_the_unfused_in_float32(checkpoint: Path, monkeypatch, pdl: bool) -> None:
    """Also with programmatic dependent launch: the kernels overlap their starts inside the decode step's CUDA
    graph, and must read every input only once the kernel that writes it has finished."""
    if pdl:
        from mamba_router_cuda.grid_dependency import device_runs_grid_dependency

        if not device_runs_grid_dependency("cuda"):
            pytest.skip("programmatic dependent launch needs a Hopper GPU and Triton 3.5+")
    fused = _load(checkpoint, "float32", True, monkeypatch, pdl=pdl)
    unfused = _load(checkpoint, "float32", False, monkeypatch)
    ours = fused.generate(PROMPT, max_new_tokens=64, prompt_format="plain")
    theirs = unfused.generate(PROMPT, max_new_tokens=64, prompt_format="plain")
    assert ours.token_ids == theirs.token_ids
    assert len(ours.token_ids) == 64 or ours.finish_reason == "eos"


@pytest.mark.parametrize("batch", [1, 5, 64])
@pytest.mark.parametrize("every_batch_fused", [True, False], ids=["fused-kernels", "default"])
def test_fused_steps_track_the_unfused_in_bfloat16(
    checkpoint: Path, monkeypatch, batch: int, every_batch_fused: bool
) -> None:
    """With the fused kernels at every batch size, and with the default (batches above one row: library products
    and our Mamba-2 state kernel) against mamba-ssm's unfused kernels."""
    fused = _load(checkpoint, "bfloat16", True, monkeypatch)
    if every_batch_fused:
        fused.model.ops.fused_step.max_rows = 64  # the kernels at every batch size, whatever the default takes
    elif batch == 1:
        pytest.skip("one row takes the fused kernels by default")
    unfused = _load(checkpoint, "bfloat16", False, monkeypatch)
    lm = unfused.model
    generator = torch.Generator().manual_seed(batch)
    prompt = torch.randint(0, unfused.vocab_size, (batch, 40), generator=generator).cuda()
    cache = lm.new_cache(batch)
    with torch.inference_mode():
        lm.read(prompt, cache)
        mine = dataclasses.replace(cache, conv=[c.clone() for c in cache.conv], ssm=[s.clone() for s in cache.ssm])
        if cache.keys:
            mine = dataclasses.replace(
                mine, keys=[k.clone() for k in cache.keys], values=[v.clone() for v in cache.values]
            )
        tokens = prompt[:, -1]
        for _ in range(8):
            expected = lm.step(tokens, cache).float()
            got = fused.model.step(tokens, mine).float()
            scale = expected.abs().max()
            assert (got - expected).abs().mean() <= 1e-2 * scale, "mean logit difference beyond bf16 rounding"
            assert (got - expected).abs().max() <= 0.1 * scale
            tokens = expected.argmax(-1)
        for a, b in zip(mine.ssm, cache.ssm, strict=True):
            assert (a.float() - b.float()).abs().max() <= 0.05 * b.float().abs().max() + 1e-3
