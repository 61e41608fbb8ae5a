"""Router configuration: one optional file (TOML or YAML) plus environment variables, validated by pydantic.

Precedence, lowest first: defaults < the file < environment variables < arguments. :func:`load_config` keeps where
every value came from, which ``mamba-router config --show`` prints.

The file::

    [model_routing]
    enable_mamba = true            # false: every request goes to the Transformer
    long_context_tokens = 4096     # the long-context rule fires above this many tokens (context + query)
    min_pages = 3                  # the multi-page rule fires at this many pages or more
    legal_keywords = ["judgment", "judgement", "order", "case", "appeal", "petition", "plaint", "decree",
                      "writ", "bench", "section"]
    rules = ["long_context", "multi_page", "legal_keywords"]   # the rules that are on
    token_counting = "auto"        # auto: the model's tokenizer where it is on disk, else the estimate
    truncation = "off"             # off: too long for the Transformer is an error; keep_start / keep_end

    [mamba]
    backend = "auto"               # or real-mamba, mamba2; "transformer" sends everything to the Transformer
    prefer_real = true             # false: use the pure-PyTorch mamba2 backend wherever it can run
    real_model = "state-spaces/mamba-130m"
    mamba2_model = "state-spaces/mamba2-130m"
    fallback = true                # false: no Transformer fallback; a Mamba problem is an error
    state_cache_bytes = 1073741824 # documents read by Mamba keep their state for the next question; 0: off

    [transformer]
    model = "Qwen/Qwen2.5-0.5B-Instruct"

    [generation]
    max_new_tokens = 256
    device = "auto"
    dtype = "auto"

    [log]
    enabled = true
    path = "~/.local/state/mamba-router/routing.jsonl"
    log_text = false               # true: also store query, context and answer text
    max_bytes = 10485760           # rotate above this size
    backups = 3                    # rotated files kept: routing.jsonl.1 ... .3

Environment variables: ``MAMBA_ROUTER_CONFIG`` (the file), ``ENABLE_MAMBA`` (``model_routing.enable_mamba``),
``MAMBA_ROUTER_BACKEND`` (``mamba.backend``), and any key as ``MAMBA_ROUTER__SECTION__KEY``, e.g.
``MAMBA_ROUTER__LOG__LOG_TEXT=true`` or ``MAMBA_ROUTER__MODEL_ROUTING__LEGAL_KEYWORDS=judgment,decree``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mamba_router.config_files import read_settings_file
from mamba_router.errors import ConfigurationError
from mamba_router.routing.keywords import DEFAULT_LEGAL_KEYWORDS
from mamba_router.selection import BACKEND_ENV, ENABLE_MAMBA_ENV, normalize_backend_name

CONFIG_ENV = "MAMBA_ROUTER_CONFIG"
ENV_PREFIX = "MAMBA_ROUTER__"
RuleName = Literal["long_context", "multi_page", "legal_keywords"]
ALL_RULES: tuple[RuleName, ...] = ("long_context", "multi_page", "legal_keywords")


def default_log_path() -> Path:
    """Where the routing log lives unless configured: the user's state directory."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "mamba-router" / "routing.jsonl"


def split_comma_list(value: Any) -> Any:
    """A comma-separated string (from an environment variable or a terse file) becomes a list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class RoutingSection(_Section):
    """``[model_routing]``: the rules and what happens when the Transformer cannot take a context."""

    enable_mamba: bool = True
    long_context_tokens: int = Field(default=4096, ge=1, le=100_000_000)
    min_pages: int = Field(default=3, ge=1, le=1_000_000)
    legal_keywords: tuple[str, ...] = DEFAULT_LEGAL_KEYWORDS
    rules: tuple[RuleName, ...] = ALL_RULES
    token_counting: Literal["auto", "tokenizer", "estimate"] = "auto"
    truncation: Literal["off", "keep_start", "keep_end"] = "off"

    @field_validator("legal_keywords", mode="before")
    @classmethod
    def _keywords(cls, value: Any) -> Any:
        value = split_comma_list(value)
        if isinstance(value, (list, tuple)):
            for word in value:
                if not isinstance(word, str) or not word.strip() or word != word.strip():
                    raise ValueError(
                        f"each keyword must be a non-blank string without surrounding spaces, got {word!r}"
                    )
                if not any(ch.isalnum() for ch in word):
                    raise ValueError(f"keyword {word!r} has no letter or digit, so it can never match a word")
        return value

    @field_validator("rules", mode="before")
    @classmethod
    def _rules(cls, value: Any) -> Any:
        return split_comma_list(value)


class MambaSection(_Section):
    """``[mamba]``: which Mamba backend and models, and whether the Transformer may stand in."""

    backend: str | None = None
    prefer_real: bool = True
    real_model: str = "state-spaces/mamba-130m"
    mamba2_model: str = "state-spaces/mamba2-130m"
    fallback: bool = True
    state_cache_bytes: int = Field(default=1 << 30, ge=0)

    @field_validator("backend", mode="before")
    @classmethod
    def _backend(cls, value: Any) -> Any:
        return normalize_backend_name(value) if isinstance(value, str) else value

    @field_validator("fallback", mode="before")
    @classmethod
    def _fallback(cls, value: Any) -> Any:
        # The seed wrote the fallback as a model family: "transformer" (on) or "none" (off).
        if isinstance(value, str) and value.strip().lower() in ("transformer", "none", "error"):
            return value.strip().lower() == "transformer"
        return value

    @field_validator("real_model", "mamba2_model")
    @classmethod
    def _model(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a model must be a hub id or a directory, not blank")
        return value.strip()


class TransformerSection(_Section):
    """``[transformer]``: the fallback model."""

    model: str = "Qwen/Qwen2.5-0.5B-Instruct"

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a model must be a hub id or a directory, not blank")
        return value.strip()


class GenerationSection(_Section):
    """``[generation]``: defaults for ``Router.generate``."""

    max_new_tokens: int = Field(default=256, ge=1, le=1_000_000)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


class LogSection(_Section):
    """``[log]``: the JSONL routing log."""

    enabled: bool = True
    path: Path = Field(default_factory=default_log_path)
    log_text: bool = False
    max_bytes: int = Field(default=10 * 1024 * 1024, ge=4096)
    backups: int = Field(default=3, ge=0, le=1000)

    @field_validator("path")
    @classmethod
    def _path(cls, value: Path) -> Path:
        if not str(value).strip():
            raise ValueError("the log path must not be blank")
        return value.expanduser()


class RouterConfig(_Section):
    """Everything the router reads from configuration. See the module docstring for the file format."""

    model_routing: RoutingSection = RoutingSection()
    mamba: MambaSection = MambaSection()
    transformer: TransformerSection = TransformerSection()
    generation: GenerationSection = GenerationSection()
    log: LogSection = LogSection()


SECTIONS: dict[str, type[_Section]] = {
    name: field.annotation
    for name, field in RouterConfig.model_fields.items()  # type: ignore[misc]
}


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config and, for every key, where its value came from ('default', 'file PATH', 'env VAR', ...)."""

    config: RouterConfig
    sources: dict[str, str]
    file: Path | None

    def effective(self) -> list[tuple[str, Any, str]]:
        """(dotted key, value, source) for every key, in schema order."""
        rows = []
        for section, model in self.config:
            for key, value in model:  # type: ignore[attr-defined]
                dotted = f"{section}.{key}"
                rows.append((dotted, value, self.sources.get(dotted, "default")))
        return rows


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> LoadedConfig:
    """Read the config file (``path``, else ``$MAMBA_ROUTER_CONFIG``, else none), the environment and ``overrides``.

    ``overrides`` maps dotted keys (``"log.path"``) to values and wins over everything. Raises
    :class:`ConfigurationError` naming the bad key, its source and the allowed values.
    """
    env = os.environ if environ is None else environ
    values: dict[str, dict[str, Any]] = {}
    sources: dict[str, str] = {}
    file = Path(path).expanduser() if path is not None else _path_from_env(env)
    if file is not None:
        _merge(values, sources, _read_file(file), f"file {file}")
    _merge(values, sources, _from_env(env), None)
    if overrides:
        _merge(values, sources, _nest(overrides, "argument"), None)
    try:
        config = RouterConfig.model_validate(values)
    except ValidationError as exc:
        raise ConfigurationError(_describe_errors(exc, sources)) from None
    return LoadedConfig(config=config, sources=sources, file=file)


def _path_from_env(env: Mapping[str, str]) -> Path | None:
    value = env.get(CONFIG_ENV, "").strip()
    return Path(value).expanduser() if value else None


def _read_file(file: Path) -> dict[str, Any]:
    if not file.is_file():
        raise ConfigurationError(f"config file {file} does not exist (from {CONFIG_ENV} or the path given)")
    data = read_settings_file(file, "config file")
    for section, body in data.items():
        if section not in SECTIONS:
            raise ConfigurationError(
                f"config file {file}: unknown section {section!r}; allowed sections: {', '.join(SECTIONS)}"
            )
        if not isinstance(body, dict):
            raise ConfigurationError(
                f"config file {file}: {section!r} must be a table of keys, found {type(body).__name__}"
            )
    return data


def _from_env(env: Mapping[str, str]) -> dict[str, dict[str, tuple[Any, str]]]:
    """Environment values as {section: {key: (value, source)}}."""
    found: dict[str, dict[str, tuple[Any, str]]] = {}
    if env.get(ENABLE_MAMBA_ENV, "").strip():
        found.setdefault("model_routing", {})["enable_mamba"] = (env[ENABLE_MAMBA_ENV], f"env {ENABLE_MAMBA_ENV}")
    if env.get(BACKEND_ENV, "").strip():
        found.setdefault("mamba", {})["backend"] = (env[BACKEND_ENV], f"env {BACKEND_ENV}")
    for variable, value in env.items():
        if not variable.startswith(ENV_PREFIX):
            continue
        parts = variable[len(ENV_PREFIX) :].lower().split("__")
        if len(parts) != 2 or parts[0] not in SECTIONS:
            raise ConfigurationError(
                f"environment variable {variable} does not name a config key; use {ENV_PREFIX}SECTION__KEY with a "
                f"section among {', '.join(s.upper() for s in SECTIONS)}"
            )
        found.setdefault(parts[0], {})[parts[1]] = (value, f"env {variable}")
    return found


def _nest(flat: Mapping[str, Any], source: str) -> dict[str, dict[str, tuple[Any, str]]]:
    nested: dict[str, dict[str, tuple[Any, str]]] = {}
    for dotted, value in flat.items():
        section, _, key = dotted.partition(".")
        if not key or section not in SECTIONS:
            raise ConfigurationError(
                f"override {dotted!r} is not a dotted config key like 'log.path'; sections: {', '.join(SECTIONS)}"
            )
        nested.setdefault(section, {})[key] = (value, source)
    return nested


def _merge(
    values: dict[str, dict[str, Any]], sources: dict[str, str], layer: Mapping[str, Any], source: str | None
) -> None:
    for section, body in layer.items():
        target = values.setdefault(section, {})
        for key, value in body.items():
            if source is None:  # the layer carries a source per value
                value, where = value
            else:
                where = source
            target[key] = value
            sources[f"{section}.{key}"] = where


def _describe_errors(exc: ValidationError, sources: Mapping[str, str]) -> str:
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        dotted = ".".join(loc[:2])
        where = sources.get(dotted, "default")
        if error["type"] == "extra_forbidden" and len(loc) == 2:
            allowed = ", ".join(SECTIONS[loc[0]].model_fields) if loc[0] in SECTIONS else ""
            lines.append(f"unknown key {dotted!r} (from {where}); allowed keys in [{loc[0]}]: {allowed}")
            continue
        message = error["msg"]
        if error["type"].startswith("bool"):
            message += " (use true or false)"
        shown = error.get("input")
        lines.append(f"{'.'.join(loc)} = {shown!r} (from {where}): {message}")
    return "invalid router configuration: " + "; ".join(lines)
