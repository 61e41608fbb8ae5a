"""Paths given by users: ``~`` and ``~user`` expanded, or a typed error when they cannot be."""

from __future__ import annotations

import os
from pathlib import Path

from mamba_router.errors import ConfigurationError


def user_path(value: str | os.PathLike[str], what: str = "path") -> Path:
    """``value`` as a Path with ``~``/``~user`` expanded; a ConfigurationError naming ``what`` when the home directory
    is unknown (``~nobody-here``, or no HOME), instead of pathlib's RuntimeError."""
    path = Path(value)
    try:
        return path.expanduser()
    except RuntimeError as exc:
        raise ConfigurationError(f"{what} {str(path)[:200]!r} starts with a ~ that cannot be expanded: {exc}") from exc
