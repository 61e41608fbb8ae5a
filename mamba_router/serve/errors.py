"""Errors as HTTP answers: each library error gets its status and OpenAI's error shape, with the library's message
(which names fields and sizes, never a request's text); nothing unexpected leaks a stack trace."""

from __future__ import annotations

from typing import Any

from mamba_router.errors import (
    BackendUnavailableError,
    EngineClosedError,
    GenerationError,
    InvalidRequestError,
    MambaRouterError,
    ModelLoadError,
    RequestCancelledError,
    RequestTimeoutError,
    RequestTooLargeError,
    ServerBusyError,
)


class UnknownModelError(InvalidRequestError):
    """A request named a model this server does not serve."""


class ModelProcessError(EngineClosedError):
    """The server's model process (``serve.model_process``) did not start or has ended; restart the server."""


_STATUS: list[tuple[type[MambaRouterError], int, str]] = [  # the first match wins: subclasses before bases
    (UnknownModelError, 404, "model_not_found"),
    (RequestTooLargeError, 413, "request_too_large"),
    (InvalidRequestError, 400, "invalid_request_error"),
    (ServerBusyError, 429, "rate_limit_exceeded"),
    (RequestTimeoutError, 408, "timeout"),
    (RequestCancelledError, 499, "cancelled"),
    (ModelProcessError, 503, "model_process_unavailable"),
    (EngineClosedError, 503, "shutting_down"),
    (GenerationError, 503, "generation_failed"),
    (BackendUnavailableError, 503, "backend_unavailable"),
    (ModelLoadError, 503, "model_unavailable"),
]


def error_status(error: MambaRouterError) -> tuple[int, str]:
    """The HTTP status and OpenAI error code of a library error."""
    for kind, status, code in _STATUS:
        if isinstance(error, kind):
            return status, code
    return 500, "internal_error"


def error_body(message: str, code: str, *, kind: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    error_type = kind or ("invalid_request_error" if code in {"invalid_request_error", "model_not_found"} else code)
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_headers(error: MambaRouterError) -> dict[str, str]:
    """``Retry-After`` for a busy server."""
    if isinstance(error, ServerBusyError):
        return {"Retry-After": str(max(1, round(error.retry_after_s)))}
    return {}
