"""Load mamba-ssm checkpoints (``config.json`` + ``pytorch_model.bin``/``model.safetensors``) and HF transformers
``MambaForCausalLM``/``Mamba2ForCausalLM`` checkpoints (safetensors) into :class:`MambaLM`, by parameter names.

Weights are read with safetensors, or with ``torch.load(weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mamba_router.errors import CorruptCheckpointError
from mamba_router.model_source import find_weight_files, read_config_json
from mamba_router_mps.config import SSMConfig, config_from_json
from mamba_router_mps.modules import MambaLM

_HF_RENAMES = (("backbone.embeddings.", "backbone.embedding."),)


def to_our_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map HF transformers' Mamba parameter names onto mamba-ssm's (which this package uses)."""
    renamed = {}
    for name, tensor in state.items():
        for old, new in _HF_RENAMES:
            if name.startswith(old):
                name = new + name[len(old) :]
        renamed[name] = tensor
    return renamed


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory, safetensors first."""
    safetensors, pickles = find_weight_files(directory)
    state: dict[str, torch.Tensor] = {}
    try:
        if safetensors:
            from safetensors.torch import load_file

            for path in safetensors:
                state.update(load_file(str(path), device="cpu"))
        elif pickles:
            for path in pickles:
                loaded = torch.load(path, map_location="cpu", weights_only=True)
                if not isinstance(loaded, dict):
                    raise CorruptCheckpointError(f"{path} holds a {type(loaded).__name__}, not a state dict")
                state.update(loaded)
        else:
            raise CorruptCheckpointError(f"{directory} has no weights (*.safetensors or pytorch_model.bin)")
    except CorruptCheckpointError:
        raise
    except Exception as exc:
        raise CorruptCheckpointError(f"cannot read the weights in {directory}: {type(exc).__name__}: {exc}") from exc
    return state


def build_model(cfg: SSMConfig, state: dict[str, torch.Tensor], where: str) -> MambaLM:
    """A MambaLM with ``state`` loaded; a missing or unexpected tensor is an error naming it."""
    model = MambaLM(cfg)
    state = to_our_names(state)
    if cfg.tie_embeddings and "backbone.embedding.weight" not in state and "lm_head.weight" in state:
        state["backbone.embedding.weight"] = state["lm_head.weight"]
    if cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not (cfg.tie_embeddings and k == "lm_head.weight")]
    if missing or result.unexpected_keys:
        raise CorruptCheckpointError(
            f"weights in {where} do not match its config: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    return model.eval()


def load_directory(directory: Path) -> tuple[MambaLM, str]:
    """Load a checkpoint directory of either format; return the model and the format's name."""
    cfg, fmt = config_from_json(read_config_json(directory), str(directory / "config.json"))
    return build_model(cfg, read_weights(directory), str(directory)), fmt


def save_mamba_ssm_format(model: MambaLM, directory: Path, vocab_size: int) -> Path:
    """Write ``config.json`` in mamba-ssm's format and ``model.safetensors`` (tied tensors once)."""
    from safetensors.torch import save_model

    cfg = model.cfg
    ssm_cfg = {
        "layer": "Mamba2" if cfg.arch == "mamba2" else "Mamba1",
        "d_state": cfg.d_state,
        "d_conv": cfg.d_conv,
        "expand": cfg.expand,
    }
    if cfg.arch == "mamba2":
        ssm_cfg.update(headdim=cfg.headdim, ngroups=cfg.ngroups, chunk_size=cfg.chunk_size)
    config = {
        "d_model": cfg.d_model,
        "d_intermediate": 0,
        "n_layer": cfg.n_layer,
        "vocab_size": vocab_size,
        "ssm_cfg": ssm_cfg,
        "rms_norm": True,
        "residual_in_fp32": True,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": 1,
        "tie_embeddings": cfg.tie_embeddings,
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    save_model(model, str(directory / "model.safetensors"))
    return directory
