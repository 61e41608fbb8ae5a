"""The ``real-mamba`` backend: registration and probe. Loading arrives with the kernel integration."""

from __future__ import annotations

from pathlib import Path

from mamba_router.errors import BackendUnavailableError
from mamba_router.records import Availability, PlatformFacts

from mamba_router_cuda.probe import INSTALL_BACKEND, assess, collect_kernel_facts

NOT_IMPLEMENTED = "model loading on the mamba-ssm kernels is not implemented in mamba-router-cuda 0.1.0"


class RealMambaBackend:
    """Mamba-1 and Mamba-2 checkpoints on the official mamba-ssm CUDA kernels."""

    name = "real-mamba"
    family = "mamba"
    priority = 20
    default_model = "state-spaces/mamba-130m"
    install_command = INSTALL_BACKEND

    def probe(self, platform: PlatformFacts) -> Availability:
        """Cheap: reads platform facts and package metadata; imports no kernel and loads no model."""
        found = assess(platform, collect_kernel_facts())
        if not found.available:
            return found
        return Availability.unusable(f"{NOT_IMPLEMENTED} ({found.reason})", None, **found.details)

    def load(self, model: str, *, device: str | None = None, dtype: str | None = None) -> object:
        """Not available in this release."""
        raise BackendUnavailableError(self.name, NOT_IMPLEMENTED)

    def write_offline_model(self, directory: Path) -> Path:
        """Not available in this release."""
        raise BackendUnavailableError(self.name, NOT_IMPLEMENTED)
