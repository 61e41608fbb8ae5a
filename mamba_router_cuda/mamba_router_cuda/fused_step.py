"""Fused one-token decode steps for the Mamba-1 and Mamba-2 mixers, in Triton.

The unfused step of a Mamba-2 layer is six to eight kernels (residual add and norm, ``in_proj``, conv update, state
update, gated norm, ``out_proj``, small elementwise ops); at batch 1 each costs a few microseconds whatever its size,
and a 24-layer step spends most of its time between kernels rather than reading weights. Here a layer is three:

1. ``norm_linear``: residual add (of x times a scale: a hybrid's residual multiplier), RMS norm and ``in_proj`` in
   one matrix-vector kernel; its epilogue runs the causal
   conv (and its SiLU) on the conv channels of the projection and updates their conv state in place. Each program
   owns its output channels, so each conv state row is read and written by one program only. The norm's 1/rms is
   one factor per row, so it scales the product: the input is read once, in the same pass as the weights.
2. ``mamba2_state_step``: softplus(dt), the state update, the C readout and the D skip, per (row, head, head-dim
   block), reading x, B, C and dt straight from the projection.
3. ``gated_norm_linear``: the gate silu(z), the grouped RMS norm and ``out_proj`` in one matrix-vector kernel (each
   group's 1/rms scales that group's part of the product, again in one pass).

Mamba-1 is three (and the start of a sum): ``norm_linear`` (conv on x, and ``x_proj``: its few outputs read all of x,
so each program adds its block of x channels' share into a float32 sum with atomic adds, instead of a library GEMV
of its own), ``mamba1_state_step`` (``dt_proj``, FalconMamba's/Jamba's B/C/dt norms, the state update and the gate,
per block of channels) and ``out_proj`` (``norm_linear`` without a norm). The sum's order differs from a GEMV's, so
float32 results differ from the unfused step's within rounding.

Numerics follow the unfused kernels (mamba-ssm's ``layer_norm_fn``, ``causal_conv1d_update``,
``selective_state_update``, ``rmsnorm_fn``): float32 arithmetic, values rounded to the model's dtype where the unfused
path stores them (the projections), states stored in their own dtype; the normed inputs stay float32 at batch 1
(bf16 models differ from the unfused step within bf16 rounding). Matrix products use ``tl.dot`` (exact float32
products for float32 models) from batch 2, a multiply-and-sum at batch 1. (A float32 product on the CUDA cores for
2-16 rows was tried: 13.0 us against 7.4 for tl.dot on the 130M in_proj at 4 rows, H100.)

Where it is used (:meth:`FusedStepKernels.fuses`): one row, where it measured faster than the unfused step; the
figures are beside :data:`MAX_FUSED_ROWS` and in ``benchmarks/results/``. The Mamba-2 state kernel serves batches too
(``mamba2_state_update``, called by the unfused step of real-mamba's ops): at 8-64 rows the state is the step's
largest read, and its tiles (:func:`mamba2_state_tiles`) read it at 1.5x the bandwidth of mamba-ssm's kernel.

Shapes: b rows (batch), k inputs, n outputs of a projection; conv states (b, channels, 3): the fused path takes the
width-4 convolution every Mamba family uses (others take the unfused step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from mamba_router.models.ops import NO_DT_LIMIT, ConvProjection, ConvUpdate, DtLimit, GateNorm
from mamba_router_cuda.grid_dependency import wait_then_release
from mamba_router_cuda.triton_math import silu, softplus

CONV_WIDTH = 4  # the only conv width the fused step takes
# Batches above this take the unfused step. Measured on the H100 (2026-12-06b-h100-fused-rows-decode.json, every
# batch fused): Mamba-2 130M 0.965 / 1.203 / 4.111 ms a step at 4 / 16 / 64 rows against 0.582 / 0.870 / 1.535
# unfused (the gated out_proj's tl.dot tiles: 33-48 us against 7 at 16 rows); Mamba-1 130M 0.612 against 0.681 at
# 4 rows, 0.779 against 0.726 at 16.
MAX_FUSED_ROWS = 1
_MODES: dict[GateNorm, int] = {"norm_of_gated": 0, "gate_of_norm": 1, "gate_only": 2}


@dataclass(frozen=True)
class MatVecShape:
    """Tile sizes of one matrix-vector launch (rows of the batch, output channels, inputs per iteration) and its
    warps and pipeline stages. Without ``use_dot`` a tile is one row's multiply-and-sum (``block_b`` 1)."""

    block_b: int
    block_n: int
    block_k: int
    use_dot: bool
    num_warps: int = 4
    num_stages: int = 3
    swap_ab: bool = False  # tl.dot computes the product transposed: outputs on the long side, rows on the short

    def __post_init__(self) -> None:
        if not self.use_dot and self.block_b != 1:
            raise ValueError(f"tiles of {self.block_b} rows multiply with tl.dot (use_dot=True)")
        if self.swap_ab and not self.use_dot:
            raise ValueError("only tl.dot tiles compute the product transposed (swap_ab needs use_dot)")
        if self.use_dot and self.block_b < 16:
            raise ValueError(f"tl.dot tiles take at least 16 rows (got block_b={self.block_b})")

    @property
    def precision(self) -> str:
        """tl.dot's input precision: float32 products stay exact (no TF32)."""
        return "ieee"


def matvec_shape(rows: int, n_out: int, n_in: int) -> MatVecShape:
    """Tiles for a (rows x n_in) @ (n_in x n_out) product. One row: the best of a sweep on the H200
    (``benchmarks/bench_fused_kernels.py``, weights read from memory, not the L2 cache; 130M, 1.4B and 2.8B Mamba-2
    in_proj/out_proj): a widening projection (in_proj) takes blocks of 16 outputs and strides of 256-512 inputs, a
    narrowing one (out_proj) whole rows of 2048 inputs (512 where the row is not a multiple of 2048, 1024 on eight
    warps for rows of 3072: a sweep on the H100 of 2026-12-06) of a few outputs.
    ``tl.dot`` tiles at one row measured 3-10x slower. Several rows: ``tl.dot`` tiles."""
    if rows == 1:
        if n_out >= n_in:
            return MatVecShape(1, 16, 512 if n_in < 1536 else 256, False, 4, 1)
        if n_in <= 2048 or n_in % 2048 == 0:
            return MatVecShape(1, 4, min(2048, triton.next_power_of_2(n_in)), False, 4, 1)
        if n_in == 3072:  # Granite-4.0-H-1B's out_proj on the H100: 7.0 us against 8.9 for (8, 512) on 4 warps
            return MatVecShape(1, 4, 1024, False, 8, 1)
        return MatVecShape(1, 8, 512, False, 4, 1)
    block_b = min(64, triton.next_power_of_2(max(rows, 16)))
    return MatVecShape(block_b, 32, 128, True, 4, 4)


@dataclass(frozen=True)
class StateTiles:
    """Tiles of one Mamba-2 state-update launch: ``block_p`` head-dim rows of a head's state a program, on
    ``num_warps`` warps."""

    block_p: int
    num_warps: int


def mamba2_state_tiles(head_dim: int, state_size: int) -> StateTiles:
    """32 head-dim rows of a 128-wide state (4,096 elements) a program on 8 warps: within 0.5 us of the best of a
    sweep at every Mamba-2 shape (130M to Codestral) and batch (1 to 64) on the H100, and 1.5-1.6x faster than
    512-element programs from 8 rows on (2.8-2.9 TB/s at 64 rows: 2026-12-06d-h100-state-update.json)."""
    block_s = triton.next_power_of_2(state_size)
    return StateTiles(min(triton.next_power_of_2(head_dim), max(1, 4096 // block_s)), 8)


@triton.jit
def _weight_tile(w_ptr, rn, rk, n_ok, k_ok, stride_wn):
    """The weight tile w (N, K) of outputs ``rn`` and inputs ``rk``."""
    return tl.load(
        w_ptr + rn[:, None] * stride_wn + rk[None, :],
        mask=n_ok[:, None] & k_ok[None, :],
        other=0.0,
        eviction_policy="evict_first",  # each weight is read once a step: keep the activations cached
    )


@triton.jit
def _zero_product(BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, USE_DOT: tl.constexpr,
                  SWAP_AB: tl.constexpr):  # fmt: skip
    """The float32 accumulator :func:`_accumulate_tile` adds into: (B, N), (N, B) transposed, or (N, K) for one row."""
    if USE_DOT:
        if SWAP_AB:
            return tl.zeros((BLOCK_N, BLOCK_B), dtype=tl.float32)
        else:
            return tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    else:
        return tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)


@triton.jit
def _accumulate(acc, a, w_ptr, rn, rk, n_ok, k_ok, stride_wn, USE_DOT: tl.constexpr, SWAP_AB: tl.constexpr,
                PRECISION: tl.constexpr):  # fmt: skip
    """Loads the weight tile of outputs ``rn`` and inputs ``rk`` and adds its product (:func:`_accumulate_tile`)."""
    return _accumulate_tile(acc, a, _weight_tile(w_ptr, rn, rk, n_ok, k_ok, stride_wn), USE_DOT, SWAP_AB, PRECISION)


@triton.jit
def _accumulate_tile(acc, a, w, USE_DOT: tl.constexpr, SWAP_AB: tl.constexpr, PRECISION: tl.constexpr):
    """With USE_DOT acc (B, N) += a (B, K) @ w^T, or with SWAP_AB acc (N, B) += w @ a^T (the weights' outputs on the
    matrix unit's long side, the few rows on its short side); else (one row, B = 1) acc (N, K) += w * a, summed over
    K once at the end (:func:`_finish`): no reduction across threads inside the loop."""
    if USE_DOT:
        if SWAP_AB:
            acc += tl.dot(w, tl.trans(a.to(w.dtype)), input_precision=PRECISION)
        else:
            acc += tl.dot(a.to(w.dtype), tl.trans(w), input_precision=PRECISION)
    else:
        acc += w.to(tl.float32) * a.to(tl.float32)
    return acc


@triton.jit
def _finish(acc, USE_DOT: tl.constexpr, SWAP_AB: tl.constexpr):
    """The (B, N) product from :func:`_accumulate`'s accumulator."""
    if USE_DOT:
        if SWAP_AB:
            return tl.trans(acc)
        else:
            return acc
    else:
        return tl.sum(acc, axis=1)[None, :]


@triton.jit
def _norm_linear_kernel(
    x_ptr,
    res_ptr,
    res_out_ptr,
    norm_w_ptr,
    w_ptr,
    bias_ptr,
    out_ptr,
    conv_state_ptr,
    conv_w_ptr,
    conv_b_ptr,
    xp_w_ptr,
    xp_out_ptr,
    n_rows,
    n_out,
    n_in,
    eps,
    x_scale,
    conv_first,
    conv_count,
    n_xp,
    stride_xb,
    stride_rb,
    stride_rob,
    stride_wn,
    stride_ob,
    stride_sb,
    stride_sc,
    stride_sk,
    stride_cwc,
    stride_cwk,
    stride_xpw,
    stride_xpo,
    HAS_NORM: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    WRITE_RESIDUAL: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_CONV: tl.constexpr,
    HAS_CONV_BIAS: tl.constexpr,
    HAS_XPROJ: tl.constexpr,
    BLOCK_XP: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    USE_DOT: tl.constexpr,
    SWAP_AB: tl.constexpr,
    PRECISION: tl.constexpr,
    USE_GDC: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_b = tl.program_id(1)
    rb = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    b_ok = rb < n_rows
    n_ok = rn < n_out
    if USE_GDC:  # the first weight tile comes in while the kernel before finishes (see grid_dependency)
        rk_first = tl.arange(0, BLOCK_K)
        w_first = _weight_tile(w_ptr, rn, rk_first, n_ok, rk_first < n_in, stride_wn)
        wait_then_release()
    acc = _zero_product(BLOCK_B, BLOCK_N, BLOCK_K, USE_DOT, SWAP_AB)
    squares = tl.zeros((BLOCK_B,), dtype=tl.float32)
    for k0 in range(0, n_in, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        k_ok = rk < n_in
        m = b_ok[:, None] & k_ok[None, :]
        v = tl.load(x_ptr + rb[:, None] * stride_xb + rk[None, :], mask=m, other=0.0).to(tl.float32)
        if HAS_NORM:
            if HAS_RESIDUAL:
                v = v * x_scale + tl.load(res_ptr + rb[:, None] * stride_rb + rk[None, :], mask=m, other=0.0).to(
                    tl.float32
                )
            if WRITE_RESIDUAL and pid_n == 0:
                tl.store(res_out_ptr + rb[:, None] * stride_rob + rk[None, :], v, mask=m)
            squares += tl.sum(v * v, axis=1)
            v = v * tl.load(norm_w_ptr + rk, mask=k_ok, other=0.0).to(tl.float32)[None, :]
        if USE_GDC:
            if k0 == 0:
                w = w_first
            else:
                w = _weight_tile(w_ptr, rn, rk, n_ok, k_ok, stride_wn)
        else:
            w = _weight_tile(w_ptr, rn, rk, n_ok, k_ok, stride_wn)
        acc = _accumulate_tile(acc, v, w, USE_DOT, SWAP_AB, PRECISION)
    acc = _finish(acc, USE_DOT, SWAP_AB)
    if HAS_NORM:  # the norm's 1/rms is one factor per row: applied to the product, so x is read once
        acc = acc * (1.0 / tl.sqrt(squares / n_in + eps))[:, None]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    out = acc
    if HAS_CONV:
        channel = rn - conv_first
        is_conv = (channel >= 0) & (channel < conv_count) & n_ok
        cm = b_ok[:, None] & is_conv[None, :]
        new = acc.to(out_ptr.dtype.element_ty).to(tl.float32)  # the conv reads the projection as stored
        at = conv_state_ptr + rb[:, None] * stride_sb + channel[None, :] * stride_sc
        s0 = tl.load(at, mask=cm, other=0.0)
        s1 = tl.load(at + stride_sk, mask=cm, other=0.0)
        s2 = tl.load(at + 2 * stride_sk, mask=cm, other=0.0)
        wat = conv_w_ptr + channel * stride_cwc
        conv = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
        if HAS_CONV_BIAS:
            conv += tl.load(conv_b_ptr + channel, mask=is_conv, other=0.0).to(tl.float32)[None, :]
        conv += tl.load(wat, mask=is_conv, other=0.0).to(tl.float32)[None, :] * s0.to(tl.float32)
        conv += tl.load(wat + stride_cwk, mask=is_conv, other=0.0).to(tl.float32)[None, :] * s1.to(tl.float32)
        conv += tl.load(wat + 2 * stride_cwk, mask=is_conv, other=0.0).to(tl.float32)[None, :] * s2.to(tl.float32)
        conv += tl.load(wat + 3 * stride_cwk, mask=is_conv, other=0.0).to(tl.float32)[None, :] * new
        tl.store(at, s1, mask=cm)
        tl.store(at + stride_sk, s2, mask=cm)
        tl.store(at + 2 * stride_sk, new, mask=cm)
        out = tl.where(is_conv[None, :], silu(conv), acc)
        if HAS_XPROJ:  # this block's share of the conv output's projection, added into the float32 sum
            if (pid_n * BLOCK_N < conv_first + conv_count) & ((pid_n + 1) * BLOCK_N > conv_first):
                xs = tl.where(cm, out.to(out_ptr.dtype.element_ty).to(tl.float32), 0.0)  # as the library GEMV reads it
                rj = tl.arange(0, BLOCK_XP)
                j_ok = rj < n_xp
                wxp = tl.load(
                    xp_w_ptr + rj[:, None] * stride_xpw + channel[None, :],
                    mask=j_ok[:, None] & is_conv[None, :],
                    other=0.0,
                )
                if USE_DOT:
                    part = tl.dot(xs.to(wxp.dtype), tl.trans(wxp), input_precision=PRECISION)
                else:
                    part = tl.sum(wxp.to(tl.float32) * xs, axis=1)[None, :]
                tl.atomic_add(
                    xp_out_ptr + rb[:, None] * stride_xpo + rj[None, :], part, mask=b_ok[:, None] & j_ok[None, :]
                )
    tl.store(out_ptr + rb[:, None] * stride_ob + rn[None, :], out, mask=b_ok[:, None] & n_ok[None, :])


@triton.jit
def _mamba2_state_kernel(
    x_ptr,
    b_ptr,
    c_ptr,
    dt_ptr,
    state_ptr,
    a_ptr,
    d_ptr,
    dt_bias_ptr,
    out_ptr,
    head_dim,
    state_size,
    heads_per_group,
    dt_min,
    dt_max,
    stride_xb,
    stride_bb,
    stride_cb,
    stride_db,
    stride_sb,
    stride_sh,
    stride_sp,
    stride_sn,
    stride_ob,
    HAS_DT_LIMIT: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_S: tl.constexpr,
    USE_GDC: tl.constexpr,
):
    pid_p = tl.program_id(0)
    head = tl.program_id(1)
    row = tl.program_id(2)
    group = head // heads_per_group
    rp = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    rs = tl.arange(0, BLOCK_S)
    p_ok = rp < head_dim
    s_ok = rs < state_size
    at = state_ptr + row * stride_sb + head * stride_sh + rp[:, None] * stride_sp + rs[None, :] * stride_sn
    sm = p_ok[:, None] & s_ok[None, :]
    state = tl.load(at, mask=sm, other=0.0).to(tl.float32)  # last written by this layer's previous step
    if USE_GDC:
        wait_then_release()
    x = tl.load(x_ptr + row * stride_xb + head * head_dim + rp, mask=p_ok, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + row * stride_bb + group * state_size + rs, mask=s_ok, other=0.0).to(tl.float32)
    c = tl.load(c_ptr + row * stride_cb + group * state_size + rs, mask=s_ok, other=0.0).to(tl.float32)
    dt = tl.load(dt_ptr + row * stride_db + head).to(tl.float32) + tl.load(dt_bias_ptr + head).to(tl.float32)
    dt = softplus(dt)
    if HAS_DT_LIMIT:
        dt = tl.minimum(tl.maximum(dt, dt_min), dt_max)
    decay = tl.exp(dt * tl.load(a_ptr + head).to(tl.float32))
    state = state * decay + (b[None, :] * dt) * x[:, None]
    tl.store(at, state, mask=sm)
    y = tl.sum(state * c[None, :], axis=1) + tl.load(d_ptr + head).to(tl.float32) * x
    tl.store(out_ptr + row * stride_ob + head * head_dim + rp, y, mask=p_ok)


@triton.jit
def _gated_group_product(
    y_ptr,
    z_ptr,
    norm_w_ptr,
    w_ptr,
    rb,
    rn,
    b_ok,
    n_ok,
    lo,
    hi,
    eps,
    stride_yb,
    stride_zb,
    stride_wn,
    MODE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    USE_DOT: tl.constexpr,
    SWAP_AB: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One norm group's (inputs lo..hi) share of the (B, N) product, its 1/rms applied."""
    acc = _zero_product(BLOCK_B, BLOCK_N, BLOCK_K, USE_DOT, SWAP_AB)
    squares = tl.zeros((BLOCK_B,), dtype=tl.float32)
    for k0 in range(lo, hi, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        k_ok = rk < hi
        m = b_ok[:, None] & k_ok[None, :]
        v = tl.load(y_ptr + rb[:, None] * stride_yb + rk[None, :], mask=m, other=0.0).to(tl.float32)
        gate = silu(tl.load(z_ptr + rb[:, None] * stride_zb + rk[None, :], mask=m, other=0.0).to(tl.float32))
        if MODE == 0:
            v = v * gate
        if MODE != 2:
            squares += tl.sum(v * v, axis=1)
            v = v * tl.load(norm_w_ptr + rk, mask=k_ok, other=0.0).to(tl.float32)[None, :]
        if MODE != 0:
            v = v * gate
        acc = _accumulate(acc, v, w_ptr, rn, rk, n_ok, k_ok, stride_wn, USE_DOT, SWAP_AB, PRECISION)
    part = _finish(acc, USE_DOT, SWAP_AB)
    if MODE != 2:  # the group's 1/rms is one factor per row: applied to its part of the product
        part = part * (1.0 / tl.sqrt(squares / (hi - lo) + eps))[:, None]
    return part


@triton.jit
def _gated_norm_linear_kernel(
    y_ptr,
    z_ptr,
    norm_w_ptr,
    w_ptr,
    bias_ptr,
    out_ptr,
    n_rows,
    n_out,
    n_in,
    group_size,
    eps,
    stride_yb,
    stride_zb,
    stride_wn,
    stride_ob,
    MODE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ONE_GROUP: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    USE_DOT: tl.constexpr,
    SWAP_AB: tl.constexpr,
    PRECISION: tl.constexpr,
    USE_GDC: tl.constexpr,
):
    if USE_GDC:
        wait_then_release()
    pid_n = tl.program_id(0)
    pid_b = tl.program_id(1)
    rb = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    b_ok = rb < n_rows
    n_ok = rn < n_out
    if ONE_GROUP:  # one loop over the inputs, as in norm_linear (no loop around it)
        acc = _gated_group_product(
            y_ptr, z_ptr, norm_w_ptr, w_ptr, rb, rn, b_ok, n_ok, 0, n_in, eps, stride_yb, stride_zb, stride_wn,
            MODE, BLOCK_B, BLOCK_N, BLOCK_K, USE_DOT, SWAP_AB, PRECISION,
        )  # fmt: skip
    else:
        acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
        for lo in range(0, n_in, group_size):
            acc += _gated_group_product(
                y_ptr, z_ptr, norm_w_ptr, w_ptr, rb, rn, b_ok, n_ok, lo, lo + group_size, eps, stride_yb, stride_zb,
                stride_wn, MODE, BLOCK_B, BLOCK_N, BLOCK_K, USE_DOT, SWAP_AB, PRECISION,
            )  # fmt: skip
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + rb[:, None] * stride_ob + rn[None, :], acc, mask=b_ok[:, None] & n_ok[None, :])


@triton.jit
def _rms_normed(v, count, eps, weight_ptr, offsets, ok, HAS_WEIGHT: tl.constexpr, DTYPE: tl.constexpr):
    """F.rms_norm of a short vector in float32, as stored in DTYPE, times a weight when given (rounded again)."""
    v = (v * (1.0 / tl.sqrt(tl.sum(v * v, axis=0) / count + eps))).to(DTYPE).to(tl.float32)
    if HAS_WEIGHT:
        v = (v * tl.load(weight_ptr + offsets, mask=ok, other=0.0).to(tl.float32)).to(DTYPE).to(tl.float32)
    return v


@triton.jit
def _mamba1_state_kernel(
    xz_ptr,
    xdbl_ptr,
    dt_w_ptr,
    dt_bias_ptr,
    a_ptr,
    d_ptr,
    state_ptr,
    out_ptr,
    dt_norm_ptr,
    b_norm_ptr,
    c_norm_ptr,
    d_inner,
    rank,
    state_size,
    bcdt_eps,
    stride_xzb,
    stride_xdb,
    stride_dtw,
    stride_ad,
    stride_sb,
    stride_sd,
    stride_sn,
    stride_ob,
    HAS_BCDT_NORM: tl.constexpr,
    HAS_BCDT_WEIGHTS: tl.constexpr,
    HAS_DT_BIAS: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_S: tl.constexpr,
    USE_GDC: tl.constexpr,
):
    pid_d = tl.program_id(0)
    row = tl.program_id(1)
    dtype = xz_ptr.dtype.element_ty
    rd = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    rr = tl.arange(0, BLOCK_R)
    rs = tl.arange(0, BLOCK_S)
    d_ok = rd < d_inner
    r_ok = rr < rank
    s_ok = rs < state_size
    sm = d_ok[:, None] & s_ok[None, :]
    # weights, and the state last written by this layer's previous step: read before the wait
    wdt = tl.load(dt_w_ptr + rd[:, None] * stride_dtw + rr[None, :], mask=d_ok[:, None] & r_ok[None, :], other=0.0)
    a = tl.load(a_ptr + rd[:, None] * stride_ad + rs[None, :], mask=sm, other=0.0).to(tl.float32)
    at = state_ptr + row * stride_sb + rd[:, None] * stride_sd + rs[None, :] * stride_sn
    state = tl.load(at, mask=sm, other=0.0).to(tl.float32)
    if USE_GDC:
        wait_then_release()
    base = xdbl_ptr + row * stride_xdb  # x_proj's output, in the model's dtype or a float32 sum: rounded as stored
    low = tl.load(base + rr, mask=r_ok, other=0.0).to(dtype).to(tl.float32)
    b = tl.load(base + rank + rs, mask=s_ok, other=0.0).to(dtype).to(tl.float32)
    c = tl.load(base + rank + state_size + rs, mask=s_ok, other=0.0).to(dtype).to(tl.float32)
    if HAS_BCDT_NORM:
        low = _rms_normed(low, rank, bcdt_eps, dt_norm_ptr, rr, r_ok, HAS_BCDT_WEIGHTS, dtype)
        b = _rms_normed(b, state_size, bcdt_eps, b_norm_ptr, rs, s_ok, HAS_BCDT_WEIGHTS, dtype)
        c = _rms_normed(c, state_size, bcdt_eps, c_norm_ptr, rs, s_ok, HAS_BCDT_WEIGHTS, dtype)
    dt = tl.sum(wdt.to(tl.float32) * low[None, :], axis=1).to(dtype).to(tl.float32)  # dt_proj's output, as stored
    if HAS_DT_BIAS:
        dt += tl.load(dt_bias_ptr + rd, mask=d_ok, other=0.0).to(tl.float32)
    dt = softplus(dt)
    x = tl.load(xz_ptr + row * stride_xzb + rd, mask=d_ok, other=0.0).to(tl.float32)
    z = tl.load(xz_ptr + row * stride_xzb + d_inner + rd, mask=d_ok, other=0.0).to(tl.float32)
    state = state * tl.exp(a * dt[:, None]) + (b[None, :] * dt[:, None]) * x[:, None]
    tl.store(at, state, mask=sm)
    y = tl.sum(state * c[None, :], axis=1) + tl.load(d_ptr + rd, mask=d_ok, other=0.0).to(tl.float32) * x
    tl.store(out_ptr + row * stride_ob + rd, y * silu(z), mask=d_ok)


def _check_rows(*tensors: torch.Tensor) -> None:
    for tensor in tensors:
        if tensor.stride(-1) != 1:
            raise ValueError("the fused step reads rows with unit stride along the last dimension")


def _check_projection(project: ConvProjection, rows: int, channels: int) -> None:
    """The conv output's projection: a (n, channels) weight and a float32 (rows, n) sum to add into."""
    _check_rows(project.weight, project.out)
    if project.out.dtype != torch.float32 or tuple(project.out.shape) != (rows, project.weight.shape[0]):
        raise ValueError(f"the conv projection adds into a float32 ({rows}, {project.weight.shape[0]}) tensor")
    if project.weight.shape[1] != channels:
        raise ValueError(f"the conv projection's weight reads {channels} conv channels")


class FusedStepKernels:
    """:class:`~mamba_router.models.ops.FusedStepOps` in Triton (CUDA tensors; CPU tensors under ``TRITON_INTERPRET=1``)."""

    name = "triton-fused-step"
    conv_width = CONV_WIDTH

    def __init__(
        self,
        tiles: Callable[[int, int, int], MatVecShape] = matvec_shape,
        *,
        max_rows: int = MAX_FUSED_ROWS,
        pdl: bool = False,
    ) -> None:
        """``tiles``: the tile sizes of a (rows, n_out, n_in) matrix-vector launch (a benchmark sweeps them);
        ``max_rows``: the largest batch the fused step takes (:data:`MAX_FUSED_ROWS`); ``pdl``: launch with
        programmatic dependent launch (:mod:`~mamba_router_cuda.grid_dependency`; Hopper and newer only)."""
        self.tiles = tiles
        self.max_rows = max_rows
        self.pdl = pdl

    @property
    def pdl(self) -> bool:
        """True when the kernels launch with programmatic dependent launch (set before a CUDA graph is captured)."""
        return self._pdl

    @pdl.setter
    def pdl(self, on: bool) -> None:
        self._pdl = on
        self._launch: dict[str, bool] = {"launch_pdl": True} if on else {}

    def fuses(self, rows: int) -> bool:
        """True when a step of ``rows`` sequences takes the fused kernels."""
        return rows <= self.max_rows

    def norm_linear(
        self,
        x: torch.Tensor,
        residual: torch.Tensor | None,
        norm_weight: torch.Tensor | None,
        eps: float,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        *,
        residual_in_fp32: bool = False,
        conv: ConvUpdate | None = None,
        keep_residual: bool = True,
        scale: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        rows, n_in = x.shape
        n_out = weight.shape[0]
        if residual is not None and norm_weight is None:
            raise ValueError("a residual is added only before a norm")
        if scale != 1.0 and residual is None:
            raise ValueError("x is scaled only where a residual is added to it")
        _check_rows(x, weight, *(t for t in (residual,) if t is not None))
        out = torch.empty(rows, n_out, device=x.device, dtype=weight.dtype)
        res_out = None
        if norm_weight is not None and keep_residual:
            res_out = torch.empty(rows, n_in, device=x.device, dtype=torch.float32 if residual_in_fp32 else x.dtype)
        shape = self.tiles(rows, n_out, n_in)
        conv_state = conv.state if conv is not None else out
        conv_weight = conv.weight if conv is not None else out
        if conv is not None and (conv.weight.shape[-1] != CONV_WIDTH or conv.state.shape[-1] != CONV_WIDTH - 1):
            raise ValueError(f"the fused step takes a conv of width {CONV_WIDTH}")
        project = conv.project if conv is not None else None
        if project is not None:
            _check_projection(project, rows, conv_state.shape[1])
        grid = (triton.cdiv(n_out, shape.block_n), triton.cdiv(rows, shape.block_b))
        _norm_linear_kernel[grid](
            x,
            residual if residual is not None else x,
            res_out if res_out is not None else out,
            norm_weight if norm_weight is not None else x,
            weight,
            bias if bias is not None else weight,
            out,
            conv_state,
            conv_weight,
            conv.bias if conv is not None and conv.bias is not None else weight,
            project.weight if project is not None else weight,
            project.out if project is not None else out,
            rows,
            n_out,
            n_in,
            eps,
            float(scale),
            conv.first if conv is not None else 0,
            conv.state.shape[1] if conv is not None else 0,
            project.out.shape[1] if project is not None else 0,
            x.stride(0),
            residual.stride(0) if residual is not None else 0,
            res_out.stride(0) if res_out is not None else 0,
            weight.stride(0),
            out.stride(0),
            conv_state.stride(0),
            conv_state.stride(1),
            conv_state.stride(2) if conv is not None else 0,
            conv_weight.stride(0),
            conv_weight.stride(1),
            project.weight.stride(0) if project is not None else 0,
            project.out.stride(0) if project is not None else 0,
            HAS_NORM=norm_weight is not None,
            HAS_RESIDUAL=residual is not None,
            WRITE_RESIDUAL=res_out is not None,
            HAS_BIAS=bias is not None,
            HAS_CONV=conv is not None,
            HAS_CONV_BIAS=conv is not None and conv.bias is not None,
            HAS_XPROJ=project is not None,
            BLOCK_XP=max(16, triton.next_power_of_2(project.out.shape[1])) if project is not None else 16,
            BLOCK_B=shape.block_b,
            BLOCK_N=shape.block_n,
            BLOCK_K=shape.block_k,
            USE_DOT=shape.use_dot,
            SWAP_AB=shape.swap_ab,
            PRECISION=shape.precision,
            USE_GDC=self.pdl,
            num_warps=shape.num_warps,
            num_stages=shape.num_stages,
            **self._launch,
        )
        return out, res_out

    def mamba2_state_step(
        self,
        projected: torch.Tensor,
        state: torch.Tensor,
        a: torch.Tensor,
        d: torch.Tensor,
        dt_bias: torch.Tensor,
        dt_limit: DtLimit,
        *,
        ngroups: int,
    ) -> torch.Tensor:
        heads, head_dim, state_size = state.shape[1:]
        d_inner = heads * head_dim
        gn = ngroups * state_size
        _check_rows(projected)
        x, b, c, dt = projected[:, d_inner:].split([d_inner, gn, gn, heads], dim=-1)
        return self.mamba2_state_update(state, x, b, c, dt, a, d, dt_bias, dt_limit)

    def mamba2_state_update(
        self,
        state: torch.Tensor,
        x: torch.Tensor,
        b: torch.Tensor,
        c: torch.Tensor,
        dt: torch.Tensor,
        a: torch.Tensor,
        d: torch.Tensor,
        dt_bias: torch.Tensor,
        dt_limit: DtLimit,
        *,
        tiles: StateTiles | None = None,
    ) -> torch.Tensor:
        """Mamba-2's state update of ``state`` (b, h, p, n) in place from x (b, h * p), B and C (b, g * n) and the
        raw dt (b, h) (views of one projection are fine: rows are read by their strides); returns y with the D skip
        (b, h * p). ``tiles``: the launch's tiles (:func:`mamba2_state_tiles` by default; a benchmark sweeps them)."""
        rows = x.shape[0]
        heads, head_dim, state_size = state.shape[1:]
        ngroups = b.shape[-1] // state_size
        _check_rows(x, b, c, dt)
        out = torch.empty(rows, heads * head_dim, device=x.device, dtype=x.dtype)
        block_s = triton.next_power_of_2(state_size)
        chosen = tiles or mamba2_state_tiles(head_dim, state_size)
        grid = (triton.cdiv(head_dim, chosen.block_p), heads, rows)
        limited = dt_limit != NO_DT_LIMIT
        _mamba2_state_kernel[grid](
            x,
            b,
            c,
            dt,
            state,
            a,
            d,
            dt_bias,
            out,
            head_dim,
            state_size,
            heads // ngroups,
            float(dt_limit[0]) if limited else 0.0,
            float(dt_limit[1]) if limited else 0.0,
            x.stride(0),
            b.stride(0),
            c.stride(0),
            dt.stride(0),
            *state.stride(),
            out.stride(0),
            HAS_DT_LIMIT=limited,
            BLOCK_P=chosen.block_p,
            BLOCK_S=block_s,
            USE_GDC=self.pdl,
            num_warps=chosen.num_warps,
            **self._launch,
        )
        return out

    def gated_norm_linear(
        self,
        y: torch.Tensor,
        z: torch.Tensor,
        norm_weight: torch.Tensor | None,
        eps: float,
        group_size: int,
        gate_norm: GateNorm,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
    ) -> torch.Tensor:
        rows, n_in = y.shape
        n_out = weight.shape[0]
        mode = _MODES[gate_norm]
        if mode != 2 and norm_weight is None:
            raise ValueError(f"gate_norm {gate_norm!r} needs the norm's weight")
        _check_rows(y, z, weight)
        out = torch.empty(rows, n_out, device=y.device, dtype=weight.dtype)
        shape = self.tiles(rows, n_out, n_in)
        group = group_size if mode != 2 else n_in  # the gate alone: no norm, so one group of every input
        block_k = min(shape.block_k, triton.next_power_of_2(group))
        grid = (triton.cdiv(n_out, shape.block_n), triton.cdiv(rows, shape.block_b))
        _gated_norm_linear_kernel[grid](
            y,
            z,
            norm_weight if norm_weight is not None else y,
            weight,
            bias if bias is not None else weight,
            out,
            rows,
            n_out,
            n_in,
            group,
            eps,
            y.stride(0),
            z.stride(0),
            weight.stride(0),
            out.stride(0),
            MODE=mode,
            HAS_BIAS=bias is not None,
            ONE_GROUP=group >= n_in,
            BLOCK_B=shape.block_b,
            BLOCK_N=shape.block_n,
            BLOCK_K=block_k,
            USE_DOT=shape.use_dot,
            SWAP_AB=shape.swap_ab,
            PRECISION=shape.precision,
            USE_GDC=self.pdl,
            num_warps=shape.num_warps,
            num_stages=shape.num_stages,
            **self._launch,
        )
        return out

    def mamba1_state_step(
        self,
        xz: torch.Tensor,
        x_db: torch.Tensor,
        dt_weight: torch.Tensor,
        dt_bias: torch.Tensor | None,
        a: torch.Tensor,
        d: torch.Tensor,
        state: torch.Tensor,
        *,
        bcdt_eps: float | None = None,
        bcdt_weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        rows = xz.shape[0]
        d_inner, state_size = state.shape[1:]
        rank = dt_weight.shape[1]
        _check_rows(xz, x_db, dt_weight, a)
        out = torch.empty(rows, d_inner, device=xz.device, dtype=xz.dtype)
        block_s = triton.next_power_of_2(state_size)
        block_d = max(4, 512 // block_s)  # ~512 state elements a program, as for Mamba-2
        weights = bcdt_weights if bcdt_weights is not None else (xz, xz, xz)
        grid = (triton.cdiv(d_inner, block_d), rows)
        _mamba1_state_kernel[grid](
            xz,
            x_db,
            dt_weight,
            dt_bias if dt_bias is not None else d,
            a,
            d,
            state,
            out,
            *weights,
            d_inner,
            rank,
            state_size,
            float(bcdt_eps or 0.0),
            xz.stride(0),
            x_db.stride(0),
            dt_weight.stride(0),
            a.stride(0),
            *state.stride(),
            out.stride(0),
            HAS_BCDT_NORM=bcdt_eps is not None,
            HAS_BCDT_WEIGHTS=bcdt_weights is not None,
            HAS_DT_BIAS=dt_bias is not None,
            BLOCK_D=block_d,
            BLOCK_R=triton.next_power_of_2(rank),
            BLOCK_S=block_s,
            USE_GDC=self.pdl,
            **self._launch,
        )
        return out
