"""Read a settings file (TOML or YAML) into a dict, with errors that name the file and what is wrong with it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mamba_router.errors import ConfigurationError


def read_settings_file(path: Path, what: str) -> dict[str, Any]:
    """The key: value table in ``path`` (``.toml``, ``.yaml`` or ``.yml``); an empty file is an empty table.

    ``what`` names the file in messages ("config file", "LoRA config").
    """
    if not path.is_file():
        raise ConfigurationError(f"{what} {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{what} {path} is not UTF-8 text: {exc}") from None
    suffix = path.suffix.lower()
    if suffix == ".toml":
        data = _parse_toml(text, path, what)
    elif suffix in (".yaml", ".yml"):
        data = _parse_yaml(text, path, what)
    else:
        raise ConfigurationError(f"{what} {path} must end in .toml, .yaml or .yml")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigurationError(f"{what} {path} must hold a table of keys, found {type(data).__name__}")
    return data


def _parse_toml(text: str, path: Path, what: str) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{what} {path} is not valid TOML: {exc}") from None


def _parse_yaml(text: str, path: Path, what: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{what} {path} is not valid YAML: {exc}") from None
