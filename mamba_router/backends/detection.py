"""``detect()``: discovery + selection, as one typed report."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from mamba_router.backends.discovery import DiscoveredBackend, discover_backends
from mamba_router.backends.platform import collect_platform_facts
from mamba_router.backends.reports import DetectionResult, PlatformFacts
from mamba_router.backends.selection import SelectionSettings, select_backend
from mamba_router.errors import MambaRouterError

logger = logging.getLogger(__name__)


def detect(
    *,
    environ: Mapping[str, str] | None = None,
    platform: PlatformFacts | None = None,
    raise_on_error: bool = True,
) -> DetectionResult:
    """Discover every installed backend, probe it, and choose one for this machine.

    Honours ``ENABLE_MAMBA`` and ``MAMBA_ROUTER_BACKEND`` (from ``environ``, default ``os.environ``).
    When the choice fails (a forced backend that cannot run, an unknown name) this raises the cause, a
    :class:`MambaRouterError` subclass, unless ``raise_on_error=False``, which returns the report with ``error`` set.
    """
    return detect_with_backends(environ=environ, platform=platform, raise_on_error=raise_on_error)[0]


def detect_with_backends(
    *,
    environ: Mapping[str, str] | None = None,
    platform: PlatformFacts | None = None,
    raise_on_error: bool = True,
) -> tuple[DetectionResult, list[DiscoveredBackend]]:
    """:func:`detect`, and the discovered backends themselves (so a caller can use the chosen one)."""
    facts = platform if platform is not None else collect_platform_facts()
    found = discover_backends(facts)
    reports = tuple(d.report for d in found)
    warnings = tuple(r.error for r in reports if r.error)
    try:
        settings = SelectionSettings.from_env(environ)
        selection = select_backend(facts, reports, settings)
    except MambaRouterError as exc:
        settings_or_default = _settings_or_default(environ)
        result = DetectionResult(
            platform=facts,
            candidates=reports,
            reason=str(exc),
            error=f"{type(exc).__name__}: {exc}",
            enable_mamba=settings_or_default.enable_mamba,
            forced_backend=settings_or_default.forced_backend,
            warnings=warnings,
        )
        if raise_on_error:
            raise exc
        return result, found
    result = DetectionResult(
        platform=facts,
        candidates=reports,
        selected=selection.candidate.name,
        selected_family=selection.candidate.family,
        reason=selection.reason,
        enable_mamba=settings.enable_mamba,
        forced_backend=settings.forced_backend,
        warnings=warnings,
    )
    logger.info("selected backend %s: %s", result.selected, result.reason)
    return result, found


def _settings_or_default(environ: Mapping[str, str] | None) -> SelectionSettings:
    try:
        return SelectionSettings.from_env(environ)
    except MambaRouterError:
        return SelectionSettings()
