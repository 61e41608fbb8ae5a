"""Names kept from the system mamba_router replaces: ``get_mamba_info()``, ``detect_mamba_backend()``, ...

They are thin wrappers over :func:`mamba_router.detect` and :func:`mamba_router.load_model`.
"""

from __future__ import annotations

from typing import Any, Literal

from mamba_router.backends.detection import detect
from mamba_router.backends.reports import DetectionResult
from mamba_router.backends.selection import mamba_install_command
from mamba_router.errors import MambaUnavailableError
from mamba_router.generation.protocols import LoadedModel

MambaBackendName = Literal["real-mamba", "mamba2", "none"]


def get_mamba_info() -> dict[str, Any]:
    """Detection as a plain dict; never raises.

    Keys: ``backend`` (the backend chosen: ``real-mamba``, ``mamba2``, ``transformer`` or ``none``),
    ``mamba_backend`` (``real-mamba``, ``mamba2`` or ``none``), ``available`` (a Mamba backend is usable),
    ``reason`` (why Mamba is or is not used), ``platform`` (OS name), ``cuda_available``, ``mps_available``,
    ``install_command`` (what installs the Mamba backend for this platform; None when one is usable),
    ``enable_mamba``, ``forced_backend``, ``error``, ``platform_facts`` and ``candidates`` (one dict per
    discovered backend: name, distribution, version, family, installed, available, reason, install_command, error).
    """
    result = detect(raise_on_error=False)
    mamba = _mamba_name(result)
    return {
        "backend": result.selected or "none",
        "mamba_backend": mamba,
        "available": mamba != "none",
        "reason": _mamba_reason(result, mamba),
        "platform": result.platform.system,
        "cuda_available": result.platform.cuda_available,
        "mps_available": result.platform.mps_available,
        "install_command": None if mamba != "none" else mamba_install_command(result.platform, result.candidates),
        "enable_mamba": result.enable_mamba,
        "forced_backend": result.forced_backend,
        "error": result.error,
        "platform_facts": result.platform.model_dump(mode="json"),
        "candidates": [
            c.model_dump(
                mode="json",
                include={
                    "name",
                    "distribution",
                    "version",
                    "family",
                    "priority",
                    "entry_point",
                    "installed",
                    "available",
                    "forceable",
                    "reason",
                    "install_command",
                    "error",
                    "details",
                },
            )
            for c in result.candidates
        ],
    }


def detect_mamba_backend() -> MambaBackendName:
    """``real-mamba`` or ``mamba2`` when detection picks that Mamba backend here, else ``none``."""
    return _mamba_name(detect(raise_on_error=False))


def is_mamba_available() -> bool:
    """True when detection picks a Mamba backend on this machine."""
    return detect_mamba_backend() != "none"


def load_mamba_model(model: str | None = None, **kwargs: Any) -> LoadedModel | UnavailableMambaModel:
    """Load a Mamba model with the detected Mamba backend, or return an :class:`UnavailableMambaModel`.

    The shim says why (``reason``) and how to fix it (``install_command``); its methods raise
    :class:`MambaUnavailableError` rather than return a made-up answer.
    """
    from mamba_router.generation.loading import load_model

    result = detect(raise_on_error=False)
    mamba = result.mamba_backend
    if mamba is None:
        return UnavailableMambaModel(
            reason=_mamba_reason(result, "none"),
            install_command=mamba_install_command(result.platform, result.candidates),
        )
    return load_model(model, backend=mamba, **kwargs)


class UnavailableMambaModel:
    """Stands in for a Mamba model where none can run; every generation call raises MambaUnavailableError."""

    available = False
    backend = "none"
    device = "none"
    model_id = "none"

    def __init__(self, reason: str, install_command: str | None) -> None:
        self.reason = reason
        self.install_command = install_command

    def __repr__(self) -> str:
        return f"UnavailableMambaModel(reason={self.reason!r})"

    def _unavailable(self) -> MambaUnavailableError:
        return MambaUnavailableError("none", self.reason, self.install_command)

    def count_tokens(self, text: str) -> int:
        """Raises: there is no Mamba tokenizer loaded."""
        raise self._unavailable()

    def generate(self, prompt: str, **kwargs: Any) -> Any:
        """Raises MambaUnavailableError with the reason."""
        raise self._unavailable()

    def generate_with_state_space(
        self, prompt: str = "", context: str | None = None, max_new_tokens: int = 256, **kwargs: Any
    ) -> Any:
        """Raises MambaUnavailableError with the reason."""
        raise self._unavailable()


def _mamba_name(result: DetectionResult) -> MambaBackendName:
    name = result.mamba_backend
    if name in ("real-mamba", "mamba2"):
        return name  # type: ignore[return-value]
    return "none"


def _mamba_reason(result: DetectionResult, mamba: str) -> str:
    if mamba != "none":
        return result.reason
    return result.error or result.reason
