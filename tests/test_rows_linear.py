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
