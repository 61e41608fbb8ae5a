"""The Mamba-2 mixer (SSD), written once for every backend; parameter names as mamba-ssm's ``Mamba2``.

in_proj gives z, the conv input (x, B, C) and dt; after the causal conv the SSD scan runs per head (groups share
B and C), and the gated RMSNorm (norm of y * silu(z), per group) comes before out_proj.
"""

from __future__ import annotations

import torch
from torch import nn

from mamba_router.models.layers.fused_input import NORMED_INPUT, BlockInput, fused_in_proj
from mamba_router.models.layers.norms import RMSNorm
from mamba_router.models.layers.padded_rows import conv_state_at, real_positions, time_steps_without_padding
from mamba_router.models.layers.ssm_decay import state_decay
from mamba_router.models.mamba_config import SSMConfig
from mamba_router.models.ops import FusedStepOps, SSMOps, fused_step_ops


class Mamba2Mixer(nn.Module):
    """in_proj -> causal conv over (x, B, C) -> SSD scan -> gated RMSNorm -> out_proj."""

    def __init__(self, cfg: SSMConfig) -> None:
        super().__init__()
        if cfg.d_inner % cfg.headdim or cfg.nheads % cfg.ngroups:
            raise ValueError("d_inner must be a multiple of headdim, and heads a multiple of groups")
        self.cfg = cfg
        d, h, g, n = cfg.d_inner, cfg.nheads, cfg.ngroups, cfg.d_state
        self.conv_dim = d + 2 * g * n
        self.in_proj = nn.Linear(cfg.d_model, 2 * d + 2 * g * n + h, bias=cfg.bias)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, cfg.d_conv, groups=self.conv_dim, bias=cfg.conv_bias)
        self.dt_bias = nn.Parameter(torch.zeros(h))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, h + 1, dtype=torch.float32)))
        self.D = nn.Parameter(torch.ones(h))
        self.norm = RMSNorm(d, cfg.norm_eps) if cfg.gate_norm != "gate_only" else None
        self.out_proj = nn.Linear(d, cfg.d_model, bias=cfg.bias)

    def state_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Per-sequence shapes of the conv state and the SSM state."""
        cfg = self.cfg
        return (self.conv_dim, cfg.d_conv - 1), (cfg.nheads, cfg.headdim, cfg.d_state)

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
        """Read ``hidden`` (b, l, d_model); states and ``lengths`` as in :meth:`Mamba1Mixer.forward`."""
        cfg = self.cfg
        d, h, g, n, p = cfg.d_inner, cfg.nheads, cfg.ngroups, cfg.d_state, cfg.headdim
        batch, length = hidden.shape[:2]
        z, xbc, dt = self.in_proj(hidden).split([d, self.conv_dim, h], dim=-1)
        conv_inputs = xbc.transpose(1, 2)
        xbc, conv_after = ops.causal_conv(
            conv_inputs, self.conv1d.weight[:, 0], self.conv1d.bias, conv_state if continuing else None
        )
        if lengths is not None:
            assert conv_state is not None, "rows of different lengths are read into a cache"
            conv_after = conv_state_at(conv_inputs, conv_state, lengths)
            dt = time_steps_without_padding(dt, real_positions(lengths, length), position_dim=1)
        x, b, c = xbc.transpose(1, 2).split([d, g * n, g * n], dim=-1)
        y, ssm_after = ops.ssd_scan(
            x.reshape(batch, length, h, p),
            dt,
            state_decay(self),
            b.reshape(batch, length, g, n),
            c.reshape(batch, length, g, n),
            self.D,
            self.dt_bias,
            cfg.dt_limit,
            chunk_size,
            ssm_state if continuing else None,
        )
        if conv_state is not None and ssm_state is not None:
            conv_state.copy_(conv_after)
            ssm_state.copy_(ssm_after)
        return self.out_proj(self._gate(y.reshape(batch, length, d), z, ops))

    def step(
        self, hidden: torch.Tensor, ops: SSMOps, conv_state: torch.Tensor, ssm_state: torch.Tensor
    ) -> torch.Tensor:
        """One token per sequence: ``hidden`` (b, d_model); the states are updated in place. Takes the backend's
        fused kernels where it has them (:meth:`fused_step`)."""
        fused = fused_step_ops(ops, hidden.shape[0])
        if fused is not None and self.fuses_with(fused):
            return self.fused_step(hidden, fused, conv_state, ssm_state)[0]
        cfg = self.cfg
        d, h, g, n, p = cfg.d_inner, cfg.nheads, cfg.ngroups, cfg.d_state, cfg.headdim
        z, xbc, dt = self.in_proj(hidden).split([d, self.conv_dim, h], dim=-1)
        xbc = ops.conv_step(xbc, conv_state, self.conv1d.weight[:, 0], self.conv1d.bias)
        x, b, c = xbc.split([d, g * n, g * n], dim=-1)
        batch = hidden.shape[0]
        y = ops.state_step(
            ssm_state,
            x.reshape(batch, h, p),
            dt,
            state_decay(self),
            b.reshape(batch, g, n),
            c.reshape(batch, g, n),
            self.D,
            None,
            self.dt_bias,
            cfg.dt_limit,
        )
        return self.out_proj(self._gate(y.reshape(batch, d), z, ops))

    def fuses_with(self, fused: FusedStepOps) -> bool:
        """True when ``fused`` computes this mixer's step: plain projections (a LoRA adapter wraps them: then the
        unfused step, whose module calls go through it) and a conv of the width the kernels take."""
        plain = type(self.in_proj) is nn.Linear and type(self.out_proj) is nn.Linear
        return plain and self.cfg.d_conv == fused.conv_width

    def fused_step(
        self,
        hidden: torch.Tensor,
        fused: FusedStepOps,
        conv_state: torch.Tensor,
        ssm_state: torch.Tensor,
        block: BlockInput = NORMED_INPUT,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`step` in three kernels: (``block``'s residual add and norm,) in_proj and the conv; the state update;
        the gate, the grouped norm and out_proj. Returns the output and the residual stream (see :class:`BlockInput`)."""
        cfg = self.cfg
        d = cfg.d_inner
        projected, residual = fused_in_proj(fused, hidden, block, self.in_proj, self.conv1d, conv_state, d)
        y = fused.mamba2_state_step(
            projected, ssm_state, state_decay(self), self.D, self.dt_bias, cfg.dt_limit, ngroups=cfg.ngroups
        )
        out = fused.gated_norm_linear(
            y,
            projected[:, :d],
            self.norm.weight if self.norm is not None else None,
            self.norm.eps if self.norm is not None else 0.0,
            d // cfg.ngroups,
            cfg.gate_norm,
            self.out_proj.weight,
            self.out_proj.bias,
        )
        return out, residual

    def _gate(self, y: torch.Tensor, z: torch.Tensor, ops: SSMOps) -> torch.Tensor:
        """The scan's output gated by silu(z), with the grouped RMS norm after the gate, before it, or none."""
        if self.norm is None:
            return (y.float() * torch.nn.functional.silu(z.float())).to(y.dtype)
        before = self.cfg.gate_norm == "gate_of_norm"
        return ops.gated_rms_norm(y, z, self.norm.weight, self.norm.eps, self.cfg.d_inner // self.cfg.ngroups, before)
