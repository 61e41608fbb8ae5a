"""``mamba-router serve --ray``: the router as a Ray Serve application, for more than one GPU or machine.

Three deployments (``pip install 'mamba-router[ray]'``):

- ``ingress``: the HTTP API of ``mamba-router serve`` (OpenAI-compatible and the seed's endpoints, the same app),
  whose router decides each request's family as usual, writes the routing log, and sends the request to a family
  deployment instead of a local model;
- ``mamba`` and ``transformer``: replicas that each load their family's model (with its batching engine, and for
  Mamba its document-state cache) and answer what the ingress sends them.

A question about a document goes to the Mamba replica that holds the document's state: the ``mamba`` deployment's
request router (:class:`DocumentAffinityRouter`) ranks its replicas by rendezvous hashing of the document
(:mod:`mamba_router.serve.affinity`), so every ingress replica sends a document's questions to the same replica,
which read it once; an owner with ``affinity_max_queue`` requests waiting gives way to the least busy replica. A
replica that dies mid-request: the request is sent again to another replica (which reads the document again) and
answered; a stream is sent again only if none of it went out. Each answer says which replica answered (``device``
``ray:<replica>``) and whether the state was reused. Replica counts, resources and autoscaling come from ``[ray]``.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator, Callable, Generator
from pathlib import Path
from typing import Any

import ray
from ray import serve
from ray.serve.config import RequestRouterConfig
from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

from mamba_router import errors as error_types
from mamba_router.backends.reports import Availability, Family, PlatformFacts
from mamba_router.errors import ConfigurationError, GenerationError, MambaRouterError, ModelLoadError
from mamba_router.generation.decoding import GenerationStream
from mamba_router.generation.document_state import document_hash
from mamba_router.generation.protocols import DocumentAnswer
from mamba_router.generation.results import GenerationResult
from mamba_router.routing.router import Router
from mamba_router.serve.affinity import rank_replicas
from mamba_router.settings.loader import LoadedSettings
from mamba_router.settings.schema import RouterConfig

logger = logging.getLogger(__name__)

APP_NAME = "mamba-router"
REPLICA_DIED = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


class DocumentAffinityRouter(RequestRouter):
    """Ray Serve request router of the ``mamba`` deployment: a document's questions go to the replica that holds its
    state (see the module docstring)."""

    def initialize_state(self, max_queue: int = 16, **kwargs: Any) -> None:
        self.max_queue = max_queue

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        key = pending_request.kwargs.get("document_key") if pending_request is not None else None
        return rank_replicas(
            key,
            candidate_replicas,
            replica_id=lambda replica: replica.replica_id.unique_id,
            queue_length=self._queue_length,
            max_queue=getattr(self, "max_queue", 16),
        )

    def _queue_length(self, replica: RunningReplica) -> int:
        known = self.replica_queue_len_cache.get(replica.replica_id)
        return int(known) if known is not None else 0


class FamilyReplica:
    """One replica of a family's deployment: a router that answers only as ``family`` (no fallback and no log of its
    own: the ingress falls back and logs), with the family's model, batching engine and state cache."""

    def __init__(self, config: dict[str, Any], family: Family) -> None:
        settings = dict(config)
        settings["log"] = {**settings.get("log", {}), "enabled": False}
        settings["mamba"] = {**settings.get("mamba", {}), "fallback": False}
        settings["remote"] = {}
        if family == "transformer":
            settings["model_routing"] = {**settings.get("model_routing", {}), "enable_mamba": False}
        self.family = family
        self.router = Router(LoadedSettings(RouterConfig.model_validate(settings), {}, None))
        self.replica = serve.get_replica_context().replica_id.unique_id
        # the model loads (and its CUDA graphs are captured) before Ray Serve sends this replica a request
        failed = {name: why for name, why in self.router.preload(families=(family,)).items() if why != "loaded"}
        if failed:
            raise ModelLoadError(f"the {family} replica could not load its model: {failed}")

    async def answer(
        self, query: str, context: str | None, options: dict[str, Any], document_key: str | None = None
    ) -> dict[str, Any]:
        """The answer as a dict (``generation``, ``document_state``, ``replica``), or the library error as data."""
        try:
            result = await self.router.agenerate(query, context=context, family=self.family, **options)
        except MambaRouterError as exc:
            return _error(exc)
        return self._end(result.generation.model_dump(mode="json"), result.document_state)

    async def stream(
        self, query: str, context: str | None, options: dict[str, Any], document_key: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """``{"piece": text}`` items, then the end item of :meth:`answer` (or an error item)."""
        routed = self.router.astream(query, context=context, family=self.family, **options)
        try:
            async for piece in routed:
                yield {"piece": piece}
        except MambaRouterError as exc:
            yield _error(exc)
            return
        assert routed.result is not None
        yield self._end(routed.result.generation.model_dump(mode="json"), routed.result.document_state)

    def _end(self, generation: dict[str, Any], document_state: str | None) -> dict[str, Any]:
        generation["device"] = f"ray:{self.replica}"
        return {"generation": generation, "document_state": document_state, "replica": self.replica}


class RayFamilyModel:
    """A family's deployment as the ingress router's loaded model: each call goes to a replica through the handle,
    again to another replica if the one it went to died."""

    backend = "ray"
    available = True
    context_window: int | None = None  # each replica checks its own model's window
    concurrent_calls = True

    def __init__(self, family: Family, handle: Any, *, model_id: str, retries: int, count: Callable[[str], int]):
        self.family = family
        self.handle = handle
        self.model_id = model_id
        self.device = f"ray:{family}"
        self.reason = f"the {family} deployment of {APP_NAME}"
        self.retries = retries
        self._count = count

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as the ingress counts them (the model's tokenizer where it is here, else estimated)."""
        return self._count(text)

    def generate(self, prompt: str, *, stream: bool = False, **options: Any) -> GenerationResult | GenerationStream:
        """``prompt`` answered by a replica (no document: any replica, the least busy)."""
        return self._ask(prompt, None, stream, options).produced

    def generate_with_state_space(
        self, prompt: str, context: str | None = None, max_new_tokens: int = 256, **kwargs: Any
    ) -> GenerationResult | GenerationStream:
        """``prompt`` about ``context``, answered by the replica that holds the document's state."""
        if context is None:
            return self.generate(prompt, max_new_tokens=max_new_tokens, **kwargs)
        return self.answer_about(context, prompt, max_new_tokens=max_new_tokens, **kwargs).produced

    def answer_about(self, document: str, question: str, *, stream: bool = False, **options: Any) -> DocumentAnswer:
        """``question`` about ``document`` on the replica that holds (or will hold) the document's state."""
        return self._ask(question, document, stream, options)

    def _ask(self, query: str, context: str | None, stream: bool, options: dict[str, Any]) -> DocumentAnswer:
        key = document_hash(context) if context is not None else None
        ended: dict[str, Any] = {}
        if stream:
            produced: GenerationResult | GenerationStream = GenerationStream(
                self._streamed(query, context, options, key, ended)
            )
        else:
            produced = self._answered(query, context, options, key, ended)
        return DocumentAnswer(produced, lambda: ended.get("document_state"))

    def _answered(
        self, query: str, context: str | None, options: dict[str, Any], key: str | None, ended: dict[str, Any]
    ) -> GenerationResult:
        for attempt in range(self.retries + 1):
            try:
                item = self.handle.answer.remote(query, context, options, document_key=key).result()
            except REPLICA_DIED as exc:
                self._died(exc, attempt)
                continue
            return _finished(item, ended)
        raise AssertionError("unreachable: _died raises after the last attempt")

    def _streamed(
        self, query: str, context: str | None, options: dict[str, Any], key: str | None, ended: dict[str, Any]
    ) -> Generator[str, None, GenerationResult]:
        """The replica's pieces. When it dies midway, a deterministic request (greedy, or seeded) is asked again on
        another replica and the text already given is skipped where the new answer repeats it; a sampled request
        whose text went out cannot be continued and ends with GenerationError."""
        sent = ""
        repeatable = not options.get("temperature") or options.get("seed") is not None
        for attempt in range(self.retries + 1):
            again = ""  # this attempt's text
            try:
                for item in self.handle.options(stream=True).stream.remote(query, context, options, document_key=key):
                    if "piece" not in item:
                        result = _finished(item, ended)
                        if not result.text.startswith(sent):
                            raise GenerationError(f"the {self.family} replica asked again answered differently")
                        return result
                    again += item["piece"]
                    if len(again) > len(sent):
                        if not again.startswith(sent):
                            raise GenerationError(f"the {self.family} replica asked again answered differently")
                        new, sent = again[len(sent) :], again
                        yield new
            except REPLICA_DIED as exc:
                if sent and not repeatable:
                    raise GenerationError(f"the {self.family} replica died while answering: {exc}") from exc
                self._died(exc, attempt)
                continue
            raise GenerationError(f"the {self.family} replica's stream ended without its answer")
        raise AssertionError("unreachable: _died raises after the last attempt")

    def _died(self, exc: BaseException, attempt: int) -> None:
        if attempt >= self.retries:
            raise GenerationError(f"{self.retries + 1} {self.family} replicas died while answering: {exc}") from exc
        logger.warning("a %s replica died mid-request (%s); sending it to another", self.family, type(exc).__name__)


class RayBackend:
    """A family's deployment as a backend of the ingress router (see :class:`~mamba_router.routing.router.
    FamilyBackend`)."""

    name = "ray"
    priority = 0
    local_alternates = False  # the ingress loads no model: when the deployment fails, the other family answers
    install_command = "pip install 'mamba-router[ray]'"

    def __init__(self, family: Family, handle: Any, *, model_id: str, retries: int, count: Callable[[str], int]):
        self.family: Family = family
        self.default_model = model_id
        self.model = RayFamilyModel(family, handle, model_id=model_id, retries=retries, count=count)

    def probe(self, platform: PlatformFacts) -> Availability:
        return Availability.usable(f"the {self.family} deployment of {APP_NAME} on Ray Serve")

    def load(self, model: str, *, device: str | None = None, dtype: Any = None) -> RayFamilyModel:
        return self.model

    def write_offline_model(self, directory: Path) -> Path:
        raise ConfigurationError("a Ray deployment runs its models in its replicas; write offline models locally")


class RouterIngress:
    """The ingress: the app of ``mamba-router serve`` around a router whose families are the deployments."""

    router: Router

    def __init__(self, config: dict[str, Any], mamba: Any | None, transformer: Any) -> None:
        settings = RouterConfig.model_validate(config)
        families: dict[Family, Any] = {"transformer": transformer}
        if mamba is not None:
            families["mamba"] = mamba
        backends = {
            family: RayBackend(
                family,
                handle,
                model_id=_family_model(settings, family),
                retries=settings.ray.retries,
                count=self._counter(family),
            )
            for family, handle in families.items()
        }
        self.router = Router(LoadedSettings(settings, {}, None), family_backends=backends)

    def _counter(self, family: Family) -> Callable[[str], int]:
        """Token counts by the router made next (the family's tokenizer where it is here, else the estimate)."""
        return lambda text: self.router.counter_for(family)(text)

    def __serve_build_asgi_app__(self) -> Any:
        from mamba_router.serve.app import create_app

        return create_app(self.router, preload=False)


def build_ray_app(config: RouterConfig) -> Any:
    """The Ray Serve application of ``config`` (``serve.run(build_ray_app(config))``), for people who compose their
    own Serve apps; ``mamba-router serve --ray`` runs it."""
    ray_settings = config.ray
    dumped = config.model_dump(mode="json")
    transformer = _family_deployment(config, "transformer").bind(dumped, "transformer")
    mamba = None
    if config.model_routing.enable_mamba and config.mamba.backend != "transformer":
        mamba = _family_deployment(config, "mamba").bind(dumped, "mamba")
    ingress = serve.deployment(
        serve.ingress()(RouterIngress),
        name="ingress",
        num_replicas=ray_settings.ingress_replicas,
        max_ongoing_requests=ray_settings.max_ongoing_requests * 4,
    )
    return ingress.bind(dumped, mamba, transformer)


def _family_deployment(config: RouterConfig, family: Family) -> Any:
    settings = config.ray
    mamba = family == "mamba"
    autoscaling = settings.mamba_autoscaling if mamba else settings.transformer_autoscaling
    options: dict[str, Any] = {
        "name": family,
        "max_ongoing_requests": settings.max_ongoing_requests,
        "ray_actor_options": {
            "num_gpus": settings.mamba_num_gpus if mamba else settings.transformer_num_gpus,
            "num_cpus": settings.mamba_num_cpus if mamba else settings.transformer_num_cpus,
        },
    }
    if autoscaling:
        options["autoscaling_config"] = autoscaling
    else:
        options["num_replicas"] = settings.mamba_replicas if mamba else settings.transformer_replicas
    if mamba:
        options["request_router_config"] = RequestRouterConfig(
            request_router_class=DocumentAffinityRouter,
            request_router_kwargs={"max_queue": settings.affinity_max_queue},
        )
    return serve.deployment(FamilyReplica, **options)


def _family_model(config: RouterConfig, family: Family) -> str:
    """The model a family's replicas load (for the ingress's token counts)."""
    if family == "transformer":
        return config.transformer.model
    return config.mamba.mamba2_model if config.mamba.backend == "mamba2" else config.mamba.real_model


def _error(exc: MambaRouterError) -> dict[str, Any]:
    return {"error_type": type(exc).__name__, "error": str(exc)}


def _finished(item: dict[str, Any], ended: dict[str, Any]) -> GenerationResult:
    """The replica's end item as a result (its document-state use noted in ``ended``), or its error raised."""
    if "error" in item:
        raise _library_error(item["error_type"], item["error"])
    ended["document_state"] = item.get("document_state")
    ended["replica"] = item.get("replica")
    return GenerationResult.model_validate(item["generation"])


def _library_error(name: str, message: str) -> MambaRouterError:
    """The replica's error as the same library type where it takes a message alone, else GenerationError."""
    kind = getattr(error_types, name, None)
    if isinstance(kind, type) and issubclass(kind, MambaRouterError):
        try:
            return kind(message)
        except TypeError:  # a type with more fields than a message
            pass
    return GenerationError(message)


def run_ray_server(config: RouterConfig, *, host: str, port: int) -> None:
    """Start (or join) Ray, serve the application on ``host``:``port`` and block until SIGINT or SIGTERM; then
    the application is deleted (the ingress closes its router: running requests finish, their records are
    written) and this process leaves Ray."""
    ray.init(address=config.ray.address, ignore_reinit_error=True)
    # after ray.init, whose own handler would abort the process: SIGTERM ends the wait like Ctrl-C does
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(build_ray_app(config), name=APP_NAME, route_prefix="/", blocking=True)
    except KeyboardInterrupt:
        logger.info("stopping the Ray Serve application %s", APP_NAME)
    finally:
        serve.delete(APP_NAME)
        ray.shutdown()


__all__ = ["DocumentAffinityRouter", "build_ray_app", "run_ray_server"]
