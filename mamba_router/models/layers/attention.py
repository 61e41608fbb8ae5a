"""Grouped-query attention with rotary position embeddings, written once for every backend (hybrid families).

Parameter names as transformers' Llama-style attention (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``). Keys and
values are kept in the stack's :class:`~mamba_router.models.ssm_cache.SSMCache`, so a read can continue from a
document's state and decoding appends one position per step. The softmax itself is an op (``ops.attention``).
"""

from __future__ import annotations

import torch
from torch import nn

from mamba_router.models.hybrid_config import AttentionConfig
from mamba_router.models.ops import SSMOps
from mamba_router.models.ssm_cache import SSMCache


class Attention(nn.Module):
    """q/k/v projections -> rotary embeddings on the first ``rotary_dim`` dims -> attention -> o_proj."""

    def __init__(self, d_model: int, cfg: AttentionConfig, d_in: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        width = d_in or d_model  # Zamba2's shared attention reads [hidden, embeddings]: twice d_model
        self.q_proj = nn.Linear(width, cfg.heads * cfg.head_dim, bias=cfg.bias)
        self.k_proj = nn.Linear(width, cfg.kv_heads * cfg.head_dim, bias=cfg.bias)
        self.v_proj = nn.Linear(width, cfg.kv_heads * cfg.head_dim, bias=cfg.bias)
        self.o_proj = nn.Linear(
            cfg.heads * cfg.head_dim, d_model, bias=cfg.bias if cfg.out_bias is None else cfg.out_bias
        )

    def forward(
        self,
        hidden: torch.Tensor,
        ops: SSMOps,
        cache: SSMCache | None,
        index: int,
        deltas: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Attend from ``hidden`` (b, l, d_in), the positions after the ``cache.tokens`` already in ``cache``
        (attention layer ``index`` of it), whose keys and values are appended; without a cache, from scratch.
        ``deltas`` are added to the q, k and v projections (Zamba2's per-use adapters)."""
        cfg = self.cfg
        batch, length, _ = hidden.shape
        q, k, v = self.q_proj(hidden), self.k_proj(hidden), self.v_proj(hidden)
        if deltas is not None:
            q, k, v = q + deltas[0], k + deltas[1], v + deltas[2]
        q = q.view(batch, length, cfg.heads, cfg.head_dim).transpose(1, 2)
        k = k.view(batch, length, cfg.kv_heads, cfg.head_dim).transpose(1, 2)
        v = v.view(batch, length, cfg.kv_heads, cfg.head_dim).transpose(1, 2)
        if cache is not None and cache.length is not None and length == 1:
            return self._static_step(q, k, v, ops, cache, index)
        start = cache.tokens if cache is not None else 0
        padding = cache.padding if cache is not None else None
        if cfg.rotary_dim:
            positions = torch.arange(start, start + length, device=hidden.device)[None, :]
            if padding is not None:
                positions = positions - padding[:, None]
            cos, sin = rotary_angles(positions, cfg.rotary_dim, cfg.rope_theta, q.dtype)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.append_kv(index, k, v)
        mask = None if start == 0 and padding is None else visible(start, length, padding, hidden.device)
        out = ops.attention(q, k, v, mask, cfg.scale)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, cfg.heads * cfg.head_dim))

    def _static_step(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ops: SSMOps, cache: SSMCache, index: int
    ) -> torch.Tensor:
        """One position on a static cache: everything on the device (no host value), so it can be captured."""
        cfg = self.cfg
        assert cache.length is not None and cache.padding is not None
        if cfg.rotary_dim:
            positions = (cache.length - cache.padding)[:, None]  # (b, 1)
            cos, sin = rotary_angles(positions, cfg.rotary_dim, cfg.rope_theta, q.dtype)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        keys, values = cache.write_kv_at_length(index, k, v)
        slots = torch.arange(keys.shape[2], device=q.device)
        mask = (slots <= cache.length)[None, :] & (slots[None, :] >= cache.padding[:, None])  # (b, capacity)
        out = ops.attention(q, keys, values, mask[:, None, None, :], cfg.scale)
        return self.o_proj(out.transpose(1, 2).reshape(q.shape[0], 1, cfg.heads * cfg.head_dim))


def visible(start: int, length: int, padding: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """(b or 1, 1, length, start + length): True where query i (position start + i) may look at key j: j at or
    before it, and not a padded position of its row."""
    keys = torch.arange(start + length, device=device)
    allowed = keys[None, :] <= torch.arange(start, start + length, device=device)[:, None]  # (l, t)
    if padding is None:
        return allowed[None, None]
    return allowed[None, None] & (keys[None, :] >= padding[:, None])[:, None, None, :]


def rotary_angles(
    positions: torch.Tensor, dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (b or 1, l, dim) of rotary embeddings at ``positions`` (b or 1, l), computed in float32."""
    inverse = 1.0 / (theta ** (torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim))
    angles = positions.float()[..., None] * inverse
    both = torch.cat([angles, angles], dim=-1)
    return both.cos().to(dtype), both.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``cos.shape[-1]`` dims of ``x`` (b, heads, l, e) in half-split pairs; the rest pass."""
    dim = cos.shape[-1]
    rotated, passed = x[..., :dim], x[..., dim:]
    half = dim // 2
    turned = torch.cat([-rotated[..., half:], rotated[..., :half]], dim=-1)
    out = rotated * cos[:, None] + turned * sin[:, None]
    return torch.cat([out, passed], dim=-1) if passed.shape[-1] else out
