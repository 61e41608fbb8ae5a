"""A minimal web service on mamba_router: ``POST /query`` answers (or only routes) a question about a document,
``GET /routing_log?limit=N`` shows the last routing decisions.

Run it (with a config naming your models, see ``mamba-router config --show``)::

    pip install fastapi uvicorn
    MAMBA_ROUTER_CONFIG=router.toml uvicorn app:app --app-dir examples/fastapi_app

The routing log holds no query, document or answer text unless ``log.log_text = true``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel, Field

from mamba_router import (
    BackendUnavailableError,
    ContextTooLongError,
    GenerationError,
    InvalidRequestError,
    MambaRouterError,
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


def _status(exc: MambaRouterError) -> int:
    if isinstance(exc, ContextTooLongError):
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

    @service.post("/query", response_model=None)
    def query(request: QueryRequest) -> dict[str, Any]:
        try:
            if request.dry_run:
                decision: RouteDecision = get_router().route(request.query, request.context, pages=request.pages)
                return decision.model_dump(mode="json")
            result: RoutedResult = get_router().generate(
                request.query, request.context, pages=request.pages, max_new_tokens=request.max_new_tokens
            )
        except MambaRouterError as exc:
            raise HTTPException(status_code=_status(exc), detail=f"{type(exc).__name__}: {exc}") from exc
        return result.model_dump(mode="json")

    @service.get("/routing_log")
    def routing_log(limit: int = Query(default=20, ge=0, le=10_000)) -> dict[str, Any]:
        return {"records": get_router().read_log(limit)}

    return service


app = create_app()
