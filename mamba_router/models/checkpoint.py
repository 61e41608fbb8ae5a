"""Reading checkpoints safely: config files, weight files, and weights put into a module by their names.

Weights are read with safetensors when present, else with ``torch.load(weights_only=True)``: no pickled code runs.
A family describes how a checkpoint's names map onto its modules as data (:class:`WeightNames`: renames and tied
pairs); :func:`load_weights` applies it, and every missing, unexpected or misshapen tensor is an error naming it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mamba_router.errors import CorruptCheckpointError

WEIGHT_PATTERNS = ["*.json", "*.safetensors", "pytorch_model.bin", "*.txt", "*.model"]


def read_config_json(directory: Path, filename: str = "config.json") -> dict[str, Any]:
    """Read and parse a checkpoint's config file, with a clear error when it is missing or malformed."""
    path = directory / filename
    if not path.is_file():
        raise CorruptCheckpointError(
            f"{directory} has no {filename}; a model directory needs the config written by save_pretrained"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise CorruptCheckpointError(f"{path} is not UTF-8 text: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise CorruptCheckpointError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "re-save or re-download the model"
        ) from exc
    except RecursionError as exc:
        raise CorruptCheckpointError(
            f"{path} nests too deeply to be a model config; re-save or re-download it"
        ) from exc
    if not isinstance(data, dict):
        raise CorruptCheckpointError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def generation_eos_ids(directory: Path) -> list[int]:
    """The ``eos_token_id`` (one id or a list) of the checkpoint's ``generation_config.json``; [] when absent."""
    if not (directory / "generation_config.json").is_file():
        return []
    value = read_config_json(directory, "generation_config.json").get("eos_token_id")
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v >= 0]


def find_weight_files(directory: Path) -> tuple[list[Path], list[Path]]:
    """The safetensors files and the pickle (``*.bin``/``*.pt``) files in ``directory``."""
    safetensors = sorted(directory.glob("*.safetensors"))
    pickles = sorted(p for p in directory.glob("*.bin") if p.name != "training_args.bin") + sorted(
        directory.glob("*.pt")
    )
    return safetensors, pickles


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory on the CPU: every safetensors file, else every pickle (weights only)."""
    safetensors, pickles = find_weight_files(directory)
    if not safetensors and not pickles:
        raise CorruptCheckpointError(f"{directory} has no weights (*.safetensors or pytorch_model.bin)")
    state: dict[str, torch.Tensor] = {}
    for path in safetensors or pickles:
        state.update(_read_file(path))
    return state


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CorruptCheckpointError(f"cannot read the weights in {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise CorruptCheckpointError(f"{path} holds a {type(loaded).__name__}, not a state dict")
    return loaded


@dataclass(frozen=True)
class WeightNames:
    """How a checkpoint format names a module's tensors: prefix renames, renames of a part, and tied pairs.

    ``renames`` maps a checkpoint prefix to the module's (``"backbone.embeddings." -> "backbone.embedding."``);
    ``tied`` pairs module names that share one tensor when the config ties them (either may be stored).
    """

    renames: tuple[tuple[str, str], ...] = ()
    tied: tuple[tuple[str, str], ...] = ()
    part_renames: tuple[tuple[str, str], ...] = ()  # ``.old.`` -> ``.new.`` anywhere in a name

    def to_module_names(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` with every checkpoint name rewritten to the module's name."""
        renamed = {}
        for name, tensor in state.items():
            for old, new in self.renames:
                if name.startswith(old):
                    name = new + name[len(old) :]
                    break
            for old, new in self.part_renames:
                name = name.replace(old, new)
            renamed[name] = tensor
        return renamed


def load_weights(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    names: WeightNames,
    *,
    tie: bool,
    where: str,
    assign: bool = False,
) -> None:
    """Put ``state`` (checkpoint names) into ``module``; a missing, unexpected or misshapen tensor is an error.

    With ``assign`` the checkpoint's tensors become the parameters (no copy, their dtype kept): a module built on
    the meta device then costs no memory of its own. Tied parameters must be tied again afterwards.
    """
    tensors = names.to_module_names(state)
    if tie:
        for first, second in names.tied:
            for name, twin in ((first, second), (second, first)):
                if name not in tensors and twin in tensors:
                    tensors[name] = tensors[twin]
    expected = module.state_dict()
    wrong_shape = [
        f"{name} {tuple(t.shape)} (expected {tuple(expected[name].shape)})"
        for name, t in tensors.items()
        if name in expected and t.shape != expected[name].shape
    ]
    if wrong_shape:
        raise CorruptCheckpointError(f"weights in {where} do not match the config: wrong shapes {wrong_shape[:5]}")
    result = module.load_state_dict(tensors, strict=False, assign=assign)
    if result.missing_keys or result.unexpected_keys:
        raise CorruptCheckpointError(
            f"weights in {where} do not match the config: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
