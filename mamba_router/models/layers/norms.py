"""RMSNorm weights: the arithmetic is an op (``add_rms_norm``, ``gated_rms_norm``), the module holds the weight."""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """The weight and epsilon of a root-mean-square norm (checkpoint name ``<name>.weight``)."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps
