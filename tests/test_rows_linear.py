"""rows_linear (a projection of a few rows in Triton) equals F.linear: every split of the inputs, ragged shapes,
with and without a bias, in float32 and bf16.

On a GPU the kernel runs compiled; elsewhere under Triton's interpreter (``TRITON_INTERPRET=1``, CPU tensors).
Without Triton installed (CI) the module is skipped.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():  # must be set before the kernel is defined
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from mamba_router.models.mamba import random_mamba
from mamba_router.models.mamba_config import SSMConfig
from mamba_router.models.torch_ops import TorchOps
from mamba_router_cuda.rows_linear import RowsTiles, rows_linear, rows_tiles

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize(
    ("rows", "n_out", "n_in", "tiles"),
    [
        (1, 64, 128, None),
        (3, 100, 70, None),  # ragged: outputs and inputs not multiples of any tile
        (16, 256, 512, RowsTiles(64, 128, split_k=4)),
        (17, 130, 300, RowsTiles(32, 64, split_k=3)),  # the last split shorter than the others
        (64, 64, 256, RowsTiles(128, 64)),
    ],
)
@pytest.mark.parametrize("with_bias", [False, True])
def test_rows_linear_equals_f_linear_in_float32(rows, n_out, n_in, tiles, with_bias) -> None:
    generator = torch.Generator().manual_seed(rows * 1000 + n_in)
    x = torch.randn(rows, n_in, generator=generator).to(DEVICE)
    w = torch.randn(n_out, n_in, generator=generator).to(DEVICE)
    bias = torch.randn(n_out, generator=generator).to(DEVICE) if with_bias else None
    out = rows_linear(x, w, bias, tiles)
    assert out.dtype == torch.float32 and out.shape == (rows, n_out)
    torch.testing.assert_close(out, F.linear(x, w, bias), rtol=1e-5, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Triton 3.5's interpreter multiplies bf16 tiles wrongly")
def test_rows_linear_in_bf16_rounds_as_the_library_product() -> None:
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(8, 256, generator=generator).to(DEVICE, torch.bfloat16)
    w = (torch.randn(96, 256, generator=generator) * 0.05).to(DEVICE, torch.bfloat16)
    for split in (1, 4):
        out = rows_linear(x, w, tiles=RowsTiles(32, 64, split_k=split))
        assert out.dtype == torch.bfloat16
        exact = x.float() @ w.float().T
        torch.testing.assert_close(out.float(), exact, rtol=1e-2, atol=1e-2)


def test_default_tiles_split_narrow_projections_only() -> None:
    assert rows_tiles(16, 8512, 2048).split_k == 1  # a wide in_proj has programs enough
    assert rows_tiles(16, 2048, 4096).split_k > 1  # a narrow out_proj splits its inputs


def test_more_than_64_rows_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 64 rows"):
        rows_linear(torch.zeros(65, 8, device=DEVICE), torch.zeros(8, 8, device=DEVICE))


class RowsLinearOps(TorchOps):
    """The reference ops with a batched step's plain projections in rows_linear, as real-mamba's KernelOps takes
    them with MAMBA_ROUTER_ROWS_LINEAR on."""

    def __init__(self) -> None:
        self.products = 0  # projections computed by rows_linear

    def project(self, x: torch.Tensor, linear: torch.nn.Module) -> torch.Tensor:
        if type(linear) is torch.nn.Linear and 2 <= x.shape[0] <= 64:
            self.products += 1
            return rows_linear(x, linear.weight, linear.bias)
        return super().project(x, linear)


@pytest.mark.parametrize("arch", ["mamba1", "mamba2"])
def test_a_batched_step_with_rows_linear_projections_equals_the_reference(arch: str) -> None:
    """The mixers' step sends in_proj and out_proj through ops.project: the logits and states of 3 steps of a
    4-row batch equal the reference ops' (float32)."""
    cfg = SSMConfig(arch=arch, d_model=64, n_layer=2, vocab_size=97, d_state=16, headdim=16, bias=True)
    model = random_mamba(cfg, TorchOps(), seed=3).to(DEVICE)
    prompt = torch.randint(0, cfg.vocab_size, (4, 5), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    reference, ours = model.new_cache(4), model.new_cache(4)
    model.read(prompt, reference)
    model.read(prompt, ours)
    tokens = prompt[:, -1]
    for _ in range(3):
        model.ops = TorchOps()
        expected = model.step(tokens, reference)
        model.ops = ops = RowsLinearOps()
        torch.testing.assert_close(model.step(tokens, ours), expected, rtol=1e-4, atol=1e-4)
        assert ops.products == 2 * cfg.n_layer  # every layer's in_proj and out_proj
        for mine, theirs in zip(ours.ssm, reference.ssm, strict=True):
            torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)
        tokens = expected.argmax(-1)
