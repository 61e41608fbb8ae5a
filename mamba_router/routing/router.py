"""``Router``: decide per request whether Mamba or the Transformer answers, run it, fall back, and log it.

::

    router = Router.from_config()                      # config file + environment, all optional
    decision = router.route(query, context=judgment)   # a dry run: no model is loaded
    answer = router.generate(query, context=judgment, max_new_tokens=256)
    answer.text, answer.model_used, answer.backend, answer.fallback_used, answer.decision.reasons

A request goes to Mamba when any rule fires (long context, many pages, a legal keyword in the query) and a Mamba
backend can run here; otherwise to the Transformer, with ``fallback_used`` and the reason when a rule asked for
Mamba. A Mamba model that fails to load or fails while generating (out of memory, a kernel error) is tried on the
other Mamba backends that can run here (e.g. ``mamba2`` on the GPU after ``real-mamba``; not when ``mamba.backend``
names one), then on the Transformer; every attempt is in the result and the log.

Token counts for the long-context rule use the tokenizer of the model that reads long requests: the Mamba model's
when a Mamba backend is usable, else the Transformer's (which then reads everything). The tokenizer is read from
disk only; without one, the count is :func:`~mamba_router.routing.token_estimate.estimate_tokens` and the rule says
it is an estimate. After a model is loaded, its own tokenizer counts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from mamba_router.backends.boundary import backend_boundary
from mamba_router.backends.detection import detected_backends
from mamba_router.backends.discovery import DiscoveredBackend, probe_backends
from mamba_router.backends.protocol import Backend
from mamba_router.backends.reports import CandidateReport, Family, PlatformFacts
from mamba_router.backends.selection import (
    SelectionSettings,
    by_priority,
    mamba_install_command,
    ordered_by_priority,
    select_backend,
)
from mamba_router.errors import (
    BackendUnavailableError,
    ConfigurationError,
    EngineClosedError,
    GenerationError,
    InvalidRequestError,
    MambaRouterError,
    MambaUnavailableError,
    ModelLoadError,
    ModelNotFoundError,
    NoBackendAvailableError,
    RequestTooLargeError,
    ServerBusyError,
)
from mamba_router.generation.batching import SupportsBatching
from mamba_router.generation.handoff import Handoff
from mamba_router.generation.prompt_format import check_prompt_format
from mamba_router.generation.protocols import (
    LoadedModel,
    SupportsConcurrentCalls,
    SupportsDocumentQuestions,
    SupportsDocumentState,
)
from mamba_router.generation.requests import (
    check_request,
    check_text,
    compose_context_prompt,
    context_prompt_parts,
    is_blank,
    shown,
)
from mamba_router.generation.results import GenerationResult
from mamba_router.generation.state_cache import DocumentStateCache, system_prompt_hash
from mamba_router.routing.decisions import (
    Attempt,
    DocumentStateUse,
    RouteDecision,
    RoutedResult,
    TokenCountMethod,
    Truncation,
)
from mamba_router.routing.live_stats import EngineGauges, LiveStats, StateCacheGauges
from mamba_router.routing.pages import PageCount, count_document_pages
from mamba_router.routing.routing_log import RoutingLog, RoutingLogError
from mamba_router.routing.rules import CountedRequest, evaluate_rules
from mamba_router.routing.streaming import CallLink, RoutedStream
from mamba_router.routing.token_counting import LocalTokenizer, find_local_tokenizer
from mamba_router.routing.token_counts import DocumentTokenCounts
from mamba_router.routing.token_estimate import estimate_tokens
from mamba_router.routing.transformer_fit import fit_to_window
from mamba_router.settings.loader import LoadedSettings
from mamba_router.settings.schema import LimitsSection, LoadedConfig, RouterConfig, load_config

if TYPE_CHECKING:
    from mamba_router.generation.decoding import GenerationStream
    from mamba_router.generation.engine import BatchingEngine

logger = logging.getLogger(__name__)

LOG_FORMAT_VERSION = 1


@dataclass(frozen=True)
class RouteRequest:
    """One request: a query, optional context (one document or several), and the caller's page count if known."""

    query: str
    context: str | Sequence[str] | None = None
    pages: int | None = None


class FamilyBackend(Backend, Protocol):
    """A backend made from the configuration rather than found on this machine (remote endpoints, Ray Serve
    deployments) that answers as one family; probed like any other (``probe_backends``)."""

    local_alternates: bool  # when it fails, this machine's own backends of the family are tried next


@dataclass(frozen=True)
class _Target:
    """A backend that can answer, and the model it loads."""

    discovered: DiscoveredBackend
    name: str
    model: str
    setting: str  # the config key the model comes from, for messages
    runs_here: bool = True  # False: the model runs elsewhere (endpoints, replicas) and the router counts its tokens

    @property
    def backend(self) -> Backend:
        """The backend object; a plugin known from the detection cache is imported now (loading a model)."""
        backend = self.discovered.backend
        assert backend is not None  # a target is made from a loadable backend
        return backend


@dataclass(frozen=True)
class _Checked:
    """A request after validation: documents as a list and the prompt the model reads."""

    query: str
    documents: list[str]
    pages: int | None

    @property
    def context(self) -> str | None:
        return "\n\n".join(self.documents) if self.documents else None

    @property
    def context_chars(self) -> int:
        return sum(len(d) for d in self.documents)


class Router:
    """Routes requests between a Mamba backend and the Transformer; see the module docstring.

    ``detection`` says how the backends were found (probed now, this process's or an earlier run's detection of the
    unchanged machine, or given) and what it took: paid once per router, apart from each decision's ``decide_ms``.
    """

    def __init__(
        self,
        config: RouterConfig | LoadedConfig | None = None,
        *,
        backends: Sequence[Backend] | None = None,
        platform: PlatformFacts | None = None,
        log: RoutingLog | None = None,
        family_backends: Mapping[Family, FamilyBackend] | None = None,
    ) -> None:
        """``backends`` replaces entry-point discovery (for tests and embedding); ``log`` replaces the configured one;
        ``family_backends`` answer as their family whatever this machine has (Ray Serve deployments; the
        ``[remote]`` endpoints of the config are made the same way)."""
        if config is None:
            config = load_config()
        self.loaded_config = config if isinstance(config, LoadedSettings) else LoadedSettings(config, {}, None)
        self.config = self.loaded_config.config
        self.detection = detected_backends(backends=backends, platform=platform)
        self.platform = self.detection.platform
        found = self.detection.found
        self.candidates: tuple[CandidateReport, ...] = tuple(d.report for d in found)
        given = {**self._remote_backends(), **(family_backends or {})}
        self.transformer = (
            self._given_target(given["transformer"]) if "transformer" in given else self._choose_transformer(found)
        )
        mamba = given.get("mamba") if self._mamba_allowed() else None
        self.mamba: _Target | None
        self.mamba_alternates: list[_Target]
        if mamba is not None and not mamba.local_alternates:  # this machine's Mamba backends are not even probed
            self.mamba, self.mamba_unavailable_reason, self.mamba_alternates = self._given_target(mamba), None, []
        else:
            self.mamba, self.mamba_unavailable_reason = self._choose_mamba(found)
            self.mamba_alternates = self._mamba_alternates(found)
            if mamba is not None:  # the given Mamba backend answers first; the local ones (if any) come next
                self.mamba_alternates = [t for t in (self.mamba, *self.mamba_alternates) if t is not None]
                self.mamba, self.mamba_unavailable_reason = self._given_target(mamba), None
        settings = self.config.log
        if log is not None:
            self.log: RoutingLog | None = log
        elif settings.enabled:
            self.log = RoutingLog(settings.path, max_bytes=settings.max_bytes, backups=settings.backups)
        else:
            self.log = None
        self._models: dict[tuple[str, str], LoadedModel] = {}
        self._model_locks: dict[tuple[str, str], threading.Lock] = {}
        self._tokenizers: dict[tuple[str, str], LocalTokenizer] = {}
        cache_bytes = self.config.mamba.state_cache_bytes
        self.state_cache = DocumentStateCache(cache_bytes) if cache_bytes > 0 else None
        self._document_tokens = DocumentTokenCounts()
        self._lock = threading.Lock()
        self._engines: dict[tuple[str, str], BatchingEngine] = {}
        self._workers: ThreadPoolExecutor | None = None  # runs the async and streaming calls
        self._in_flight = 0
        self._closed = False

    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        backends: Sequence[Backend] | None = None,
    ) -> Router:
        """A router from a config file (default ``$MAMBA_ROUTER_CONFIG``), the environment and dotted ``overrides``."""
        return cls(load_config(path, environ=environ, overrides=overrides), backends=backends)

    def __repr__(self) -> str:
        mamba = self.mamba.name if self.mamba else f"none ({self.mamba_unavailable_reason})"
        return f"Router(mamba={mamba}, transformer={self.transformer.name}:{self.transformer.model})"

    # -- choosing backends ---------------------------------------------------------------------------------------

    def _choose_transformer(self, found: Sequence[DiscoveredBackend]) -> _Target:
        usable = [d for d in found if d.usable and d.report.family == "transformer"]
        if not usable:
            reasons = "; ".join(
                f"{d.report.name}: {d.report.reason}" for d in found if d.report.family == "transformer"
            )
            raise NoBackendAvailableError(
                "transformer",
                "the router needs a usable Transformer backend for requests no rule sends to Mamba"
                + (f" ({reasons})" if reasons else ""),
                "pip install --force-reinstall mamba-router",
            )
        best = by_priority([d.report for d in usable])
        discovered = next(d for d in usable if d.report is best)
        return _Target(discovered, best.name, self.config.transformer.model, "transformer.model")

    def _mamba_allowed(self) -> bool:
        """False when the configuration turns Mamba off (``enable_mamba=false`` or ``mamba.backend=transformer``)."""
        return self.config.model_routing.enable_mamba and self.config.mamba.backend != "transformer"

    def _remote_backends(self) -> dict[Family, FamilyBackend]:
        """The ``[[remote.<family>]]`` endpoints of the config as backends (see :mod:`mamba_router.remote`)."""
        remote = self.config.remote
        if not remote.mamba and not remote.transformer:
            return {}
        from mamba_router.remote.backend import RemoteBackend

        families: tuple[Family, ...] = ("mamba", "transformer")
        return {
            family: RemoteBackend(family, remote, self.counter_for(family))
            for family in families
            if remote.endpoints_of(family)
        }

    def _given_target(self, backend: FamilyBackend) -> _Target:
        (discovered,) = probe_backends([backend], self.platform)
        if not discovered.usable:
            raise BackendUnavailableError(backend.name, discovered.report.reason, discovered.report.install_command)
        setting = f"{backend.name}.{backend.family}"
        return _Target(discovered, backend.name, backend.default_model, setting, runs_here=False)

    def counter_for(self, family: Family) -> Callable[[str], int]:
        """How this router counts a text's tokens for ``family``'s model when the model runs elsewhere."""
        return lambda text: self._count_remote(family, text)

    def _count_remote(self, family: Family, text: str) -> int:
        """Tokens of ``text`` for a model run elsewhere: its tokenizer where it is on this machine, else the
        estimate."""
        target = self.mamba if family == "mamba" else self.transformer
        assert target is not None
        tokenizer = self._tokenizer(target)
        return tokenizer.count(text) if tokenizer.tokenizer is not None else estimate_tokens(text)

    def _choose_mamba(self, found: Sequence[DiscoveredBackend]) -> tuple[_Target | None, str | None]:
        settings = self.config.mamba
        source = self.loaded_config.sources
        if not self.config.model_routing.enable_mamba:
            return (
                None,
                f"Mamba is turned off (model_routing.enable_mamba=false, from {source.get('model_routing.enable_mamba', 'default')})",
            )
        if settings.backend == "transformer":
            return None, (
                f"mamba.backend=transformer (from {source.get('mamba.backend', 'default')}) sends every request to "
                "the Transformer"
            )
        reports = [d.report for d in found]
        forced = settings.backend
        if forced is None and not settings.prefer_real:
            mamba2 = next((r for r in reports if r.name == "mamba2" and r.installed), None)
            if mamba2 is not None and (mamba2.available or mamba2.forceable):
                forced = "mamba2"
        try:
            selection = select_backend(
                self.platform,
                reports,
                SelectionSettings(enable_mamba=True, forced_backend=forced, forced_by="mamba.backend"),
            )
        except ConfigurationError:
            raise
        except BackendUnavailableError as exc:
            if settings.backend is not None:  # named by the user: never silently another (as for info, load_model)
                raise BackendUnavailableError(
                    exc.backend,
                    f"{exc.reason}; it is named by mamba.backend (from {source.get('mamba.backend', 'default')}): "
                    "unset it to let the router choose, or set it to a backend that can run here",
                    exc.install_command,
                ) from exc
            return None, str(exc)
        chosen = selection.candidate
        if chosen.family != "mamba":
            return None, selection.reason
        discovered = next(d for d in found if d.report.name == chosen.name and d.loadable)
        model = {"real-mamba": settings.real_model, "mamba2": settings.mamba2_model}.get(
            chosen.name, chosen.default_model or ""
        )
        setting = {"real-mamba": "mamba.real_model", "mamba2": "mamba.mamba2_model"}.get(
            chosen.name, f"the {chosen.name} backend's default model"
        )
        return _Target(discovered, chosen.name, model, setting), None

    def _mamba_alternates(self, found: Sequence[DiscoveredBackend]) -> list[_Target]:
        """The other Mamba backends that can run here (usable, or forceable), by priority, for the same model."""
        if self.mamba is None or self.config.mamba.backend is not None:
            return []
        others = [
            d.report
            for d in found
            if d.loadable
            and d.report.family == "mamba"
            and d.report.name != self.mamba.name
            and (d.report.available or d.report.forceable)
        ]
        loadable = {d.report.name: d for d in found if d.loadable}
        return [
            _Target(loadable[r.name], r.name, self.mamba.model, self.mamba.setting) for r in ordered_by_priority(others)
        ]

    # -- deciding ------------------------------------------------------------------------------------------------

    def route(
        self, query: str, context: str | Sequence[str] | None = None, *, pages: int | None = None
    ) -> RouteDecision:
        """Decide where this request would run, without loading any model, and log the decision (a dry run)."""
        checked = _check_request(RouteRequest(query, context, pages), self.config.limits)
        decision = self._decide(checked)
        return self._logged(decision, checked)

    def route_batch(self, requests: Iterable[RouteRequest | Mapping[str, Any] | str]) -> list[RouteDecision]:
        """Decide many requests in one call (tokenizers loaded once; one log record each); order is kept."""
        if isinstance(requests, (str, bytes, Mapping)):
            raise InvalidRequestError(
                f"route_batch takes a list of requests, got one {type(requests).__name__}; use route() for one request"
            )
        if not isinstance(requests, Iterable):
            raise InvalidRequestError(f"route_batch takes a list of requests, got {type(requests).__name__}")
        requests = list(requests)
        most = self.config.limits.max_batch
        if len(requests) > most:
            raise RequestTooLargeError(
                f"a batch holds at most {most:,} requests (limits.max_batch), got {len(requests):,}"
            )
        checked = [_check_request(_as_request(r, i), self.config.limits) for i, r in enumerate(requests)]
        return [self._logged(self._decide(c), c) for c in checked]

    def _decide(self, request: _Checked, family: str = "auto") -> RouteDecision:
        started = time.perf_counter()
        counting_target = self.mamba if self.mamba is not None else self.transformer
        count, method, counter = self._count_tokens(counting_target, request)
        page_count = (
            PageCount(request.pages, "caller") if request.pages is not None else count_document_pages(request.documents)
        )
        rules = evaluate_rules(
            self.config.model_routing,
            CountedRequest(count, method, counter, page_count, request.query),
        )
        wants_mamba = family == "mamba" or (family == "auto" and any(r.fired for r in rules))
        if wants_mamba and self.mamba is not None:
            target, fallback_reason = self.mamba, None
        elif wants_mamba:
            if not self.config.mamba.fallback:
                raise MambaUnavailableError(
                    "none",
                    f"{self.mamba_unavailable_reason}; mamba.fallback=false forbids answering on the Transformer",
                    mamba_install_command(self.platform, self.candidates),
                )
            target, fallback_reason = self.transformer, self.mamba_unavailable_reason
        else:
            target, fallback_reason = self.transformer, None
        return RouteDecision(
            decision_id=uuid.uuid4().hex,
            time=datetime.now(timezone.utc),
            model_used="mamba" if target is self.mamba else "transformer",
            backend=target.name,
            model=target.model,
            fallback_used=fallback_reason is not None,
            fallback_reason=fallback_reason,
            rules=rules,
            token_count=count,
            token_count_method=method,
            token_counter=counter,
            pages=page_count.pages,
            page_source=page_count.source,
            documents=len(request.documents),
            query_chars=len(request.query),
            context_chars=request.context_chars,
            mamba_backend=self.mamba.name if self.mamba else None,
            mamba_unavailable_reason=self.mamba_unavailable_reason,
            decide_ms=(time.perf_counter() - started) * 1000.0,
            requested_family=family,  # type: ignore[arg-type]
        )

    def _count_tokens(self, target: _Target, request: _Checked) -> tuple[int, TokenCountMethod, str]:
        mode = self.config.model_routing.token_counting
        if mode != "estimate":
            model = self._models.get((target.name, target.model))
            if model is not None and target.runs_here:  # a model run elsewhere is counted below, as the router does
                return self._count_with(model.count_tokens, target.model, request), "tokenizer", target.model
            tokenizer = self._tokenizer(target)
            if tokenizer.tokenizer is not None:
                return self._count_with(tokenizer.count, target.model, request), "tokenizer", target.model
            if mode == "tokenizer":
                raise ConfigurationError(
                    f"model_routing.token_counting=tokenizer, but {tokenizer.problem}; download the model first or "
                    "set token_counting to 'auto' or 'estimate'"
                )
        # The estimate is additive, so the parts are estimated where they lie instead of joining a copy of them.
        parts = [request.query, *request.documents, *(["\n\n"] * len(request.documents))]
        return sum(estimate_tokens(p) for p in parts), "estimate", "estimate"

    def _count_with(self, count: Callable[[str], int], counter: str, request: _Checked) -> int:
        """Tokens of the document(s) and the question: the document's count is remembered by its hash, so a document
        asked about again is not tokenized again (the sum may differ from counting the joined text by a token at
        the seam between them)."""
        document, rest = context_prompt_parts(request.query, request.context)
        if document is None:
            return count(rest)
        return self._document_tokens.count(counter, document, count) + count(rest)

    def _tokenizer(self, target: _Target) -> LocalTokenizer:
        key = (target.name, target.model)
        with self._lock:
            if key not in self._tokenizers:
                family: Family = "mamba" if target is self.mamba else "transformer"
                self._tokenizers[key] = find_local_tokenizer(target.model, family)
            return self._tokenizers[key]

    # -- generating ----------------------------------------------------------------------------------------------

    def generate(
        self,
        query: str,
        context: str | Sequence[str] | None = None,
        *,
        pages: int | None = None,
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        prompt_format: str | None = None,
        system_prompt: str | None = None,
        family: str = "auto",
    ) -> RoutedResult:
        """Decide, load the chosen model (once; it is kept), answer, fall back on a Mamba failure, and log it.

        ``family``: ``auto`` (the rules decide), ``mamba`` (Mamba answers if a Mamba backend can run here, with the
        usual fallback) or ``transformer`` (the Transformer answers).

        ``prompt_format`` and ``system_prompt`` default to the ``[generation]`` settings; with a chat template the
        question (and its document) go in the user turn, on whichever model answers. Requests from several threads
        (and the async methods) decode together in each model's batching engine (``[serve]`` settings)."""
        return self._generate(
            CallLink(),
            query,
            context,
            pages=pages,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            stop=stop,
            seed=seed,
            prompt_format=prompt_format,
            system_prompt=system_prompt,
            family=family,
        )

    async def agenerate(self, query: str, context: str | Sequence[str] | None = None, **options: Any) -> RoutedResult:
        """``generate`` for asyncio (same keywords). Cancelling the awaiting task cancels the request and frees its
        batch row. Raises ServerBusyError when ``serve.max_batch + serve.max_queue`` requests are already in flight."""
        stream = self._start_stream(query, context, options)
        try:
            return await stream.acollect()
        except asyncio.CancelledError:
            stream.cancel()
            raise

    def stream(
        self, query: str, context: str | Sequence[str] | None = None, *, into: Handoff | None = None, **options: Any
    ) -> RoutedStream:
        """The answer piece by piece (``for piece in router.stream(...)``); the stream's ``result`` is the
        RoutedResult at the end, ``decision`` the route. A model that fails before its first piece falls back as in
        ``generate``; after it, the stream ends with the error. ``into``: the hand-off the pieces, the decision and
        the end go to instead of the stream's own (a model process forwards them to its server)."""
        return self._start_stream(query, context, options, into)

    def astream(self, query: str, context: str | Sequence[str] | None = None, **options: Any) -> RoutedStream:
        """``stream`` for asyncio: ``async for piece in router.astream(...)``; ``await s.adecision()`` gives the
        route before the first piece."""
        return self._start_stream(query, context, options)

    def _start_stream(
        self,
        query: str,
        context: str | Sequence[str] | None,
        options: dict[str, Any],
        into: Handoff | None = None,
    ) -> RoutedStream:
        unknown = sorted(set(options) - _GENERATE_OPTIONS)
        if unknown:
            raise InvalidRequestError(f"unknown argument(s) {unknown}; allowed: {sorted(_GENERATE_OPTIONS)}")
        with self._lock:
            if self._closed:
                raise EngineClosedError("the router is closed; no new request is taken")
            limit = self.config.serve.max_batch + self.config.serve.max_queue
            if self._in_flight >= limit:
                raise ServerBusyError(f"{self._in_flight} requests are in flight (the limit is {limit}); retry shortly")
            self._in_flight += 1
            if self._workers is None:
                self._workers = ThreadPoolExecutor(max_workers=min(limit, 1024), thread_name_prefix="mamba-router")
            workers = self._workers
        stream = RoutedStream(into)

        def run() -> None:
            try:
                stream.finish(self._generate(stream.link, query, context, **options))
            except BaseException as exc:  # handed to the consumer, who raises it
                stream.fail(exc)
            finally:
                with self._lock:
                    self._in_flight -= 1

        workers.submit(run)
        return stream

    def preload(self, families: Sequence[Family] = ("mamba", "transformer")) -> dict[str, str]:
        """Load the Mamba model (if a Mamba backend can run here) and the Transformer now, not on their first
        request, with their batching engines warmed up (CUDA graphs captured for every batch size); return each
        one's status (``loaded`` or the error), by ``backend:model``. ``families``: which of the two."""
        status = {}
        chosen = [self.mamba if "mamba" in families else None, self.transformer if "transformer" in families else None]
        for target in [t for t in chosen if t is not None]:
            name = f"{target.name}:{target.model}"
            try:
                engine = self._engine(target, self._model(target))
                if engine is not None:
                    seconds = engine.warm_up()
                    logger.info("%s: batching engine warmed up in %.2f s", name, seconds)
                status[name] = "loaded"
            except MambaRouterError as exc:
                logger.warning("could not load %s: %s", name, exc)
                status[name] = f"{type(exc).__name__}: {exc}"
        return status

    @property
    def engines(self) -> dict[str, BatchingEngine]:
        """The batching engine of each loaded model, by ``backend:model``."""
        return {f"{name}:{model}": engine for (name, model), engine in self._engines.items()}

    def live_stats(self) -> LiveStats:
        """The engines' queues and batches, the requests in flight and the document-state cache, now."""
        engines = {
            name: EngineGauges(
                waiting=engine.waiting,
                running=engine.running,
                steps=engine.stats.steps,
                passes=engine.stats.passes,
                pass_seconds=dict(engine.stats.pass_seconds),
            )
            for name, engine in self.engines.items()
        }
        cache = self.state_cache
        gauges = None if cache is None else StateCacheGauges(hits=cache.hits, misses=cache.misses, nbytes=cache.nbytes)
        return LiveStats(engines=engines, in_flight=self._in_flight, state_cache=gauges)

    @property
    def unavailable_reason(self) -> str | None:
        """Why no new request is taken (the router is closed); None while requests are."""
        return "the router is closed; no new request is taken" if self._closed else None

    @property
    def in_flight(self) -> int:
        """Requests started with ``agenerate``/``stream``/``astream`` and not ended yet."""
        return self._in_flight

    def endpoint_health(self) -> dict[str, list[Any]]:
        """Each remote family's endpoints (``[[remote.*]]``) as the router has seen them: requests in flight,
        answered, failed, rest left after a failure and the last error (:class:`~mamba_router.remote.endpoints.
        EndpointHealth`); empty for a family served by a local backend or not used yet."""
        health: dict[str, list[Any]] = {}
        for family, target in (("mamba", self.mamba), ("transformer", self.transformer)):
            model = self._models.get((target.name, target.model)) if target is not None else None
            if model is not None and target is not None and target.name == "remote":
                from mamba_router.remote.model import RemoteModel  # loaded: the remote extra is installed

                assert isinstance(model, RemoteModel)
                health[family] = list(model.health())
        return health

    def close(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Stop taking requests; with ``drain``, requests in flight finish first (up to ``timeout`` seconds per
        engine), else they end with EngineClosedError. Every answered request is in the log before this returns."""
        with self._lock:
            self._closed = True
            engines = list(self._engines.values())
            workers = self._workers
        for engine in engines:
            engine.close(drain=drain, timeout=timeout)
        if workers is not None:
            workers.shutdown(wait=True)

    def _generate(
        self,
        link: CallLink,
        query: str,
        context: str | Sequence[str] | None = None,
        *,
        pages: int | None = None,
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        prompt_format: str | None = None,
        system_prompt: str | None = None,
        family: str = "auto",
    ) -> RoutedResult:
        if family not in FAMILY_CHOICES:
            raise InvalidRequestError(f"family must be one of {', '.join(FAMILY_CHOICES)}, got {shown(family)}")
        checked = _check_request(RouteRequest(query, context, pages), self.config.limits)
        request = check_request(
            checked.query,
            max_new_tokens=self.config.generation.max_new_tokens if max_new_tokens is None else max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            stop=stop,
            seed=seed,
        )
        options = {
            "max_new_tokens": request.max_new_tokens,
            "temperature": request.temperature,
            "top_k": request.top_k,
            "top_p": request.top_p,
            "stop": list(request.stop) or None,
            "seed": request.seed,
            "prompt_format": check_prompt_format(
                self.config.generation.prompt_format if prompt_format is None else prompt_format
            ),
            "system_prompt": self.config.generation.system_prompt if system_prompt is None else system_prompt,
        }
        decision = self._decide(checked, family)
        link.decided(decision)
        attempts: list[Attempt] = []
        try:
            result = self._answer(decision, checked, options, attempts, link)
        except MambaRouterError as exc:
            try:
                self._log(decision, checked, kind="generate", attempts=attempts, error=exc)
            except RoutingLogError as log_exc:  # log.required: the request's own error still comes first
                logger.warning("the routing log did not record the failure of %s: %s", decision.decision_id, log_exc)
            raise
        log_error = self._log(decision, checked, kind="generate", result=result)
        return result if log_error is None else result.model_copy(update={"log_error": log_error})

    def _answer(
        self,
        decision: RouteDecision,
        request: _Checked,
        options: dict[str, Any],
        attempts: list[Attempt],
        link: CallLink,
    ) -> RoutedResult:
        fallback_reason = decision.fallback_reason
        if decision.model_used == "mamba":
            assert self.mamba is not None
            failed: list[str] = []
            last_error: MambaRouterError | None = None
            for target in [self.mamba, *self.mamba_alternates]:
                started = time.perf_counter()
                try:
                    link.check()
                    model = self._model(target)
                    generated, document_state = self._run_mamba(target, model, request, options, link)
                except (GenerationError, ModelLoadError, BackendUnavailableError) as exc:
                    attempts.append(_failed_attempt(target, "mamba", exc, started))
                    if link.emitted:  # part of the answer went out: another model cannot take over
                        raise
                    logger.warning("%s failed (%s: %s); trying the next backend", target.name, type(exc).__name__, exc)
                    failed.append(target.name)
                    last_error = exc
                    continue
                attempts.append(_ok_attempt(target, "mamba", started))
                return self._result(decision, target, "mamba", generated, attempts, None, None, document_state)
            assert last_error is not None
            if not self.config.mamba.fallback:
                raise last_error
            fallback_reason = f"{', '.join(failed)} failed at run time: {type(last_error).__name__}: {last_error}"
        started = time.perf_counter()
        try:
            link.check()
            model = self._model(self.transformer)
            with backend_boundary(self.transformer.name, self.transformer.model, "generate"):
                prompt, truncation = fit_to_window(
                    model,
                    request.query,
                    request.context,
                    max_new_tokens=options["max_new_tokens"],
                    mode=self.config.model_routing.truncation,
                )
            generated = self._run(model, self.transformer, prompt, options, link)
        except MambaRouterError as exc:
            attempts.append(_failed_attempt(self.transformer, "transformer", exc, started))
            raise
        attempts.append(_ok_attempt(self.transformer, "transformer", started))
        return self._result(decision, self.transformer, "transformer", generated, attempts, fallback_reason, truncation)

    def _model(self, target: _Target) -> LoadedModel:
        key = (target.name, target.model)
        with self._lock:
            lock = self._model_locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._models:
                device = None if self.config.generation.device == "auto" else self.config.generation.device
                dtype = None if self.config.generation.dtype == "auto" else self.config.generation.dtype
                logger.info("loading %s with backend %s", target.model, target.name)
                try:
                    with backend_boundary(target.name, target.model, "load"):
                        self._models[key] = target.backend.load(target.model, device=device, dtype=dtype)
                except ModelNotFoundError as exc:
                    raise ModelNotFoundError(f"{exc} ({self._model_origin(target)})") from exc
            return self._models[key]

    def _model_origin(self, target: _Target) -> str:
        """Where ``target``'s model was set, and how to set another."""
        if "." not in target.setting:
            return f"{target.model!r} is {target.setting}"
        source = self.loaded_config.sources.get(target.setting, "default")
        variable = "MAMBA_ROUTER__" + target.setting.replace(".", "__").upper()
        return (
            f"the model is {target.setting} = {target.model!r}, from {source}; set {target.setting} in the config "
            f"file or {variable}, or give the CLI --model"
        )

    def _run_mamba(
        self, target: _Target, model: LoadedModel, request: _Checked, options: dict[str, Any], link: CallLink
    ) -> tuple[GenerationResult, DocumentStateUse | None]:
        """Answer on Mamba; a document is read once and its state reused for later questions about it."""
        if request.documents and isinstance(model, SupportsDocumentQuestions):  # states kept where the model runs
            context = request.context
            assert context is not None
            with backend_boundary(target.name, target.model, "generate"):
                answer = model.answer_about(context, request.query, stream=link.on_piece is not None, **options)
                generated = _followed(answer.produced, link)
            return generated, answer.state_use()
        if self.state_cache is None or not request.documents or not isinstance(model, SupportsDocumentState):
            prompt = compose_context_prompt(request.query, request.context)
            return self._run(model, target, prompt, options, link), None
        context = request.context
        assert context is not None
        engine = self._engine(target, model)
        layout = {"prompt_format": options["prompt_format"], "system_prompt": options["system_prompt"]}
        key = f"{model.state_identity}:{layout['prompt_format']}:{system_prompt_hash(layout['system_prompt'])}"
        if engine is not None:
            timeout = self.config.serve.request_timeout_s
            with backend_boundary(target.name, target.model, "generate"):
                state, hit = self.state_cache.get_or_read(
                    key,
                    context,
                    lambda: link.wait(
                        engine.submit_read(engine.model.prepare_read(context, **layout), timeout_s=timeout)
                    ),
                )
                asked = engine.model.prepare_ask(state, request.query, **options)
                generated = link.wait(engine.submit(asked, timeout_s=timeout, pieces=link.pieces))
            return generated, "reused" if hit else "read"
        with self._one_at_a_time(target, model), backend_boundary(target.name, target.model, "generate"):
            state, hit = self.state_cache.get_or_read(key, context, lambda: model.read(context, **layout))
            produced = model.ask(state, request.query, stream=link.on_piece is not None, **options)
            return _followed(produced, link), "reused" if hit else "read"

    def _run(
        self, model: LoadedModel, target: _Target, prompt: str, options: dict[str, Any], link: CallLink
    ) -> GenerationResult:
        engine = self._engine(target, model)
        if engine is not None:
            with backend_boundary(target.name, target.model, "generate"):
                prepared = engine.model.prepare_generate(prompt, **options)
                timeout = self.config.serve.request_timeout_s
                return link.wait(engine.submit(prepared, timeout_s=timeout, pieces=link.pieces))
        with self._one_at_a_time(target, model), backend_boundary(target.name, target.model, "generate"):
            produced = model.generate(prompt, stream=link.on_piece is not None, **options)
            return _followed(produced, link)

    def _one_at_a_time(self, target: _Target, model: LoadedModel) -> AbstractContextManager[Any]:
        """The lock around a generation that no engine runs: one at a time per model, except for a model that takes
        concurrent calls (remote endpoints)."""
        if isinstance(model, SupportsConcurrentCalls) and model.concurrent_calls:
            return nullcontext()
        return self._model_locks[(target.name, target.model)]

    def _engine(self, target: _Target, model: LoadedModel) -> BatchingEngine | None:
        """The batching engine of ``model`` (made on first use), or None when batching is off or the model cannot
        batch (then requests run one at a time per model)."""
        settings = self.config.serve
        if not settings.batching or not isinstance(model, SupportsBatching):
            return None
        from mamba_router.generation.engine import BatchingEngine  # imports torch: only once a model is loaded

        key = (target.name, target.model)
        with self._lock:
            engine = self._engines.get(key)
            if engine is None:
                if self._closed:
                    raise EngineClosedError("the router is closed; no new request is taken")
                engine = self._engines[key] = BatchingEngine(
                    model,  # type: ignore[arg-type]
                    max_batch=settings.max_batch,
                    max_queue=settings.max_queue,
                    prefill_budget=settings.prefill_budget,
                )
            return engine

    def _result(
        self,
        decision: RouteDecision,
        target: _Target,
        family: Family,
        generated: GenerationResult,
        attempts: list[Attempt],
        fallback_reason: str | None,
        truncation: Truncation | None,
        document_state: DocumentStateUse | None = None,
    ) -> RoutedResult:
        return RoutedResult(
            text=generated.text,
            model_used=family,
            backend=target.name,
            model=target.model,
            fallback_used=fallback_reason is not None,
            fallback_reason=fallback_reason,
            decision=decision,
            attempts=attempts,
            truncation=truncation,
            document_state=document_state,
            generation=generated,
            timings=generated.timings,
            decide_ms=decision.decide_ms,
        )

    # -- logging -------------------------------------------------------------------------------------------------

    def _logged(self, decision: RouteDecision, request: _Checked) -> RouteDecision:
        log_error = self._log(decision, request, kind="route")
        return decision if log_error is None else decision.model_copy(update={"log_error": log_error})

    def _log(
        self,
        decision: RouteDecision,
        request: _Checked,
        *,
        kind: str,
        result: RoutedResult | None = None,
        attempts: Sequence[Attempt] = (),
        error: Exception | None = None,
    ) -> str | None:
        """Append one record for this decision (nothing is built when logging is off).

        A record that cannot be written (full disk, permissions, a lock held too long) is an error only with
        ``log.required``; otherwise it is warned about and its reason returned, to go with the answer."""
        if self.log is None:
            return None
        try:
            self._append_record(decision, request, kind, result, attempts, error)
        except RoutingLogError as exc:
            if self.config.log.required:
                raise
            logger.warning("the routing log did not record decision %s: %s", decision.decision_id, exc)
            return str(exc)
        return None

    def _append_record(
        self,
        decision: RouteDecision,
        request: _Checked,
        kind: str,
        result: RoutedResult | None,
        attempts: Sequence[Attempt],
        error: Exception | None,
    ) -> None:
        assert self.log is not None
        record: dict[str, Any] = {
            "v": LOG_FORMAT_VERSION,
            "kind": kind,
            "pid": os.getpid(),
            **decision.model_dump(mode="json", exclude={"rules", "log_error"}),
            "rules": [r.model_dump(mode="json", include={"name", "fired", "detail"}) for r in decision.rules],
        }
        if not self.config.log.log_text:
            record["query_hash"] = self.log.salted_hash(request.query)
            record["context_hash"] = self.log.salted_hash(request.context or "") if request.documents else None
        if self.config.log.log_text:
            record["query"] = request.query
            record["context"] = request.context
        if result is not None:
            record.update(
                outcome="ok",
                model_used=result.model_used,
                backend=result.backend,
                model=result.model,
                fallback_used=result.fallback_used,
                fallback_reason=result.fallback_reason,
                device=result.generation.device,  # where it ran: a GPU, a remote endpoint, a Ray replica
                attempts=[a.model_dump(mode="json") for a in result.attempts],
                truncation=result.truncation.model_dump(mode="json") if result.truncation else None,
                document_state=result.document_state,
                prompt_tokens=result.generation.prompt_tokens,
                completion_tokens=result.generation.completion_tokens,
                answer_chars=len(result.text),
                timings=result.timings.model_dump(mode="json"),
            )
            if self.config.log.log_text:
                record["answer"] = result.text
        elif error is not None:
            record.update(
                outcome="error",
                error_type=type(error).__name__,
                error=str(error),
                attempts=[a.model_dump(mode="json") for a in attempts],
            )
        self.log.append(record)

    def read_log(self, limit: int | None = 20) -> list[dict[str, Any]]:
        """The last ``limit`` routing records, oldest first (empty when logging is off)."""
        return self.log.read(limit).records if self.log is not None else []


def _followed(produced: GenerationResult | GenerationStream, link: CallLink) -> GenerationResult:
    """A generation's result; a stream's pieces are passed to ``link`` on the way to its end."""
    if isinstance(produced, GenerationResult):
        return produced
    for piece in produced:
        link.piece(piece)
    assert produced.result is not None
    return produced.result


FAMILY_CHOICES = ("auto", "mamba", "transformer")
_GENERATE_OPTIONS = frozenset(
    {"pages", "max_new_tokens", "temperature", "top_k", "top_p", "stop", "seed", "prompt_format", "system_prompt"}
    | {"family"}
)


def _as_request(value: RouteRequest | Mapping[str, Any] | str, index: int) -> RouteRequest:
    if isinstance(value, RouteRequest):
        return value
    if isinstance(value, str):
        return RouteRequest(query=value)
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"query", "context", "pages"})
        if unknown or "query" not in value:
            raise InvalidRequestError(
                f"batch item {index} must have 'query' and optionally 'context' and 'pages'; "
                + (f"unknown keys {unknown}" if unknown else "'query' is missing")
            )
        return RouteRequest(query=value["query"], context=value.get("context"), pages=value.get("pages"))
    raise InvalidRequestError(
        f"batch item {index} must be a RouteRequest, a mapping or a query string, got {type(value).__name__}"
    )


def _check_request(request: RouteRequest, limits: LimitsSection) -> _Checked:
    """The request's text checked (valid Unicode, within ``[limits]``), its documents as a list, its pages."""
    _check_size(request.query, "query", limits.max_query_chars, "limits.max_query_chars")
    query = check_text(request.query, "query")
    context = request.context
    if context is None:
        documents: list[str] = []
    elif isinstance(context, str):
        _check_size(context, "context", limits.max_context_chars, "limits.max_context_chars")
        documents = [] if is_blank(context) else [check_text(context, "context", allow_empty=True)]
    elif isinstance(context, (bytes, bytearray)):
        raise InvalidRequestError("context must be text (a str or a list of str), got bytes; decode it as UTF-8 first")
    elif isinstance(context, Sequence):
        total = sum(len(d) if isinstance(d, str) else 0 for d in context)
        if total > limits.max_context_chars:
            raise RequestTooLargeError(
                f"context is {total:,} characters in all, more than limits.max_context_chars "
                f"({limits.max_context_chars:,}); send less text or raise the limit"
            )
        documents = [check_text(d, f"context[{i}]", allow_empty=True) for i, d in enumerate(context)]
        documents = [d for d in documents if not is_blank(d)]
    else:
        raise InvalidRequestError(f"context must be a string or a list of strings, got {type(context).__name__}")
    pages, most = request.pages, limits.max_pages
    if pages is not None and (isinstance(pages, bool) or not isinstance(pages, int) or not 0 <= pages <= most):
        raise InvalidRequestError(f"pages must be a whole number from 0 to {most:,}, got {shown(pages)}")
    return _Checked(query=query, documents=documents, pages=pages)


def _check_size(text: object, field: str, most: int, key: str) -> None:
    if isinstance(text, str) and len(text) > most:
        raise RequestTooLargeError(
            f"{field} is {len(text):,} characters, more than {key} ({most:,}); send less text or raise the limit"
        )


def _ok_attempt(target: _Target, family: Family, started: float) -> Attempt:
    return Attempt(backend=target.name, model_used=family, ok=True, elapsed_ms=(time.perf_counter() - started) * 1000)


def _failed_attempt(target: _Target, family: Family, exc: BaseException, started: float) -> Attempt:
    return Attempt(
        backend=target.name,
        model_used=family,
        ok=False,
        error_type=type(exc).__name__,
        error=str(exc)[:2000],
        elapsed_ms=(time.perf_counter() - started) * 1000,
    )


__all__ = ["RouteRequest", "Router"]
