"""The HTTP app of ``mamba-router serve``: OpenAI-compatible completions on the router, the seed's endpoints,
health, readiness and Prometheus metrics.

- ``POST /v1/chat/completions``, ``POST /v1/completions``: ``model`` is ``auto`` (the routing rules decide),
  ``mamba``, ``transformer`` or a served model id; ``stream: true`` answers with server-sent events. System turns
  become the system prompt, the last user turn the question, and documents come in the extra field ``context``
  (``extra_body={"context": judgment}`` with the ``openai`` client); earlier turns are read as a document. The
  route is in the ``X-Mamba-Router-*`` headers and in the extra ``mamba_router`` field of the answer.
- ``GET /v1/models``; ``POST /query`` and ``GET /api/v1/model/routing_log?limit=N`` (the seed's API);
  ``GET /health``, ``GET /ready`` (503 until the models are loaded, and once a model process has ended),
  ``GET /metrics``.

Every request runs through the router's batching engines, so concurrent requests decode together. Errors are JSON
in OpenAI's shape with the library's message (never a stack trace, never the request's text): 400 for a bad
request (a context over every model's window included), 404 for an unknown model, 413 for a body over
``limits.max_body_bytes``, 429 with ``Retry-After`` when the queue is full, 408 past ``serve.request_timeout_s``,
503 while a model cannot run. A client that disconnects has its sequence cancelled and its batch row freed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from mamba_router.errors import MambaRouterError, RequestCancelledError
from mamba_router.routing.decisions import RouteDecision, RoutedResult
from mamba_router.routing.streaming import RoutedStream
from mamba_router.serve.body_limit import BodyLimit, Message, Receive, Scope, Send
from mamba_router.serve.errors import UnknownModelError, error_body, error_headers, error_status
from mamba_router.serve.metrics import CONTENT_TYPE, ServerMetrics
from mamba_router.serve.schema import ChatCompletionRequest, ChatMessage, CompletionRequest, QueryRequest
from mamba_router.serve.served_router import ServedRouter

logger = logging.getLogger(__name__)

FAMILIES = ("auto", "mamba", "transformer")
DISCONNECT_POLL_S = 0.25


class ServerState:
    """The router an app serves, whether its models are loaded, and its metrics."""

    def __init__(self, router: ServedRouter, *, preload: bool) -> None:
        self.router = router
        self.metrics = ServerMetrics(router)
        self.preload = preload
        self.models: dict[str, str] = {}
        self.ready = threading.Event()

    def load_models(self) -> None:
        """Load the models requests will need (run in a thread at start-up)."""
        try:
            self.models = self.router.preload()
        finally:
            self.ready.set()

    def family_for(self, model: str) -> str:
        """The family a request's ``model`` asks for."""
        if model in FAMILIES:
            return model
        served = self.served_models()
        if model in served:
            return served[model]
        raise UnknownModelError(f"the model {model!r} is not served here; use one of {', '.join(served)}")

    def served_models(self) -> dict[str, str]:
        """Model names a request may give, and the family each asks for."""
        names = {name: name for name in FAMILIES}
        if self.router.mamba is not None:
            names.setdefault(self.router.mamba.model, "mamba")
        names.setdefault(self.router.transformer.model, "transformer")
        return names


def create_app(router: ServedRouter | None = None, *, preload: bool = True) -> FastAPI:
    """The app, serving ``router`` (a :class:`~mamba_router.routing.router.Router` built from the config file and
    environment when None, or the router of a model process). With ``preload`` the models load in the background at
    start-up and ``/ready`` says when they are in; the router is closed (running requests finished, their log records
    written) when the app shuts down."""
    if router is None:
        from mamba_router.routing.router import Router

        router = Router.from_config()
    state = ServerState(router, preload=preload)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if state.preload:
            threading.Thread(target=state.load_models, name="mamba-router-preload", daemon=True).start()
        else:
            state.ready.set()
        yield
        grace = state.router.config.serve.shutdown_grace_s
        await run_in_threadpool(lambda: state.router.close(drain=True, timeout=grace))

    app = FastAPI(title="mamba-router", lifespan=lifespan)
    app.state.server = state
    app.add_middleware(BodyLimit, max_bytes=lambda: state.router.config.limits.max_body_bytes)
    app.add_middleware(_CountAnswers, metrics=state.metrics)
    _add_error_handlers(app)
    _add_openai_routes(app, state)
    _add_seed_routes(app, state)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MambaRouterError)
    async def library_error(request: Request, exc: MambaRouterError) -> JSONResponse:
        status, code = error_status(exc)
        if status >= 500:
            logger.warning("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return JSONResponse(error_body(str(exc), code), status_code=status, headers=error_headers(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own 422 repeats each bad value ("input"): here that could be a confidential document
        problems = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()]
        first = exc.errors()[0].get("loc", ()) if exc.errors() else ()
        param = ".".join(str(p) for p in first[1:]) or None
        return JSONResponse(error_body("; ".join(problems), "invalid_request_error", param=param), status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unexpected %s while serving %s", type(exc).__name__, request.url.path, exc_info=exc)
        return JSONResponse(error_body(f"internal error ({type(exc).__name__})", "internal_error"), status_code=500)


def _add_openai_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "mamba-router"} for name in state.served_models()
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        answer = _Answer("chat.completion", body.model, body.include_usage, _arrival(request))
        query, system_prompt, documents = chat_prompt(body.messages, body.context)
        options = {**body.options(), "family": state.family_for(body.model), "system_prompt": system_prompt}
        stream = state.router.astream(query, documents, **options)
        return await _respond(request, state, stream, answer, stream_it=body.stream)

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        answer = _Answer("text_completion", body.model, body.include_usage, _arrival(request))
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise _invalid("prompt", "send one prompt per request (a list of several is not supported)")
        options = {**body.options(), "family": state.family_for(body.model), "prompt_format": "plain"}
        stream = state.router.astream(prompts[0], body.context, **options)
        return await _respond(request, state, stream, answer, stream_it=body.stream)


def _add_seed_routes(app: FastAPI, state: ServerState) -> None:
    @app.post("/query", response_model=None)
    async def query(body: QueryRequest, request: Request) -> Response:
        router = state.router
        if body.dry_run:
            decision: RouteDecision = await run_in_threadpool(
                lambda: router.route(body.query, body.context, pages=body.pages)
            )
            return JSONResponse(decision.model_dump(mode="json"))
        options = {"max_new_tokens": body.max_new_tokens, "pages": body.pages, "family": body.model}
        stream = router.astream(body.query, body.context, **options)
        result = await _collect_unless_gone(request, stream)
        state.metrics.observe(result)
        return JSONResponse(result.model_dump(mode="json"), headers=_route_headers(result.decision, result))

    @app.get("/api/v1/model/routing_log")
    async def routing_log(limit: int = Query(default=20, ge=0, le=10_000)) -> dict[str, Any]:
        return {"records": await run_in_threadpool(lambda: state.router.read_log(limit))}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", response_model=None)
    async def ready() -> JSONResponse:
        problem = state.router.unavailable_reason
        is_ready = state.ready.is_set() and problem is None
        body: dict[str, Any] = {"ready": is_ready, "models": state.models}
        if problem is not None:
            body["reason"] = problem
        return JSONResponse(body, status_code=200 if is_ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:  # in a thread: the gauges may be a call to the model process
        return Response(await run_in_threadpool(state.metrics.render), media_type=CONTENT_TYPE)


# -- prompts and answers ----------------------------------------------------------------------------------------


def chat_prompt(
    messages: Sequence[ChatMessage], context: str | list[str] | None
) -> tuple[str, str | None, list[str] | None]:
    """The question (the last user turn), the system prompt (system and developer turns) and the documents (the
    request's ``context``, then earlier turns as a transcript) of a chat request."""
    texts = [(m.role, _text_of(m, i)) for i, m in enumerate(messages)]
    if texts[-1][0] != "user":
        raise _invalid("messages", "the last message must be a user turn (the question)")
    system = "\n\n".join(t for role, t in texts if role in ("system", "developer") and t) or None
    earlier = [f"{role}: {t}" for role, t in texts[:-1] if role not in ("system", "developer") and t]
    documents = [context] if isinstance(context, str) else list(context or [])
    if earlier:
        documents.append("Conversation so far:\n" + "\n".join(earlier))
    return texts[-1][1], system, documents or None


def _text_of(message: ChatMessage, index: int) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    parts = []
    for part in message.content:
        if part.type != "text" or part.text is None:
            raise _invalid(f"messages.{index}.content", f"only text parts are read, got a {part.type!r} part")
        parts.append(part.text)
    return "".join(parts)


def _invalid(param: str, message: str) -> MambaRouterError:
    from mamba_router.errors import InvalidRequestError

    return InvalidRequestError(f"{param}: {message}")


def _arrival(request: Request) -> float:
    """When the request reached the app (noted by :class:`_CountAnswers`; now, where that middleware is absent)."""
    return float(getattr(request.state, ARRIVED, time.perf_counter()))


class _Answer:
    """Builds the OpenAI-shaped bodies and chunks of one answer, and times it in the server: from the request's
    arrival at the app (before its body was read and checked) to the route chosen and to the first piece handed to
    the stream."""

    def __init__(self, kind: str, model: str, include_usage: bool, arrived: float) -> None:
        self.kind = kind
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time())
        self.id = ""
        self._piece_template: tuple[str, str] | None = None
        self.arrived = arrived
        self.routed_at: float | None = None
        self.first_piece_at: float | None = None

    def server_timings(self) -> dict[str, float | None]:
        """Milliseconds from the request's arrival to the route chosen and to the first piece (None in an answer
        that is not streamed): the rest of a client's time to first token is the connection and the event loop's
        queue before the request reached the app; the difference between the first piece's time here and the
        engine's time to first token is reading the body, routing and admission."""

        def since(moment: float | None) -> float | None:
            return None if moment is None else round((moment - self.arrived) * 1000, 3)

        return {"route_ms": since(self.routed_at), "first_piece_ms": since(self.first_piece_at)}

    def body(self, result: RoutedResult) -> dict[str, Any]:
        finish = _finish_reason(result)
        if self.kind == "chat.completion":
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": result.text}}
        else:
            choice = {"index": 0, "text": result.text, "logprobs": None}
        choice["finish_reason"] = finish
        return {**self._head(result.decision, self.kind), "choices": [choice], "usage": _usage(result)} | {
            "mamba_router": _route_info(result) | {"server_timings": self.server_timings()}
        }

    def chunk(self, decision: RouteDecision, text: str | None, finish: str | None = None) -> dict[str, Any]:
        kind = "chat.completion.chunk" if self.kind == "chat.completion" else "text_completion"
        if self.kind == "chat.completion":
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if text is None else {"content": text}
            choice: dict[str, Any] = {"index": 0, "delta": {} if finish else delta}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None}
        choice["finish_reason"] = finish
        return {**self._head(decision, kind), "choices": [choice]}

    def piece_event(self, decision: RouteDecision, text: str) -> str:
        """The server-sent event of one text piece: the same text as ``_sse(self.chunk(decision, text))``, with the
        chunk rendered once per answer around a placeholder and each piece's JSON string put in its place (a stream
        sends one event per decoding step; building and encoding the whole chunk each time costs the event loop,
        which serves every stream, several times more)."""
        if self._piece_template is None:
            before, after = _sse(self.chunk(decision, _PLACEHOLDER)).rsplit(json.dumps(_PLACEHOLDER), 1)
            self._piece_template = (before, after)
        before, after = self._piece_template
        return before + json.dumps(text) + after

    def last_chunks(self, result: RoutedResult) -> list[dict[str, Any]]:
        info = _route_info(result) | {"server_timings": self.server_timings()}
        final = self.chunk(result.decision, "", _finish_reason(result)) | {"mamba_router": info}
        if not self.include_usage:
            return [final]
        return [final, {**self._head(result.decision, final["object"]), "choices": [], "usage": _usage(result)}]

    def _head(self, decision: RouteDecision, kind: str) -> dict[str, Any]:
        prefix = "chatcmpl-" if self.kind == "chat.completion" else "cmpl-"
        return {"id": prefix + decision.decision_id, "object": kind, "created": self.created, "model": self.model}


def _finish_reason(result: RoutedResult) -> str:
    return "length" if result.generation.finish_reason == "length" else "stop"


def _usage(result: RoutedResult) -> dict[str, int]:
    prompt, completion = result.generation.prompt_tokens, result.generation.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _route_info(result: RoutedResult) -> dict[str, Any]:
    return {
        "decision_id": result.decision.decision_id,
        "model_used": result.model_used,
        "backend": result.backend,
        "model": result.model,
        "device": result.generation.device,  # where it ran: a GPU, a remote endpoint, a Ray replica
        "fallback_used": result.fallback_used,
        "fallback_reason": result.fallback_reason,
        "rules_fired": result.decision.fired_rules,
        "document_state": result.document_state,
        "timings": result.timings.model_dump(mode="json"),
        "decide_ms": round(result.decide_ms, 3),  # the routing decision itself (token counts, rules)
    }


def _route_headers(decision: RouteDecision, result: RoutedResult | None = None) -> dict[str, str]:
    return {
        "X-Mamba-Router-Decision-Id": decision.decision_id,
        "X-Mamba-Router-Model-Used": result.model_used if result else decision.model_used,
        "X-Mamba-Router-Backend": result.backend if result else decision.backend,
        "X-Mamba-Router-Fallback": str(result.fallback_used if result else decision.fallback_used).lower(),
    }


async def _respond(
    request: Request, state: ServerState, stream: RoutedStream, answer: _Answer, *, stream_it: bool
) -> Response:
    if not stream_it:
        result = await _collect_unless_gone(request, stream)
        state.metrics.observe(result)
        return JSONResponse(answer.body(result), headers=_route_headers(result.decision, result))
    try:
        decision = await stream.adecision()  # errors before the route is chosen are plain JSON errors
    except BaseException:
        stream.cancel()
        raise
    answer.routed_at = time.perf_counter()
    return StreamingResponse(
        _events(stream, decision, answer, state),
        media_type="text/event-stream",
        headers={**_route_headers(decision), "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(
    stream: RoutedStream, decision: RouteDecision, answer: _Answer, state: ServerState
) -> AsyncIterator[str]:
    """Server-sent events of one streamed answer; an error midway is sent as an error event."""
    try:
        yield _sse(answer.chunk(decision, None))
        async for piece in stream:
            if answer.first_piece_at is None:
                answer.first_piece_at = time.perf_counter()
            yield answer.piece_event(decision, piece)
        assert stream.result is not None
        state.metrics.observe(stream.result, answer.server_timings()["first_piece_ms"])
        for chunk in answer.last_chunks(stream.result):
            yield _sse(chunk)
    except MambaRouterError as exc:
        status, code = error_status(exc)
        yield _sse(error_body(str(exc), code))
    finally:
        if stream.result is None:  # the client went away (or the answer failed): free the row
            stream.cancel()
    yield "data: [DONE]\n\n"


_PLACEHOLDER = "\x00piece\x00"  # the content is the last string of a chunk: its last occurrence is the piece


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


async def _collect_unless_gone(request: Request, stream: RoutedStream) -> RoutedResult:
    """The answer; if the client disconnects first, the request is cancelled (its batch row freed)."""
    task = asyncio.ensure_future(stream.acollect())
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                stream.cancel()
                raise RequestCancelledError("the client disconnected")
    finally:
        if not task.done():
            stream.cancel()
            task.cancel()


ARRIVED = "mamba_router_arrived"  # request.state key: when the request reached the app


class _CountAnswers:
    """ASGI middleware (the outermost): counts every HTTP answer by endpoint and status; notes when each request
    arrived."""

    def __init__(self, app: Any, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        scope.setdefault("state", {})[ARRIVED] = time.perf_counter()  # before the body is read (see _Answer)

        async def counting(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.answered(path if path in _KNOWN_PATHS else "other", int(message["status"]))
            await send(message)

        await self.app(scope, receive, counting)


_KNOWN_PATHS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/query",
        "/api/v1/model/routing_log",
        "/health",
        "/ready",
        "/metrics",
    }
)

__all__ = ["ServerState", "chat_prompt", "create_app"]
