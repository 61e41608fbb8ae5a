"""A projection of a few rows (a decode step's batch: 2 to 64 sequences) in Triton, weights read once.

``out = x @ w.T + bias`` for x (rows, n_in) and w (n_out, n_in). With few rows the product is bound by reading the
weights, and a library GEMM tiles it as it would a large one: at 16 rows cuBLAS reads the 1.4B Mamba-2's in_proj at
about 2.3 TB/s and its out_proj at 1.6 (H100, 2026-12-06b). Here the product is computed transposed, ``out.T = w @
x.T``: the weights' output channels are the matrix-multiply's long side (64 or 128 a program, where the tensor cores'
tiles are efficient) and the batch's rows its short side (16 to 64). A projection with few output channels (an
out_proj) splits its inputs across programs as well (``split_k``), which add their float32 parts into a zeroed
float32 sum, rounded to the weights' dtype by a second small kernel.

Experimental: :mod:`benchmarks.bench_rows_linear` measures it against ``F.linear``; nothing calls it by default yet.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from mamba_router_cuda.fused_step import weight_tile


@dataclass(frozen=True)
class RowsTiles:
    """Tiles of one launch: ``block_n`` output channels and ``block_k`` inputs a program step, the rows padded to a
    power of two of at least 16; ``split_k`` programs share one block of outputs, each a slice of the inputs."""

    block_n: int
    block_k: int
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 4


@triton.jit
def _rows_linear_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    out_ptr,
    n_rows,
    n_out,
    n_in,
    k_per_split,
    stride_xb,
    stride_wn,
    stride_ob,
    HAS_BIAS: tl.constexpr,
    ATOMIC: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rb = tl.arange(0, BLOCK_B)
    n_ok = rn < n_out
    b_ok = rb < n_rows
    k_start = pid_k * k_per_split
    k_end = tl.minimum(k_start + k_per_split, n_in)
    acc = tl.zeros((BLOCK_N, BLOCK_B), dtype=tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        k_ok = rk < k_end
        w = weight_tile(w_ptr, rn, rk, n_ok, k_ok, stride_wn)
        xt = tl.load(x_ptr + rb[None, :] * stride_xb + rk[:, None], mask=k_ok[:, None] & b_ok[None, :], other=0.0)
        acc += tl.dot(w, xt.to(w.dtype), input_precision=PRECISION)
    if HAS_BIAS:
        if pid_k == 0:
            acc += tl.load(bias_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[:, None]
    at = out_ptr + rb[None, :] * stride_ob + rn[:, None]
    mask = n_ok[:, None] & b_ok[None, :]
    if ATOMIC:
        tl.atomic_add(at, acc, mask=mask)
    else:
        tl.store(at, acc, mask=mask)


def rows_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, tiles: RowsTiles | None = None
) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for x of 1 to 64 rows (2-D), in the weights' dtype."""
    rows, n_in = x.shape
    n_out = weight.shape[0]
    if rows > 64:
        raise ValueError(f"rows_linear takes at most 64 rows, got {rows}")
    if weight.stride(1) != 1 or x.stride(1) != 1:
        raise ValueError("rows_linear takes inputs and weights contiguous along their inputs")
    tiles = tiles or rows_tiles(rows, n_out, n_in)
    split = max(1, tiles.split_k)
    k_per_split = triton.cdiv(triton.cdiv(n_in, split), tiles.block_k) * tiles.block_k
    split = triton.cdiv(n_in, k_per_split)
    atomic = split > 1
    out = (
        torch.zeros(rows, n_out, device=x.device, dtype=torch.float32)
        if atomic
        else torch.empty(rows, n_out, device=x.device, dtype=weight.dtype)
    )
    grid = (triton.cdiv(n_out, tiles.block_n), split)
    _rows_linear_kernel[grid](
        x,
        weight,
        bias if bias is not None else weight,
        out,
        rows,
        n_out,
        n_in,
        k_per_split,
        x.stride(0),
        weight.stride(0),
        out.stride(0),
        HAS_BIAS=bias is not None,
        ATOMIC=atomic,
        BLOCK_B=max(16, triton.next_power_of_2(rows)),
        BLOCK_N=tiles.block_n,
        BLOCK_K=tiles.block_k,
        PRECISION="ieee",  # float32 products stay exact (no TF32)
        num_warps=tiles.num_warps,
        num_stages=tiles.num_stages,
    )
    return out.to(weight.dtype) if atomic else out


def rows_tiles(rows: int, n_out: int, n_in: int) -> RowsTiles:
    """Default tiles (not yet tuned on a GPU): a wide projection (4096 outputs or more) 32 output channels a program,
    unsplit (128 programs or more); a narrower one 64 a program, its inputs split into up to 8 slices so that there
    are about 256 programs."""
    if n_out >= 4096:
        return RowsTiles(32, 128)
    programs = triton.cdiv(n_out, 64)
    return RowsTiles(64, 128, max(1, min(8, 256 // programs)))


__all__ = ["RowsTiles", "rows_linear", "rows_tiles"]
