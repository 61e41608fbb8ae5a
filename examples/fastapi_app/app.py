"""A minimal web service on mamba_router: ``POST /query`` answers (or only routes) a question about a document,
``GET /routing_log?limit=N`` shows the last routing decisions.

Run it (with a config naming your models, see ``mamba-router config --show``)::

    pip install fastapi uvicorn
    MAMBA_ROUTER_CONFIG=router.toml uvicorn app:app --app-dir examples/fastapi_app

The routing log holds no query, document or answer text unless ``log.log_text = true``, and no error body ever
repeats the request's text: a 422 names the field and what was wrong with it, never its value. Bodies larger than
``limits.max_body_bytes`` get 413 before they are read into memory or parsed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mamba_router import (
    BackendUnavailableError,
    ContextTooLongError,
    GenerationError,
    InvalidRequestError,
    MambaRouterError,
    RequestTooLargeError,
    RouteDecision,
    RoutedResult,
    Router,
)


class QueryRequest(BaseModel):
    """A question, optionally about one or more documents."""

    query: str = Field(min_length=1, description="the question")
    context: str | list[str] | None = Field(default=None, description="the document text, or several documents")
    pages: int | None = Field(default=None, ge=0, description="page count of the documents, if known")
    max_new_tokens: int | None = Field(default=None, ge=1, le=4096)
    dry_run: bool = Field(default=False, description="only decide the route; load no model")


logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 (JSON) before the app reads or parses it."""

    def __init__(self, app: Any, max_bytes: Callable[[], int]) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes()
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _too_large(send, limit)
            return
        messages: list[Message] = []
        size = 0
        while True:  # read the body here, counting, so a body without a length cannot grow past the limit either
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > limit:
                await _too_large(send, limit)
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps(
        {"error": "RequestTooLargeError", "detail": f"the request body is over {limit:,} bytes (limits.max_body_bytes)"}
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _status(exc: MambaRouterError) -> int:
    if isinstance(exc, (ContextTooLongError, RequestTooLargeError)):
        return 413
    if isinstance(exc, InvalidRequestError):
        return 422
    if isinstance(exc, (BackendUnavailableError, GenerationError)):
        return 503
    return 500


def create_app(router: Router | None = None) -> FastAPI:
    """The app; the router is built from the config file and environment unless one is given."""
    service = FastAPI(title="mamba-router judgment Q&A")
    state: dict[str, Router] = {}

    def get_router() -> Router:
        if "router" not in state:
            state["router"] = router if router is not None else Router.from_config()
        return state["router"]

    service.add_middleware(BodyLimit, max_bytes=lambda: get_router().config.limits.max_body_bytes)

    @service.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own 422 repeats each bad value ("input"): here that could be a confidential document
        fields = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"error": "InvalidRequestError", "detail": fields})

    @service.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unexpected %s while serving %s", type(exc).__name__, request.url.path, exc_info=exc)
        return JSONResponse(status_code=500, content={"error": "InternalError", "detail": type(exc).__name__})

    @service.post("/query", response_model=None)
    def query(request: QueryRequest) -> dict[str, Any]:
        try:
            if request.dry_run:
                decision: RouteDecision = get_router().route(request.query, request.context, pages=request.pages)
                return decision.model_dump(mode="json")
            result: RoutedResult = get_router().generate(
                request.query, request.context, pages=request.pages, max_new_tokens=request.max_new_tokens
            )
        except MambaRouterError as exc:  # the library's messages name fields and sizes, never the request's text
            raise HTTPException(status_code=_status(exc), detail=f"{type(exc).__name__}: {exc}") from exc
        return result.model_dump(mode="json")

    @service.get("/routing_log")
    def routing_log(limit: int = Query(default=20, ge=0, le=10_000)) -> dict[str, Any]:
        return {"records": get_router().read_log(limit)}

    return service


app = create_app()
