"""The shapes of a Mamba-1 or Mamba-2 language model, read from mamba-ssm's or HF transformers' ``config.json``."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from mamba_router.errors import CorruptCheckpointError

Arch = Literal["mamba1", "mamba2"]
GateNorm = Literal[
    "norm_of_gated", "gate_of_norm", "gate_only"
]  # Mamba-2's output: norm(y*silu(z)), norm(y)*silu(z), y*silu(z)


@dataclass(frozen=True)
class SSMConfig:
    """Shapes of a Mamba language model. ``vocab_size`` counts embedding rows (padded as stored)."""

    arch: Arch
    d_model: int
    n_layer: int
    vocab_size: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int = 0  # Mamba-1 only; 0 means ceil(d_model / 16)
    headdim: int = 64  # Mamba-2 only
    ngroups: int = 1  # Mamba-2 only
    chunk_size: int = 256
    bias: bool = False
    conv_bias: bool = True
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    residual_in_fp32: bool = True
    dt_limit: tuple[float, float] = (0.0, math.inf)
    bcdt_rms_eps: float | None = None  # FalconMamba: weightless RMS norms on B, C and dt (before dt_proj) with this eps
    bcdt_norm_weights: bool = False  # Jamba: those norms have weights (dt_layernorm, b_layernorm, c_layernorm)
    d_ssm: int = 0  # Mamba-2 width of the SSM branch when it is not expand x d_model (Falcon-H1's mamba_d_ssm)
    gate_norm: GateNorm = "norm_of_gated"  # Mamba-2: how the gate z and the grouped RMS norm meet (Falcon-H1 differs)

    @property
    def d_inner(self) -> int:
        """Width of the SSM branch."""
        return self.d_ssm or self.expand * self.d_model

    @property
    def nheads(self) -> int:
        """Mamba-2 heads."""
        return self.d_inner // self.headdim

    @property
    def mixers(self) -> tuple[str, ...]:
        """The mixer kinds in the stack: ``("mamba1",)`` or ``("mamba2",)``."""
        return (self.arch,)

    @property
    def resolved_dt_rank(self) -> int:
        """Mamba-1 rank of the dt projection."""
        return self.dt_rank or math.ceil(self.d_model / 16)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for state-file metadata)."""
        data = asdict(self)
        data["dt_limit"] = list(self.dt_limit)
        return data


def config_from_json(data: dict[str, Any], where: str) -> tuple[SSMConfig, str]:
    """Parse either format; return the config and ``'mamba-ssm'`` or ``'transformers'``."""
    try:
        if "d_model" in data:
            return _from_mamba_ssm(data), "mamba-ssm"
        if data.get("model_type") in ("mamba", "mamba2", "falcon_mamba"):
            return _from_transformers(data), "transformers"
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptCheckpointError(f"{where} is not a usable Mamba config: {type(exc).__name__}: {exc}") from exc
    raise CorruptCheckpointError(
        f"{where} is neither a mamba-ssm config (d_model, n_layer, ssm_cfg) nor a transformers Mamba/Mamba2/FalconMamba "
        f"config (model_type 'mamba', 'mamba2' or 'falcon_mamba'); found keys {sorted(data)[:12]}"
    )


def float_from_json(value: Any) -> float:
    """A float from JSON, including transformers' encoding of infinity ``{"__float__": "Infinity"}``."""
    if isinstance(value, dict) and "__float__" in value:
        value = value["__float__"]
    return float(value)


def positive_int(value: Any, name: str) -> int:
    """``value`` when it is a positive int, else a ValueError naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def is_mamba_ssm_hybrid(data: dict[str, Any]) -> bool:
    """True for a mamba-ssm config with attention layers (``attn_layer_idx``) or MLP blocks (``d_intermediate``)."""
    return "d_model" in data and bool(data.get("attn_layer_idx") or data.get("d_intermediate"))


def _from_mamba_ssm(data: dict[str, Any]) -> SSMConfig:
    if is_mamba_ssm_hybrid(data):
        raise ValueError("a config with attention layers or MLP blocks is read as a hybrid (mamba_ssm_ssm_part)")
    return mamba_ssm_ssm_part(data)


def mamba_ssm_ssm_part(data: dict[str, Any]) -> SSMConfig:
    """The Mamba layers' shapes of a mamba-ssm config (its attention layers and MLPs, if any, are read elsewhere)."""
    ssm = dict(data.get("ssm_cfg") or {})
    layer = ssm.get("layer", "Mamba1")
    if layer not in ("Mamba1", "Mamba2"):
        raise ValueError(f"ssm_cfg.layer {layer!r} is not supported; use Mamba1 or Mamba2")
    for key, allowed in (("rmsnorm", True), ("norm_before_gate", False), ("D_has_hdim", False)):
        if key in ssm and ssm[key] != allowed:
            raise ValueError(f"ssm_cfg.{key}={ssm[key]!r} is not supported (only {allowed})")
    if ssm.get("d_ssm") not in (None,):
        raise ValueError("ssm_cfg.d_ssm is not supported")
    if data.get("rms_norm", True) is not True:
        raise ValueError("only rms_norm=true models are supported")
    vocab = positive_int(data["vocab_size"], "vocab_size")
    multiple = int(data.get("pad_vocab_size_multiple", 8))
    if multiple > 1 and vocab % multiple:
        vocab += multiple - vocab % multiple
    mamba2 = layer == "Mamba2"
    dt_rank = ssm.get("dt_rank", "auto")
    dt_limit = tuple(ssm.get("dt_limit", (0.0, math.inf)))
    return SSMConfig(
        arch="mamba2" if mamba2 else "mamba1",
        d_model=positive_int(data["d_model"], "d_model"),
        n_layer=positive_int(data["n_layer"], "n_layer"),
        vocab_size=vocab,
        d_state=int(ssm.get("d_state", 128 if mamba2 else 16)),
        d_conv=int(ssm.get("d_conv", 4)),
        expand=int(ssm.get("expand", 2)),
        dt_rank=0 if dt_rank == "auto" else int(dt_rank),
        headdim=int(ssm.get("headdim", 64)),
        ngroups=int(ssm.get("ngroups", 1)),
        chunk_size=int(ssm.get("chunk_size", 256)),
        bias=bool(ssm.get("bias", False)),
        conv_bias=bool(ssm.get("conv_bias", True)),
        norm_eps=float(data.get("norm_epsilon", 1e-5)),
        tie_embeddings=bool(data.get("tie_embeddings", True)),
        residual_in_fp32=bool(data.get("residual_in_fp32", True)),
        dt_limit=(float_from_json(dt_limit[0]), float_from_json(dt_limit[1])),
    )


def _from_transformers(data: dict[str, Any]) -> SSMConfig:
    mamba2 = data["model_type"] == "mamba2"
    hidden = positive_int(data["hidden_size"], "hidden_size")
    expand = data.get("expand", 2)
    limit = tuple(data.get("time_step_limit", (0.0, math.inf)))
    common: dict[str, Any] = dict(
        d_model=hidden,
        n_layer=positive_int(data["num_hidden_layers"], "num_hidden_layers"),
        vocab_size=positive_int(data["vocab_size"], "vocab_size"),
        d_state=int(data.get("state_size", 128 if mamba2 else 16)),
        d_conv=int(data.get("conv_kernel", 4)),
        expand=int(expand),
        bias=bool(data.get("use_bias", False)),
        conv_bias=bool(data.get("use_conv_bias", True)),
        norm_eps=float(data.get("layer_norm_epsilon", 1e-5)),
        tie_embeddings=bool(data.get("tie_word_embeddings", True)),
        residual_in_fp32=bool(data.get("residual_in_fp32", True)),
    )
    if not mamba2:
        rank = data.get("time_step_rank", "auto")
        falcon = data["model_type"] == "falcon_mamba"
        return SSMConfig(
            arch="mamba1",
            dt_rank=0 if rank == "auto" else int(rank),
            bcdt_rms_eps=float_from_json(data.get("mixer_rms_eps", 1e-6)) if falcon else None,
            **common,
        )
    config = SSMConfig(
        arch="mamba2",
        headdim=int(data.get("head_dim", 64)),
        ngroups=int(data.get("n_groups", 1)),
        chunk_size=int(data.get("chunk_size", 256)),
        dt_limit=(float_from_json(limit[0]), float_from_json(limit[1])),
        **common,
    )
    if data.get("num_heads", config.nheads) * config.headdim != config.d_inner:
        raise ValueError(f"num_heads x head_dim must equal expand x hidden_size ({config.d_inner})")
    return config
