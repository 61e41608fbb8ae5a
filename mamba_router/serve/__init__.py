"""Serving: the OpenAI-compatible HTTP app on the router (:func:`create_app`) and ``mamba-router serve``
(:func:`~mamba_router.serve.server.run_server`). Needs the ``serve`` extra (FastAPI, uvicorn, prometheus-client).
The batching engine the app's requests run on is :mod:`mamba_router.generation.engine` (below the router, which
uses it for every request)."""

from __future__ import annotations

from mamba_router.serve.app import create_app

__all__ = ["create_app"]
