"""mamba-ssm's and causal-conv1d's CUDA/Triton kernels behind the ops interface (:class:`~mamba_router.models.ops.SSMOps`).

The same kernels, in the same order and layouts, that mamba-ssm's own ``Mamba``/``Mamba2`` modules call on their
unfused (state-returning) path: ``layer_norm_fn`` for the pre-norm residual stream, ``causal_conv1d_fn`` and
``causal_conv1d_update`` for the convolution, ``selective_scan_fn`` (Mamba-1), ``mamba_chunk_scan_combined``
(Mamba-2), ``selective_state_update`` for one decoding step and ``rmsnorm_fn`` for Mamba-2's gated norm. All of them
have backward passes, so LoRA trains on this path too.

Where causal-conv1d is missing the convolution falls back to the reference ops (a slower path, same numbers). Two
things mamba-ssm cannot do are added here: a Mamba-1 read that continues from a state (``selective_scan_fn`` starts
from zeros; the state's contribution is added exactly by superposition: in one Triton kernel a layer for short
continuations such as a question about a cached document, :mod:`mamba_router_cuda.state_carry`, else chunk by chunk
in PyTorch), and a Mamba-2 step with a ``dt_limit`` (applied before the kernel).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.nn.functional as F

from mamba_router.backends.selection import parse_switch
from mamba_router.errors import ConfigurationError
from mamba_router.models.ops import NO_DT_LIMIT, DtLimit, FusedStepOps
from mamba_router.models.torch_ops import TorchOps, grouped_attention, time_steps
from mamba_router_cuda.probe import (
    FUSED_STEP_ENV,
    FUSED_STEP_ROWS_ENV,
    MOST_FUSED_ROWS,
    PDL_ENV,
    fused_step_rows,
    pdl_suits,
    triton_runs_fused_step,
)

SUPERPOSITION_CHUNK = 256  # positions per pass when adding a Mamba-1 initial state's contribution
STATE_CARRY_MAX_POSITIONS = 256  # up to this many, the Triton kernel adds it (mamba_router_cuda.state_carry)

logger = logging.getLogger(__name__)


def _optional(module: str, name: str) -> Any:
    try:
        imported = __import__(module, fromlist=[name])
    except ImportError:
        return None
    return getattr(imported, name, None)


def _triton_problem() -> str | None:
    """Why the library's own Triton kernels (the fused step, the state carry) cannot run here, or None when they can:
    they need Triton 3.0 or newer (:func:`~mamba_router_cuda.probe.triton_runs_fused_step`)."""
    try:
        import triton
    except ImportError as exc:
        return str(exc)
    if not triton_runs_fused_step(str(triton.__version__)):
        return f"needs triton 3.0 or newer (found {triton.__version__})"
    return None


def _fused_step_kernels() -> FusedStepOps | None:
    """The Triton fused step, or None (logged) where Triton cannot import or is older than 3.0
    (:func:`~mamba_router_cuda.probe.triton_runs_fused_step`); for batches up to ``MAMBA_ROUTER_FUSED_STEP_ROWS``
    (default: one sequence, what measured faster)."""
    setting = os.environ.get(FUSED_STEP_ROWS_ENV)
    rows = fused_step_rows(setting)
    if rows is None:
        raise ConfigurationError(
            f"{FUSED_STEP_ROWS_ENV}={setting!r} is not a batch size from 1 to {MOST_FUSED_ROWS}; unset it for the "
            "default (the fused step for one sequence at a time)"
        )
    problem = _triton_problem()
    if problem is not None:
        logger.warning("fused decode step unavailable (%s); decoding with the unfused kernels", problem)
        return None
    try:
        from mamba_router_cuda.fused_step import FusedStepKernels
    except ImportError as exc:
        logger.warning("fused decode step unavailable (%s); decoding with the unfused kernels", exc)
        return None
    pdl = launch_with_pdl()  # unset: off until KernelOps.suit_model knows the model
    if setting is not None and setting.strip():
        return FusedStepKernels(max_rows=rows, pdl=pdl)
    return FusedStepKernels(pdl=pdl)


def pdl_setting() -> bool | None:
    """``MAMBA_ROUTER_PDL`` as on, off, or None when unset (auto: :func:`~mamba_router_cuda.probe.pdl_suits`)."""
    value = os.environ.get(PDL_ENV)
    if value is None or not value.strip():
        return None
    return parse_switch(value, variable=PDL_ENV)


def launch_with_pdl(model: torch.nn.Module | None = None) -> bool:
    """Whether the fused step launches with programmatic dependent launch: as ``MAMBA_ROUTER_PDL`` says when it is
    set (never where this GPU or Triton has none: a warning says so); unset, for a ``model`` whose layers are small
    enough that it measured faster (:func:`~mamba_router_cuda.probe.pdl_suits`), and off while no model is known."""
    from mamba_router_cuda.grid_dependency import device_runs_grid_dependency

    setting = pdl_setting()
    if setting is None:
        return model is not None and pdl_suits(layer_weight_bytes(model)) and device_runs_grid_dependency("cuda")
    if setting and not device_runs_grid_dependency("cuda"):
        logger.warning(
            "%s is on, but this GPU or Triton has no programmatic dependent launch; launching without", PDL_ENV
        )
        return False
    return setting


def layer_weight_bytes(model: torch.nn.Module) -> float:
    """Bytes of weights a layer of ``model`` (a layer stack) holds on average: the parameters of its list of layers
    (``model.layers``, or ``model.backbone.layers`` as mamba-ssm names it; not the embedding or the lm_head) over
    their count; inf for a model without one (PDL stays off)."""
    layers = getattr(model, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        layers = getattr(getattr(model, "backbone", None), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) == 0:
        return float("inf")
    return sum(p.numel() * p.element_size() for p in layers.parameters()) / len(layers)


def _state_carry() -> Any:
    """:func:`~mamba_router_cuda.state_carry.carry_initial_state`, or None where Triton 3 cannot run it."""
    if _triton_problem() is not None:
        return None
    try:
        from mamba_router_cuda.state_carry import carry_initial_state
    except ImportError:
        return None
    return carry_initial_state


class KernelOps:
    """:class:`~mamba_router.models.ops.SSMOps` on mamba-ssm's kernels (CUDA tensors only)."""

    name = "mamba-ssm"

    def __init__(self, *, fused_step: bool | None = None) -> None:
        """``fused_step``: decode with the fused step kernels (:mod:`mamba_router_cuda.fused_step`); None reads
        ``MAMBA_ROUTER_FUSED_STEP`` (an on/off switch, on when unset), so the unfused step can be chosen to compare."""
        from mamba_ssm.ops.triton.layer_norm import layer_norm_fn
        from mamba_ssm.ops.triton.layernorm_gated import rmsnorm_fn
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

        self._layer_norm_fn = layer_norm_fn
        self._rmsnorm_fn = rmsnorm_fn
        self._state_update = selective_state_update
        self._chunk_scan = mamba_chunk_scan_combined
        self._selective_scan = _optional("mamba_ssm.ops.selective_scan_interface", "selective_scan_fn")
        self._conv_fn = _optional("causal_conv1d", "causal_conv1d_fn")
        self._conv_update = _optional("causal_conv1d", "causal_conv1d_update")
        self._reference = TorchOps()
        self._zero_biases: dict[tuple[int, torch.device], torch.Tensor] = {}
        if fused_step is None:
            fused_step = parse_switch(os.environ.get(FUSED_STEP_ENV), variable=FUSED_STEP_ENV)
        self.fused_step: FusedStepOps | None = _fused_step_kernels() if fused_step else None
        self._carry = _state_carry()

    def suit_model(self, model: torch.nn.Module) -> None:
        """Settle what depends on the model before its decoding graphs are captured: with ``MAMBA_ROUTER_PDL``
        unset, whether the fused step launches with PDL (:func:`launch_with_pdl`)."""
        fused = self.fused_step
        if fused is not None and hasattr(fused, "pdl") and pdl_setting() is None:  # a set value was applied already
            fused.pdl = launch_with_pdl(model)

    @property
    def has_causal_conv1d(self) -> bool:
        """True when causal-conv1d's kernels are installed (else the convolution takes the reference path)."""
        return self._conv_fn is not None and self._conv_update is not None

    def add_rms_norm(
        self,
        x: torch.Tensor,
        residual: torch.Tensor | None,
        weight: torch.Tensor,
        eps: float,
        *,
        residual_in_fp32: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        normed, stream = self._layer_norm_fn(
            x,
            weight,
            None,
            residual=residual,
            eps=eps,
            prenorm=True,
            residual_in_fp32=residual_in_fp32,
            is_rms_norm=True,
        )
        return normed, stream if stream is not None else x

    def gated_rms_norm(
        self,
        x: torch.Tensor,
        z: torch.Tensor,
        weight: torch.Tensor,
        eps: float,
        group_size: int,
        norm_before_gate: bool = False,
    ) -> torch.Tensor:
        out: torch.Tensor = self._rmsnorm_fn(
            x, weight, None, z=z, eps=eps, group_size=group_size, norm_before_gate=norm_before_gate
        )
        return out

    def causal_conv(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, initial_state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self._conv_fn is None:
            return self._reference.causal_conv(x, weight, bias, initial_state)
        keep = weight.shape[-1] - 1
        if x.stride(1) == 1 and x.stride(2) != 1 and (x.stride(0) % 8 or x.stride(2) % 8):
            # The kernel reads a channel-last view only when its strides are multiples of 8 (a projection width
            # such as Falcon-H1's 2 * d_ssm + 2 * g * n + heads need not be); other views go channel-first, in a
            # fresh tensor (contiguous() keeps a length-1 view's strides, which still read as channel-last).
            x = torch.empty(x.shape, dtype=x.dtype, device=x.device).copy_(x)
        if initial_state is None:
            out = self._conv_fn(x, weight, bias=bias, activation="silu")
            length = x.shape[-1]
            final = x[..., length - keep :] if length >= keep else F.pad(x, (keep - length, 0))
            return out, final
        full = torch.cat([initial_state.to(x.dtype), x], dim=-1)  # exact: the state is the inputs before x
        return self._conv_fn(full, weight, bias=bias, activation="silu")[..., keep:], full[..., full.shape[-1] - keep :]

    def conv_step(
        self, x: torch.Tensor, state: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        if self._conv_update is None:
            return self._reference.conv_step(x, state, weight, bias)
        out: torch.Tensor = self._conv_update(x, state, weight, bias, "silu")
        return out

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
        if self._selective_scan is None:
            raise RuntimeError("mamba-ssm's Mamba-1 kernel selective_scan_cuda is missing")
        bias = None if dt_bias is None else dt_bias.float()
        if initial_state is None:
            y, last = self._selective_scan(
                x, dt, a, b, c, d.float(), z=z, delta_bias=bias, delta_softplus=True, return_last_state=True
            )
            return y, last.float()
        # The scan is linear in its state: run it from zeros, then add what the initial state contributes.
        y, last = self._selective_scan(
            x, dt, a, b, c, d.float(), z=None, delta_bias=bias, delta_softplus=True, return_last_state=True
        )
        if self._carry is not None and x.shape[-1] <= STATE_CARRY_MAX_POSITIONS:
            gated, carried = self._carry(y, dt, dt_bias, a, c, z, initial_state, x.dtype)
            return gated, last.float() + carried
        y = y.float()
        steps = time_steps(dt.transpose(1, 2), dt_bias, NO_DT_LIMIT).transpose(1, 2)  # (b, d, l)
        carried = initial_state.float()  # (b, d, n)
        for start in range(0, x.shape[-1], SUPERPOSITION_CHUNK):
            end = start + SUPERPOSITION_CHUNK
            decay = torch.exp(torch.cumsum(steps[..., start:end], dim=-1)[..., None] * a[:, None, :])  # (b, d, l, n)
            y[..., start:end] += torch.einsum(
                "bdln,bnl->bdl", decay * carried[:, :, None, :], c[..., start:end].float()
            )
            carried = decay[:, :, -1] * carried
        y = y * F.silu(z.float())
        return y.to(x.dtype), last.float() + carried

    def _zero_bias(self, size: int, device: torch.device) -> torch.Tensor:
        """A zero bias made once per size (a CUDA graph keeps reading the same buffer)."""
        key = (size, device)
        if key not in self._zero_biases:
            self._zero_biases[key] = torch.zeros(size, device=device, dtype=torch.float32)
        return self._zero_biases[key]

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
        limit = {} if dt_limit == NO_DT_LIMIT else {"dt_limit": dt_limit}
        y, last = self._chunk_scan(
            x,
            dt,
            a,
            b,
            c,
            chunk_size=chunk_size,
            D=d,
            dt_bias=dt_bias,
            initial_states=initial_state,
            dt_softplus=True,
            return_final_states=True,
            **limit,
        )
        return y, last.float()

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
        if state.dim() == 3:  # Mamba-1: mamba-ssm's Mamba.step (the kernel needs a bias tensor; dt_proj added it)
            bias = dt_bias if dt_bias is not None else self._zero_bias(x.shape[-1], x.device)
            out: torch.Tensor = self._state_update(state, x, dt, a, b, c, d, z=z, dt_bias=bias, dt_softplus=True)
            return out
        heads, head_dim, state_size = state.shape[1:]
        if self.fused_step is not None:  # ours reads the state at 1.5x the bandwidth from 8 rows on
            assert dt_bias is not None
            rows = x.shape[0]
            return self.fused_step.mamba2_state_update(
                state,
                x.reshape(rows, heads * head_dim),
                b.reshape(rows, -1),
                c.reshape(rows, -1),
                dt,
                a,
                d,
                dt_bias,
                dt_limit,
            ).view(rows, heads, head_dim)
        # Mamba-2: per-head values broadcast over the head dim with stride 0, as mamba-ssm's Mamba2.step does
        softplus = True
        if dt_limit != NO_DT_LIMIT:  # the kernel has no limit: apply it first
            dt, dt_bias, softplus = time_steps(dt, dt_bias, dt_limit), torch.zeros_like(d, dtype=torch.float32), False
        assert dt_bias is not None
        out = self._state_update(
            state,
            x,
            dt[..., None].expand(-1, heads, head_dim),
            a[:, None, None].expand(heads, head_dim, state_size),
            b,
            c,
            d[:, None].expand(heads, head_dim),
            z=None,
            dt_bias=dt_bias[:, None].expand(heads, head_dim),
            dt_softplus=softplus,
        )
        return out

    def attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
    ) -> torch.Tensor:
        return grouped_attention(q, k, v, mask, scale)  # torch picks its flash / memory-efficient kernels on CUDA
