"""Reading rows of different lengths as one right-padded batch: the padding leaves every row's state as it was.

A Mamba layer's state after a position depends only on the positions before it, so a row's real positions are
read right whatever follows them. What follows must not change the state the row ends with: at a padding position
the time step is made zero (the raw ``dt`` is -inf, so ``softplus(dt + bias)`` is 0), which makes the state's
decay ``exp(0 * A) = 1`` and its input ``0 * B * x = 0`` -- the SSM state goes through unchanged, on the plain path
and in mamba-ssm's kernels alike (both compute the softplus of the raw value). The conv state is the last ``k - 1``
real inputs of each row, taken from the inputs rather than from the conv's own final state (which ends with
padding). A model whose time steps have a lower limit above zero cannot pad this way (``pads_keep_state``).
"""

from __future__ import annotations

import torch

from mamba_router.models.ops import DtLimit


def pads_keep_state(dt_limit: DtLimit) -> bool:
    """True when a padding position's zero time step survives ``dt_limit`` (its lower bound is not above zero)."""
    return dt_limit[0] <= 0.0


def real_positions(lengths: torch.Tensor, length: int) -> torch.Tensor:
    """(b, l) True where a position holds one of its row's ``lengths`` real tokens (the rest is right padding)."""
    return torch.arange(length, device=lengths.device)[None, :] < lengths[:, None]


def time_steps_without_padding(dt: torch.Tensor, real: torch.Tensor, position_dim: int) -> torch.Tensor:
    """``dt`` (raw, before bias and softplus) with -inf at padding positions: their time step is zero, so the SSM
    state passes them unchanged. ``real``: (b, l); ``position_dim``: the axis of ``dt`` that is l."""
    shape = [1] * dt.dim()
    shape[0], shape[position_dim] = real.shape
    return dt.masked_fill(~real.view(shape), float("-inf"))


def conv_state_at(inputs: torch.Tensor, initial: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row's conv state after its real positions: the last ``k - 1`` of ``initial`` (b, d, k-1: the state the
    rows start from, zeros for new rows) followed by ``inputs`` (b, d, l) up to the row's length (a row of length 0
    keeps ``initial``)."""
    batch, channels, _ = inputs.shape
    width = initial.shape[2]
    history = torch.cat([initial.to(inputs.dtype), inputs], dim=2)  # position j of a row is history[..., width + j]
    index = lengths.view(batch, 1, 1) + torch.arange(width, device=inputs.device).view(1, 1, width)
    return history.gather(2, index.expand(batch, channels, width))
