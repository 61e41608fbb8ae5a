"""Mamba-1 and Mamba-2 language models in plain PyTorch, with parameter names of mamba-ssm's checkpoints.

Every layer maps (hidden states, its recurrent state) to (output, new state), for any number of new tokens, so a
long prompt is read segment by segment (memory bounded by the segment) and decoding is the same call with one token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mamba_router_mps.config import SSMConfig
from mamba_router_mps.ssm_ops import causal_conv, selective_scan, ssd_scan


@dataclass
class LayerState:
    """A layer's memory of everything read so far: the conv inputs and the SSM state."""

    conv: torch.Tensor  # (b, conv channels, d_conv - 1)
    ssm: torch.Tensor  # Mamba-1: (b, d_inner, n); Mamba-2: (b, h, p, n)

    def clone(self) -> LayerState:
        """An independent copy."""
        return LayerState(self.conv.clone(), self.ssm.clone())


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dimension, in float32."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor, group_size: int | None = None) -> torch.Tensor:
        h = x.float()
        if group_size is not None:
            h = h.unflatten(-1, (-1, group_size))
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.flatten(-2).to(x.dtype) if group_size is not None else self.weight * h.to(x.dtype)


class Mamba1Mixer(nn.Module):
    """Mamba-1 selective SSM block (names as mamba-ssm's ``Mamba``)."""

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

    def empty_state(self, batch: int, device: torch.device) -> LayerState:
        d = self.cfg.d_inner
        return LayerState(
            torch.zeros(batch, d, self.cfg.d_conv - 1, device=device),
            torch.zeros(batch, d, self.cfg.d_state, device=device),
        )

    def forward(self, hidden: torch.Tensor, state: LayerState, chunk_size: int) -> tuple[torch.Tensor, LayerState]:
        cfg = self.cfg
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # (b, l, d) each
        x, conv_state = causal_conv(x.transpose(1, 2), state.conv, self.conv1d.weight, self.conv1d.bias)
        x = x.transpose(1, 2).float()  # (b, l, d)
        dt, b, c = (
            self.x_proj(x.to(hidden.dtype)).float().split([cfg.resolved_dt_rank, cfg.d_state, cfg.d_state], dim=-1)
        )
        # dt_proj is called as a module (not through its weight) so that a LoRA adapter on it takes effect.
        dt = F.softplus(self.dt_proj(dt.to(self.dt_proj.weight.dtype)).float())  # (b, l, d)
        a = -torch.exp(self.A_log.float())  # (d, n)
        y, ssm_state = selective_scan(x, dt, a, b, c, state.ssm.float(), chunk_size)
        y = (y + x * self.D.float()) * F.silu(z.float())
        return self.out_proj(y.to(hidden.dtype)), LayerState(conv_state, ssm_state)


class Mamba2Mixer(nn.Module):
    """Mamba-2 SSD block (names as mamba-ssm's ``Mamba2``; gated RMSNorm after the scan)."""

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
        self.norm = RMSNorm(d, cfg.norm_eps)
        self.out_proj = nn.Linear(d, cfg.d_model, bias=cfg.bias)

    def empty_state(self, batch: int, device: torch.device) -> LayerState:
        cfg = self.cfg
        return LayerState(
            torch.zeros(batch, self.conv_dim, cfg.d_conv - 1, device=device),
            torch.zeros(batch, cfg.nheads, cfg.headdim, cfg.d_state, device=device),
        )

    def forward(self, hidden: torch.Tensor, state: LayerState, chunk_size: int) -> tuple[torch.Tensor, LayerState]:
        cfg = self.cfg
        d, h, g, n, p = cfg.d_inner, cfg.nheads, cfg.ngroups, cfg.d_state, cfg.headdim
        z, xbc, dt = self.in_proj(hidden).split([d, self.conv_dim, h], dim=-1)
        xbc, conv_state = causal_conv(xbc.transpose(1, 2), state.conv, self.conv1d.weight, self.conv1d.bias)
        x, b, c = xbc.transpose(1, 2).float().split([d, g * n, g * n], dim=-1)
        batch, length = x.shape[:2]
        dt = F.softplus(dt.float() + self.dt_bias.float()).clamp(*cfg.dt_limit)  # (b, l, h)
        heads_per_group = h // g
        b = b.view(batch, length, g, n).repeat_interleave(heads_per_group, dim=2)  # (b, l, h, n)
        c = c.view(batch, length, g, n).repeat_interleave(heads_per_group, dim=2)
        x = x.view(batch, length, h, p)
        a = -torch.exp(self.A_log.float())  # (h)
        y, ssm_state = ssd_scan(x, dt, a, b, c, state.ssm.float(), chunk_size)
        y = (y + x * self.D.float()[:, None]).reshape(batch, length, d)
        y = self.norm(y * F.silu(z.float()), group_size=d // g)
        return self.out_proj(y.to(hidden.dtype)), LayerState(conv_state, ssm_state)


class Block(nn.Module):
    """Pre-norm residual block: h + mixer(norm(h))."""

    def __init__(self, cfg: SSMConfig) -> None:
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mixer: Mamba1Mixer | Mamba2Mixer = Mamba2Mixer(cfg) if cfg.arch == "mamba2" else Mamba1Mixer(cfg)

    def forward(self, hidden: torch.Tensor, state: LayerState, chunk_size: int) -> tuple[torch.Tensor, LayerState]:
        out, state = self.mixer(self.norm(hidden), state, chunk_size)
        return hidden + out, state


class Backbone(nn.Module):
    """Embedding, blocks, final norm (mamba-ssm's ``backbone``)."""

    def __init__(self, cfg: SSMConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm_f = RMSNorm(cfg.d_model, cfg.norm_eps)


class MambaLM(nn.Module):
    """A Mamba-1 or Mamba-2 language model that reads in segments and decodes token by token."""

    def __init__(self, cfg: SSMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.backbone.embedding.weight

    def empty_states(self, batch: int) -> list[LayerState]:
        """States before any token has been read."""
        device = self.lm_head.weight.device
        return [layer.mixer.empty_state(batch, device) for layer in self.backbone.layers]

    def forward(
        self, input_ids: torch.Tensor, states: list[LayerState] | None = None, *, chunk_size: int | None = None
    ) -> tuple[torch.Tensor, list[LayerState]]:
        """Logits at every position (b, l, vocab) and the states after the last one."""
        hidden, states = self._run(input_ids, states, chunk_size)
        return self.lm_head(self.backbone.norm_f(hidden)), states

    def read(
        self,
        input_ids: torch.Tensor,
        states: list[LayerState] | None = None,
        *,
        segment: int = 512,
        chunk_size: int | None = None,
    ) -> tuple[torch.Tensor, list[LayerState]]:
        """Read ``input_ids`` (b, l) ``segment`` tokens at a time; return the last position's logits and the states.

        Peak memory depends on ``segment``, not on the length of the input.
        """
        if states is None:
            states = self.empty_states(input_ids.shape[0])
        hidden = None
        for start in range(0, input_ids.shape[1], segment):
            hidden, states = self._run(input_ids[:, start : start + segment], states, chunk_size)
        assert hidden is not None, "input_ids is empty"
        return self.lm_head(self.backbone.norm_f(hidden[:, -1])), states

    def _run(
        self, input_ids: torch.Tensor, states: list[LayerState] | None, chunk_size: int | None
    ) -> tuple[torch.Tensor, list[LayerState]]:
        chunk = chunk_size or self.cfg.chunk_size
        if states is None:
            states = self.empty_states(input_ids.shape[0])
        hidden = self.backbone.embedding(input_ids)
        new_states = []
        for layer, state in zip(self.backbone.layers, states):
            hidden, state = layer(hidden, state, chunk)
            new_states.append(state)
        return hidden, new_states
