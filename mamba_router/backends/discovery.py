"""Find installed backends through the ``mamba_router.backends`` entry-point group and probe each in isolation.

Every plugin is loaded, checked and probed in its own daemon thread with a deadline, so a plugin that fails to
import, raises in ``probe``, returns the wrong type, hangs, or is not a backend at all is reported with its error
and never breaks detection. Two distributions registering one name are both reported: the official distribution
for that name (or else the first by distribution name) is used, the other is marked as shadowed.
"""

from __future__ import annotations

import importlib.metadata as importlib_metadata
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mamba_router.backends.detection_cache import forget_detection
from mamba_router.backends.install_hints import distribution_install_command
from mamba_router.backends.protocol import Backend
from mamba_router.backends.reports import Availability, CandidateReport, Family, PlatformFacts
from mamba_router.errors import BackendUnavailableError, ConfigurationError

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mamba_router.backends"
PROBE_TIMEOUT_ENV = "MAMBA_ROUTER_PROBE_TIMEOUT"
DEFAULT_PROBE_TIMEOUT_S = 10.0
_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class KnownBackend:
    """A backend this project ships, listed even when its distribution is not installed."""

    name: str
    distribution: str
    family: Family
    extra: str | None  # the core's extra that installs it (None: the core itself)

    @property
    def install_command(self) -> str:
        """The command that installs it, the way the core was installed (a checkout, wheels or an index)."""
        if self.extra is None:
            return "pip install --force-reinstall mamba-router"
        return distribution_install_command(self.distribution, self.extra)


KNOWN_BACKENDS: tuple[KnownBackend, ...] = (
    KnownBackend("real-mamba", "mamba-router-cuda", "mamba", "cuda"),
    KnownBackend("mamba2", "mamba-router-mps", "mamba", "mps"),
    KnownBackend("transformer", "mamba-router", "transformer", None),
)


class DiscoveredBackend:
    """A candidate's report and the backend object itself.

    Discovery loads the object while it probes. A report read back from the detection cache
    (:mod:`mamba_router.backends.detection_cache`) brings only the entry point: the plugin is imported on the first
    use of :attr:`backend` (loading a model), so a routing decision never imports it.
    """

    def __init__(self, report: CandidateReport, backend: Backend | None = None, *, deferred: bool = False) -> None:
        """``deferred``: the report says the plugin loaded cleanly in an earlier process; load it from
        ``report.entry_point`` when :attr:`backend` is first asked for."""
        self.report = report
        self._backend = backend
        self._deferred = deferred and backend is None and report.entry_point is not None and report.error is None
        self._lock = threading.Lock()
        self.stale = False  # a deferred plugin that no longer loads: its detection is out of date

    def __repr__(self) -> str:
        state = "loaded" if self._backend is not None else "deferred" if self._deferred else "none"
        return f"DiscoveredBackend({self.report.name!r}, {self.report.status}, backend {state})"

    @property
    def loadable(self) -> bool:
        """True when the backend object is here or can be loaded from its entry point."""
        return self._backend is not None or self._deferred

    @property
    def usable(self) -> bool:
        """True when the backend loaded (or will) and its probe says it can run here."""
        return self.loadable and self.report.available

    @property
    def backend(self) -> Backend | None:
        """The backend object (None for a broken or missing plugin). For a report from the detection cache, the
        plugin is imported now; a plugin that no longer loads raises BackendUnavailableError naming why."""
        if self._backend is None and self._deferred:
            with self._lock:
                if self._backend is None:
                    try:
                        self._backend = load_entry_point(self.report)
                    except BackendUnavailableError:
                        self.stale = True
                        forget_detection()  # the next process probes again
                        raise
        return self._backend


def load_entry_point(report: CandidateReport) -> Backend:
    """Import and construct the backend ``report`` describes, checked against the contract as discovery checks it;
    BackendUnavailableError when it no longer loads (the plugin changed since it was probed)."""
    assert report.entry_point is not None
    entry_point = importlib_metadata.EntryPoint(name=report.name, value=report.entry_point, group=ENTRY_POINT_GROUP)
    try:
        backend = _as_backend(entry_point.load())
        problem = _contract_problem(backend, report.name)
    except Exception as exc:
        problem = f"import failed: {type(exc).__name__}: {exc}"
    if problem is not None:
        raise BackendUnavailableError(
            report.name,
            f"its plugin ({report.entry_point}, from {report.origin}) no longer loads: {problem}; it loaded when "
            "this machine was last detected (run `mamba-router info` to detect again)",
            f"pip install --force-reinstall {report.distribution}" if report.distribution else None,
        )
    return backend


def probe_timeout_from_env(environ: dict[str, str] | None = None) -> float:
    """The per-plugin deadline in seconds, from ``MAMBA_ROUTER_PROBE_TIMEOUT`` (default 10)."""
    raw = (environ if environ is not None else os.environ).get(PROBE_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_PROBE_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (0 < value <= 600):
        raise ConfigurationError(
            f"{PROBE_TIMEOUT_ENV}={raw!r} is not a number of seconds in (0, 600]; unset it or use e.g. 10"
        )
    return value


def discover_backends(
    platform: PlatformFacts,
    *,
    timeout_s: float | None = None,
    group: str = ENTRY_POINT_GROUP,
) -> list[DiscoveredBackend]:
    """Load and probe every entry point of ``group``; add known backends that are not installed.

    The result is ordered: installed candidates by (family, -priority, name), then the missing known ones.
    """
    deadline_s = probe_timeout_from_env() if timeout_s is None else timeout_s
    entry_points = sorted(
        importlib_metadata.entry_points(group=group),
        key=lambda ep: (ep.name, _dist_name(ep) or ""),
    )
    workers = [_PluginWorker(ep, platform) for ep in entry_points]
    for worker in workers:
        worker.start()
    end = time.monotonic() + deadline_s
    found = [worker.finish(max(0.0, end - time.monotonic()), deadline_s) for worker in workers]
    found = _mark_duplicates(found)
    installed = {d.report.name for d in found}
    if group == ENTRY_POINT_GROUP:
        found += [_missing(known) for known in KNOWN_BACKENDS if known.name not in installed]
    return sorted(found, key=_order_key)


def _order_key(found: DiscoveredBackend) -> tuple[int, str, int, str]:
    r = found.report
    return (0 if r.installed else 1, r.family or "~", -(r.priority or 0), r.name)


def _dist_name(ep: Any) -> str | None:
    dist = getattr(ep, "dist", None)
    return getattr(dist, "name", None) if dist is not None else None


def _dist_version(ep: Any) -> str | None:
    dist = getattr(ep, "dist", None)
    return getattr(dist, "version", None) if dist is not None else None


def _known(name: str) -> KnownBackend | None:
    return next((k for k in KNOWN_BACKENDS if k.name == name), None)


def _reinstall_command(ep: Any) -> str | None:
    dist = _dist_name(ep)
    return f"pip install --force-reinstall {dist}" if dist else None


def _missing(known: KnownBackend) -> DiscoveredBackend:
    report = CandidateReport(
        name=known.name,
        distribution=known.distribution,
        family=known.family,
        installed=False,
        available=False,
        reason=f"distribution {known.distribution!r} is not installed",
        install_command=known.install_command,
    )
    return DiscoveredBackend(report, None)


class _PluginWorker:
    """Loads, validates and probes one entry point in a daemon thread."""

    def __init__(self, entry_point: Any, platform: PlatformFacts) -> None:
        self.entry_point = entry_point
        self.platform = platform
        self.backend: Backend | None = None
        self.availability: Availability | None = None
        self.error: str | None = None
        self.stage = "loading"
        self.probe_ms: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"mamba-router-probe-{entry_point.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            obj = self.entry_point.load()
        except BaseException as exc:
            self.error = f"import failed: {type(exc).__name__}: {exc}"
            return
        try:
            self.stage = "constructing"
            backend = _as_backend(obj)
            problem = _contract_problem(backend, self.entry_point.name)
            if problem:
                self.error = problem
                return
            self.backend = backend
            self.stage = "probing"
            started = time.perf_counter()
            result = backend.probe(self.platform)
            self.probe_ms = (time.perf_counter() - started) * 1000
            if not isinstance(result, Availability):
                self.error = (
                    f"probe returned {type(result).__name__} ({_short_repr(result)}); "
                    "expected mamba_router.Availability"
                )
                return
            self.availability = result
        except BaseException as exc:
            self.error = f"{self.stage} failed: {type(exc).__name__}: {exc}"
        finally:
            self.stage = "done"

    def finish(self, wait_s: float, deadline_s: float) -> DiscoveredBackend:
        self._thread.join(wait_s)
        ep = self.entry_point
        known = _known(ep.name)
        base: dict[str, Any] = {
            "name": ep.name,
            "distribution": _dist_name(ep),
            "version": _dist_version(ep),
            "entry_point": ep.value,
            "probe_ms": self.probe_ms,
        }
        if self.backend is not None:
            base.update(
                family=self.backend.family, priority=self.backend.priority, default_model=_default_model(self.backend)
            )
        elif known is not None:
            base.update(family=known.family)
        if self._thread.is_alive():
            error = f"{self.stage} did not finish within {deadline_s:g} s (set {PROBE_TIMEOUT_ENV} to wait longer)"
            report = CandidateReport(**base, reason=error, error=error, install_command=_reinstall_command(ep))
            return DiscoveredBackend(report, None)
        if self.error is not None or self.availability is None:
            error = self.error or "probe returned nothing"
            report = CandidateReport(
                **base,
                reason=f"plugin is broken: {error}",
                error=error,
                install_command=_reinstall_command(ep),
            )
            return DiscoveredBackend(report, None)
        a = self.availability
        report = CandidateReport(
            **base,
            available=a.available,
            forceable=a.forceable,
            reason=a.reason,
            install_command=a.install_command,  # a fix only for what is missing
            details=a.details,
        )
        return DiscoveredBackend(report, self.backend)


def _default_model(backend: Backend) -> str | None:
    model = getattr(backend, "default_model", None)
    return model if isinstance(model, str) else None


def _as_backend(obj: Any) -> Any:
    """An entry point may name a backend class (constructed with no arguments) or an instance."""
    if isinstance(obj, type):
        return obj()
    return obj


def _contract_problem(obj: Any, entry_point_name: str) -> str | None:
    if not isinstance(obj, Backend):
        missing = [
            attr
            for attr in ("name", "family", "priority", "default_model", "install_command", "probe", "load")
            if not hasattr(obj, attr)
        ]
        return (
            f"not a backend: {type(obj).__name__} ({_short_repr(obj)}) lacks {', '.join(missing) or 'the protocol'}; "
            "see mamba_router.Backend"
        )
    if not isinstance(obj.name, str) or not _NAME_PATTERN.match(obj.name):
        return f"not a backend: name {obj.name!r} is not a lower-case identifier"
    if obj.name != entry_point_name:
        return f"entry point {entry_point_name!r} returns a backend named {obj.name!r}; the two must be equal"
    if obj.family not in ("mamba", "transformer"):
        return f"not a backend: family {obj.family!r} is not 'mamba' or 'transformer'"
    if not isinstance(obj.priority, int) or isinstance(obj.priority, bool):
        return f"not a backend: priority {obj.priority!r} is not an int"
    return None


def _short_repr(obj: Any, limit: int = 60) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _mark_duplicates(found: list[DiscoveredBackend]) -> list[DiscoveredBackend]:
    """Keep one backend per name and mark the others as shadowed, naming who shadows them."""
    by_name: dict[str, list[DiscoveredBackend]] = {}
    for item in found:
        by_name.setdefault(item.report.name, []).append(item)
    result: list[DiscoveredBackend] = []
    for name, items in by_name.items():
        if len(items) == 1:
            result.extend(items)
            continue
        known = _known(name)
        official = [i for i in items if known and i.report.distribution == known.distribution]
        winner = official[0] if official else items[0]
        result.append(winner)
        for loser in items:
            if loser is winner:
                continue
            why = (
                f"duplicate backend name {name!r}: also registered by distribution "
                f"{winner.report.distribution!r} ({winner.report.entry_point}), which is used; "
                f"uninstall one of them"
            )
            report = loser.report.model_copy(
                update={"available": False, "forceable": False, "reason": why, "error": why}
            )
            result.append(DiscoveredBackend(report, None))
            logger.warning("%s (from %s)", why, loser.report.distribution)
    return result


def probe_backends(backends: Sequence[Backend], platform: PlatformFacts) -> list[DiscoveredBackend]:
    """Reports for backend objects handed in directly (tests, embedding), probed the way entry points are.

    A backend whose probe raises is reported with its error, never fatal.
    """
    found = []
    for backend in backends:
        try:
            availability = backend.probe(platform)
            report = CandidateReport(
                name=backend.name,
                family=backend.family,
                priority=backend.priority,
                default_model=_default_model(backend),
                available=availability.available,
                forceable=availability.forceable,
                reason=availability.reason,
                install_command=availability.install_command,  # a fix only for what is missing
                details=availability.details,
            )
            found.append(DiscoveredBackend(report=report, backend=backend))
        except Exception as exc:
            name = str(getattr(backend, "name", "?"))
            found.append(
                DiscoveredBackend(CandidateReport(name=name, reason=f"probe raised {exc!r}", error=repr(exc)), None)
            )
    return found
