"""``detect()``: discovery + selection, as one typed report; :func:`detected_backends`: discovery, remembered.

Discovery is remembered in the process and, through :mod:`mamba_router.backends.detection_cache`, across processes
while the machine is unchanged, so a router that only decides never imports torch or a plugin. ``refresh=True``
probes afresh (what ``mamba-router info`` does).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mamba_router.backends.detection_cache import (
    cacheable,
    detection_fingerprint,
    forget_detection,
    read_detection,
    write_detection,
)
from mamba_router.backends.discovery import DiscoveredBackend, discover_backends, probe_backends
from mamba_router.backends.platform import collect_platform_facts
from mamba_router.backends.protocol import Backend
from mamba_router.backends.reports import DetectionResult, DetectionSource, PlatformFacts
from mamba_router.backends.selection import SelectionSettings, select_backend
from mamba_router.errors import MambaRouterError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detected:
    """The platform, every candidate backend, where they came from and what finding them took."""

    platform: PlatformFacts
    found: tuple[DiscoveredBackend, ...]
    source: DetectionSource
    elapsed_ms: float


_remembered: dict[str, tuple[PlatformFacts, tuple[DiscoveredBackend, ...]]] = {}
_remembered_lock = threading.Lock()


def detected_backends(
    *,
    refresh: bool = False,
    platform: PlatformFacts | None = None,
    backends: Sequence[Backend] | None = None,
) -> Detected:
    """The platform facts and discovered backends of this machine: this process's earlier detection, else a stored
    one with the same fingerprint (its plugins are imported only when a backend is used), else probed now.

    ``refresh=True`` probes now and replaces both. A detection that found a broken plugin or a failed CUDA query is
    not remembered. With ``platform`` or ``backends`` given (tests, embedding) they are probed now and nothing is
    remembered: ``backends`` replaces entry-point discovery, ``platform`` the machine's facts.
    """
    started = time.perf_counter()
    if platform is not None or backends is not None:
        facts = platform if platform is not None else collect_platform_facts()
        given = probe_backends(backends, facts) if backends is not None else discover_backends(facts)
        return Detected(facts, tuple(given), "given" if backends is not None else "probed", _ms_since(started))
    fingerprint = detection_fingerprint()
    if not refresh:
        with _remembered_lock:
            known = _remembered.get(fingerprint)
        if known is not None and not any(d.stale for d in known[1]):
            return Detected(*known, "process cache", _ms_since(started))
        stored = read_detection(fingerprint)
        if stored is not None:
            platform, stored_reports, path = stored
            found = tuple(DiscoveredBackend(r, deferred=True) for r in stored_reports)
            with _remembered_lock:
                _remembered[fingerprint] = (platform, found)
            logger.info("detection read from %s", path)
            return Detected(platform, found, "disk cache", _ms_since(started))
    platform = collect_platform_facts()
    found = tuple(discover_backends(platform))
    reports = [d.report for d in found]
    with _remembered_lock:
        _remembered.clear()
        if cacheable(platform, reports):
            _remembered[fingerprint] = (platform, found)
    write_detection(fingerprint, platform, reports)
    return Detected(platform, found, "probed", _ms_since(started))


def forget_detected() -> None:
    """Forget the remembered detection, in this process and on disk (the next one probes)."""
    with _remembered_lock:
        _remembered.clear()
    forget_detection()


def detect(
    *,
    environ: Mapping[str, str] | None = None,
    platform: PlatformFacts | None = None,
    raise_on_error: bool = True,
    refresh: bool = False,
) -> DetectionResult:
    """Discover every installed backend, probe it, and choose one for this machine.

    Honours ``ENABLE_MAMBA`` and ``MAMBA_ROUTER_BACKEND`` (from ``environ``, default ``os.environ``).
    When the choice fails (a forced backend that cannot run, an unknown name) this raises the cause, a
    :class:`MambaRouterError` subclass, unless ``raise_on_error=False``, which returns the report with ``error`` set.
    The candidates come from :func:`detected_backends` (``refresh=True`` probes afresh); with ``platform`` given,
    they are probed against it.
    """
    return detect_with_backends(environ=environ, platform=platform, raise_on_error=raise_on_error, refresh=refresh)[0]


def detect_with_backends(
    *,
    environ: Mapping[str, str] | None = None,
    platform: PlatformFacts | None = None,
    raise_on_error: bool = True,
    refresh: bool = False,
) -> tuple[DetectionResult, list[DiscoveredBackend]]:
    """:func:`detect`, and the discovered backends themselves (so a caller can use the chosen one)."""
    detected = detected_backends(refresh=refresh, platform=platform)
    facts, found = detected.platform, list(detected.found)
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
            source=detected.source,
            detect_ms=detected.elapsed_ms,
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
        source=detected.source,
        detect_ms=detected.elapsed_ms,
    )
    logger.info("selected backend %s: %s", result.selected, result.reason)
    return result, found


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _settings_or_default(environ: Mapping[str, str] | None) -> SelectionSettings:
    try:
        return SelectionSettings.from_env(environ)
    except MambaRouterError:
        return SelectionSettings()
