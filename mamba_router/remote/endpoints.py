"""The endpoints that serve one family: which one takes the next request, and which are resting after a failure.

The next request goes to the endpoint with the fewest requests in flight (least outstanding requests) among those
not resting and not tried yet for this request. A failed endpoint rests for ``cooldown_s`` (or as long as a 429's
``Retry-After`` asks); when every untried endpoint is resting, the one whose rest ends first is tried anyway rather
than failing a request without trying.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from mamba_router.settings.schema import RemoteEndpoint


class EndpointHealth(BaseModel):
    """What is known about one endpoint (``mamba-router info``, the server's metrics)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str
    model: str
    outstanding: int
    answered: int
    failed: int
    resting_s: float  # seconds of rest left after a failure (0: takes requests)
    last_error: str | None


@dataclass
class EndpointState:
    """One endpoint and its counters (changed under the pool's lock)."""

    endpoint: RemoteEndpoint
    outstanding: int = 0
    answered: int = 0
    failed: int = 0
    resting_until: float = 0.0
    last_error: str | None = None


class EndpointPool:
    """The endpoints of one family (see the module docstring)."""

    def __init__(
        self, endpoints: Sequence[RemoteEndpoint], *, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not endpoints:
            raise ValueError("an endpoint pool needs at least one endpoint")
        self.states = [EndpointState(e) for e in endpoints]
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()

    def take(self, tried: set[int]) -> tuple[int, EndpointState] | None:
        """The endpoint for the next attempt (its index and state, counted as in flight), or None when every
        endpoint was tried for this request."""
        with self._lock:
            now = self._clock()
            untried = [(i, s) for i, s in enumerate(self.states) if i not in tried]
            if not untried:
                return None
            awake = [(i, s) for i, s in untried if s.resting_until <= now]
            if awake:
                index, state = min(awake, key=lambda pair: (pair[1].outstanding, pair[0]))
            else:
                index, state = min(untried, key=lambda pair: pair[1].resting_until)
            state.outstanding += 1
            return index, state

    def succeeded(self, state: EndpointState) -> None:
        """A call ended well: the endpoint is awake."""
        with self._lock:
            state.outstanding -= 1
            state.answered += 1
            state.resting_until = 0.0

    def failed(self, state: EndpointState, cause: str, rest_s: float | None = None) -> None:
        """A call failed because of the endpoint: it rests ``cooldown_s`` (or ``rest_s`` when that is longer)."""
        with self._lock:
            state.outstanding -= 1
            state.failed += 1
            state.last_error = cause
            state.resting_until = self._clock() + max(self.cooldown_s, rest_s or 0.0)

    def released(self, state: EndpointState) -> None:
        """A call ended through no fault of the endpoint (the request was refused or cancelled)."""
        with self._lock:
            state.outstanding -= 1

    def health(self) -> list[EndpointHealth]:
        """Every endpoint's counters now."""
        with self._lock:
            now = self._clock()
            return [
                EndpointHealth(
                    label=s.endpoint.label,
                    model=s.endpoint.model,
                    outstanding=s.outstanding,
                    answered=s.answered,
                    failed=s.failed,
                    resting_s=round(max(0.0, s.resting_until - now), 3),
                    last_error=s.last_error,
                )
                for s in self.states
            ]
