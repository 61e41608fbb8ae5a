"""One way to load every section of the configuration: defaults < a file < environment variables < arguments.

The schema is a pydantic model whose fields are sections (themselves pydantic models of plain keys). For every key
the loader keeps where its value came from (``default``, ``file PATH``, ``env VAR``, ``argument``), which
``mamba-router config --show`` prints, and every error names the key, its source and what is allowed.

Why not pydantic-settings: it reads nested environment variables and TOML/YAML files too, but it does not say
where each value came from, and its errors do not name the file or variable at fault; both are what a user needs
first when a setting misbehaves. This module is that, and short.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import AliasChoices, BaseModel, ValidationError

from mamba_router.errors import ConfigurationError
from mamba_router.generation.requests import shown

ENV_PREFIX = "MAMBA_ROUTER__"
Schema = TypeVar("Schema", bound=BaseModel)


@dataclass(frozen=True)
class LoadedSettings(Generic[Schema]):
    """A validated configuration and, for every key set anywhere, where its value came from."""

    config: Schema
    sources: dict[str, str]
    file: Path | None

    def effective(self) -> list[tuple[str, Any, str]]:
        """(dotted key, value, source) for every key, in schema order."""
        rows = []
        for section, model in self.config:
            for key, value in model:
                dotted = f"{section}.{key}"
                rows.append((dotted, value, self.sources.get(dotted, "default")))
        return rows


def sections_of(schema: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """The schema's sections by name."""
    return {name: field.annotation for name, field in schema.model_fields.items()}  # type: ignore[misc]


def load_settings(
    schema: type[Schema],
    *,
    file_data: Mapping[str, Any] | None = None,
    file: Path | None = None,
    environ: Mapping[str, str],
    env_aliases: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    what: str = "configuration",
) -> LoadedSettings[Schema]:
    """Validate ``schema`` from the layers, lowest first: ``file_data`` (read from ``file``), the environment
    (``MAMBA_ROUTER__SECTION__KEY`` and the variables of ``env_aliases``, which maps a variable to a dotted key), and
    ``overrides`` (dotted keys). Raises :class:`ConfigurationError` naming the bad key, its source and the allowed
    values."""
    sections = sections_of(schema)
    values: dict[str, dict[str, Any]] = {}
    sources: dict[str, str] = {}
    if file_data:
        _check_sections(file_data, sections, f"{what} file {file}")
        _merge(
            values, sources, sections, {s: {k: (v, f"file {file}") for k, v in b.items()} for s, b in file_data.items()}
        )
    _merge(values, sources, sections, _from_env(environ, sections, env_aliases or {}))
    if overrides:
        _merge(values, sources, sections, _nest(overrides, sections, "argument"))
    try:
        config = schema.model_validate(values)
    except ValidationError as exc:
        raise ConfigurationError(_describe_errors(exc, sources, sections, what)) from None
    return LoadedSettings(config=config, sources=sources, file=file)


def _check_sections(data: Mapping[str, Any], sections: Mapping[str, type[BaseModel]], where: str) -> None:
    for section, body in data.items():
        if section not in sections:
            raise ConfigurationError(f"{where}: unknown section {section!r}; allowed sections: {', '.join(sections)}")
        if not isinstance(body, dict):
            raise ConfigurationError(f"{where}: {section!r} must be a table of keys, found {type(body).__name__}")


def _from_env(
    env: Mapping[str, str], sections: Mapping[str, type[BaseModel]], aliases: Mapping[str, str]
) -> dict[str, dict[str, tuple[Any, str]]]:
    """Environment values as {section: {key: (value, source)}}."""
    found: dict[str, dict[str, tuple[Any, str]]] = {}
    for variable, dotted in aliases.items():
        if env.get(variable, "").strip():
            section, _, key = dotted.partition(".")
            found.setdefault(section, {})[key] = (env[variable], f"env {variable}")
    for variable, value in env.items():
        if not variable.startswith(ENV_PREFIX):
            continue
        parts = variable[len(ENV_PREFIX) :].lower().split("__")
        if len(parts) != 2 or parts[0] not in sections:
            raise ConfigurationError(
                f"environment variable {variable} does not name a config key; use {ENV_PREFIX}SECTION__KEY with a "
                f"section among {', '.join(s.upper() for s in sections)}"
            )
        found.setdefault(parts[0], {})[parts[1]] = (value, f"env {variable}")
    return found


def _nest(
    flat: Mapping[str, Any], sections: Mapping[str, type[BaseModel]], source: str
) -> dict[str, dict[str, tuple[Any, str]]]:
    nested: dict[str, dict[str, tuple[Any, str]]] = {}
    for dotted, value in flat.items():
        section, _, key = dotted.partition(".")
        if not key or section not in sections:
            raise ConfigurationError(
                f"override {dotted!r} is not a dotted config key like 'log.path'; sections: {', '.join(sections)}"
            )
        nested.setdefault(section, {})[key] = (value, source)
    return nested


def _canonical(model: type[BaseModel], key: str) -> str:
    """The field name a key stands for (a key may be one of a field's alias spellings)."""
    for name, field in model.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices) and key in alias.choices:
            return name
    return key


def _merge(
    values: dict[str, dict[str, Any]],
    sources: dict[str, str],
    sections: Mapping[str, type[BaseModel]],
    layer: Mapping[str, Mapping[str, tuple[Any, str]]],
) -> None:
    for section, body in layer.items():
        target = values.setdefault(section, {})
        for key, (value, where) in body.items():
            name = _canonical(sections[section], key) if section in sections else key
            target[name] = value
            sources[f"{section}.{name}"] = where


def _describe_errors(
    exc: ValidationError, sources: Mapping[str, str], sections: Mapping[str, type[BaseModel]], what: str
) -> str:
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        dotted = ".".join(loc[:2])
        where = sources.get(dotted, "default")
        if error["type"] == "extra_forbidden" and len(loc) == 2:
            allowed = ", ".join(sections[loc[0]].model_fields) if loc[0] in sections else ""
            lines.append(f"unknown key {dotted!r} (from {where}); allowed keys in [{loc[0]}]: {allowed}")
            continue
        message = error["msg"]
        if error["type"].startswith("bool"):
            message += " (use true or false)"
        lines.append(f"{'.'.join(loc)} = {shown(error.get('input'))} (from {where}): {message}")
    return f"invalid {what}: " + "; ".join(lines)
