"""The backend object the router holds for a family served by remote endpoints (``[[remote.mamba]]`` or
``[[remote.transformer]]``): it follows the :class:`~mamba_router.backends.protocol.Backend` contract, but is made
from the configuration by the router rather than found through an entry point (it needs endpoints, not a
platform)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mamba_router.backends.reports import Availability, Family, PlatformFacts
from mamba_router.errors import ConfigurationError
from mamba_router.settings.schema import RemoteSection

if TYPE_CHECKING:
    from mamba_router.remote.model import RemoteModel

INSTALL_COMMAND = "pip install 'mamba-router[remote]'"


class RemoteBackend:
    """One family's remote endpoints as a backend (see the module docstring)."""

    name = "remote"
    priority = 0
    local_alternates = True  # a local Mamba backend may answer when every endpoint fails
    install_command = INSTALL_COMMAND

    def __init__(self, family: Family, settings: RemoteSection, count: Callable[[str], int]) -> None:
        self.family: Family = family
        self.endpoints = settings.endpoints_of(family)
        if not self.endpoints:
            raise ConfigurationError(f"no [[remote.{family}]] endpoint is configured")
        self.settings = settings
        self.count = count
        self.default_model = self.endpoints[0].model

    def probe(self, platform: PlatformFacts) -> Availability:
        """Usable when the HTTP client is installed; whether each endpoint answers shows ``mamba-router info``."""
        try:
            import httpx  # noqa: F401
        except ImportError:
            return Availability.unusable("remote endpoints need the httpx package", INSTALL_COMMAND)
        labels = ", ".join(e.label for e in self.endpoints)
        details = {f"endpoint {i}": e.label for i, e in enumerate(self.endpoints)}
        return Availability.usable(f"{len(self.endpoints)} remote {self.family} endpoint(s): {labels}", **details)

    def load(self, model: str, *, device: str | None = None, dtype: Any = None) -> RemoteModel:
        """The endpoints as one loaded model (``model``, ``device`` and ``dtype`` are the servers' business)."""
        from mamba_router.remote.model import RemoteModel

        return RemoteModel(self.family, self.settings, self.count)

    def write_offline_model(self, directory: Path) -> Path:
        """Not possible: a remote backend runs no model on this machine."""
        raise ConfigurationError("a remote backend runs no model here; write an offline model with a local backend")
