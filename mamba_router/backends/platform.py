"""Gather :class:`PlatformFacts` about this machine without loading models or launching kernels."""

from __future__ import annotations

import logging
import platform as _platform

from mamba_router.backends.reports import PlatformFacts

logger = logging.getLogger(__name__)


def collect_platform_facts() -> PlatformFacts:
    """Read the OS, CPU, Python and torch facts that backend selection depends on.

    Never raises: a missing or broken torch is reported as ``torch_version=None``.
    """
    facts: dict[str, object] = {
        "system": _platform.system().lower() or "unknown",
        "machine": _platform.machine().lower() or "unknown",
        "python_version": _platform.python_version(),
    }
    try:
        import torch
    except Exception as exc:  # a broken torch install must not break detection
        logger.debug("torch is not importable: %s", exc)
        return PlatformFacts(**facts)  # type: ignore[arg-type]

    facts["torch_version"] = str(torch.__version__)
    facts["torch_build"] = _torch_build(torch)
    facts.update(_cuda_facts(torch))
    facts["mps_available"] = _mps_available(torch)
    return PlatformFacts(**facts)  # type: ignore[arg-type]


def _torch_build(torch: object) -> str:
    version = getattr(torch, "version", None)
    cuda = getattr(version, "cuda", None)
    hip = getattr(version, "hip", None)
    if cuda:
        return f"cuda {cuda}"
    if hip:
        return f"rocm {hip}"
    return "cpu"


def _cuda_facts(torch: object) -> dict[str, object]:
    try:
        cuda = torch.cuda  # type: ignore[attr-defined]
        if not cuda.is_available():
            return {"cuda_available": False}
        major, minor = cuda.get_device_capability(0)
        return {
            "cuda_available": True,
            "cuda_device_count": int(cuda.device_count()),
            "cuda_device_name": str(cuda.get_device_name(0)),
            "cuda_capability": f"{major}.{minor}",
        }
    except Exception as exc:  # driver trouble reads as "no CUDA", with the cause logged
        logger.warning("CUDA query failed, treating CUDA as unavailable: %s", exc)
        return {"cuda_available": False, "cuda_error": f"{type(exc).__name__}: {exc}"}


def _mps_available(torch: object) -> bool:
    try:
        return bool(torch.backends.mps.is_available())  # type: ignore[attr-defined]
    except Exception:
        return False
