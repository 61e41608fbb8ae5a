"""Choose one backend from the discovered candidates, the platform facts and the user's switches.

The table:

==============================  ======================================
platform                        preferred backend
==============================  ======================================
Linux or Windows with CUDA      ``real-mamba``
macOS with MPS                  ``mamba2``
anything else                   none: the ``transformer`` fallback
==============================  ======================================

The preferred Mamba backend is taken when usable; otherwise any other usable Mamba backend (a third-party plugin)
by priority (:func:`by_priority`, the one ordering rule every caller uses); otherwise the highest-priority usable
Transformer backend. ``ENABLE_MAMBA=false`` skips the Mamba
family. ``MAMBA_ROUTER_BACKEND=NAME`` takes exactly that backend or fails with its reason; it never falls back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mamba_router.backends.reports import CandidateReport, PlatformFacts
from mamba_router.errors import (
    BackendUnavailableError,
    ConfigurationError,
    NoBackendAvailableError,
    UnknownBackendError,
)

ENABLE_MAMBA_ENV = "ENABLE_MAMBA"
BACKEND_ENV = "MAMBA_ROUTER_BACKEND"
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
AUTO_WORDS = frozenset({"", "auto"})


def switch_value(value: str) -> bool | None:
    """The one reading of an on/off word (true/false, 1/0, yes/no, on/off, any case, spaces around ignored); None
    when ``value`` is none of them."""
    word = value.strip().lower()
    return False if word in FALSE_WORDS else True if word in TRUE_WORDS else None


def parse_switch(value: str | None, *, variable: str, default: bool = True) -> bool:
    """Read an on/off switch (:func:`switch_value`); unset or blank keeps ``default``."""
    if value is None or not value.strip():
        return default
    parsed = switch_value(value)
    if parsed is not None:
        return parsed
    raise ConfigurationError(
        f"{variable}={value!r} is not an on/off value; use one of "
        f"{', '.join(sorted(TRUE_WORDS))} or {', '.join(sorted(FALSE_WORDS))} (any case)"
    )


def normalize_backend_name(value: str | None) -> str | None:
    """``' Real_Mamba '`` -> ``'real-mamba'``; blank or ``auto`` -> None (automatic choice)."""
    if value is None:
        return None
    word = value.strip().lower().replace("_", "-")
    return None if word in AUTO_WORDS else word


@dataclass(frozen=True)
class SelectionSettings:
    """The user's switches: Mamba on or off, and an optional forced backend name."""

    enable_mamba: bool = True
    forced_backend: str | None = None
    forced_by: str = BACKEND_ENV  # where the forced name came from, for messages: the variable, a key, an argument

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SelectionSettings:
        """Read ``ENABLE_MAMBA`` and ``MAMBA_ROUTER_BACKEND``; raise ConfigurationError on bad values."""
        env = os.environ if environ is None else environ
        return cls(
            enable_mamba=parse_switch(env.get(ENABLE_MAMBA_ENV), variable=ENABLE_MAMBA_ENV),
            forced_backend=normalize_backend_name(env.get(BACKEND_ENV)),
        )


@dataclass(frozen=True)
class Selection:
    """The chosen candidate and a sentence saying why."""

    candidate: CandidateReport
    reason: str


def preferred_mamba_backend(platform: PlatformFacts) -> str | None:
    """The Mamba backend this platform should get first, by the table in the module docstring."""
    if platform.system in ("linux", "windows") and platform.cuda_available:
        return "real-mamba"
    if platform.system == "darwin" and platform.mps_available:
        return "mamba2"
    return None


def mamba_backend_for_system(system: str) -> str | None:
    """The Mamba backend that serves an OS once its accelerator is there: what to install to get Mamba."""
    if system == "darwin":
        return "mamba2"
    if system in ("linux", "windows"):
        return "real-mamba"
    return None


def mamba_install_command(platform: PlatformFacts, candidates: Sequence[CandidateReport]) -> str | None:
    """The install command of the Mamba backend this platform's OS calls for, as its report gives it."""
    name = mamba_backend_for_system(platform.system)
    report = next((c for c in candidates if c.name == name), None)
    return report.install_command if report else None


def ordered_by_priority(candidates: Sequence[CandidateReport]) -> list[CandidateReport]:
    """Highest priority first, ties broken by name: the one ordering rule of the library."""
    return sorted(candidates, key=lambda c: (-(c.priority or 0), c.name))


def by_priority(candidates: Sequence[CandidateReport]) -> CandidateReport:
    """The highest-priority candidate (see :func:`ordered_by_priority`)."""
    return ordered_by_priority(candidates)[0]


def select_backend(
    platform: PlatformFacts,
    candidates: Sequence[CandidateReport],
    settings: SelectionSettings,
) -> Selection:
    """Pick the backend for ``platform``. Raises a MambaRouterError subclass when no choice is possible."""
    installed = [c for c in candidates if c.installed]
    if settings.forced_backend is not None:
        return _forced(settings, candidates, installed)

    mamba = [c for c in installed if c.family == "mamba" and c.available]
    transformer = [c for c in installed if c.family == "transformer" and c.available]
    preferred = preferred_mamba_backend(platform)
    if settings.enable_mamba:
        first = next((c for c in mamba if c.name == preferred), None)
        if first is not None:
            return Selection(first, f"{first.name} is the Mamba backend for {_describe(platform)}")
        if mamba:
            best = by_priority(mamba)
            return Selection(best, f"{best.name} is the highest-priority usable Mamba backend")
    if transformer:
        best = by_priority(transformer)
        return Selection(best, _why_no_mamba(platform, candidates, settings, preferred))
    raise NoBackendAvailableError(
        "any",
        "no installed backend can run here: "
        + "; ".join(f"{c.name}: {c.reason}" for c in candidates)
        + " (reinstall the core to get the transformer fallback)",
        "pip install --force-reinstall mamba-router",
    )


def _forced(
    settings: SelectionSettings,
    candidates: Sequence[CandidateReport],
    installed: Sequence[CandidateReport],
) -> Selection:
    name = settings.forced_backend
    assert name is not None
    match = next((c for c in installed if c.name == name), None)
    if match is None:
        missing = next((c for c in candidates if c.name == name), None)
        if missing is not None:  # a known backend whose distribution is absent
            raise BackendUnavailableError(name, missing.reason, missing.install_command)
        raise UnknownBackendError(name, sorted({c.name for c in candidates}), source=f"{settings.forced_by} value")
    if match.family == "mamba" and not settings.enable_mamba:
        raise ConfigurationError(
            f"{settings.forced_by}={name} asks for a Mamba backend but {ENABLE_MAMBA_ENV} turns Mamba off; "
            "unset one of the two"
        )
    if match.available:
        return Selection(match, f"{name} was requested with {settings.forced_by}")
    if match.forceable:
        return Selection(match, f"{name} was requested with {settings.forced_by} although {match.reason}")
    raise BackendUnavailableError(name, match.reason, match.install_command)


def _describe(platform: PlatformFacts) -> str:
    accel = "CUDA" if platform.cuda_available else "MPS" if platform.mps_available else "no GPU"
    return f"{platform.system} with {accel}"


def _why_no_mamba(
    platform: PlatformFacts,
    candidates: Sequence[CandidateReport],
    settings: SelectionSettings,
    preferred: str | None,
) -> str:
    if not settings.enable_mamba:
        return f"Mamba is turned off ({ENABLE_MAMBA_ENV}=false)"
    if preferred is None:
        reasons = "; ".join(f"{c.name}: {c.reason}" for c in candidates if c.family == "mamba")
        return f"no Mamba backend serves {_describe(platform)}" + (f" ({reasons})" if reasons else "")
    report = next((c for c in candidates if c.name == preferred), None)
    if report is None:
        return f"{preferred} is not installed"
    return f"{preferred} is not usable: {report.reason}"
