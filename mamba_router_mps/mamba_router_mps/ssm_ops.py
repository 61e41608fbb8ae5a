"""State-space numerics in plain PyTorch, walking the sequence chunk by chunk and carrying the state.

Shapes: b batch, l (and s) positions in a chunk, h heads, p head dim, g groups, n state size, d channels.
Only float32 arithmetic, real numbers and ops that the MPS backend implements (no float64, no complex).
Peak memory grows with the chunk, never with the sequence: each chunk reads the state left by the one before it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_conv(
    x: torch.Tensor, state: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise causal convolution continuing from ``state``.

    x: (b, d, l) new inputs; state: (b, d, k-1) the last k-1 inputs before them (zeros at the start);
    weight: (d, 1, k). Returns the output (b, d, l) after SiLU and the new state (b, d, k-1).
    """
    k = weight.shape[-1]
    full = torch.cat([state.to(x.dtype), x], dim=-1)  # (b, d, k-1+l)
    out = F.conv1d(full, weight, bias, groups=weight.shape[0])  # (b, d, l)
    return F.silu(out), full[..., full.shape[-1] - (k - 1) :]


def segment_sums(a: torch.Tensor) -> torch.Tensor:
    """``out[..., t, s] = a[..., s+1] + ... + a[..., t]`` for s <= t, and -inf above the diagonal.

    a: (..., l). Summing a masked copy (not differencing a cumulative sum) keeps the result exact where it matters.
    """
    length = a.shape[-1]
    repeated = a[..., None].expand(*a.shape, length)  # (..., t, s) holds a[t]
    strictly_lower = torch.ones(length, length, dtype=torch.bool, device=a.device).tril(-1)
    sums = torch.cumsum(repeated.masked_fill(~strictly_lower, 0.0), dim=-2)
    lower = torch.ones(length, length, dtype=torch.bool, device=a.device).tril(0)
    return sums.masked_fill(~lower, float("-inf"))


def ssd_chunk(
    x: torch.Tensor, dt: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, state: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk of the Mamba-2 SSD recurrence, exactly, from ``state``.

    x: (b, l, h, p)  dt: (b, l, h) after softplus  a: (h) negative  b, c: (b, l, h, n)  state: (b, h, p, n)
    Returns y: (b, l, h, p) without the D skip term, and the state after the chunk: (b, h, p, n).
    """
    decay = (dt * a).transpose(1, 2)  # (b, h, l) log-decay per step
    cumulative = torch.cumsum(decay, dim=-1)  # (b, h, l)
    xdt = x * dt[..., None]  # (b, l, h, p)
    # 1. within the chunk: y_t = sum_{s<=t} (c_t . b_s) exp(decay s+1..t) xdt_s
    mix = torch.exp(segment_sums(decay))  # (b, h, t, s)
    scores = torch.einsum("blhn,bshn->bhls", c, b) * mix  # (b, h, t, s)
    y = torch.einsum("bhls,bshp->blhp", scores, xdt)
    # 2. from the incoming state: y_t += exp(decay 1..t) c_t . state
    y = y + torch.einsum("blhn,bhpn->blhp", c, state) * torch.exp(cumulative).transpose(1, 2)[..., None]
    # 3. the state leaving the chunk
    to_end = torch.exp(cumulative[..., -1:] - cumulative)  # (b, h, l)
    new_state = state * torch.exp(cumulative[..., -1])[..., None, None] + torch.einsum(
        "blhn,bhl,blhp->bhpn", b, to_end, xdt
    )
    return y, new_state


def ssd_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    state: torch.Tensor,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba-2 over a whole segment, ``chunk_size`` positions at a time. Shapes as in :func:`ssd_chunk`."""
    outputs = []
    for start in range(0, x.shape[1], chunk_size):
        end = start + chunk_size
        y, state = ssd_chunk(x[:, start:end], dt[:, start:end], a, b[:, start:end], c[:, start:end], state)
        outputs.append(y)
    return torch.cat(outputs, dim=1), state


def selective_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    state: torch.Tensor,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba-1 selective scan from ``state``; discretised chunk by chunk so memory stays bounded.

    x, dt: (b, l, d)  a: (d, n) negative  b, c: (b, l, n)  state: (b, d, n)
    Returns y: (b, l, d) without the D skip term, and the final state.
    """
    outputs = []
    for start in range(0, x.shape[1], chunk_size):
        end = start + chunk_size
        step_decay = torch.exp(dt[:, start:end, :, None] * a)  # (b, l, d, n)
        step_input = dt[:, start:end, :, None] * b[:, start:end, None, :] * x[:, start:end, :, None]  # (b, l, d, n)
        chunk_c = c[:, start:end]
        for t in range(step_decay.shape[1]):
            state = step_decay[:, t] * state + step_input[:, t]
            outputs.append(torch.einsum("bdn,bn->bd", state, chunk_c[:, t]))
    return torch.stack(outputs, dim=1), state
