"""Prometheus metrics of one server: requests by endpoint and status, tokens, fallbacks, time to first token and
per-token latency histograms, and live gauges read from the router (queue depth, running batch, document-state
cache hits, misses and bytes)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from mamba_router.routing.decisions import RoutedResult
    from mamba_router.serve.served_router import ServedRouter

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _RouterState(Collector):
    """Gauges read from the router when scraped."""

    def __init__(self, router: ServedRouter) -> None:
        self.router = router

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self.router.live_stats()
        waiting = GaugeMetricFamily("mamba_router_queue_depth", "Requests waiting for a model", labels=["model"])
        running = GaugeMetricFamily("mamba_router_running_batch_size", "Sequences decoding now", labels=["model"])
        steps = CounterMetricFamily("mamba_router_decode_steps", "Batched decoding steps", labels=["model"])
        passes = CounterMetricFamily(
            "mamba_router_engine_passes", "Passes of a batching engine's loop", labels=["model"]
        )
        phases = CounterMetricFamily(
            "mamba_router_engine_seconds",
            "Time a batching engine's thread spent in each phase",
            labels=["model", "phase"],
        )
        for name, engine in stats.engines.items():
            waiting.add_metric([name], engine.waiting)
            running.add_metric([name], engine.running)
            steps.add_metric([name], engine.steps)
            passes.add_metric([name], engine.passes)
            for phase, seconds in engine.pass_seconds.items():
                phases.add_metric([name, phase], seconds)
        yield waiting
        yield running
        yield steps
        yield passes
        yield phases
        yield GaugeMetricFamily("mamba_router_in_flight", "Requests in flight", value=stats.in_flight)
        cache = stats.state_cache
        if cache is not None:
            yield CounterMetricFamily("mamba_router_state_cache_hits", "Document states reused", value=cache.hits)
            yield CounterMetricFamily("mamba_router_state_cache_misses", "Documents read", value=cache.misses)
            yield GaugeMetricFamily("mamba_router_state_cache_bytes", "Bytes of cached states", value=cache.nbytes)


class ServerMetrics:
    """The metrics of one app, in a registry of its own."""

    def __init__(self, router: ServedRouter) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mamba_router_requests", "HTTP requests answered", ["endpoint", "status"], registry=self.registry
        )
        self.tokens = Counter("mamba_router_tokens", "Tokens read and generated", ["kind"], registry=self.registry)
        self.fallbacks = Counter("mamba_router_fallbacks", "Answers given by another model", registry=self.registry)
        self.time_to_first_token = Histogram(
            "mamba_router_time_to_first_token_seconds",
            "From request to first text",
            ["family"],
            buckets=_TTFT_BUCKETS,
            registry=self.registry,
        )
        self.server_first_piece = Histogram(
            "mamba_router_server_time_to_first_piece_seconds",
            "From a streamed request's arrival at the server to its first text piece (the engine's time to first "
            "token plus reading the body, routing and admission)",
            ["family"],
            buckets=_TTFT_BUCKETS,
            registry=self.registry,
        )
        self.token_latency = Histogram(
            "mamba_router_inter_token_latency_seconds",
            "Mean time per generated token after the first, per request",
            ["family"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_RouterState(router))

    def answered(self, endpoint: str, status: int) -> None:
        """Count one HTTP answer."""
        self.requests.labels(endpoint, str(status)).inc()

    def observe(self, result: RoutedResult, server_first_piece_ms: float | None = None) -> None:
        """Record one routed answer's tokens, fallback and latencies (``server_first_piece_ms``: a stream's time
        from its arrival at the server to its first piece)."""
        generation = result.generation
        self.tokens.labels("prompt").inc(generation.prompt_tokens)
        self.tokens.labels("completion").inc(generation.completion_tokens)
        if result.fallback_used:
            self.fallbacks.inc()
        timings = generation.timings
        if timings.time_to_first_token_ms is not None:
            self.time_to_first_token.labels(result.model_used).observe(timings.time_to_first_token_ms / 1000)
        if server_first_piece_ms is not None:
            self.server_first_piece.labels(result.model_used).observe(server_first_piece_ms / 1000)
        if generation.completion_tokens > 1:
            per_token = timings.decode_ms / 1000 / (generation.completion_tokens - 1)
            self.token_latency.labels(result.model_used).observe(per_token)

    def render(self) -> bytes:
        """The text exposition format."""
        data: bytes = generate_latest(self.registry)
        return data
