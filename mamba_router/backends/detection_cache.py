"""Detection remembered across processes, so a short-lived process (``mamba-router route``) decides without
importing torch or a plugin.

Probing every backend costs seconds (it imports torch, asks the driver, imports kernels), and its answer changes only
when the machine does. What an answer depends on is summed up in a fingerprint (:func:`detection_fingerprint`):

- the Python (executable, version, prefix) and this library's version;
- the installed distributions: on every ``sys.path`` entry, the name and modification time of each ``*.dist-info``,
  ``*.egg-info``, ``*.egg-link`` and ``*.pth`` entry (installing, upgrading or removing a distribution, an
  editable one included, writes one of them; the name carries the version, the entry points live inside);
- the drivers: the NVIDIA and AMD kernel driver versions and the GPU device nodes on Linux, the OS release elsewhere;
- the environment variables that change what torch or a probe sees (``CUDA_*``, ``NVIDIA_*``, ``HIP_*``,
  ``PYTORCH_*``, ``LD_LIBRARY_PATH``, ... see :data:`ENV_PREFIXES`), and the modules a test harness hides.

A stored detection is used only while its fingerprint equals this process's and it is younger than
:data:`MAX_AGE_S`. A detection that found a broken plugin, a probe that did not finish, or a failed CUDA query is
never stored: it is probed again next time. ``MAMBA_ROUTER_DETECTION_CACHE=off`` turns the file off;
``mamba-router info`` always probes afresh and rewrites it. The file holds platform facts and backend reports only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform as _platform
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import ValidationError

from mamba_router.backends.reports import CandidateReport, PlatformFacts
from mamba_router.backends.selection import switch_value
from mamba_router.paths import user_cache_dir
from mamba_router.version import __version__

logger = logging.getLogger(__name__)

CACHE_ENV = "MAMBA_ROUTER_DETECTION_CACHE"
CACHE_FORMAT = 1
MAX_AGE_S = 24 * 3600.0
ENV_PREFIXES = (
    "CUDA_",
    "NVIDIA_",
    "HIP_",
    "ROCR_",
    "ROCM_",
    "HSA_",
    "PYTORCH_",
    "TORCH_",
    "TRITON_",
    "MAMBA_ROUTER_PROBE_",
    "MAMBA_ROUTER_TEST_",
)
ENV_NAMES = ("LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH", "LD_PRELOAD")
_DRIVER_FILES = ("/proc/driver/nvidia/version", "/sys/module/nvidia/version", "/sys/module/amdgpu/version")
_DEVICE_NODE_PREFIXES = ("nvidia", "kfd", "dri")


def cache_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """False when ``MAMBA_ROUTER_DETECTION_CACHE`` is an off word (off, 0, false, no)."""
    value = (os.environ if environ is None else environ).get(CACHE_ENV, "")
    return switch_value(value) is not False


def cache_file() -> Path | None:
    """Where this Python's detection is stored (one file per interpreter), or None when there is no home to put
    it in."""
    executable = os.path.realpath(sys.executable)
    interpreter = hashlib.sha256(f"{sys.prefix}\0{executable}".encode(errors="surrogatepass")).hexdigest()[:16]
    try:
        return user_cache_dir() / f"detection-{interpreter}.json"
    except (RuntimeError, OSError) as exc:  # no home directory
        logger.debug("no cache directory for the detection: %s", exc)
        return None


def detection_fingerprint(environ: Mapping[str, str] | None = None) -> str:
    """A digest of everything a detection depends on (see the module docstring); cheap: a few ``stat`` calls."""
    env = os.environ if environ is None else environ
    parts: list[object] = [
        CACHE_FORMAT,
        __version__,
        os.path.realpath(sys.executable),
        sys.version,
        sys.prefix,
        _installed_distributions(),
        sorted(name for name, module in sys.modules.items() if module is None),
        sorted((k, v) for k, v in env.items() if k.startswith(ENV_PREFIXES) or k in ENV_NAMES),
        _driver_facts(),
    ]
    return hashlib.sha256(json.dumps(parts, default=str).encode(errors="surrogatepass")).hexdigest()


def cacheable(platform: PlatformFacts, reports: Sequence[CandidateReport]) -> bool:
    """True when nothing in the detection was a failure that may not happen next time."""
    return platform.cuda_error is None and not any(r.error for r in reports)


def read_detection(fingerprint: str) -> tuple[PlatformFacts, tuple[CandidateReport, ...], Path] | None:
    """The stored detection for ``fingerprint``, or None (no file, another fingerprint, too old, unreadable)."""
    path = cache_file() if cache_enabled() else None
    if path is None:
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("format") != CACHE_FORMAT or stored.get("fingerprint") != fingerprint:
            return None
        if not 0 <= time.time() - float(stored["written_at"]) <= MAX_AGE_S:
            return None
        platform = PlatformFacts.model_validate(stored["platform"])
        reports = tuple(CandidateReport.model_validate(r) for r in stored["candidates"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError, AttributeError, ValidationError) as exc:
        logger.debug("ignoring the detection cache %s: %s: %s", path, type(exc).__name__, exc)
        return None
    return platform, reports, path


def write_detection(fingerprint: str, platform: PlatformFacts, reports: Sequence[CandidateReport]) -> Path | None:
    """Store a detection (atomically: a reader sees the old file or the new one); None when it was not written.
    A cache that cannot be written is not an error: the next process probes again."""
    path = cache_file() if cache_enabled() else None
    if path is None or not cacheable(platform, reports):
        return None
    payload = {
        "format": CACHE_FORMAT,
        "fingerprint": fingerprint,
        "written_at": time.time(),
        "platform": platform.model_dump(mode="json"),
        "candidates": [r.model_dump(mode="json") for r in reports],
    }
    written: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False, suffix=".tmp") as tmp:
            written = tmp.name
            json.dump(payload, tmp)
        os.replace(written, path)
    except OSError as exc:
        logger.debug("could not store the detection in %s: %s", path, exc)
        if written is not None:
            with contextlib.suppress(OSError):
                os.unlink(written)
        return None
    return path


def forget_detection() -> None:
    """Remove the stored detection (a plugin it vouched for no longer loads)."""
    path = cache_file()
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()


_DISTRIBUTION_SUFFIXES = (".dist-info", ".egg-info", ".egg-link", ".pth")


def _installed_distributions() -> list[tuple[str, list[tuple[str, int]]]]:
    """Per ``sys.path`` directory that holds distributions: each one's metadata entry and its modification time."""
    result = []
    for entry in dict.fromkeys(os.path.abspath(item or ".") for item in sys.path):
        try:
            with os.scandir(entry) as listing:
                found = sorted(
                    (item.name, item.stat().st_mtime_ns)
                    for item in listing
                    if item.name.endswith(_DISTRIBUTION_SUFFIXES)
                )
        except OSError:  # not a directory (a zip file), missing, unreadable
            continue
        if found:
            result.append((entry, found))
    return result


def _mtime(entry: str) -> int | None:
    try:
        return os.stat(entry or ".").st_mtime_ns
    except OSError:
        return None


def _driver_facts() -> list[object]:
    if sys.platform.startswith("linux"):
        facts: list[object] = [_read_small(p) for p in _DRIVER_FILES]
        try:
            facts.append(sorted(n for n in os.listdir("/dev") if n.startswith(_DEVICE_NODE_PREFIXES)))
        except OSError:
            facts.append(None)
        return facts
    if sys.platform == "darwin":
        return [_platform.mac_ver()[0]]
    if sys.platform == "win32":
        nvcuda = Path(os.environ.get("SystemRoot", r"C:\Windows")) / "System32" / "nvcuda.dll"
        return [_platform.version(), _mtime(str(nvcuda))]
    return [_platform.release()]


def _read_small(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(4096)
    except OSError:
        return None
