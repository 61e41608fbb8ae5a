"""Zamba2's shared transformer block: attention and a gated MLP whose weights serve several layers, each use adding
its own low-rank adapters. Parameter names as transformers' ``Zamba2AttentionDecoderLayer``.

The block reads ``[hidden, embeddings]`` (twice the model width), normalises it, attends (keys and values per use, in
the stack's cache), normalises the result and runs the MLP; there is no residual inside the block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mamba_router.models.hybrid_config import AttentionConfig, SharedBlockConfig
from mamba_router.models.layers.attention import Attention
from mamba_router.models.layers.norms import RMSNorm
from mamba_router.models.ops import SSMOps
from mamba_router.models.ssm_cache import SSMCache


def _adapters(uses: int, block: int, blocks: int, d_in: int, rank: int, d_out: int) -> nn.ModuleList:
    """One low-rank adapter per use of this block (Identity placeholders keep the other blocks' uses' slots)."""
    return nn.ModuleList(
        nn.Sequential(nn.Linear(d_in, rank, bias=False), nn.Linear(rank, d_out, bias=False))
        if use % blocks == block
        else nn.Identity()
        for use in range(uses)
    )


class AdaptedAttention(Attention):
    """Attention over ``2 * d_model`` inputs with a q/k/v adapter per use (``linear_q_adapter_list`` ...)."""

    def __init__(self, d_model: int, cfg: AttentionConfig, shared: SharedBlockConfig, uses: int, block: int) -> None:
        super().__init__(d_model, cfg, d_in=2 * d_model)
        self.adapted = shared.attention_adapters
        if self.adapted:
            width, rank = 2 * d_model, shared.adapter_rank
            q_out, kv_out = cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
            self.linear_q_adapter_list = _adapters(uses, block, shared.blocks, width, rank, q_out)
            self.linear_k_adapter_list = _adapters(uses, block, shared.blocks, width, rank, kv_out)
            self.linear_v_adapter_list = _adapters(uses, block, shared.blocks, width, rank, kv_out)

    def attend(self, hidden: torch.Tensor, ops: SSMOps, cache: SSMCache | None, index: int, use: int) -> torch.Tensor:
        """Attention for use ``use`` of the block (its adapters), cache slot ``index``."""
        deltas = None
        if self.adapted:
            deltas = (
                self.linear_q_adapter_list[use](hidden),
                self.linear_k_adapter_list[use](hidden),
                self.linear_v_adapter_list[use](hidden),
            )
        out: torch.Tensor = self(hidden, ops, cache, index, deltas)
        return out


class AdaptedMLP(nn.Module):
    """act(gate) * up -> down_proj, gate and up from ``gate_up_proj`` plus the use's adapter."""

    def __init__(self, d_model: int, shared: SharedBlockConfig, uses: int, block: int) -> None:
        super().__init__()
        self.activation = shared.activation
        self.gate_up_proj = nn.Linear(d_model, 2 * shared.intermediate, bias=shared.bias)
        self.down_proj = nn.Linear(shared.intermediate, d_model, bias=shared.bias)
        self.gate_up_proj_adapter_list = _adapters(
            uses, block, shared.blocks, d_model, shared.adapter_rank, 2 * shared.intermediate
        )

    def forward(self, hidden: torch.Tensor, use: int) -> torch.Tensor:
        gate, up = (self.gate_up_proj(hidden) + self.gate_up_proj_adapter_list[use](hidden)).chunk(2, dim=-1)
        act = F.gelu(gate) if self.activation == "gelu" else F.silu(gate)
        out: torch.Tensor = self.down_proj(act * up)
        return out


class SharedBlock(nn.Module):
    """One shared block: norm of [hidden, embeddings] -> attention -> norm -> MLP (no residual inside)."""

    def __init__(
        self, d_model: int, cfg: AttentionConfig, shared: SharedBlockConfig, eps: float, uses: int, block: int
    ) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(2 * d_model, eps)
        self.self_attn = AdaptedAttention(d_model, cfg, shared, uses, block)
        self.pre_ff_layernorm = RMSNorm(d_model, eps)
        self.feed_forward = AdaptedMLP(d_model, shared, uses, block)

    def forward(
        self,
        hidden: torch.Tensor,
        embeddings: torch.Tensor,
        ops: SSMOps,
        cache: SSMCache | None,
        index: int,
        use: int,
    ) -> torch.Tensor:
        joined = torch.cat([hidden, embeddings], dim=-1)
        normed, _ = ops.add_rms_norm(
            joined, None, self.input_layernorm.weight, self.input_layernorm.eps, residual_in_fp32=False
        )
        attended = self.self_attn.attend(normed, ops, cache, index, use)
        normed, _ = ops.add_rms_norm(
            attended, None, self.pre_ff_layernorm.weight, self.pre_ff_layernorm.eps, residual_in_fp32=False
        )
        out: torch.Tensor = self.feed_forward(normed, use)
        return out
