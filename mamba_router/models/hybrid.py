"""Hybrid families: Mamba and attention layers in one stack (Granite-4.0-H, Bamba, Nemotron-H, Jamba, Falcon-H1,
Zamba2), one stack for every backend.

Granite and Bamba layers are a pre-norm residual pair: norm -> Mamba-2 mixer or attention -> residual (times the
residual multiplier), then norm -> feed-forward (gated MLP, plus routed experts for Granite MoE models) -> residual.
A Nemotron-H layer is one pre-norm residual block: Mamba-2, attention, an MLP or experts. Jamba's Mamba layers are
Mamba-1; a Falcon-H1 layer runs Mamba-2 and attention side by side and adds their outputs; a Zamba2 "shared" layer
feeds its Mamba-2 mixer the output of a shared attention + MLP block (``layers/shared_block.py``). The Mamba-2 mixer is the
one in :mod:`mamba_router.models.layers.mamba2`; attention and the feed-forward blocks are in
:mod:`~mamba_router.models.layers.attention` and :mod:`~mamba_router.models.layers.feed_forward`. Parameter names are
the family's own in transformers' checkpoints, renamed as data where ours differ (:func:`weight_names`).

The stack's memory is an :class:`~mamba_router.models.ssm_cache.SSMCache` holding the Mamba layers' conv and SSM
states and the attention layers' keys and values, so a document can be read once and questions continue from it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from mamba_router.models.checkpoint import WeightNames, load_weights, read_weights
from mamba_router.models.hybrid_config import HybridConfig, LayerKind, hybrid_config_from_json
from mamba_router.models.layers.attention import Attention
from mamba_router.models.layers.feed_forward import (
    FusedGatedMLP,
    GatedMLP,
    GroupRoutedExperts,
    MixtureOfExperts,
    SoftmaxRoutedExperts,
    SquaredReluMLP,
    StepInput,
)
from mamba_router.models.layers.fused_input import BlockInput
from mamba_router.models.layers.mamba1 import Mamba1Mixer
from mamba_router.models.layers.mamba2 import Mamba2Mixer
from mamba_router.models.layers.norms import RMSNorm
from mamba_router.models.layers.shared_block import SharedBlock
from mamba_router.models.ops import FusedStepOps, SSMOps, fused_step_ops
from mamba_router.models.ssm_cache import SSMCache
from mamba_router.models.stack import LayerStack

TIED = (("lm_head.weight", "model.embed_tokens.weight"),)
LAYER_ATTRIBUTES = {"mamba": "mamba", "attention": "self_attn", "mlp": "mlp", "moe": "moe"}
LORA_TARGETS = ("in_proj", "out_proj", "q_proj", "k_proj", "v_proj", "o_proj")


class HybridLayer(nn.Module):
    """One layer: its pre-norm and block (a Mamba-2 mixer, attention, or for Nemotron-H an MLP or experts), then,
    in families that have one, the feed-forward block with its own pre-norm."""

    def __init__(self, cfg: HybridConfig, kind: LayerKind, index: int) -> None:
        super().__init__()
        d, ff = cfg.d_model, cfg.feed_forward
        self.kind = kind
        self.input_layernorm = RMSNorm(d, cfg.norm_eps)
        mixer = Mamba2Mixer if cfg.mamba.arch == "mamba2" else Mamba1Mixer
        self.mamba: Mamba1Mixer | Mamba2Mixer | None = (
            mixer(cfg.mamba) if kind in ("mamba", "parallel", "shared") else None
        )
        self.linear = nn.Linear(d, d, bias=False) if kind == "shared" else None  # the shared block's output into Mamba
        self.self_attn = Attention(d, cfg.attention) if kind in ("attention", "parallel") else None
        self.mlp = (
            SquaredReluMLP(d, cfg.block_mlp.intermediate, cfg.block_mlp.bias)
            if kind == "mlp" and cfg.block_mlp
            else None
        )
        self.moe = GroupRoutedExperts(d, cfg.block_moe) if kind == "moe" and cfg.block_moe else None
        if kind in ("mlp", "moe") and self.mlp is None and self.moe is None:
            raise ValueError(f"a {kind} layer needs its shapes in the config")
        self.post_attention_layernorm = RMSNorm(d, cfg.norm_eps) if ff.style != "none" else None
        self.shared_mlp = FusedGatedMLP(d, ff.intermediate, ff.bias) if ff.style == "fused" else None
        self.feed_forward: GatedMLP | SoftmaxRoutedExperts | None = None
        if ff.style == "split" and index in cfg.expert_layers:
            self.feed_forward = SoftmaxRoutedExperts(d, ff.expert_intermediate, ff.experts, ff.top_k)
        elif ff.style == "split":
            self.feed_forward = GatedMLP(d, ff.intermediate, ff.bias)
        self.block_sparse_moe = (
            MixtureOfExperts(d, ff.expert_intermediate, ff.experts, ff.top_k)
            if ff.style == "fused" and ff.experts
            else None
        )

    def position_free_block(self, normed: torch.Tensor) -> torch.Tensor:
        """The output of an MLP or experts layer for normed ``hidden`` (any leading shape)."""
        block = self.mlp if self.mlp is not None else self.moe
        assert block is not None
        out: torch.Tensor = block(normed)
        return out

    def fused_feed_forward(self) -> FusedGatedMLP | GatedMLP | None:
        """The feed-forward block when the fused decoding step computes it whole: a gated MLP of plain projections
        with no experts beside it (experts, and MLPs wrapped by an adapter, take the unfused step)."""
        mlp = self.shared_mlp if self.shared_mlp is not None else self.feed_forward
        if self.block_sparse_moe is not None or not isinstance(mlp, FusedGatedMLP | GatedMLP):
            return None
        return mlp if mlp.fuses() else None

    def feed_forward_block(self, hidden: torch.Tensor) -> torch.Tensor:
        """The feed-forward output for normed ``hidden``: the MLP, plus the experts' when there are experts."""
        mlp = self.shared_mlp if self.shared_mlp is not None else self.feed_forward
        assert mlp is not None
        out: torch.Tensor = mlp(hidden)
        if self.block_sparse_moe is not None:
            out = self.block_sparse_moe(hidden) + out
        return out


class HybridBackbone(nn.Module):
    """Embedding, layers, final norm (transformers' ``model``)."""

    def __init__(self, cfg: HybridConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(HybridLayer(cfg, kind, i) for i, kind in enumerate(cfg.layer_kinds))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        shared, uses = cfg.shared_blocks, cfg.layer_kinds.count("shared")
        self.blocks = (
            nn.ModuleList(
                SharedBlock(cfg.d_model, cfg.attention, shared, cfg.norm_eps, uses, block)
                for block in range(shared.blocks)
            )
            if shared is not None
            else nn.ModuleList()
        )

    def indexed_layers(self) -> Iterator[tuple[HybridLayer, int, int]]:
        """Each layer with its places in the cache: its index among the Mamba layers and among the attention layers
        (-1 where it has none; a Falcon-H1 layer has both)."""
        mamba = attention = 0
        for module in self.layers:
            layer = cast(HybridLayer, module)
            attends = layer.self_attn is not None or layer.kind == "shared"
            yield layer, mamba if layer.mamba is not None else -1, attention if attends else -1
            mamba += layer.mamba is not None
            attention += attends


class HybridLM(LayerStack):
    """A hybrid Mamba-2 + attention language model whose numerics are the ``ops`` of a backend.

    A :class:`~mamba_router.models.stack.LayerStack` like :class:`~mamba_router.models.mamba.MambaLM`, so every Mamba
    backend and the generation code run it. Its keys and values grow with the text: a step is captured in a CUDA
    graph on a static cache (fixed key/value buffers, the length on the device; ``SSMCache.static_copy``). A decoding
    step gathers each token's experts on the device (Granite, Nemotron-H, Jamba), which a graph can capture; the
    capture is on for Granite's expert layers, which were verified on the GPU, and off for Nemotron-H's and Jamba's
    until they are (:attr:`graph_capturable`).
    """

    def __init__(self, cfg: HybridConfig, ops: SSMOps, *, ssm_state_dtype: torch.dtype = torch.float32) -> None:
        super().__init__(ops, ssm_state_dtype)
        self.cfg = cfg
        self.model = HybridBackbone(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        # gathered experts capture (Granite: verified on the GPU); Nemotron-H's and Jamba's gather the same way but
        # their capture has not run on a GPU yet, so they decode eagerly there
        self.graph_capturable = "moe" not in cfg.layer_kinds and not cfg.expert_layers

    @property
    def lora_targets(self) -> list[str]:
        """The projections LoRA adapts by default: the Mamba-2 in/out_proj and attention's q/k/v/o_proj."""
        return list(LORA_TARGETS)

    def new_cache(self, batch_size: int) -> SSMCache:
        """Empty states for ``batch_size`` sequences: conv and SSM states per Mamba layer, empty key and value
        buffers per attention layer."""
        weight = self.lm_head.weight
        cache = SSMCache([], [])
        attention = self.cfg.attention
        for layer, _, a in self.model.indexed_layers():
            if layer.mamba is not None:
                conv_shape, ssm_shape = layer.mamba.state_shapes()
                cache.conv.append(torch.zeros(batch_size, *conv_shape, device=weight.device, dtype=weight.dtype))
                cache.ssm.append(torch.zeros(batch_size, *ssm_shape, device=weight.device, dtype=self.ssm_state_dtype))
            if a >= 0:
                for buffers in (cache.keys, cache.values):
                    shape = (batch_size, attention.kv_heads, 0, attention.head_dim)
                    buffers.append(torch.zeros(shape, device=weight.device, dtype=weight.dtype))
        return cache

    def forward(
        self,
        input_ids: torch.Tensor,
        cache: SSMCache | None = None,
        *,
        last_only: bool = False,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """Logits for ``input_ids`` (b, l), as :meth:`MambaLM.forward <mamba_router.models.mamba.MambaLM.forward>`."""
        chunk = chunk_size or self.cfg.chunk_size
        continuing = cache is not None and cache.tokens > 0
        hidden = embeddings = self._embed(input_ids)
        for layer, m, a in self.model.indexed_layers():
            hidden = self._layer(layer, m, a, hidden, embeddings, cache, continuing=continuing, chunk=chunk)
        if cache is not None:
            cache.tokens += int(input_ids.shape[1])
        return self._logits(hidden[:, -1] if last_only else hidden)

    def step(self, tokens: torch.Tensor, cache: SSMCache) -> torch.Tensor:
        """Feed one token per sequence (b,); return the next-token logits (b, vocab). States update in place.

        Where the backend has fused step kernels, a Mamba-only layer runs whole in them (:meth:`_fused_mamba_layer`)
        and leaves its last residual add to the next such layer's first kernel (:class:`PendingSum`)."""
        hidden = embeddings = self._embed(tokens[:, None])
        fused = fused_step_ops(self.ops, tokens.shape[0])
        pending: PendingSum | None = None
        for layer, m, a in self.model.indexed_layers():
            if (
                fused is not None
                and layer.kind == "mamba"
                and layer.mamba is not None
                and layer.mamba.fuses_with(fused)
            ):
                pending = self._fused_mamba_layer(layer, m, hidden[:, 0] if pending is None else pending, fused, cache)
                continue
            if pending is not None:
                hidden, pending = pending.total()[:, None], None
            hidden = self._layer(layer, m, a, hidden, embeddings, cache, stepping=True)
        if pending is not None:
            hidden = pending.total()[:, None]
        cache.tokens += 1
        if cache.length is not None:
            cache.length.add_(1)
        return self._logits(hidden[:, 0])

    def _layer(
        self,
        layer: HybridLayer,
        m: int,
        a: int,
        hidden: torch.Tensor,
        embeddings: torch.Tensor,
        cache: SSMCache | None,
        *,
        continuing: bool = False,
        chunk: int = 0,
        stepping: bool = False,
    ) -> torch.Tensor:
        """One layer over ``hidden`` (b, l, d); with ``stepping`` (l = 1, a cache) the Mamba mixer takes its one-token
        step instead of a read. Where the backend has fused step kernels, a gated MLP takes the residual add and its
        norm (:meth:`_after`)."""
        fused = fused_step_ops(self.ops, hidden.shape[0]) if stepping and cache is not None else None
        normed = self._norm(layer.input_layernorm, self._with_shared_block(layer, hidden, embeddings, cache, a))
        parts = []
        if layer.mamba is not None:
            conv, ssm = (cache.conv[m], cache.ssm[m]) if cache is not None else (None, None)
            if stepping:
                assert conv is not None and ssm is not None
                parts.append(layer.mamba.step(normed[:, 0], self.ops, conv, ssm)[:, None])
            else:
                parts.append(layer.mamba(normed, self.ops, conv, ssm, continuing=continuing, chunk_size=chunk))
        if layer.self_attn is not None:
            parts.append(layer.self_attn(normed, self.ops, cache, a))
        return self._after(layer, hidden, _combined(parts) if parts else layer.position_free_block(normed), fused)

    def _fused_mamba_layer(
        self, layer: HybridLayer, m: int, hidden: torch.Tensor | PendingSum, fused: FusedStepOps, cache: SSMCache
    ) -> PendingSum:
        """A Mamba-only layer's decoding step in the fused kernels: the residual add still pending from the layer
        before (if any) and the norm in in_proj's kernel, the mixer, then the residual add, norm and gated MLP in the
        MLP's kernels. ``hidden``: the layer's input rows (b, d) or the sum that makes them. Returns the layer's
        output as a sum still to add."""
        assert layer.mamba is not None
        block = BlockInput(norm=layer.input_layernorm, keep_residual=False)
        if isinstance(hidden, PendingSum):
            block = BlockInput(hidden.residual, layer.input_layernorm, scale=hidden.scale)
        x = hidden.update if isinstance(hidden, PendingSum) else hidden
        mixed, stream = layer.mamba.fused_step(x, fused, cache.conv[m], cache.ssm[m], block)
        stream = x if stream is None else stream  # the layer's input, added up in in_proj's kernel
        scale, norm = self.cfg.residual_multiplier, layer.post_attention_layernorm
        mlp = layer.fused_feed_forward()
        if norm is None:
            return PendingSum(mixed, stream, scale)
        if mlp is not None:
            out, stream = mlp.fused_step(StepInput(mixed, stream, scale, norm), fused)
            return PendingSum(out, stream, scale)
        stream = torch.add(stream, mixed, alpha=scale)
        return PendingSum(layer.feed_forward_block(self._norm(norm, stream[:, None]))[:, 0], stream, scale)

    def _with_shared_block(
        self, layer: HybridLayer, hidden: torch.Tensor, embeddings: torch.Tensor, cache: SSMCache | None, use: int
    ) -> torch.Tensor:
        """Zamba2: the Mamba input of a shared layer is ``hidden`` plus the shared block's output (use ``use``, block
        ``use % blocks``) through the layer's ``linear``; other layers read ``hidden``."""
        if layer.linear is None:
            return hidden
        block = self.model.blocks[use % len(self.model.blocks)]
        shared: torch.Tensor = layer.linear(block(hidden, embeddings, self.ops, cache, use, use))
        return hidden + shared

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        hidden: torch.Tensor = self.model.embed_tokens(ids)
        return hidden * self.cfg.embedding_multiplier if self.cfg.embedding_multiplier != 1.0 else hidden

    def _norm(self, norm: RMSNorm, hidden: torch.Tensor) -> torch.Tensor:
        normed, _ = self.ops.add_rms_norm(hidden, None, norm.weight, norm.eps, residual_in_fp32=False)
        return normed

    def _after(
        self, layer: HybridLayer, hidden: torch.Tensor, mixed: torch.Tensor, fused: FusedStepOps | None = None
    ) -> torch.Tensor:
        """The rest of a layer after its mixer: residual, norm, feed-forward, residual; in a decoding step with
        ``fused`` kernels a gated MLP takes the first three into its kernels."""
        scale = self.cfg.residual_multiplier  # one fused kernel per residual (add with alpha), not a scale then an add
        mlp = layer.fused_feed_forward() if fused is not None else None
        if fused is not None and mlp is not None and layer.post_attention_layernorm is not None:
            step = StepInput(mixed[:, 0], hidden[:, 0], scale, layer.post_attention_layernorm)
            out, stream = mlp.fused_step(step, fused)
            return torch.add(stream, out, alpha=scale)[:, None]
        hidden = torch.add(hidden, mixed, alpha=scale)
        if layer.post_attention_layernorm is None:
            return hidden
        return torch.add(
            hidden, layer.feed_forward_block(self._norm(layer.post_attention_layernorm, hidden)), alpha=scale
        )

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.lm_head(self._norm(self.model.norm, hidden))
        return logits / self.cfg.logits_scaling if self.cfg.logits_scaling != 1.0 else logits


@dataclass(frozen=True)
class PendingSum:
    """A decoding step's residual stream not added up yet: ``residual + scale * update`` (rows (b, d)). The next
    fused Mamba layer adds it in its first kernel (one launch fewer a layer); other layers take :meth:`total`."""

    update: torch.Tensor
    residual: torch.Tensor
    scale: float

    def total(self) -> torch.Tensor:
        """The sum, as the unfused step adds it (one kernel)."""
        return torch.add(self.residual, self.update, alpha=self.scale)


def _combined(parts: list[torch.Tensor]) -> torch.Tensor:
    """The sum of a layer's mixer outputs (Falcon-H1 adds its Mamba and attention outputs)."""
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def weight_names(cfg: HybridConfig) -> WeightNames:
    """How ``cfg``'s family names the stack's tensors in its checkpoints (renames as data; Nemotron-H's depend on
    each layer's kind, since every layer's block is called ``mixer`` there)."""
    if cfg.family in ("bamba", "jamba", "falcon_h1"):
        return WeightNames(
            tied=TIED,
            renames=(("model.final_layernorm.", "model.norm."),),
            part_renames=((".pre_ff_layernorm.", ".post_attention_layernorm."),),
        )
    if cfg.family == "zamba2":
        shared_renames = [("model.final_layernorm.", "model.norm.")]
        uses = [i for i, kind in enumerate(cfg.layer_kinds) if kind == "shared"]
        blocks = cfg.shared_blocks.blocks if cfg.shared_blocks is not None else 1
        for use, i in enumerate(uses):
            shared_renames.append((f"model.layers.{i}.shared_transformer.", f"model.blocks.{use % blocks}."))
            shared_renames.append((f"model.layers.{i}.mamba_decoder.", f"model.layers.{i}."))
        return WeightNames(tied=TIED, renames=tuple(shared_renames))
    if cfg.family == "nemotron_h":
        per_layer = []
        for i, kind in enumerate(cfg.layer_kinds):
            per_layer.append((f"backbone.layers.{i}.mixer.", f"model.layers.{i}.{LAYER_ATTRIBUTES[kind]}."))
            per_layer.append((f"backbone.layers.{i}.norm.", f"model.layers.{i}.input_layernorm."))
        renames = (("backbone.embeddings.", "model.embed_tokens."), ("backbone.norm_f.", "model.norm."), *per_layer)
        return WeightNames(tied=TIED, renames=renames)
    return WeightNames(tied=TIED)


def fold_multipliers(cfg: HybridConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Falcon-H1's activation multipliers as scales of the weights (module names): ``in_proj(x * s) * rows`` is
    ``in_proj`` with its weight's columns times s and its rows times the z/x/B/C/dt multipliers, and so on. The
    logits and the embedding keep their multipliers in the config."""
    m = cfg.multipliers
    assert m is not None
    d, groups_state, heads = cfg.mamba.d_inner, cfg.mamba.ngroups * cfg.mamba.d_state, cfg.mamba.nheads
    widths = (d, d, groups_state, groups_state, heads)
    rows = torch.cat([torch.full((w,), scale) for w, scale in zip(widths, m.ssm_zxbcdt, strict=True)])
    scales = {  # module-name suffix -> (scale of the weight, scale of the bias)
        ".self_attn.q_proj": (m.attention_in, 1.0),
        ".self_attn.k_proj": (m.attention_in * m.key, m.key),
        ".self_attn.v_proj": (m.attention_in, 1.0),
        ".self_attn.o_proj": (m.attention_out, m.attention_out),
        ".mamba.out_proj": (m.ssm_out, m.ssm_out),
        ".feed_forward.gate_proj": (m.mlp_gate, m.mlp_gate),
        ".feed_forward.down_proj": (m.mlp_down, m.mlp_down),
    }
    folded = dict(state)
    for name, tensor in state.items():
        module, _, kind = name.rpartition(".")
        if module.endswith(".mamba.in_proj"):
            scale = rows.to(tensor.dtype)
            folded[name] = tensor * (scale[:, None] * m.ssm_in if kind == "weight" else scale)
            continue
        for suffix, (weight_scale, bias_scale) in scales.items():
            if module.endswith(suffix):
                folded[name] = tensor * (weight_scale if kind == "weight" else bias_scale)
    return folded


def from_mamba_ssm_names(cfg: HybridConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mamba-ssm's hybrid checkpoint as module names: ``backbone.layers.i.{norm,mixer,norm2,mlp}`` to our layer's
    parts; an attention mixer's packed ``in_proj`` (q, then k, then v rows) split into q/k/v_proj; the MLP's ``fc1``
    (value half, then gate half) reordered gate first as ``input_linear`` reads it. Other names pass unchanged, so a
    stray tensor is reported by the loader."""
    att = cfg.attention
    q_rows, kv_rows = att.heads * att.head_dim, att.kv_heads * att.head_dim
    renamed: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name.startswith("backbone.embedding."):
            renamed["model.embed_tokens." + name.removeprefix("backbone.embedding.")] = tensor
            continue
        if name.startswith("backbone.norm_f."):
            renamed["model.norm." + name.removeprefix("backbone.norm_f.")] = tensor
            continue
        parts = name.split(".", 4)  # backbone, layers, i, part, rest
        if len(parts) < 5 or parts[:2] != ["backbone", "layers"] or not parts[2].isdigit():
            renamed[name] = tensor
            continue
        i, part, rest = int(parts[2]), parts[3], parts[4]
        layer = f"model.layers.{i}."
        attention = i < len(cfg.layer_kinds) and cfg.layer_kinds[i] == "attention"
        if part == "norm":
            renamed[layer + "input_layernorm." + rest] = tensor
        elif part == "norm2":
            renamed[layer + "post_attention_layernorm." + rest] = tensor
        elif part == "mixer" and attention and rest.startswith("in_proj."):
            kind = rest.removeprefix("in_proj.")
            q, k, v = tensor.split([q_rows, kv_rows, kv_rows], dim=0)
            for proj, piece in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
                renamed[f"{layer}self_attn.{proj}.{kind}"] = piece
        elif part == "mixer" and attention and rest.startswith("out_proj."):
            renamed[layer + "self_attn.o_proj." + rest.removeprefix("out_proj.")] = tensor
        elif part == "mixer":
            renamed[layer + "mamba." + rest] = tensor
        elif part == "mlp" and rest.startswith("fc1."):
            value, gate = tensor.chunk(2, dim=0)
            renamed[layer + "shared_mlp.input_linear." + rest.removeprefix("fc1.")] = torch.cat([gate, value])
        elif part == "mlp" and rest.startswith("fc2."):
            renamed[layer + "shared_mlp.output_linear." + rest.removeprefix("fc2.")] = tensor
        else:
            renamed[name] = tensor
    return renamed


def build_hybrid(cfg: HybridConfig, state: dict[str, torch.Tensor], ops: SSMOps, where: str) -> HybridLM:
    """A HybridLM holding ``state``'s tensors (the family's checkpoint names); every mismatch is an error naming it."""
    with torch.device("meta"):
        model = HybridLM(cfg, ops)
    names = weight_names(cfg)
    if cfg.family == "mamba_ssm":
        state = from_mamba_ssm_names(cfg, state)
    if cfg.multipliers is not None:
        state = fold_multipliers(cfg, names.to_module_names(state))
        names = WeightNames(tied=names.tied)
    load_weights(model, state, names, tie=cfg.tie_embeddings, where=where, assign=True)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.eval()


def load_hybrid_directory(directory: Path, config: dict[str, Any], ops: SSMOps) -> tuple[HybridLM, str]:
    """Load a transformers checkpoint directory of a hybrid family (``config``: its parsed config.json)."""
    cfg = hybrid_config_from_json(config, str(directory / "config.json"))
    fmt = "mamba-ssm" if cfg.family == "mamba_ssm" else "transformers"
    return build_hybrid(cfg, read_weights(directory), ops, str(directory)), fmt
