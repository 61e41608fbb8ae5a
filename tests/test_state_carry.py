"""The Mamba-1 state carry kernel (a read continuing from a cached state, mamba_router_cuda.state_carry) against a
plain sequential scan from that state: the zero-state read plus the carried part equals reading from the state.

Compiled on a GPU, under Triton's interpreter elsewhere; skipped where Triton is not installed (CI: the GPU run is
where it must pass).
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():  # must be set before the kernel is defined
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from mamba_router.models.torch_ops import selective_scan_chunks
from mamba_router_cuda.state_carry import carry_initial_state

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _scan(x, steps, a, b, c, state):
    """The reference scan (channels first in and out), without the D skip."""
    y, last = selective_scan_chunks(
        x.transpose(1, 2), steps.transpose(1, 2), a, b.transpose(1, 2), c.transpose(1, 2), state, 64
    )
    return y.transpose(1, 2), last


@pytest.mark.parametrize(
    ("batch", "channels", "state_size", "length", "with_bias"),
    [(1, 40, 16, 1, True), (2, 72, 12, 37, True), (1, 130, 16, 24, False)],
)
def test_the_carried_state_completes_a_read_from_zeros_into_a_read_from_the_state(
    batch, channels, state_size, length, with_bias
) -> None:
    g = torch.Generator().manual_seed(channels + length)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(DEVICE)

    x, dt = rand(batch, channels, length), rand(batch, channels, length, scale=0.5)
    xz = rand(batch, 2 * channels, length)
    z = xz[:, channels:]  # a view with the layer's strides, as the model passes it
    a = -torch.exp(rand(channels, state_size, scale=0.3))
    b, c = rand(batch, state_size, length), rand(batch, state_size, length)
    d = rand(channels)
    dt_bias = rand(channels, scale=0.2) if with_bias else None
    initial = rand(batch, channels, state_size)
    steps = F.softplus(dt + (dt_bias[:, None] if dt_bias is not None else 0.0))

    y_state, last_state = _scan(x, steps, a, b, c, initial)
    expected = (y_state + d[:, None] * x) * F.silu(z)
    y_zero, last_zero = _scan(x, steps, a, b, c, torch.zeros_like(initial))

    gated, carried = carry_initial_state(y_zero + d[:, None] * x, dt, dt_bias, a, c, z, initial, torch.float32)
    torch.testing.assert_close(gated, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(last_zero + carried, last_state, rtol=1e-4, atol=1e-5)
    assert gated.dtype == torch.float32 and carried.shape == initial.shape


def test_the_output_comes_back_in_the_models_dtype() -> None:
    x = torch.randn(1, 32, 5, device=DEVICE)
    a = -torch.ones(32, 16, device=DEVICE)
    c = torch.randn(1, 16, 5, device=DEVICE)
    gated, carried = carry_initial_state(x, x, None, a, c, x, torch.zeros(1, 32, 16, device=DEVICE), torch.bfloat16)
    assert gated.dtype == torch.bfloat16 and carried.dtype == torch.float32
    # within one bf16 rounding step (Triton's interpreter may round toward zero where the GPU rounds to nearest)
    torch.testing.assert_close(gated.float(), x * F.silu(x), rtol=8e-3, atol=1e-6)
