"""What the HTTP app needs of a router: :class:`~mamba_router.routing.router.Router` in the server's own process, or
:class:`~mamba_router.serve.model_process.ModelProcessRouter`, the router of a model process."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from mamba_router.routing.decisions import RouteDecision
from mamba_router.routing.live_stats import LiveStats
from mamba_router.routing.streaming import RoutedStream
from mamba_router.settings.schema import RouterConfig


class ServedModel(Protocol):
    """A configured model: its id (a path or a hub id)."""

    @property
    def model(self) -> str: ...


class ServedRouter(Protocol):
    """The router calls the app makes."""

    @property
    def config(self) -> RouterConfig: ...

    @property
    def mamba(self) -> ServedModel | None: ...

    @property
    def transformer(self) -> ServedModel: ...

    @property
    def unavailable_reason(self) -> str | None:
        """Why no request can be answered any more (a model process that ended); None while requests can be."""
        ...

    def astream(self, query: str, context: str | Sequence[str] | None = None, **options: Any) -> RoutedStream:
        """The answer as it is generated (see ``Router.astream``)."""
        ...

    def route(
        self, query: str, context: str | Sequence[str] | None = None, *, pages: int | None = None
    ) -> RouteDecision:
        """A dry run: the decision, logged."""
        ...

    def read_log(self, limit: int | None = 20) -> list[dict[str, Any]]:
        """The last routing records."""
        ...

    def preload(self) -> dict[str, str]:
        """Load the models and warm their engines; each one's status."""
        ...

    def live_stats(self) -> LiveStats:
        """The gauges of the metrics."""
        ...

    def close(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Stop taking requests (finishing the running ones with ``drain``)."""
        ...
