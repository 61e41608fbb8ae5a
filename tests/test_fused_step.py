"""The fused decode step (Triton) against the unfused step on the reference ops: same logits and same states after
every step, for Mamba-2 (groups, dt limit, the three gate/norm orders, biases), Mamba-1 (plain, FalconMamba's and
Jamba's B/C/dt norms) and a hybrid, at batch 1 (multiply-and-sum) and batch 3 (tl.dot).

On a GPU the kernels run compiled; elsewhere under Triton's interpreter (``TRITON_INTERPRET=1``, CPU tensors). Without
Triton installed (CI) the module is skipped: the GPU run (``benchmarks/gpu_check.sh tests``) is where it must pass.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest
import torch

if not torch.cuda.is_available():  # must be set before the kernels are defined
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")


from mamba_router.models.mamba import MambaLM, random_mamba
from mamba_router.models.mamba_config import SSMConfig
from mamba_router.models.ops import fused_step_ops
from mamba_router.models.ssm_cache import SSMCache
from mamba_router.models.stack import LayerStack
from mamba_router.models.torch_ops import TorchOps
from mamba_router_cuda.fused_step import FusedStepKernels, MatVecShape, matvec_shape

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
TOLERANCE = 2e-4  # float32; the sums run in another order than the reference's


class FusedReferenceOps(TorchOps):
    """The reference ops with the fused step kernels: the same model either way but for the step."""

    fused_step = FusedStepKernels(max_rows=64)  # batches too, whatever the GPU default


def _transposed_tiles(rows: int, n_out: int, n_in: int) -> MatVecShape:
    """Batches' tl.dot tiles with the product computed transposed (outputs on the long side)."""
    if rows == 1:
        return matvec_shape(rows, n_out, n_in)
    return MatVecShape(16, 64, 32, True, 4, 2, swap_ab=True)


class FusedTransposedOps(TorchOps):
    """The fused step kernels with batches multiplied transposed (``MatVecShape.swap_ab``)."""

    fused_step = FusedStepKernels(_transposed_tiles, max_rows=64)


BASE = dict(d_model=64, n_layer=2, vocab_size=97, d_state=16)
CONFIGS = {
    "mamba2": SSMConfig(arch="mamba2", headdim=16, **BASE),
    "mamba2-groups-limit-bias": SSMConfig(
        arch="mamba2", headdim=16, ngroups=2, dt_limit=(0.02, 0.4), bias=True, **BASE
    ),
    "mamba2-gate-of-norm": SSMConfig(arch="mamba2", headdim=16, ngroups=2, gate_norm="gate_of_norm", **BASE),
    "mamba2-gate-only-bf16-residual": SSMConfig(
        arch="mamba2",
        headdim=32,
        gate_norm="gate_only",
        residual_in_fp32=False,
        d_state=32,
        **{k: v for k, v in BASE.items() if k != "d_state"},
    ),
    "mamba1": SSMConfig(arch="mamba1", **BASE),
    "falcon-mamba": SSMConfig(arch="mamba1", bcdt_rms_eps=1e-6, **BASE),
    "jamba-mixer": SSMConfig(arch="mamba1", bcdt_rms_eps=1e-6, bcdt_norm_weights=True, conv_bias=False, **BASE),
}


def _model(cfg: SSMConfig) -> MambaLM:
    model = random_mamba(cfg, TorchOps(), seed=3)
    with torch.no_grad():  # every weight away from its initial value, so each one shows in the result
        generator = torch.Generator().manual_seed(4)
        for name, p in model.named_parameters():
            if name.endswith(("A_log", "dt_bias")):
                continue
            p.add_(0.2 * torch.randn(p.shape, generator=generator))
    return model.to(DEVICE)


def _assert_steps_equal(
    model: LayerStack, prompt: torch.Tensor, steps: int, fused_ops: type[TorchOps] = FusedReferenceOps
) -> None:
    """Read ``prompt``, then step greedily on the reference ops and on the fused kernels from copies of the same
    states: equal logits and states after every step."""
    unfused = model.new_cache(prompt.shape[0])
    model.read(prompt.to(DEVICE), unfused)
    fused = _clone(unfused)
    tokens = prompt[:, -1].to(DEVICE)
    for _ in range(steps):
        model.ops = TorchOps()
        expected = model.step(tokens, unfused)
        model.ops = fused_ops()
        torch.testing.assert_close(model.step(tokens, fused), expected, atol=TOLERANCE, rtol=TOLERANCE)
        for mine, theirs in zip(fused.conv + fused.ssm, unfused.conv + unfused.ssm, strict=True):
            torch.testing.assert_close(mine, theirs, atol=TOLERANCE, rtol=TOLERANCE)
        tokens = expected.argmax(-1)


def _clone(cache: SSMCache) -> SSMCache:
    return dataclasses.replace(
        cache,
        conv=[c.clone() for c in cache.conv],
        ssm=[s.clone() for s in cache.ssm],
        keys=[k.clone() for k in cache.keys],
        values=[v.clone() for v in cache.values],
    )


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_fused_step_equals_the_unfused_step(name: str, batch: int) -> None:
    model = _model(CONFIGS[name])
    generator = torch.Generator().manual_seed(5)
    _assert_steps_equal(model, torch.randint(0, model.cfg.vocab_size, (batch, 6), generator=generator), steps=4)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_fused_step_multiplying_transposed_equals_the_unfused_step(name: str) -> None:
    """The same with batches' products computed transposed (``swap_ab``): 5 rows in tiles of 16, output blocks
    of 64 against projections of 16 to 290 outputs, so ragged edges are crossed."""
    model = _model(CONFIGS[name])
    generator = torch.Generator().manual_seed(6)
    prompt = torch.randint(0, model.cfg.vocab_size, (5, 6), generator=generator)
    _assert_steps_equal(model, prompt, steps=3, fused_ops=FusedTransposedOps)


@pytest.mark.parametrize(
    ("tiles", "problem"),
    [
        ((4, 8, 32, False), "multiply with tl.dot"),
        ((8, 32, 64, True), "at least 16 rows"),
        ((1, 8, 32, False, 4, 1, True), "swap_ab needs use_dot"),
    ],
)
def test_tiles_the_kernels_cannot_run_are_refused(tiles: tuple[Any, ...], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        MatVecShape(*tiles)


def test_a_wrapped_projection_takes_the_unfused_step() -> None:
    """A LoRA adapter wraps the projection in another module; the fused kernels would skip it."""

    class Wrapped(torch.nn.Module):
        def __init__(self, inner: torch.nn.Linear) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x) * 2.0

    model = _model(CONFIGS["mamba2"])
    model.ops = FusedReferenceOps()
    mixer = model.backbone.layers[0].mixer
    fused = fused_step_ops(model.ops, 1)
    assert fused is not None and mixer.fuses_with(fused)
    mixer.in_proj = Wrapped(mixer.in_proj)
    assert not mixer.fuses_with(fused)
    tokens = torch.tensor([1], device=DEVICE)
    cache = model.new_cache(1)
    got = model.step(tokens, cache)
    model.ops = TorchOps()
    torch.testing.assert_close(got, model.step(tokens, model.new_cache(1)), atol=TOLERANCE, rtol=TOLERANCE)


def _consecutive_mamba_layers(name: str, **changes: object) -> tuple[str, dict[str, object]]:
    """A test family's config with Mamba layers side by side, where one layer's last residual add runs in the
    next one's first kernel."""
    from test_hybrid_families import MODELS

    model_type, config = MODELS[name]
    return model_type, {**config, **changes}


HYBRIDS = {
    "granite-mamba-mamba": lambda: _consecutive_mamba_layers(
        "granite-dense-nope", num_hidden_layers=4, layer_types=["mamba", "mamba", "attention", "mamba"]
    ),
    "nemotron-h-mamba-mamba": lambda: _consecutive_mamba_layers(
        "nemotron-h", num_hidden_layers=5, hybrid_override_pattern="MM*MM"
    ),
}


@pytest.mark.parametrize(
    "name",
    ["granite-dense-nope", "bamba", "nemotron-h", "jamba", "falcon-h1", "zamba2", *HYBRIDS],
)
def test_a_hybrid_steps_its_mamba_layers_through_the_fused_kernels(name, tmp_path, offline_tokenizer) -> None:
    """Mamba-only layers take the layer's norm into the fused kernels, and the residual add the layer before left
    pending; the others (Falcon-H1's parallel layers, Zamba2's shared ones) the fused mixer step after the norm."""
    from hf_families import hf_model
    from test_hybrid_families import MODELS

    from mamba_router.models.registry import load_ssm_checkpoint

    model_type, config = HYBRIDS[name]() if name in HYBRIDS else MODELS[name]
    hf_model(model_type, len(offline_tokenizer), config, seed=6).save_pretrained(tmp_path)
    model = load_ssm_checkpoint(tmp_path, TorchOps()).model.to(DEVICE)
    _assert_steps_equal(model, torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(7)), steps=3)


def test_which_steps_take_the_fused_kernels() -> None:
    """The measured rules: one row, every Mamba-1 and Mamba-2 mixer with plain projections and a width-4 conv."""
    kernels = FusedStepKernels()
    assert kernels.fuses(1) and not kernels.fuses(2)
    with torch.device("meta"):
        for arch in ("mamba2", "mamba1"):
            model = MambaLM(SSMConfig(arch=arch, d_model=2048, n_layer=1, vocab_size=8), TorchOps()).to(torch.bfloat16)
            assert model.backbone.layers[0].mixer.fuses_with(kernels)  # the 1.4B shape
            wide = MambaLM(SSMConfig(arch=arch, d_model=64, n_layer=1, vocab_size=8, d_conv=3), TorchOps())
            assert not wide.backbone.layers[0].mixer.fuses_with(kernels)
