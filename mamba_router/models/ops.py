"""The ops interface: the numerics a Mamba layer stack asks of a backend.

A model family (:mod:`mamba_router.models.mamba`) is written once against :class:`SSMOps`; a backend supplies an
implementation: the plain-PyTorch reference (:class:`~mamba_router.models.torch_ops.TorchOps`, memory-flat, runs
anywhere) or mamba-ssm's kernels (``mamba_router_cuda.kernel_ops.KernelOps``). Projections are not ops: they stay
``nn.Linear`` modules called as modules, so LoRA adapters on them always take effect.

Attention (hybrid families) is an op too, so a backend may put a fused kernel behind it.

Shapes: b batch, l positions, d channels, h heads, p head dim, g groups, n state size, k conv width.
States: a conv state holds the last k-1 inputs of the convolution (b, channels, k-1) in the model's dtype; an SSM
state is (b, d, n) for Mamba-1 and (b, h, p, n) for Mamba-2, float32 or the model's dtype as the cache was made
(ops compute in float32 and store in the state's dtype; the final states they return are float32). ``initial_state=None`` means "start from
zeros" (a kernel may take a faster path then). Every op that reads a sequence returns the state after its last
position, so a long input can be read segment by segment and decoding continues from where reading stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from mamba_router.models.mamba_config import GateNorm

DtLimit = tuple[float, float]
NO_DT_LIMIT: DtLimit = (0.0, float("inf"))


@runtime_checkable
class SSMOps(Protocol):
    """What a backend implements so that every Mamba family runs on it."""

    name: str

    def add_rms_norm(
        self,
        x: torch.Tensor,
        residual: torch.Tensor | None,
        weight: torch.Tensor,
        eps: float,
        *,
        residual_in_fp32: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``r = x + residual`` (``x`` alone when None; float32 if ``residual_in_fp32``); returns
        (RMSNorm(r) * weight in x's dtype, r): the pre-norm residual stream of a block."""
        ...

    def gated_rms_norm(
        self,
        x: torch.Tensor,
        z: torch.Tensor,
        weight: torch.Tensor,
        eps: float,
        group_size: int,
        norm_before_gate: bool = False,
    ) -> torch.Tensor:
        """RMSNorm of ``x * silu(z)`` over groups of ``group_size`` channels, times ``weight`` (Mamba-2's norm); with
        ``norm_before_gate``, the norm of ``x`` times ``silu(z)`` (Falcon-H1's)."""
        ...

    def causal_conv(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, initial_state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Depthwise causal convolution then SiLU. x: (b, d, l); weight: (d, k); initial_state: (b, d, k-1).
        Returns (b, d, l) and the state after the last position (b, d, k-1)."""
        ...

    def conv_step(
        self, x: torch.Tensor, state: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        """One position of :meth:`causal_conv`. x: (b, d); ``state`` (b, d, k-1) is updated in place."""
        ...

    def selective_scan(
        self,
        x: torch.Tensor,
        dt: torch.Tensor,
        a: torch.Tensor,
        b: torch.Tensor,
        c: torch.Tensor,
        d: torch.Tensor,
        z: torch.Tensor,
        dt_bias: torch.Tensor | None,
        chunk_size: int,
        initial_state: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mamba-1. x, dt, z: (b, d, l), ``dt`` before bias and softplus; a: (d, n) negative; b, c: (b, n, l);
        d, dt_bias: (d) (the bias is added in float32; None when ``dt`` has it already).
        ``chunk_size`` bounds the memory of a plain implementation (a kernel may ignore it).
        Returns y = (scan + d * x) * silu(z): (b, d, l), and the final state (b, d, n) in float32."""
        ...

    def ssd_scan(
        self,
        x: torch.Tensor,
        dt: torch.Tensor,
        a: torch.Tensor,
        b: torch.Tensor,
        c: torch.Tensor,
        d: torch.Tensor,
        dt_bias: torch.Tensor,
        dt_limit: DtLimit,
        chunk_size: int,
        initial_state: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mamba-2 (SSD). x: (b, l, h, p); dt: (b, l, h) before bias and softplus; a, d, dt_bias: (h);
        b, c: (b, l, g, n). Returns y = scan + d * x: (b, l, h, p), and the final state (b, h, p, n) in float32."""
        ...

    def state_step(
        self,
        state: torch.Tensor,
        x: torch.Tensor,
        dt: torch.Tensor,
        a: torch.Tensor,
        b: torch.Tensor,
        c: torch.Tensor,
        d: torch.Tensor,
        z: torch.Tensor | None,
        dt_bias: torch.Tensor | None,
        dt_limit: DtLimit,
    ) -> torch.Tensor:
        """One position of either scan; ``state`` is updated in place.
        Mamba-1: state (b, d, n); x, dt, z: (b, d); a: (d, n); b, c: (b, n); d, dt_bias: (d) (bias may be None).
        Mamba-2: state (b, h, p, n); x: (b, h, p); dt: (b, h); a, d, dt_bias: (h); b, c: (b, g, n); z None.
        ``dt`` is before bias and softplus. Returns y (with the d skip, gated by silu(z) when z is given)."""
        ...

    def attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
    ) -> torch.Tensor:
        """Scaled dot-product attention of a hybrid's attention layer. q: (b, heads, l, e); k, v: (b, kv_heads, t, e)
        with heads a multiple of kv_heads (grouped queries). ``mask`` None: causal, the queries being the last l of
        t = l positions; else (b, 1, l, t), True where a query may look. Returns (b, heads, l, e)."""
        ...


@dataclass(frozen=True)
class ConvProjection:
    """A projection of a conv's output, summed as the conv's channels are computed: ``out`` (b, n), float32, holds
    what to add to (zeros, or a bias) and receives ``conv output (as stored) @ weight^T``; ``weight`` (n, channels).
    Mamba-1's ``x_proj`` reads all of x: a kernel that computes x in parts adds each part's share here."""

    weight: torch.Tensor
    out: torch.Tensor


@dataclass(frozen=True)
class ConvUpdate:
    """A one-position causal conv (then SiLU) on output channels ``first .. first + channels`` of a projection.

    ``state`` (b, channels, k-1) is updated in place; ``weight`` (channels, k); ``bias`` (channels) or None;
    ``project``: a projection of the conv's output to sum on the way (None: none)."""

    state: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None
    first: int
    project: ConvProjection | None = None


class FusedStepOps(Protocol):
    """Fused kernels for one decoding step of a Mamba mixer (optional: a backend's ops offer them as
    ``ops.fused_step``; the mixers fall back to the ops above where it is None, or where :meth:`fuses` says no for
    the batch). Rows are (b, channels). ``conv_width``: the causal conv width the kernels take."""

    conv_width: int

    def fuses(self, rows: int) -> bool:
        """True when a step of ``rows`` sequences should take these kernels (they measured faster)."""
        ...

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
        """``linear(RMSNorm(x * scale + residual))`` (no norm when ``norm_weight`` is None; ``scale`` only with a
        residual) with ``conv`` applied to its channels; returns the projection and the residual stream
        ``x * scale + residual`` (None without a norm, or when ``keep_residual`` is False)."""
        ...

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
        """Mamba-2's state update from ``in_proj``'s output after the conv (z, x, B, C, dt side by side; the widths
        follow from ``state`` (b, h, p, n) and ``ngroups``); returns y with the D skip (b, h * p)."""
        ...

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
    ) -> torch.Tensor:
        """Mamba-2's state update of ``state`` (b, h, p, n) in place from x (b, h * p), B and C (b, g * n) and the
        raw dt (b, h), any row strides; returns y with the D skip (b, h * p). The unfused step of a batch takes it
        too (the state is the batch's largest read)."""
        ...

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
        """``linear`` of y gated by silu(z) with Mamba-2's grouped RMS norm as ``gate_norm`` says."""
        ...

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
        """Mamba-1's step from x (after the conv) and z side by side in ``xz`` and ``x_proj``'s output ``x_db`` (in
        the model's dtype, or float32 as a :class:`ConvProjection` sums it: then rounded to the model's dtype first):
        ``dt_proj`` (bias in float32), the B/C/dt norms when ``bcdt_eps`` is set, the state update, D and the gate."""
        ...


def fused_step_ops(ops: SSMOps, rows: int) -> FusedStepOps | None:
    """The fused decode-step kernels a backend's ops offer for a step of ``rows`` sequences, or None (then the
    mixers compose the ops above)."""
    fused: FusedStepOps | None = getattr(ops, "fused_step", None)  # no isinstance: a Protocol check walks every
    return fused if fused is not None and fused.fuses(rows) else None  # attribute, and this runs per layer per step
