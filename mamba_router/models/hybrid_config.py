"""The shapes of a hybrid Mamba-2 + attention model, read from transformers' ``config.json`` of its family.

Families read here: ``granitemoehybrid`` (IBM Granite-4.0-H: Mamba-2 and attention layers, each followed by a shared
gated MLP and optionally a mixture of experts; multipliers on embeddings, residuals and logits; RoPE or none) and
``bamba`` (IBM/Princeton Bamba: Mamba-2 and attention layers, each followed by a gated MLP; partial RoPE) and
``nemotron_h`` (NVIDIA Nemotron-H / Nemotron Nano 2 and 3: every layer is one block, Mamba-2, attention without
position embedding, a squared-ReLU MLP, or a mixture of squared-ReLU experts with sigmoid group routing) and
``jamba`` (AI21 Jamba: Mamba-1 layers with weighted RMS norms on dt, B and C, attention without position embedding
every ``attn_layer_period`` layers, and a gated MLP or, every ``expert_layer_period`` layers, softmax-routed gated
experts) and ``falcon_h1`` (TII Falcon-H1: every layer runs a Mamba-2 mixer and attention side by side, then a
gated MLP; muP multipliers on activations, folded into the weights at load) and ``zamba2`` (Zyphra Zamba2: Mamba-2
layers, and every few layers a shared attention + MLP block over [hidden, embeddings] with per-use adapters).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from mamba_router.errors import CorruptCheckpointError
from mamba_router.models.mamba_config import GateNorm, SSMConfig, float_from_json, mamba_ssm_ssm_part, positive_int

# parallel: Mamba and attention side by side (Falcon-H1); shared: a shared attention block, then Mamba (Zamba2)
LayerKind = Literal["mamba", "attention", "mlp", "moe", "parallel", "shared"]
MAMBA_LAYER_NAMES = ("mamba", "linear_attention", "M")
ATTENTION_LAYER_NAMES = ("attention", "full_attention", "*")
MLP_LAYER_NAMES = ("mlp", "-")
MOE_LAYER_NAMES = ("moe", "E")


@dataclass(frozen=True)
class AttentionConfig:
    """An attention layer: grouped-query heads, the softmax scale, and rotary embeddings on ``rotary_dim`` dims."""

    heads: int
    kv_heads: int
    head_dim: int
    scale: float
    bias: bool = False
    rope_theta: float = 10000.0
    rotary_dim: int = 0  # 0: no position embedding (Granite-4.0-H's "nope")
    out_bias: bool | None = None  # o_proj's bias when it differs from q/k/v's (mamba-ssm's MHA); None: as ``bias``


@dataclass(frozen=True)
class FeedForwardConfig:
    """The block after each mixer: a gated MLP (``fused``: one input_linear holding gate and up, Granite's shared
    MLP; ``split``: gate_proj/up_proj/down_proj), plus ``experts`` routed experts (top ``top_k``) when > 0."""

    style: Literal["fused", "split", "none"]
    intermediate: int
    bias: bool = False
    experts: int = 0
    top_k: int = 0
    expert_intermediate: int = 0


@dataclass(frozen=True)
class BlockMLPConfig:
    """Nemotron-H's MLP layers and experts: up_proj -> squared ReLU -> down_proj (no gate)."""

    intermediate: int
    bias: bool = False


@dataclass(frozen=True)
class GroupedMoEConfig:
    """Nemotron-H's expert layers: sigmoid router scores plus a correction bias choose ``top_k`` of ``experts``
    within the best ``topk_group`` of ``groups`` groups; weights normalised (``norm_topk_prob``) and scaled; one
    shared expert beside them."""

    experts: int
    top_k: int
    expert_intermediate: int
    shared_intermediate: int
    groups: int = 1
    topk_group: int = 1
    norm_topk_prob: bool = True
    routed_scaling: float = 1.0
    bias: bool = False


@dataclass(frozen=True)
class SharedBlockConfig:
    """Zamba2's shared transformer blocks: ``blocks`` of them, used in turn by the ``shared`` layers; each use adds
    its own low-rank adapters (rank ``adapter_rank``) to the MLP's gate/up projection, and to q/k/v when
    ``attention_adapters``."""

    blocks: int
    intermediate: int
    adapter_rank: int
    attention_adapters: bool = True
    activation: Literal["gelu", "silu"] = "gelu"
    bias: bool = False


@dataclass(frozen=True)
class FalconH1Multipliers:
    """Falcon-H1's muP multipliers on activations, each equal to a scale of one weight (or of rows of it)."""

    ssm_in: float = 1.0
    ssm_out: float = 1.0
    ssm_zxbcdt: tuple[float, float, float, float, float] = (1.0, 1.0, 1.0, 1.0, 1.0)  # rows of in_proj
    attention_in: float = 1.0
    attention_out: float = 1.0
    key: float = 1.0
    mlp_gate: float = 1.0
    mlp_down: float = 1.0


@dataclass(frozen=True)
class HybridConfig:
    """A hybrid stack: the kind of each layer, the Mamba-2 and attention shapes, the feed-forward block, scalings."""

    family: str
    vocab_size: int
    d_model: int
    layer_kinds: tuple[LayerKind, ...]
    mamba: SSMConfig
    attention: AttentionConfig
    feed_forward: FeedForwardConfig
    norm_eps: float
    tie_embeddings: bool = False
    embedding_multiplier: float = 1.0
    residual_multiplier: float = 1.0
    logits_scaling: float = 1.0
    block_mlp: BlockMLPConfig | None = None  # layers of kind "mlp"
    block_moe: GroupedMoEConfig | None = None  # layers of kind "moe"
    expert_layers: tuple[int, ...] = ()  # Jamba: layers whose feed-forward is softmax-routed experts
    multipliers: FalconH1Multipliers | None = None  # Falcon-H1: folded into the weights when they are loaded
    shared_blocks: SharedBlockConfig | None = None  # Zamba2

    @property
    def arch(self) -> str:
        """The kind of stack, as :class:`~mamba_router.models.mamba_config.SSMConfig` names Mamba ones."""
        return "hybrid"

    @property
    def mixers(self) -> tuple[str, ...]:
        """The mixer kinds in the stack."""
        kinds = set(self.layer_kinds)
        has_mamba = bool(kinds & {"mamba", "parallel", "shared"})
        has_attention = bool(kinds & {"attention", "parallel", "shared"})
        return tuple(m for m, present in ((self.mamba.arch, has_mamba), ("attention", has_attention)) if present)

    @property
    def chunk_size(self) -> int:
        """The Mamba-2 scan's chunk length."""
        return self.mamba.chunk_size

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for state-file metadata)."""
        data = asdict(self)
        data["mamba"] = self.mamba.to_dict()
        return data


def hybrid_config_from_json(data: dict[str, Any], where: str) -> HybridConfig:
    """Parse a ``granitemoehybrid``, ``bamba``, ``nemotron_h``, ``jamba``, ``falcon_h1`` or ``zamba2`` config, or
    mamba-ssm's own hybrid format; an unusable value is a CorruptCheckpointError."""
    parse = _mamba_ssm if "d_model" in data else PARSERS.get(data.get("model_type"))  # type: ignore[arg-type]
    if parse is None:
        raise CorruptCheckpointError(f"{where}: model_type {data.get('model_type')!r} is not a hybrid family read here")
    try:
        return parse(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptCheckpointError(f"{where} is not a usable hybrid config: {type(exc).__name__}: {exc}") from exc


def _layer_kinds(names: list[Any]) -> tuple[LayerKind, ...]:
    kinds: list[LayerKind] = []
    for name in names:
        if name in MAMBA_LAYER_NAMES:
            kinds.append("mamba")
        elif name in ATTENTION_LAYER_NAMES:
            kinds.append("attention")
        elif name in MLP_LAYER_NAMES:
            kinds.append("mlp")
        elif name in MOE_LAYER_NAMES:
            kinds.append("moe")
        else:
            known = MAMBA_LAYER_NAMES + ATTENTION_LAYER_NAMES + MLP_LAYER_NAMES + MOE_LAYER_NAMES
            raise ValueError(f"layer type {name!r} is not one of {known}")
    return tuple(kinds)


def _check_activation(data: dict[str, Any]) -> None:
    if data.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {data['hidden_act']!r} is not supported (only silu)")


def _mamba(
    data: dict[str, Any],
    hidden: int,
    layers: int,
    vocab: int,
    eps: float,
    *,
    d_ssm: int = 0,
    gate_norm: GateNorm = "norm_of_gated",
) -> SSMConfig:
    expand = int(data.get("mamba_expand", 2))
    heads = positive_int(data.get("mamba_n_heads", 128), "mamba_n_heads")
    head_dim = data.get("mamba_d_head", "auto")
    head_dim = (d_ssm or expand * hidden) // heads if head_dim == "auto" else positive_int(head_dim, "mamba_d_head")
    limit = data.get("time_step_limit") or (0.0, math.inf)
    cfg = SSMConfig(
        arch="mamba2",
        d_model=hidden,
        n_layer=layers,
        vocab_size=vocab,
        d_state=positive_int(data.get("mamba_d_state", 256), "mamba_d_state"),
        d_conv=positive_int(data.get("mamba_d_conv", 4), "mamba_d_conv"),
        expand=expand,
        headdim=head_dim,
        ngroups=positive_int(data.get("mamba_n_groups", 1), "mamba_n_groups"),
        chunk_size=positive_int(data.get("mamba_chunk_size", 256), "mamba_chunk_size"),
        bias=bool(data.get("mamba_proj_bias", False)),
        conv_bias=bool(data.get("mamba_conv_bias", True)),
        norm_eps=eps,
        tie_embeddings=False,
        residual_in_fp32=False,
        dt_limit=(float_from_json(limit[0]), float_from_json(limit[1])),
        d_ssm=d_ssm,
        gate_norm=gate_norm,
    )
    if cfg.nheads != heads or cfg.d_inner % head_dim:
        raise ValueError(f"mamba_n_heads x mamba_d_head ({heads} x {head_dim}) must equal the SSM width {cfg.d_inner}")
    return cfg


def _attention(
    data: dict[str, Any],
    hidden: int,
    scale: float | None,
    rotary_fraction: float | None,
    head_dim: int | None = None,
) -> AttentionConfig:
    """Attention shapes; ``head_dim`` when the family fixes it (else the config's, or hidden / heads), ``scale`` None
    for head_dim ** -0.5, ``rotary_fraction`` None for the config's partial_rotary_factor."""
    heads = positive_int(data["num_attention_heads"], "num_attention_heads")
    kv_heads = positive_int(data.get("num_key_value_heads") or heads, "num_key_value_heads")
    _check_head_groups(heads, kv_heads, "num_attention_heads", "num_key_value_heads")
    head_dim = head_dim or positive_int(data.get("head_dim") or hidden // heads, "head_dim")
    rope = data.get("rope_parameters") or {}
    theta = float(rope.get("rope_theta", data.get("rope_theta", 10000.0)))
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"rope_type {rope['rope_type']!r} is not supported (only default)")
    fraction = rotary_fraction if rotary_fraction is not None else float(rope.get("partial_rotary_factor", 1.0))
    return AttentionConfig(
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        scale=head_dim**-0.5 if scale is None else scale,
        bias=bool(data.get("attention_bias", False)),
        rope_theta=theta,
        rotary_dim=int(head_dim * fraction),
    )


def _common(data: dict[str, Any]) -> tuple[int, int, int, float]:
    _check_activation(data)
    return (
        positive_int(data["hidden_size"], "hidden_size"),
        positive_int(data["num_hidden_layers"], "num_hidden_layers"),
        positive_int(data["vocab_size"], "vocab_size"),
        float(data.get("rms_norm_eps", 1e-6)),
    )


def _granite(data: dict[str, Any]) -> HybridConfig:
    hidden, layers, vocab, eps = _common(data)
    kinds = _layer_kinds(data.get("layer_types") or data.get("layers_block_type") or ["mamba"] * layers)
    if len(kinds) != layers:
        raise ValueError(f"{len(kinds)} layer types for {layers} layers")
    experts = int(data.get("num_local_experts") or 0)
    rope = data.get("position_embedding_type") == "rope"
    return HybridConfig(
        family="granitemoehybrid",
        vocab_size=vocab,
        d_model=hidden,
        layer_kinds=kinds,
        mamba=_mamba(data, hidden, layers, vocab, eps),
        attention=_attention(data, hidden, float(data.get("attention_multiplier", 1.0)), None if rope else 0.0),
        feed_forward=FeedForwardConfig(
            style="fused",
            intermediate=positive_int(data.get("shared_intermediate_size", 1024), "shared_intermediate_size"),
            experts=experts,
            top_k=int(data.get("num_experts_per_tok") or 0) if experts else 0,
            expert_intermediate=int(data.get("intermediate_size", 0)) if experts else 0,
        ),
        norm_eps=eps,
        tie_embeddings=bool(data.get("tie_word_embeddings", False)),
        embedding_multiplier=float(data.get("embedding_multiplier", 1.0)),
        residual_multiplier=float(data.get("residual_multiplier", 1.0)),
        logits_scaling=float(data.get("logits_scaling", 1.0)),
    )


def _attention_at(data: dict[str, Any], key: str, layers: int) -> tuple[LayerKind, ...]:
    """Layer kinds from a list of attention layer numbers under ``key`` (Bamba's, mamba-ssm's); the rest Mamba."""
    attention_at = data.get(key) or []
    if not isinstance(attention_at, list) or any(
        not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < layers for i in attention_at
    ):
        raise ValueError(f"{key} must list layer numbers below {layers}, got {attention_at!r}")
    return tuple("attention" if i in attention_at else "mamba" for i in range(layers))


def _check_head_groups(heads: int, kv_heads: int, heads_key: str, kv_key: str) -> None:
    if heads % kv_heads:
        raise ValueError(f"{heads_key} {heads} is not a multiple of {kv_key} {kv_heads}")


def _bamba(data: dict[str, Any]) -> HybridConfig:
    hidden, layers, vocab, eps = _common(data)
    kinds = _attention_at(data, "attn_layer_indices", layers)
    return HybridConfig(
        family="bamba",
        vocab_size=vocab,
        d_model=hidden,
        layer_kinds=kinds,
        mamba=_mamba(data, hidden, layers, vocab, eps),
        attention=_attention(data, hidden, None, None),
        feed_forward=FeedForwardConfig(
            style="split",
            intermediate=positive_int(data["intermediate_size"], "intermediate_size"),
            bias=bool(data.get("mlp_bias", False)),
        ),
        norm_eps=eps,
        tie_embeddings=bool(data.get("tie_word_embeddings", False)),
    )


def _mamba_ssm(data: dict[str, Any]) -> HybridConfig:
    """mamba-ssm's ``MambaConfig`` with attention layers at ``attn_layer_idx`` (its ``MHA``, shaped by ``attn_cfg``)
    and, with ``d_intermediate`` > 0, a gated MLP after every mixer."""
    ssm = mamba_ssm_ssm_part(data)
    layers, d = ssm.n_layer, ssm.d_model
    kinds = _attention_at(data, "attn_layer_idx", layers)
    attention = "attention" in kinds
    attn = dict(data.get("attn_cfg") or {})
    for key, unsupported in (("mlp_dim", 0), ("d_conv", 0), ("rotary_emb_interleaved", False)):
        if attn.get(key, unsupported) != unsupported:
            raise ValueError(f"attn_cfg.{key}={attn[key]!r} is not supported (only {unsupported!r})")
    if attention and attn.get("causal") is not True:  # mamba-ssm's MHA defaults to causal=False
        raise ValueError(
            "attn_cfg.causal must be true: without it mamba-ssm's attention layers also look at later tokens (its "
            "default), which no token-by-token decoding can reproduce"
        )
    if attention and "num_heads" not in attn:
        raise ValueError("the attention layers at attn_layer_idx need attn_cfg.num_heads (mamba-ssm's MHA requires it)")
    heads = positive_int(attn.get("num_heads", 1), "attn_cfg.num_heads")
    kv_heads = positive_int(attn.get("num_heads_kv") or heads, "attn_cfg.num_heads_kv")
    _check_head_groups(heads, kv_heads, "attn_cfg.num_heads", "num_heads_kv")
    head_dim = positive_int(attn.get("head_dim") or d // heads, "attn_cfg.head_dim")
    scale = attn.get("softmax_scale")
    rotary = int(attn.get("rotary_emb_dim", 0))
    if not 0 <= rotary <= head_dim or rotary % 2:
        raise ValueError(f"attn_cfg.rotary_emb_dim must be an even number up to head_dim {head_dim}, got {rotary}")
    intermediate = int(data.get("d_intermediate", 0))
    intermediate = math.ceil(intermediate / 128) * 128  # mamba-ssm's GatedMLP rounds its width up to 128
    return HybridConfig(
        family="mamba_ssm",
        vocab_size=ssm.vocab_size,
        d_model=d,
        layer_kinds=kinds,
        mamba=ssm,
        attention=AttentionConfig(
            heads=heads,
            kv_heads=kv_heads,
            head_dim=head_dim,
            scale=head_dim**-0.5 if scale is None else float(scale),
            bias=bool(attn.get("qkv_proj_bias", True)),
            out_bias=bool(attn.get("out_proj_bias", True)),
            rope_theta=float(attn.get("rotary_emb_base", 10000.0)),
            rotary_dim=rotary,
        ),
        feed_forward=FeedForwardConfig(style="fused" if intermediate > 0 else "none", intermediate=intermediate),
        norm_eps=ssm.norm_eps,
        tie_embeddings=ssm.tie_embeddings,
    )


NEMOTRON_MAMBA_KEYS = {  # Nemotron-H's names for the Mamba-2 shapes -> the names _mamba reads
    "mamba_num_heads": "mamba_n_heads",
    "mamba_head_dim": "mamba_d_head",
    "ssm_state_size": "mamba_d_state",
    "n_groups": "mamba_n_groups",
    "conv_kernel": "mamba_d_conv",
    "expand": "mamba_expand",
    "chunk_size": "mamba_chunk_size",
    "use_bias": "mamba_proj_bias",
    "use_conv_bias": "mamba_conv_bias",
}


def _nemotron_h(data: dict[str, Any]) -> HybridConfig:
    hidden = positive_int(data["hidden_size"], "hidden_size")
    pattern = data.get("layers_block_type") or data.get("layer_types") or list(data.get("hybrid_override_pattern", ""))
    kinds = _layer_kinds(pattern)
    layers = positive_int(data.get("num_hidden_layers", len(kinds)), "num_hidden_layers")
    vocab = positive_int(data["vocab_size"], "vocab_size")
    eps = float(data.get("layer_norm_epsilon", 1e-5))
    for key, allowed in (("mamba_hidden_act", "silu"), ("mlp_hidden_act", "relu2")):
        if data.get(key, allowed) != allowed:
            raise ValueError(f"{key} {data[key]!r} is not supported (only {allowed})")
    if data.get("moe_latent_size") is not None:
        raise ValueError("moe_latent_size (latent expert projections) is not supported")
    if len(kinds) != layers:
        raise ValueError(f"{len(kinds)} layer types for {layers} layers")
    mamba_keys = {ours: data[theirs] for theirs, ours in NEMOTRON_MAMBA_KEYS.items() if theirs in data}
    mamba_keys["time_step_limit"] = (float(data.get("time_step_min", 0.0)), math.inf)
    bias = bool(data.get("mlp_bias", False))
    experts = int(data.get("n_routed_experts") or 0)
    return HybridConfig(
        family="nemotron_h",
        vocab_size=vocab,
        d_model=hidden,
        layer_kinds=kinds,
        mamba=_mamba(mamba_keys, hidden, layers, vocab, eps),
        attention=_attention(data, hidden, None, 0.0),
        feed_forward=FeedForwardConfig(style="none", intermediate=0),
        norm_eps=eps,
        tie_embeddings=bool(data.get("tie_word_embeddings", False)),
        block_mlp=BlockMLPConfig(positive_int(data["intermediate_size"], "intermediate_size"), bias)
        if "mlp" in kinds
        else None,
        block_moe=GroupedMoEConfig(
            experts=experts,
            top_k=positive_int(data["num_experts_per_tok"], "num_experts_per_tok"),
            expert_intermediate=positive_int(data["moe_intermediate_size"], "moe_intermediate_size"),
            shared_intermediate=positive_int(
                data["moe_shared_expert_intermediate_size"], "moe_shared_expert_intermediate_size"
            ),
            groups=positive_int(data.get("n_group", 1), "n_group"),
            topk_group=positive_int(data.get("topk_group", 1), "topk_group"),
            norm_topk_prob=bool(data.get("norm_topk_prob", True)),
            routed_scaling=float(data.get("routed_scaling_factor", 1.0)),
            bias=bias,
        )
        if "moe" in kinds
        else None,
    )


def _jamba(data: dict[str, Any]) -> HybridConfig:
    hidden, layers, vocab, eps = _common(data)
    attention_period = positive_int(data.get("attn_layer_period", 8), "attn_layer_period")
    attention_offset = int(data.get("attn_layer_offset", 4))
    expert_period = positive_int(data.get("expert_layer_period", 2), "expert_layer_period")
    expert_offset = int(data.get("expert_layer_offset", 1))
    if not 0 <= attention_offset < attention_period or not 0 <= expert_offset < expert_period:
        raise ValueError("attn_layer_offset and expert_layer_offset must be below their periods")
    experts = positive_int(data.get("num_experts", 16), "num_experts")
    kinds: tuple[LayerKind, ...] = tuple(
        "attention" if i % attention_period == attention_offset else "mamba" for i in range(layers)
    )
    rank = data.get("mamba_dt_rank", "auto")
    mamba = SSMConfig(
        arch="mamba1",
        d_model=hidden,
        n_layer=layers,
        vocab_size=vocab,
        d_state=positive_int(data.get("mamba_d_state", 16), "mamba_d_state"),
        d_conv=positive_int(data.get("mamba_d_conv", 4), "mamba_d_conv"),
        expand=positive_int(data.get("mamba_expand", 2), "mamba_expand"),
        dt_rank=0 if rank == "auto" else positive_int(rank, "mamba_dt_rank"),
        bias=bool(data.get("mamba_proj_bias", False)),
        conv_bias=bool(data.get("mamba_conv_bias", True)),
        norm_eps=eps,
        residual_in_fp32=False,
        bcdt_rms_eps=eps,
        bcdt_norm_weights=True,
    )
    intermediate = positive_int(data["intermediate_size"], "intermediate_size")
    return HybridConfig(
        family="jamba",
        vocab_size=vocab,
        d_model=hidden,
        layer_kinds=kinds,
        mamba=mamba,
        attention=_attention(data, hidden, None, 0.0),
        feed_forward=FeedForwardConfig(
            style="split",
            intermediate=intermediate,
            experts=experts if experts > 1 else 0,
            top_k=positive_int(data.get("num_experts_per_tok", 2), "num_experts_per_tok") if experts > 1 else 0,
            expert_intermediate=intermediate,
        ),
        norm_eps=eps,
        tie_embeddings=bool(data.get("tie_word_embeddings", False)),
        expert_layers=tuple(i for i in range(layers) if experts > 1 and i % expert_period == expert_offset),
    )


def _falcon_h1(data: dict[str, Any]) -> HybridConfig:
    hidden, layers, vocab, eps = _common(data)
    if bool(data.get("mamba_proj_bias", False)) != bool(data.get("projectors_bias", False)):
        raise ValueError("mamba_proj_bias and projectors_bias must be equal")
    d_ssm = int(data.get("mamba_d_ssm") or 0)
    gate_norm: GateNorm = "gate_only"
    if data.get("mamba_rms_norm", False):
        gate_norm = "gate_of_norm" if data.get("mamba_norm_before_gate", True) else "norm_of_gated"
    ssm = tuple(float(m) for m in (data.get("ssm_multipliers") or (1.0,) * 5))
    mlp = tuple(float(m) for m in (data.get("mlp_multipliers") or (1.0, 1.0)))
    if len(ssm) != 5 or len(mlp) != 2:
        raise ValueError("ssm_multipliers needs 5 values (z, x, B, C, dt) and mlp_multipliers 2 (gate, down)")
    parallel: LayerKind = "parallel"
    kinds = (parallel,) * layers
    return HybridConfig(
        family="falcon_h1",
        vocab_size=vocab,
        d_model=hidden,
        layer_kinds=kinds,
        mamba=_mamba(data, hidden, layers, vocab, eps, d_ssm=d_ssm, gate_norm=gate_norm),
        attention=_attention(data, hidden, None, 1.0),
        feed_forward=FeedForwardConfig(
            style="split",
            intermediate=positive_int(data["intermediate_size"], "intermediate_size"),
            bias=bool(data.get("mlp_bias", False)),
        ),
        norm_eps=eps,
        tie_embeddings=bool(data.get("tie_word_embeddings", False)),
        embedding_multiplier=float(data.get("embedding_multiplier", 1.0)),
        logits_scaling=1.0 / float(data.get("lm_head_multiplier", 1.0)),
        multipliers=FalconH1Multipliers(
            ssm_in=float(data.get("ssm_in_multiplier", 1.0)),
            ssm_out=float(data.get("ssm_out_multiplier", 1.0)),
            ssm_zxbcdt=(ssm[0], ssm[1], ssm[2], ssm[3], ssm[4]),
            attention_in=float(data.get("attention_in_multiplier", 1.0)),
            attention_out=float(data.get("attention_out_multiplier", 1.0)),
            key=float(data.get("key_multiplier", 1.0)),
            mlp_gate=mlp[0],
            mlp_down=mlp[1],
        ),
    )


def _zamba2(data: dict[str, Any]) -> HybridConfig:
    hidden = positive_int(data["hidden_size"], "hidden_size")
    layers = positive_int(data["num_hidden_layers"], "num_hidden_layers")
    vocab = positive_int(data["vocab_size"], "vocab_size")
    eps = float(data.get("rms_norm_eps", 1e-5))
    activation = data.get("hidden_act", "gelu")
    if activation not in ("gelu", "silu"):
        raise ValueError(f"hidden_act {activation!r} is not supported (gelu or silu)")
    names = data.get("layers_block_type") or []
    kinds: tuple[LayerKind, ...] = tuple("shared" if name == "hybrid" else _layer_kinds([name])[0] for name in names)
    if len(kinds) != layers or any(kind not in ("mamba", "shared") for kind in kinds):
        raise ValueError(f"layers_block_type must give 'mamba' or 'hybrid' for each of the {layers} layers")
    head_dim = (
        2 * hidden // positive_int(data["num_attention_heads"], "num_attention_heads")
    )  # over [hidden, embeddings]
    mamba_keys = {
        "mamba_n_heads": data.get("n_mamba_heads", 1),
        "mamba_d_head": data.get("mamba_headdim", "auto"),
        "mamba_d_state": data.get("mamba_d_state", 64),
        "mamba_n_groups": data.get("mamba_ngroups", 1),
        "mamba_d_conv": data.get("mamba_d_conv", 4),
        "mamba_expand": data.get("mamba_expand", 2),
        "mamba_chunk_size": data.get("chunk_size", 256),
        "mamba_proj_bias": data.get("add_bias_linear", False),
        "mamba_conv_bias": data.get("use_conv_bias", True),
        "time_step_limit": (float(data.get("time_step_min", 0.0)), math.inf),
    }
    return HybridConfig(
        family="zamba2",
        vocab_size=vocab,
        d_model=hidden,
        layer_kinds=kinds,
        mamba=_mamba(mamba_keys, hidden, layers, vocab, eps),
        attention=_attention(
            data, hidden, (head_dim / 2) ** -0.5, 1.0 if data.get("use_mem_rope", False) else 0.0, head_dim
        ),
        feed_forward=FeedForwardConfig(style="none", intermediate=0),
        norm_eps=eps,
        tie_embeddings=bool(data.get("tie_word_embeddings", True)),
        shared_blocks=SharedBlockConfig(
            blocks=positive_int(data.get("num_mem_blocks", 1), "num_mem_blocks"),
            intermediate=positive_int(data["intermediate_size"], "intermediate_size"),
            adapter_rank=positive_int(data.get("adapter_rank", 128), "adapter_rank"),
            attention_adapters=bool(data.get("use_shared_attention_adapter", False)),
            activation=activation,
            bias=bool(data.get("add_bias_linear", False)),
        ),
    )


PARSERS = {  # model_type -> the parser of its config
    "granitemoehybrid": _granite,
    "bamba": _bamba,
    "nemotron_h": _nemotron_h,
    "jamba": _jamba,
    "falcon_h1": _falcon_h1,
    "zamba2": _zamba2,
}
