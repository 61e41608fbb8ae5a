"""What a router is doing now, as plain values: each batching engine's queue and batch, requests in flight and the
document-state cache (read by the server's metrics, in its own process or through a model process)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class EngineGauges:
    """One loaded model's batching engine."""

    waiting: int  # requests queued for a batch row
    running: int  # sequences decoding now
    steps: int  # batched decoding steps so far
    passes: int = 0  # passes of the engine's loop that had work
    pass_seconds: dict[str, float] = field(default_factory=dict)  # time in each phase of those passes, by phase


@dataclass(frozen=True)
class StateCacheGauges:
    """The document-state cache."""

    hits: int  # document states reused
    misses: int  # documents read
    nbytes: int  # bytes of cached states


@dataclass(frozen=True)
class LiveStats:
    """A router's gauges at one moment."""

    engines: dict[str, EngineGauges] = field(default_factory=dict)  # by ``backend:model``
    in_flight: int = 0
    state_cache: StateCacheGauges | None = None  # None: no document-state cache
