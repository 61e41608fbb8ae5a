"""mamba-ssm's checkpoint format (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``), read safely.

This is the format of ``state-spaces/mamba-*`` and ``state-spaces/mamba2-*`` on the hub and of
``MambaLMHeadModel.save_pretrained``. Weights are read with safetensors when present, else with
``torch.load(weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mamba_router.errors import CorruptCheckpointError, ModelNotFoundError
from mamba_router.model_source import ModelSource, find_weight_files, read_config_json

CONFIG_FIELDS = frozenset(
    {
        "d_model",
        "d_intermediate",
        "n_layer",
        "vocab_size",
        "ssm_cfg",
        "attn_layer_idx",
        "attn_cfg",
        "rms_norm",
        "residual_in_fp32",
        "fused_add_norm",
        "pad_vocab_size_multiple",
        "tie_embeddings",
    }
)
SUPPORTED_LAYERS = ("Mamba1", "Mamba2")


@dataclass(frozen=True)
class MambaCheckpoint:
    """A checked mamba-ssm config and where its weights are."""

    config: dict[str, Any]
    weights: Path
    directory: Path | None

    @property
    def layer(self) -> str:
        """``Mamba1`` or ``Mamba2``."""
        return str(self.config.get("ssm_cfg", {}).get("layer", "Mamba1"))


def check_config(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate a mamba-ssm ``config.json``; the error names the bad key and what is allowed."""
    if "d_model" not in data and "model_type" in data:
        raise CorruptCheckpointError(
            f"{where} is a transformers checkpoint (model_type={data['model_type']!r}); real-mamba reads mamba-ssm's "
            "format (config.json with d_model, n_layer, vocab_size, ssm_cfg), as in state-spaces/mamba-130m"
        )
    unknown = sorted(set(data) - CONFIG_FIELDS)
    if unknown:
        raise CorruptCheckpointError(
            f"{where} has keys mamba-ssm does not know: {unknown}; allowed: {sorted(CONFIG_FIELDS)}"
        )
    for key in ("d_model", "n_layer", "vocab_size"):
        value = data.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise CorruptCheckpointError(f"{where}: {key!r} must be a positive int, got {value!r}")
    ssm_cfg = data.get("ssm_cfg", {})
    if not isinstance(ssm_cfg, dict):
        raise CorruptCheckpointError(f"{where}: 'ssm_cfg' must be an object, got {ssm_cfg!r}")
    layer = ssm_cfg.get("layer", "Mamba1")
    if layer not in SUPPORTED_LAYERS:
        raise CorruptCheckpointError(
            f"{where}: ssm_cfg.layer {layer!r} is not supported; use one of {SUPPORTED_LAYERS}"
        )
    if data.get("attn_layer_idx"):
        raise CorruptCheckpointError(
            f"{where}: hybrid checkpoints with attention layers (attn_layer_idx) are not supported by real-mamba yet"
        )
    return dict(data)


def locate_checkpoint(source: ModelSource) -> MambaCheckpoint:
    """Find and check the config and the weights file of a local directory or a hub repository."""
    if source.local_path is not None:
        config = check_config(read_config_json(source.local_path), str(source.local_path / "config.json"))
        safetensors, pickles = find_weight_files(source.local_path)
        weights = next((p for p in safetensors if p.name == "model.safetensors"), None) or next(
            (p for p in pickles if p.name == "pytorch_model.bin"), None
        )
        if weights is None:
            raise CorruptCheckpointError(
                f"{source.local_path} has no model.safetensors or pytorch_model.bin; save the model again"
            )
        return MambaCheckpoint(config, weights, source.local_path)
    config_path = _download(source.model_id, "config.json")
    config = check_config(read_config_json(config_path.parent, config_path.name), f"{source.model_id}/config.json")
    try:
        weights = _download(source.model_id, "model.safetensors")
    except ModelNotFoundError:
        weights = _download(source.model_id, "pytorch_model.bin")
    return MambaCheckpoint(config, weights, None)


def _download(repo: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename))
    except Exception as exc:  # hub errors come in many types; all mean "not available"
        raise ModelNotFoundError(
            f"could not fetch {filename} of {repo!r} from the Hugging Face Hub: {type(exc).__name__}: {exc}. "
            f"Without network access, download it elsewhere (huggingface-cli download {repo}) and pass the directory"
        ) from exc


def read_state_dict(weights: Path) -> dict[str, torch.Tensor]:
    """Read weights on the CPU: safetensors, or a pickle through ``torch.load(weights_only=True)``."""
    try:
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(weights), device="cpu")
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CorruptCheckpointError(f"cannot read weights {weights}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict):
        raise CorruptCheckpointError(f"{weights} holds a {type(state).__name__}, not a state dict")
    return state


def load_weights_into(model: torch.nn.Module, state: dict[str, torch.Tensor], *, tied: bool, where: Path) -> None:
    """Copy ``state`` into ``model``; a missing or unexpected tensor is an error naming it."""
    if tied:  # a tied pair may be stored under either name (safetensors keeps one copy)
        for name, twin in (
            ("lm_head.weight", "backbone.embedding.weight"),
            ("backbone.embedding.weight", "lm_head.weight"),
        ):
            if name not in state and twin in state:
                state = {**state, name: state[twin]}
    result = model.load_state_dict(state, strict=False)
    missing = result.missing_keys
    if missing or result.unexpected_keys:
        raise CorruptCheckpointError(
            f"weights in {where} do not match the config: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )


def save_checkpoint(model: Any, directory: Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (tied tensors stored once)."""
    import json
    from dataclasses import asdict

    from safetensors.torch import save_model

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(asdict(model.config), indent=2) + "\n", encoding="utf-8")
    save_model(model, str(directory / "model.safetensors"))
    return directory
