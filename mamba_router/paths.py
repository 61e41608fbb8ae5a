"""Paths given by users: ``~`` and ``~user`` expanded, or a typed error when they cannot be."""

from __future__ import annotations

import os
import sys
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


def user_cache_dir() -> Path:
    """The library's cache directory: ``$XDG_CACHE_HOME/mamba-router`` (``~/.cache``) on Linux,
    ``~/Library/Caches/mamba-router`` on macOS, ``%LOCALAPPDATA%\\mamba-router\\Cache`` on Windows."""
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "mamba-router" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "mamba-router"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mamba-router"
