"""The reference ops: state-space numerics in plain PyTorch, walking the sequence chunk by chunk.

:class:`TorchOps` implements :class:`~mamba_router.models.ops.SSMOps` for every device torch runs on (CPU, MPS,
CUDA). It is the implementation the other backends are checked against, and the one they fall back to where a
kernel package is missing.

Shapes: b batch, l (and s) positions in a chunk, h heads, p head dim, g groups, n state size, d channels.
Only float32 arithmetic, real numbers and ops that the MPS backend implements (no float64, no complex).
Peak memory grows with the chunk, never with the sequence: each chunk reads the state left by the one before it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mamba_router.models.ops import NO_DT_LIMIT, DtLimit


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


def ssd_chunks(
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


def selective_scan_chunks(
    x: torch.Tensor,
    dt: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    state: torch.Tensor,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba-1 selective scan from ``state``; discretised chunk by chunk so memory stays bounded.

    x, dt: (b, l, d) with dt after softplus  a: (d, n) negative  b, c: (b, l, n)  state: (b, d, n)
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


def time_steps(dt: torch.Tensor, dt_bias: torch.Tensor | None, dt_limit: DtLimit) -> torch.Tensor:
    """softplus(dt + bias), clamped to ``dt_limit``, in float32."""
    steps = dt.float() if dt_bias is None else dt.float() + dt_bias.float()
    steps = F.softplus(steps)
    return steps if dt_limit == NO_DT_LIMIT else steps.clamp(*dt_limit)


def rms_normalise(x: torch.Tensor, weight: torch.Tensor, eps: float, group_size: int | None = None) -> torch.Tensor:
    """RMSNorm in float32 (per group of ``group_size`` channels when given), times ``weight``; float32 out."""
    h = x.float()
    if group_size is not None:
        h = h.unflatten(-1, (-1, group_size))
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    if group_size is not None:
        h = h.flatten(-2)
    return h * weight.float()


class TorchOps:
    """:class:`~mamba_router.models.ops.SSMOps` in plain PyTorch: exact, memory-flat, and runs anywhere."""

    name = "torch"

    def add_rms_norm(
        self,
        x: torch.Tensor,
        residual: torch.Tensor | None,
        weight: torch.Tensor,
        eps: float,
        *,
        residual_in_fp32: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        total = x.float() if residual is None else x.float() + residual.float()
        stream = total if residual_in_fp32 else total.to(x.dtype)
        return rms_normalise(stream, weight, eps).to(x.dtype), stream

    def gated_rms_norm(
        self,
        x: torch.Tensor,
        z: torch.Tensor,
        weight: torch.Tensor,
        eps: float,
        group_size: int,
        norm_before_gate: bool = False,
    ) -> torch.Tensor:
        if norm_before_gate:
            return (rms_normalise(x, weight, eps, group_size) * F.silu(z.float())).to(x.dtype)
        return rms_normalise(x.float() * F.silu(z.float()), weight, eps, group_size).to(x.dtype)

    def causal_conv(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, initial_state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        width = weight.shape[-1]
        if initial_state is None:
            initial_state = x.new_zeros(*x.shape[:2], width - 1)
        full = torch.cat([initial_state.to(x.dtype), x], dim=-1)  # (b, d, k-1+l)
        out = F.conv1d(full, weight.unsqueeze(1), bias, groups=weight.shape[0])  # (b, d, l)
        return F.silu(out), full[..., full.shape[-1] - (width - 1) :]

    def conv_step(
        self, x: torch.Tensor, state: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        out, new_state = self.causal_conv(x.unsqueeze(-1), weight, bias, state)
        state.copy_(new_state)
        return out.squeeze(-1)

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
        xf = x.float().transpose(1, 2)  # (b, l, d)
        state = x.new_zeros(x.shape[0], *a.shape, dtype=torch.float32) if initial_state is None else initial_state
        y, state = selective_scan_chunks(
            xf,
            time_steps(dt.transpose(1, 2), dt_bias, NO_DT_LIMIT),
            a.float(),
            b.float().transpose(1, 2),
            c.float().transpose(1, 2),
            state.float(),
            chunk_size,
        )
        y = (y + xf * d.float()) * F.silu(z.float().transpose(1, 2))
        return y.transpose(1, 2).to(x.dtype), state

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
        batch, _, heads, head_dim = x.shape
        heads_per_group = heads // b.shape[2]
        if initial_state is None:
            initial_state = x.new_zeros(batch, heads, head_dim, b.shape[-1], dtype=torch.float32)
        xf = x.float()
        y, state = ssd_chunks(
            xf,
            time_steps(dt, dt_bias, dt_limit),
            a.float(),
            b.float().repeat_interleave(heads_per_group, dim=2),
            c.float().repeat_interleave(heads_per_group, dim=2),
            initial_state.float(),
            chunk_size,
        )
        return (y + xf * d.float()[:, None]).to(x.dtype), state

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
        steps = time_steps(dt, dt_bias, dt_limit)
        xf = x.float()
        if state.dim() == 3:  # Mamba-1: state (b, d, n); x, dt: (b, d); b, c: (b, n)
            decay = torch.exp(steps[..., None] * a.float())  # (b, d, n)
            state.copy_(state * decay + steps[..., None] * b.float()[:, None, :] * xf[..., None])
            y = torch.einsum("bdn,bn->bd", state.float(), c.float()) + d.float() * xf
        else:  # Mamba-2: state (b, h, p, n); x: (b, h, p); dt: (b, h); b, c: (b, g, n)
            heads_per_group = state.shape[1] // b.shape[1]
            bh = b.float().repeat_interleave(heads_per_group, dim=1)  # (b, h, n)
            ch = c.float().repeat_interleave(heads_per_group, dim=1)
            decay = torch.exp(steps * a.float())[..., None, None]  # (b, h, 1, 1)
            state.copy_(state * decay + (steps[..., None] * xf)[..., None] * bh[:, :, None, :])
            y = torch.einsum("bhpn,bhn->bhp", state.float(), ch) + d.float()[:, None] * xf
        if z is not None:
            y = y * F.silu(z.float())
        return y.to(x.dtype)

    def attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
    ) -> torch.Tensor:
        return grouped_attention(q, k, v, mask, scale)


def grouped_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """``scaled_dot_product_attention`` with grouped keys and values (see ``SSMOps.attention``)."""
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=mask is None, scale=scale, enable_gqa=q.shape[1] != k.shape[1]
    )
