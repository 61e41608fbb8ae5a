"""Read a peft LoRA adapter directory and merge it into a module's weights.

Merging (W <- W + scale * B @ A) is what makes an adapter work on every path, fused kernels and CUDA graphs included:
they read the merged weight (a loaded model's ``merge_adapter`` calls :func:`merge_adapter` on its LoRA module).
The adapter directory is the one ``save_pretrained`` of a peft model writes
(``adapter_config.json`` + ``adapter_model.safetensors``); tensors are read with safetensors, no pickle.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mamba_router.errors import CorruptCheckpointError, ModelLoadError
from mamba_router.paths import user_path

_PREFIX = "base_model.model."


def read_adapter(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The adapter's config and its tensors."""
    directory = user_path(path, "adapter")
    config_path = directory / "adapter_config.json"
    weights_path = directory / "adapter_model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise ModelLoadError(
            f"{directory} is not a LoRA adapter directory: it needs adapter_config.json and adapter_model.safetensors "
            "(written by `mamba-router lora --confirm-run` or a peft model's save_pretrained)"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCheckpointError(f"{config_path} is not valid JSON: {exc}") from exc
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(weights_path), device="cpu")
    except Exception as exc:
        raise CorruptCheckpointError(f"cannot read {weights_path}: {type(exc).__name__}: {exc}") from exc
    return config, tensors


def merge_adapter(module: nn.Module, path: str | Path) -> list[str]:
    """Add every adapter's ``scale * B @ A`` to its base weight in ``module``; return the merged module paths.

    Raises if an adapted module does not exist in ``module`` (an adapter for another model).
    """
    config, tensors = read_adapter(path)
    if config.get("peft_type", "LORA") != "LORA":
        raise ModelLoadError(f"{path} holds a {config.get('peft_type')} adapter; only LoRA adapters can be merged")
    rank = int(config["r"])
    alpha = float(config.get("lora_alpha", rank))
    scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    fan_in_fan_out = bool(config.get("fan_in_fan_out", False))
    modules = dict(module.named_modules())
    merged = []
    for name in sorted(n for n in tensors if n.endswith(".lora_A.weight")):
        base_path = name[: -len(".lora_A.weight")]
        if base_path.startswith(_PREFIX):
            base_path = base_path[len(_PREFIX) :]
        b_name = name.replace(".lora_A.weight", ".lora_B.weight")
        target = modules.get(base_path)
        if target is None or b_name not in tensors:
            raise ModelLoadError(
                f"the adapter at {path} adapts {base_path!r}, which this model does not have; it was trained for "
                f"another model ({config.get('base_model_name_or_path') or 'unknown base'})"
            )
        weight = target.weight
        assert isinstance(weight, torch.Tensor)
        delta = tensors[b_name].float() @ tensors[name].float() * scale
        if fan_in_fan_out:
            delta = delta.T
        if delta.shape != weight.shape:
            raise ModelLoadError(
                f"adapter for {base_path!r} has shape {tuple(delta.shape)}, the weight {tuple(weight.shape)}"
            )
        with torch.no_grad():
            weight.add_(delta.to(device=weight.device, dtype=weight.dtype))
        merged.append(base_path)
    if not merged:
        raise ModelLoadError(f"the adapter at {path} holds no LoRA weights")
    return merged
