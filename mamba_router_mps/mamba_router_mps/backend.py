"""The ``mamba2`` backend: registration and platform probe.

The pure-PyTorch models are not part of this release: the probe says so on every platform, so detection never
chooses this backend and forcing it fails with that reason.
"""

from __future__ import annotations

from pathlib import Path

from mamba_router.errors import BackendUnavailableError
from mamba_router.records import Availability, PlatformFacts

INSTALL_COMMAND = "pip install 'mamba-router[mps]'"
NOT_IMPLEMENTED = "the pure-PyTorch Mamba models are not implemented in mamba-router-mps 0.1.0"


class Mamba2Backend:
    """Mamba-2 and Mamba-1 in pure PyTorch; targets Apple silicon (MPS)."""

    name = "mamba2"
    family = "mamba"
    priority = 10
    default_model = "state-spaces/mamba2-130m"
    install_command = INSTALL_COMMAND

    def probe(self, platform: PlatformFacts) -> Availability:
        """Explains why the backend cannot run here."""
        if platform.system != "darwin" or not platform.mps_available:
            return Availability.unusable(
                f"MPS is not available ({platform.system}, {platform.machine}); mamba2 targets Apple silicon, "
                f"and {NOT_IMPLEMENTED}",
                None,
            )
        return Availability.unusable(NOT_IMPLEMENTED, "pip install --upgrade mamba-router-mps")

    def load(self, model: str, *, device: str | None = None, dtype: str | None = None) -> object:
        """Not available in this release."""
        raise BackendUnavailableError(self.name, NOT_IMPLEMENTED, "pip install --upgrade mamba-router-mps")

    def write_offline_model(self, directory: Path) -> Path:
        """Not available in this release."""
        raise BackendUnavailableError(self.name, NOT_IMPLEMENTED, "pip install --upgrade mamba-router-mps")
