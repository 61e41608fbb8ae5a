"""A Mamba-1 read that continues from a state (a question about a cached document), in one Triton kernel a layer.

mamba-ssm's Mamba-1 scan starts from zeros. The scan is linear in its state, so the read runs from zeros and the
initial state's part is added: at position t, ``C_t . (exp(A * (dt_1 + ... + dt_t)) * h0)``, gated by silu(z) after.
In PyTorch that is a cumulative sum, an exponential, a product and a contraction per chunk of positions (about ten
launches a layer: 11 ms on a 24-layer FalconMamba-shaped model for a 24-token question on the H100, where reading the
question from no state took 20 ms). Here one program per block of channels walks the positions, keeping its block
of the carried state in registers: one launch, O(length) steps, for short continuations
(``kernel_ops.STATE_CARRY_MAX_POSITIONS``);
longer ones keep the chunked PyTorch form, whose work runs in parallel over positions.

Shapes: b rows, d channels, n state size, l positions; x-like tensors channels first (b, d, l), C (b, n, l).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mamba_router_cuda.triton_math import silu, softplus


@triton.jit
def _carry_kernel(
    y_ptr,
    dt_ptr,
    dt_bias_ptr,
    a_ptr,
    c_ptr,
    z_ptr,
    h_ptr,
    out_ptr,
    h_out_ptr,
    d_inner,
    state_size,
    length,
    stride_yb,
    stride_yd,
    stride_yl,
    stride_tb,
    stride_td,
    stride_tl,
    stride_ad,
    stride_cb,
    stride_cn,
    stride_cl,
    stride_zb,
    stride_zd,
    stride_zl,
    stride_hb,
    stride_hd,
    stride_ob,
    stride_od,
    stride_ol,
    HAS_DT_BIAS: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    pid_d = tl.program_id(0)
    row = tl.program_id(1)
    rd = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    rs = tl.arange(0, BLOCK_S)
    d_ok = rd < d_inner
    s_ok = rs < state_size
    sm = d_ok[:, None] & s_ok[None, :]
    a = tl.load(a_ptr + rd[:, None] * stride_ad + rs[None, :], mask=sm, other=0.0).to(tl.float32)
    h = tl.load(h_ptr + row * stride_hb + rd[:, None] * stride_hd + rs[None, :], mask=sm, other=0.0).to(tl.float32)
    bias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_DT_BIAS:
        bias = tl.load(dt_bias_ptr + rd, mask=d_ok, other=0.0).to(tl.float32)
    for t in range(length):
        dt = tl.load(dt_ptr + row * stride_tb + rd * stride_td + t * stride_tl, mask=d_ok, other=0.0).to(tl.float32)
        dt = softplus(dt + bias)
        h = h * tl.exp(a * dt[:, None])
        c = tl.load(c_ptr + row * stride_cb + rs * stride_cn + t * stride_cl, mask=s_ok, other=0.0).to(tl.float32)
        y = tl.load(y_ptr + row * stride_yb + rd * stride_yd + t * stride_yl, mask=d_ok, other=0.0).to(tl.float32)
        z = tl.load(z_ptr + row * stride_zb + rd * stride_zd + t * stride_zl, mask=d_ok, other=0.0).to(tl.float32)
        y += tl.sum(h * c[None, :], axis=1)
        gated = y * silu(z)
        tl.store(out_ptr + row * stride_ob + rd * stride_od + t * stride_ol, gated, mask=d_ok)
    tl.store(h_out_ptr + row * stride_hb + rd[:, None] * stride_hd + rs[None, :], h, mask=sm)


def carry_initial_state(
    y: torch.Tensor,
    dt: torch.Tensor,
    dt_bias: torch.Tensor | None,
    a: torch.Tensor,
    c: torch.Tensor,
    z: torch.Tensor,
    initial_state: torch.Tensor,
    out_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y + C . h_t) * silu(z)`` (in ``out_dtype``) and the initial state's part of the last state, float32 (b, d,
    n): ``y`` the ungated scan from zeros (b, d, l), ``dt`` before its softplus (and ``dt_bias``), ``a`` (d, n),
    ``c`` (b, n, l), ``z`` (b, d, l), ``initial_state`` (b, d, n)."""
    batch, d_inner, length = y.shape
    state_size = a.shape[1]
    if a.stride(1) != 1:
        a = a.contiguous()
    h = initial_state.float().contiguous()
    h_out = torch.empty_like(h)
    out = torch.empty(batch, d_inner, length, device=y.device, dtype=out_dtype)
    block_s = triton.next_power_of_2(state_size)
    block_d = max(16, min(64, 4096 // block_s))
    grid = (triton.cdiv(d_inner, block_d), batch)
    _carry_kernel[grid](
        y,
        dt,
        dt_bias if dt_bias is not None else y,
        a,
        c,
        z,
        h,
        out,
        h_out,
        d_inner,
        state_size,
        length,
        *y.stride(),
        *dt.stride(),
        a.stride(0),
        *c.stride(),
        *z.stride(),
        h.stride(0),
        h.stride(1),
        *out.stride(),
        HAS_DT_BIAS=dt_bias is not None,
        BLOCK_D=block_d,
        BLOCK_S=block_s,
        num_warps=4,
    )
    return out, h_out
