"""The Mamba-1 mixer (selective SSM), written once for every backend; parameter names as mamba-ssm's ``Mamba``.

FalconMamba is this mixer with weightless RMS norms on B, C and the low-rank dt after ``x_proj`` (config
``bcdt_rms_eps``), as transformers' ``FalconMambaMixer`` computes them; Jamba's mixer has the same norms with weights
(``dt_layernorm``, ``b_layernorm``, ``c_layernorm``; config ``bcdt_norm_weights``).

Reading (prefill) and one-token decoding are two methods over the same weights and states; the numerics are ops.
Every projection is an ``nn.Linear`` called as a module, so a LoRA adapter on any of them is on the forward path of
both methods, on every backend. Where a projection is a plain ``nn.Linear`` the read path computes it as mamba-ssm
does: one 2-D product ``W @ rows^T`` viewed as (b, d, l) (:func:`channels_first`), the layout the conv and scan
kernels read in place, and ``dt_proj`` without its bias, which the scan adds in float32; a wrapped projection (a
LoRA adapter in training) is called as a module. Measured on the H100 (``benchmarks/profile_mamba1.py``): a batched
``matmul`` over a transposed view left the scan's inputs in a layout it copied first, about 40% of a 128k-token read.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mamba_router.models.layers.fused_input import NORMED_INPUT, BlockInput, fused_in_proj
from mamba_router.models.layers.norms import RMSNorm
from mamba_router.models.layers.padded_rows import conv_state_at, real_positions, time_steps_without_padding
from mamba_router.models.layers.ssm_decay import state_decay
from mamba_router.models.mamba_config import SSMConfig
from mamba_router.models.ops import NO_DT_LIMIT, ConvProjection, FusedStepOps, SSMOps, fused_step_ops


class Mamba1Mixer(nn.Module):
    """in_proj -> causal conv -> x_proj -> dt_proj -> selective scan (gated by z) -> out_proj."""

    def __init__(self, cfg: SSMConfig) -> None:
        super().__init__()
        d, n, r = cfg.d_inner, cfg.d_state, cfg.resolved_dt_rank
        self.cfg = cfg
        self.in_proj = nn.Linear(cfg.d_model, 2 * d, bias=cfg.bias)
        self.conv1d = nn.Conv1d(d, d, cfg.d_conv, groups=d, bias=cfg.conv_bias)
        self.x_proj = nn.Linear(d, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, d, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(d, 1))
        self.D = nn.Parameter(torch.ones(d))
        self.out_proj = nn.Linear(d, cfg.d_model, bias=cfg.bias)
        if cfg.bcdt_norm_weights:
            eps = cfg.bcdt_rms_eps or 1e-6
            self.dt_layernorm, self.b_layernorm, self.c_layernorm = (RMSNorm(size, eps) for size in (r, n, n))

    def state_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Per-sequence shapes of the conv state and the SSM state."""
        return (self.cfg.d_inner, self.cfg.d_conv - 1), (self.cfg.d_inner, self.cfg.d_state)

    def forward(
        self,
        hidden: torch.Tensor,
        ops: SSMOps,
        conv_state: torch.Tensor | None = None,
        ssm_state: torch.Tensor | None = None,
        *,
        continuing: bool = False,
        chunk_size: int = 256,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Read ``hidden`` (b, l, d_model). With states given, continue from them when ``continuing``, and write the
        states after the last position into them in place. ``lengths`` (b,): row i holds ``lengths[i]`` real
        positions and then right padding, which leaves its states as they were (see :mod:`.padded_rows`)."""
        batch, length, _ = hidden.shape
        conv_inputs, z = channels_first(self.in_proj, hidden.reshape(batch * length, -1), batch).chunk(2, dim=1)
        x, conv_after = ops.causal_conv(
            conv_inputs, self.conv1d.weight[:, 0], self.conv1d.bias, conv_state if continuing else None
        )
        if lengths is not None:
            assert conv_state is not None, "rows of different lengths are read into a cache"
            conv_after = conv_state_at(conv_inputs, conv_state, lengths)
        dt, b, c = self._time_step_and_bc(self.x_proj(x.transpose(1, 2).reshape(batch * length, -1)))
        a = state_decay(self)  # (d, n)
        if type(self.dt_proj) is nn.Linear:  # bias added by the scan, in float32
            dt, dt_bias = channels_first(self.dt_proj, dt, batch, bias=False), self.dt_proj.bias
        else:
            dt, dt_bias = channels_first(self.dt_proj, dt, batch), None
        if lengths is not None:
            dt = time_steps_without_padding(dt, real_positions(lengths, length), position_dim=2)
        y, ssm_after = ops.selective_scan(
            x,
            dt,
            a,
            b.view(batch, length, -1).transpose(1, 2).contiguous(),
            c.view(batch, length, -1).transpose(1, 2).contiguous(),
            self.D.float(),
            z,
            dt_bias,
            chunk_size,
            ssm_state if continuing else None,
        )
        if conv_state is not None and ssm_state is not None:
            conv_state.copy_(conv_after)
            ssm_state.copy_(ssm_after)
        return self.out_proj(y.transpose(1, 2))

    def step(
        self, hidden: torch.Tensor, ops: SSMOps, conv_state: torch.Tensor, ssm_state: torch.Tensor
    ) -> torch.Tensor:
        """One token per sequence: ``hidden`` (b, d_model); the states are updated in place. Takes the backend's
        fused kernels where it has them (:meth:`fused_step`)."""
        fused = fused_step_ops(ops, hidden.shape[0])
        if fused is not None and self.fuses_with(fused):
            return self.fused_step(hidden, fused, conv_state, ssm_state)[0]
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # (b, d) each
        x = ops.conv_step(x, conv_state, self.conv1d.weight[:, 0], self.conv1d.bias)
        dt, b, c = self._time_step_and_bc(self.x_proj(x))
        a = state_decay(self)
        dt, dt_bias = self._time_step(dt)
        y = ops.state_step(ssm_state, x, dt, a, b, c, self.D, z, dt_bias, NO_DT_LIMIT)
        return self.out_proj(y)

    def fuses_with(self, fused: FusedStepOps) -> bool:
        """True when ``fused`` computes this mixer's step: plain projections (a LoRA adapter wraps them: then the
        unfused step, whose module calls go through it) and a conv of the width the kernels take."""
        plain = all(type(p) is nn.Linear for p in (self.in_proj, self.x_proj, self.dt_proj, self.out_proj))
        return plain and self.cfg.d_conv == fused.conv_width

    def fused_step(
        self,
        hidden: torch.Tensor,
        fused: FusedStepOps,
        conv_state: torch.Tensor,
        ssm_state: torch.Tensor,
        block: BlockInput = NORMED_INPUT,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`step` in three kernels: (``block``'s residual add and norm,) in_proj, the conv on x and x_proj, whose
        sum each block of x channels adds its share to (so x_proj needs no launch of its own, only its sum's start
        value: zeros or its bias); dt_proj, the B/C/dt norms, the state update and the gate; out_proj. Returns the
        output and the residual stream (see :class:`BlockInput`)."""
        cfg = self.cfg
        x_db = x_proj_start(self.x_proj, hidden.shape[0], hidden.device)
        project = ConvProjection(self.x_proj.weight, x_db)
        xz, residual = fused_in_proj(fused, hidden, block, self.in_proj, self.conv1d, conv_state, 0, project)
        norm_weights = None
        if cfg.bcdt_norm_weights and cfg.bcdt_rms_eps is not None:
            norm_weights = (self.dt_layernorm.weight, self.b_layernorm.weight, self.c_layernorm.weight)
        y = fused.mamba1_state_step(
            xz,
            x_db,
            self.dt_proj.weight,
            self.dt_proj.bias,
            state_decay(self),
            self.D,
            ssm_state,
            bcdt_eps=cfg.bcdt_rms_eps,
            bcdt_weights=norm_weights,
        )
        out, _ = fused.norm_linear(y, None, None, 0.0, self.out_proj.weight, self.out_proj.bias, keep_residual=False)
        return out, residual

    def _time_step_and_bc(self, projected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x_proj's output split into the low-rank dt, B and C (each RMS-normalised, without weight, for FalconMamba).

        Each norm is one ``F.rms_norm`` (computed in float32 whatever the input dtype, as transformers computes it; one
        fused kernel on CUDA, where the written-out arithmetic was eight small kernels per part and a third of
        FalconMamba's decode step). Jamba's weights multiply after the cast back, as in transformers."""
        cfg = self.cfg
        parts = projected.split([cfg.resolved_dt_rank, cfg.d_state, cfg.d_state], dim=-1)
        if cfg.bcdt_rms_eps is None:
            return parts
        dt, b, c = (F.rms_norm(p, (p.shape[-1],), eps=cfg.bcdt_rms_eps) for p in parts)
        if cfg.bcdt_norm_weights:
            dt, b, c = dt * self.dt_layernorm.weight, b * self.b_layernorm.weight, c * self.c_layernorm.weight
        return dt, b, c

    def _time_step(self, dt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """dt_proj's output for one position and the bias still to add (see the module docstring)."""
        if type(self.dt_proj) is nn.Linear:
            return F.linear(dt, self.dt_proj.weight), self.dt_proj.bias
        return self.dt_proj(dt), None


def x_proj_start(x_proj: nn.Linear, rows: int, device: torch.device) -> torch.Tensor:
    """Where a fused step sums x_proj's output: float32 (rows, outputs), holding the bias or zeros."""
    start = torch.zeros(rows, x_proj.out_features, device=device, dtype=torch.float32)
    return start if x_proj.bias is None else start.copy_(x_proj.bias)


def channels_first(projection: nn.Module, rows: torch.Tensor, batch: int, *, bias: bool = True) -> torch.Tensor:
    """``projection`` of ``rows`` ((b * l, in), batch-major) as (b, out, l) with unit stride along l, without a copy.

    For a plain ``nn.Linear`` this is one 2-D product ``W @ rows^T`` (out, b * l), viewed as (b, out, l): the layout
    mamba-ssm's conv and scan kernels read in place (a batched ``matmul`` over a (b, in, l) view, or a module call
    then a transpose, makes them copy the whole (b, out, l) tensor first). ``bias=False`` leaves a plain projection's
    bias out (the caller adds it elsewhere); a wrapped projection (a LoRA adapter) is called as a module.
    """
    length = rows.shape[0] // batch
    if type(projection) is not nn.Linear:
        return projection(rows).view(batch, length, -1).transpose(1, 2)
    out = projection.weight @ rows.t()
    if bias and projection.bias is not None:
        out = out + projection.bias[:, None]
    return out.view(-1, batch, length).transpose(0, 1)
