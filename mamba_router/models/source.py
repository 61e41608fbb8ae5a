"""Where a model comes from: a local directory (checked before anything loads) or a hub id."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from mamba_router.errors import InvalidRequestError, ModelNotFoundError
from mamba_router.models.hub import cached_snapshot, hub_unreachable_reason
from mamba_router.paths import user_path

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
        got = "a blank string" if isinstance(model, str) else f"a {type(model).__name__}"
        raise InvalidRequestError(f"model must be a hub id or a directory path, got {got}")
    text = model.strip()
    path = user_path(text, "model")
    if path.exists():
        if not path.is_dir():
            raise ModelNotFoundError(f"model path {text!r} is a file; pass the directory that holds config.json")
        return ModelSource(model_id=str(path.resolve()), local_path=path.resolve())
    if _looks_like_path(text) or not _HUB_ID.match(text):
        raise ModelNotFoundError(
            f"model directory {text!r} does not exist; check the path, or give a hub id (organisation/name)"
        )
    cached = cached_snapshot(text)
    if cached is not None:  # read from the local cache: no network request at all
        return ModelSource(model_id=text, local_path=cached)
    unreachable = hub_unreachable_reason()
    if unreachable is not None:
        raise ModelNotFoundError(
            f"model {text!r} is not on this machine and the Hugging Face Hub cannot be reached: {unreachable}. Ways "
            f"out: give a local model directory instead; or download it where a network exists (huggingface-cli "
            f"download {text}) and bring the directory here; or write small offline models with `mamba-router init "
            "DIR` and use the settings it prints"
        )
    return ModelSource(model_id=text, local_path=None)


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith((".", "/", "~", "\\"))
        or "\\" in text
        or text.count("/") > 1
        or bool(re.match(r"^[A-Za-z]:", text))
    )


def download_snapshot(repo: str, patterns: list[str]) -> Path:
    """Fetch the files of hub repository ``repo`` matching ``patterns`` (cached); a typed error when it cannot."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, allow_patterns=patterns))
    except Exception as exc:  # hub errors come in many types; all mean "not available"
        raise ModelNotFoundError(
            f"could not fetch {repo!r} from the Hugging Face Hub: {type(exc).__name__}: {exc}. Without network access, "
            f"download it elsewhere (huggingface-cli download {repo}) and pass the directory"
        ) from exc


def local_directory(source: ModelSource, patterns: list[str]) -> Path:
    """The directory holding ``source``'s files: the local path, or a hub snapshot of the files matching ``patterns``."""
    return source.local_path if source.local_path is not None else download_snapshot(source.model_id, patterns)
