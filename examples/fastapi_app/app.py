"""Mounting mamba-router's HTTP app inside your own FastAPI app.

The mounted app is the one ``mamba-router serve`` runs: OpenAI-compatible ``/v1/chat/completions``,
``/v1/completions`` and ``/v1/models``, the seed's ``/query`` and ``/api/v1/model/routing_log``, ``/health``,
``/ready`` and ``/metrics``, all on the router's batching engines. Here it lives under ``/llm``, next to the host
app's own routes. Run it (with a config naming your models, see ``mamba-router config --show``)::

    pip install 'mamba-router[serve]'
    MAMBA_ROUTER_CONFIG=router.toml uvicorn app:app --app-dir examples/fastapi_app

Starlette does not run a mounted app's start-up and shutdown, so the host's lifespan runs them: the models load at
start-up, and at shutdown running requests finish and the routing log is complete.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from mamba_router import Router
from mamba_router.serve import create_app as create_llm_app


def create_app(router: Router | None = None) -> FastAPI:
    """The host app with mamba-router's app under ``/llm`` (the router from the config file unless given)."""
    llm = create_llm_app(router)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with llm.router.lifespan_context(llm):  # the mounted app's start-up and shutdown
            yield

    app = FastAPI(title="judgment Q&A", lifespan=lifespan)
    app.mount("/llm", llm)

    @app.get("/")
    def index() -> dict[str, str]:
        return {"service": "judgment Q&A", "chat": "/llm/v1/chat/completions", "query": "/llm/query"}

    return app


app = create_app()
