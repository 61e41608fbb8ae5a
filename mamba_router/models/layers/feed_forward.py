"""The feed-forward blocks of hybrid families: gated MLPs and a routed mixture of experts.

Parameter names are the checkpoints' own: Granite-4.0-H's shared MLP (``input_linear`` holding gate and up,
``output_linear``) and experts (``router.layer``, ``input_linear.weight`` (experts, 2 x inner, d),
``output_linear.weight`` (experts, d, inner)); Llama-style ``gate_proj``/``up_proj``/``down_proj`` (Bamba);
Nemotron-H's squared-ReLU ``up_proj``/``down_proj`` and its experts (``gate``, ``experts.<i>``, ``shared_experts``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mamba_router.models.hybrid_config import GroupedMoEConfig
from mamba_router.models.layers.norms import RMSNorm
from mamba_router.models.ops import FusedStepOps


def routed(
    tokens: torch.Tensor,
    chosen: torch.Tensor,
    weights: torch.Tensor,
    expert: Callable[[int, torch.Tensor], torch.Tensor],
    accumulate: torch.dtype,
) -> torch.Tensor:
    """The weighted sum of each token's chosen experts (``chosen``, ``weights``: (tokens, k)), one expert at a time
    over the tokens that chose it; summed in ``accumulate``. The experts used are read back to the host."""
    out = torch.zeros(tokens.shape, dtype=accumulate, device=tokens.device)
    for index in chosen.unique().tolist():
        token_index, slot = torch.where(chosen == index)
        out.index_add_(
            0, token_index, expert(index, tokens[token_index]).to(accumulate) * weights[token_index, slot, None]
        )
    return out


GATHERED_EXPERTS_LIMIT = 64  # (token, expert) pairs up to which each pair's expert weights are gathered


def stacked_linears(experts: nn.ModuleList, name: str) -> ExpertStack:
    """The weights (and biases) of every expert's ``name`` projection as one (experts, out, in) tensor, each expert's
    parameter made a view of it (no copy is kept), so a token's experts can be gathered on the device by index.
    Stacked on the first call and again whenever the parameters were replaced (the model was moved or cast)."""
    linears = [getattr(expert, name) for expert in experts]
    stacks: dict[str, ExpertStack] = experts.__dict__.setdefault("_stacked", {})
    known = stacks.get(name)
    if known is not None and _views_of(known[0], linears[0].weight, linears[-1].weight):
        return known
    if linears[0].weight.is_cuda and torch.cuda.is_current_stream_capturing():
        # a graph would replay the copy from parameters that are freed once replaced
        raise RuntimeError("expert weights must be stacked by an eager step before a CUDA graph is captured")
    # the stack is made the kind of tensor the parameters are: ordinary ones may be trained later, and a parameter
    # loaded under inference mode cannot take an ordinary tensor's view as its data
    with torch.inference_mode(linears[0].weight.is_inference()), torch.no_grad():
        weight = torch.stack([linear.weight.detach() for linear in linears])
        bias = None if linears[0].bias is None else torch.stack([linear.bias.detach() for linear in linears])
        for index, linear in enumerate(linears):
            linear.weight.data = weight[index]
            if bias is not None:
                linear.bias.data = bias[index]
    stacks[name] = (weight, bias)
    return weight, bias


def _views_of(stacked: torch.Tensor, first: torch.Tensor, last: torch.Tensor) -> bool:
    return first.data_ptr() == stacked[0].data_ptr() and last.data_ptr() == stacked[-1].data_ptr()


ExpertStack = tuple[
    torch.Tensor, torch.Tensor | None
]  # every expert's weight (experts, out, in) and bias (experts, out)


def gathered_linear(stack: ExpertStack, pairs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``inputs`` (pairs, in) each through its own expert's projection (``pairs``: expert indices), on the device."""
    weight, bias = stack
    out = torch.bmm(weight[pairs], inputs[:, :, None])[..., 0]
    return out if bias is None else out + bias[pairs]


def weighted_sum(outputs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Each token's experts' outputs (tokens * k, d), pair by pair as ``weights`` (tokens, k) orders them, weighted
    and summed: (tokens, d)."""
    return (outputs.view(*weights.shape, -1) * weights[..., None]).sum(dim=1)


def _decode_gathers(tokens: torch.Tensor, chosen: torch.Tensor) -> bool:
    """Gather experts on the device while a CUDA graph is captured (it must) and for the few (token, expert) pairs
    of a decoding step; read many tokens expert by expert."""
    capturing = tokens.is_cuda and torch.cuda.is_current_stream_capturing()
    return capturing or chosen.numel() <= GATHERED_EXPERTS_LIMIT


def plain_stacks(experts: nn.ModuleList, names: tuple[str, ...]) -> dict[str, ExpertStack] | None:
    """The experts' ``names`` projections stacked (see :func:`stacked_linears`) when they are plain ``nn.Linear``
    modules; None when an adapter (LoRA) wraps them: then every expert must run as a module call, through it.
    Called in every eager step, so the stacks exist before a CUDA graph is captured."""
    ends = (experts[0], experts[-1])  # an adapter wraps every expert's projection alike
    if not plain_linears(*(getattr(expert, name) for expert in ends for name in names)):
        return None
    return {name: stacked_linears(experts, name) for name in names}


def plain_linears(*modules: nn.Module) -> bool:
    """True when every module is a plain ``nn.Linear`` (an adapter such as LoRA wraps a projection in another
    module: then it must run as a module call, never as its weight in a fused kernel)."""
    return all(type(module) is nn.Linear for module in modules)


@dataclass(frozen=True)
class StepInput:
    """What a feed-forward block's fused decoding step reads (rows: (b, d)): the residual stream ``residual`` plus
    ``scale`` times the layer's mixer output ``update``, normed by ``norm``."""

    update: torch.Tensor
    residual: torch.Tensor
    scale: float
    norm: RMSNorm


class FusedGatedMLP(nn.Module):
    """silu(gate) * up -> output, with gate and up from one ``input_linear``."""

    def __init__(self, d_model: int, inner: int, bias: bool = False) -> None:
        super().__init__()
        self.input_linear = nn.Linear(d_model, 2 * inner, bias=bias)
        self.output_linear = nn.Linear(inner, d_model, bias=bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        gate, up = self.input_linear(hidden).chunk(2, dim=-1)
        return self.output_linear(F.silu(gate) * up)

    def fuses(self) -> bool:
        """True when the fused step computes this block (plain projections)."""
        return plain_linears(self.input_linear, self.output_linear)

    def fused_step(self, step: StepInput, fused: FusedStepOps) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoding step in two kernels: the residual add, the norm and ``input_linear``; the gate and
        ``output_linear``. Returns the block's output and the residual stream it read."""
        norm = step.norm
        projected, stream = fused.norm_linear(
            step.update,
            step.residual,
            norm.weight,
            norm.eps,
            self.input_linear.weight,
            self.input_linear.bias,
            scale=step.scale,
        )
        assert stream is not None  # kept: a norm was given
        inner = self.output_linear.in_features
        gate, up = projected[:, :inner], projected[:, inner:]
        weight, bias = self.output_linear.weight, self.output_linear.bias
        return fused.gated_norm_linear(up, gate, None, 0.0, inner, "gate_only", weight, bias), stream


class GatedMLP(nn.Module):
    """silu(gate_proj(x)) * up_proj(x) -> down_proj."""

    def __init__(self, d_model: int, inner: int, bias: bool = False) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d_model, inner, bias=bias)
        self.up_proj = nn.Linear(d_model, inner, bias=bias)
        self.down_proj = nn.Linear(inner, d_model, bias=bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(hidden)) * self.up_proj(hidden))

    def fuses(self) -> bool:
        """True when the fused step computes this block (plain projections)."""
        return plain_linears(self.gate_proj, self.up_proj, self.down_proj)

    def fused_step(self, step: StepInput, fused: FusedStepOps) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoding step in three kernels: the residual add, the norm and ``gate_proj``; the norm (of the stream
        as stored) and ``up_proj``; the gate and ``down_proj``. Returns the output and the residual stream."""
        norm = step.norm
        gate, stream = fused.norm_linear(
            step.update,
            step.residual,
            norm.weight,
            norm.eps,
            self.gate_proj.weight,
            self.gate_proj.bias,
            scale=step.scale,
        )
        assert stream is not None  # kept: a norm was given
        up, _ = fused.norm_linear(
            stream, None, norm.weight, norm.eps, self.up_proj.weight, self.up_proj.bias, keep_residual=False
        )
        weight, bias = self.down_proj.weight, self.down_proj.bias
        return fused.gated_norm_linear(up, gate, None, 0.0, up.shape[-1], "gate_only", weight, bias), stream


class ExpertWeights(nn.Module):
    """One weight tensor for all experts, (experts, out, in)."""

    def __init__(self, experts: int, out_features: int, in_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(experts, out_features, in_features))


class Router(nn.Module):
    """The linear router (``router.layer``)."""

    def __init__(self, d_model: int, experts: int) -> None:
        super().__init__()
        self.layer = nn.Linear(d_model, experts, bias=False)


class MixtureOfExperts(nn.Module):
    """Each token goes to its ``top_k`` experts by router score, weighted by the softmax over those k scores."""

    def __init__(self, d_model: int, inner: int, experts: int, top_k: int) -> None:
        super().__init__()
        if not 0 < top_k <= experts:
            raise ValueError(f"top_k must be in 1..{experts}, got {top_k}")
        self.top_k = top_k
        self.router = Router(d_model, experts)
        self.input_linear = ExpertWeights(experts, 2 * inner, d_model)
        self.output_linear = ExpertWeights(experts, d_model, inner)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        shape = hidden.shape
        tokens = hidden.reshape(-1, shape[-1])
        scores, chosen = self.router.layer(tokens).float().topk(self.top_k, dim=-1)  # (t, k)
        weights = scores.softmax(dim=-1).to(tokens.dtype)
        if _decode_gathers(tokens, chosen):
            return self._gathered(tokens, chosen, weights).view(shape)
        return routed(tokens, chosen, weights, self._expert, tokens.dtype).view(shape)

    def _expert(self, expert: int, tokens: torch.Tensor) -> torch.Tensor:
        gate, up = F.linear(tokens, self.input_linear.weight[expert]).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, self.output_linear.weight[expert])

    def _gathered(self, tokens: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The experts' outputs computed per (token, chosen expert) pair from gathered weights: no value goes back to
        the host, so a decoding step with experts can be captured in a CUDA graph."""
        pairs = chosen.reshape(-1)
        inputs = tokens.repeat_interleave(self.top_k, dim=0)  # (t * k, d)
        gate, up = gathered_linear((self.input_linear.weight, None), pairs, inputs).chunk(2, dim=-1)
        return weighted_sum(gathered_linear((self.output_linear.weight, None), pairs, F.silu(gate) * up), weights)


class SoftmaxRoutedExperts(nn.Module):
    """Jamba's expert layers: each token's ``top_k`` gated experts by softmax probability over all experts, their
    outputs weighted by those probabilities (not renormalised)."""

    def __init__(self, d_model: int, inner: int, experts: int, top_k: int) -> None:
        super().__init__()
        if not 0 < top_k <= experts:
            raise ValueError(f"top_k must be in 1..{experts}, got {top_k}")
        self.top_k = top_k
        self.router = nn.Linear(d_model, experts, bias=False)
        self.experts = nn.ModuleList(GatedMLP(d_model, inner) for _ in range(experts))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        shape = hidden.shape
        tokens = hidden.reshape(-1, shape[-1])
        weights, chosen = self.router(tokens).softmax(dim=-1, dtype=torch.float32).topk(self.top_k, dim=-1)
        weights = weights.to(tokens.dtype)
        experts = self.experts
        stacks = plain_stacks(experts, ("gate_proj", "up_proj", "down_proj"))
        if stacks is not None and _decode_gathers(tokens, chosen):
            return self._gathered(stacks, tokens, chosen, weights).view(shape)
        return routed(tokens, chosen, weights, lambda e, t: experts[e](t), tokens.dtype).view(shape)

    def _gathered(
        self, stacks: dict[str, ExpertStack], tokens: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        """Each (token, chosen expert) pair through its expert's weights, gathered on the device (capturable)."""
        pairs = chosen.reshape(-1)
        inputs = tokens.repeat_interleave(self.top_k, dim=0)
        gate = gathered_linear(stacks["gate_proj"], pairs, inputs)
        up = gathered_linear(stacks["up_proj"], pairs, inputs)
        return weighted_sum(gathered_linear(stacks["down_proj"], pairs, F.silu(gate) * up), weights)


class SquaredReluMLP(nn.Module):
    """up_proj -> relu(x)^2 -> down_proj (Nemotron-H's MLP layers and experts)."""

    def __init__(self, d_model: int, inner: int, bias: bool = False) -> None:
        super().__init__()
        self.up_proj = nn.Linear(d_model, inner, bias=bias)
        self.down_proj = nn.Linear(inner, d_model, bias=bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.down_proj(torch.square(F.relu(self.up_proj(hidden))))


class GroupRouter(nn.Module):
    """Sigmoid router with a per-expert correction bias used for choosing, not weighting (``gate``)."""

    e_score_correction_bias: torch.Tensor

    def __init__(self, d_model: int, experts: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(experts, d_model))
        self.register_buffer("e_score_correction_bias", torch.zeros(experts))


class GroupRoutedExperts(nn.Module):
    """Each token's ``top_k`` experts among those of its best ``topk_group`` groups (groups ranked by the sum of
    their two best corrected scores); the chosen sigmoid scores, normalised and scaled, weight the experts'
    outputs; one shared expert is added for every token."""

    def __init__(self, d_model: int, cfg: GroupedMoEConfig) -> None:
        super().__init__()
        if cfg.experts % cfg.groups or not 0 < cfg.topk_group <= cfg.groups or not 0 < cfg.top_k <= cfg.experts:
            raise ValueError(f"inconsistent expert routing: {cfg}")
        self.cfg = cfg
        self.gate = GroupRouter(d_model, cfg.experts)
        self.experts = nn.ModuleList(
            SquaredReluMLP(d_model, cfg.expert_intermediate, cfg.bias) for _ in range(cfg.experts)
        )
        self.shared_experts = SquaredReluMLP(d_model, cfg.shared_intermediate, cfg.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        cfg, shape = self.cfg, hidden.shape
        tokens = hidden.reshape(-1, shape[-1])
        scores = F.linear(tokens.float(), self.gate.weight.float()).sigmoid()  # (t, experts)
        corrected = scores + self.gate.e_score_correction_bias.float()  # chooses experts; weights use plain scores
        per_group = corrected.view(-1, cfg.groups, cfg.experts // cfg.groups)
        group_scores = per_group.topk(min(2, per_group.shape[-1]), dim=-1).values.sum(dim=-1)  # (t, groups)
        best_groups = group_scores.topk(cfg.topk_group, dim=-1).indices
        allowed = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, best_groups, True)
        allowed = allowed[:, :, None].expand_as(per_group).reshape(-1, cfg.experts)
        chosen = corrected.masked_fill(~allowed, float("-inf")).topk(cfg.top_k, dim=-1).indices  # (t, k)
        weights = scores.gather(1, chosen)
        if cfg.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        weights = weights * cfg.routed_scaling
        experts = self.experts
        stacks = plain_stacks(experts, ("up_proj", "down_proj"))
        if stacks is not None and _decode_gathers(tokens, chosen):
            out = self._gathered(stacks, tokens, chosen, weights)
        else:
            out = routed(tokens, chosen, weights, lambda e, t: experts[e](t), torch.float32)
        shared: torch.Tensor = self.shared_experts(hidden)
        return out.to(hidden.dtype).view(shape) + shared

    def _gathered(
        self, stacks: dict[str, ExpertStack], tokens: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        """Each (token, chosen expert) pair through its expert's weights, gathered on the device (capturable);
        summed in float32 as the per-expert loop sums."""
        pairs = chosen.reshape(-1)
        inputs = tokens.repeat_interleave(chosen.shape[-1], dim=0)
        up = gathered_linear(stacks["up_proj"], pairs, inputs)
        return weighted_sum(gathered_linear(stacks["down_proj"], pairs, torch.square(F.relu(up))).float(), weights)
