"""The start of a mixer's fused decode step, shared by the Mamba-1 and Mamba-2 mixers: the block's residual add and
norm, in_proj and the causal conv, in one call of the backend's fused kernels."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mamba_router.models.layers.norms import RMSNorm
from mamba_router.models.ops import ConvProjection, ConvUpdate, FusedStepOps


@dataclass(frozen=True)
class BlockInput:
    """What comes before a mixer's in_proj: the residual stream to add (to the input times ``scale``, a hybrid's
    residual multiplier) and the block's ``norm`` (None: the input is normed already), whether that sum is float32,
    and whether the caller wants the sum back."""

    residual: torch.Tensor | None = None
    norm: RMSNorm | None = None
    residual_in_fp32: bool = False
    keep_residual: bool = True
    scale: float = 1.0


NORMED_INPUT = BlockInput()  # the input is normed already: no residual, no norm


def fused_in_proj(
    fused: FusedStepOps,
    hidden: torch.Tensor,
    block: BlockInput,
    in_proj: nn.Linear,
    conv1d: nn.Conv1d,
    conv_state: torch.Tensor,
    conv_first: int,
    project: ConvProjection | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """in_proj of the block's normed input with the conv applied to its channels from ``conv_first`` (their conv
    state updated in place; ``project``: a projection of the conv's output summed on the way); returns the projection
    and the residual stream (None without a norm or not kept)."""
    norm = block.norm
    return fused.norm_linear(
        hidden,
        block.residual,
        norm.weight if norm is not None else None,
        norm.eps if norm is not None else 0.0,
        in_proj.weight,
        in_proj.bias,
        residual_in_fp32=block.residual_in_fp32,
        keep_residual=block.keep_residual,
        scale=block.scale,
        conv=ConvUpdate(conv_state, conv1d.weight[:, 0], conv1d.bias, first=conv_first, project=project),
    )
