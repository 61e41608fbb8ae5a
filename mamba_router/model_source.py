"""Where a model comes from: a local directory (checked before anything loads) or a hub id."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mamba_router.errors import CorruptCheckpointError, InvalidRequestError, ModelNotFoundError

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


@dataclass(frozen=True)
class ModelSource:
    """A resolved model reference: ``local_path`` is set for a directory on disk, else ``model_id`` is a hub id."""

    model_id: str
    local_path: Path | None

    @property
    def is_local(self) -> bool:
        """True for a directory on disk."""
        return self.local_path is not None

    @property
    def location(self) -> str:
        """What to hand to a ``from_pretrained``: the directory or the hub id."""
        return str(self.local_path) if self.local_path is not None else self.model_id


def resolve_model_source(model: object) -> ModelSource:
    """Check ``model`` (a directory or a hub id like ``state-spaces/mamba-130m``) and say which it is."""
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequestError(f"model must be a hub id or a directory path, got {model!r}")
    text = model.strip()
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFoundError(f"model path {text!r} is a file; pass the directory that holds config.json")
        return ModelSource(model_id=str(path.resolve()), local_path=path.resolve())
    if _looks_like_path(text) or not _HUB_ID.match(text):
        raise ModelNotFoundError(
            f"model directory {text!r} does not exist; check the path, or pass a hub id such as "
            "'state-spaces/mamba-130m'"
        )
    return ModelSource(model_id=text, local_path=None)


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith((".", "/", "~", "\\"))
        or "\\" in text
        or text.count("/") > 1
        or bool(re.match(r"^[A-Za-z]:", text))
    )


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
    if not isinstance(data, dict):
        raise CorruptCheckpointError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def find_weight_files(directory: Path) -> tuple[list[Path], list[Path]]:
    """The safetensors files and the pickle (``*.bin``/``*.pt``) files in ``directory``."""
    safetensors = sorted(directory.glob("*.safetensors"))
    pickles = sorted(p for p in directory.glob("*.bin") if p.name != "training_args.bin") + sorted(
        directory.glob("*.pt")
    )
    return safetensors, pickles
