"""One call to one OpenAI-compatible endpoint, plain or streamed, and the failures that justify trying another.

A request in the ``chat`` format goes to ``/chat/completions`` as one user message (after the system prompt, if
any): the server applies the model's own chat template. ``plain`` goes to ``/completions`` as it is. Failures that
another endpoint may not have (the connection refused or dropped, no answer within the read timeout, a 5xx, 408 or
429, an answer that is not the JSON the API promises) are retryable; a 4xx that says the request itself is wrong is
not (every endpoint would refuse it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import httpx

from mamba_router.generation.requests import GenerationRequest
from mamba_router.generation.results import FinishReason
from mamba_router.settings.schema import RemoteEndpoint

MAX_CAUSE_CHARS = 300  # of a server's error message quoted in a failure


class EndpointFailure(Exception):
    """A call that failed: ``cause`` says why (never the request's text or a key), ``retryable`` whether another
    endpoint may answer, ``rest_s`` how long the server asked to be left alone (a 429's ``Retry-After``)."""

    def __init__(self, cause: str, *, retryable: bool, rest_s: float | None = None) -> None:
        super().__init__(cause)
        self.cause = cause
        self.retryable = retryable
        self.rest_s = rest_s


@dataclass(frozen=True)
class RemoteRequest:
    """What to ask an endpoint for, whichever endpoint answers."""

    checked: GenerationRequest  # the prompt and sampling settings, checked
    chat: bool
    system_prompt: str | None

    @property
    def stop(self) -> tuple[str, ...]:
        return self.checked.stop

    def body(self, model: str, *, stream: bool) -> dict[str, Any]:
        """The JSON body of the call (``top_k`` only when set: vLLM and SGLang take it, OpenAI's own API does not)."""
        checked = self.checked
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": checked.max_new_tokens,
            "temperature": checked.temperature,
        }
        if self.chat:
            system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
            body["messages"] = [*system, {"role": "user", "content": checked.prompt}]
        else:
            body["prompt"] = checked.prompt
        for key, value in (("top_p", checked.top_p), ("top_k", checked.top_k), ("seed", checked.seed)):
            if value is not None:
                body[key] = value
        if checked.stop:
            body["stop"] = list(checked.stop)
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    @property
    def path(self) -> str:
        return "/chat/completions" if self.chat else "/completions"


@dataclass
class RemoteAnswer:
    """What an endpoint answered; token counts are None when the server sent no ``usage``."""

    text: str
    finish_reason: FinishReason
    stop_sequence: str | None
    prompt_tokens: int | None
    completion_tokens: int | None


def call(client: httpx.Client, endpoint: RemoteEndpoint, request: RemoteRequest, key: str | None) -> RemoteAnswer:
    """Ask ``endpoint`` and wait for the whole answer."""
    try:
        response = client.post(
            endpoint.url + request.path, json=request.body(endpoint.model, stream=False), headers=_headers(key)
        )
    except httpx.HTTPError as exc:
        raise _transport_failure(exc) from exc
    _check_status(response.status_code, response.headers, lambda: response.text)
    data = _json(response.text)
    try:
        choice = data["choices"][0]
        text = choice["message"]["content"] if request.chat else choice["text"]
        if not isinstance(text, str):
            raise TypeError("the answer's text is not a string")
    except (KeyError, IndexError, TypeError) as exc:
        raise EndpointFailure(f"malformed answer ({type(exc).__name__}: {exc})", retryable=True) from exc
    finish, stop = _finish(choice, request)
    usage = data.get("usage") or {}
    return RemoteAnswer(text, finish, stop, _count(usage, "prompt_tokens"), _count(usage, "completion_tokens"))


def stream_call(
    client: httpx.Client, endpoint: RemoteEndpoint, request: RemoteRequest, key: str | None
) -> Generator[str, None, RemoteAnswer]:
    """Ask ``endpoint`` for a streamed answer: its text pieces as they come, then the answer. A stream that ends
    before ``data: [DONE]`` (a dropped connection) is a failure."""
    body = request.body(endpoint.model, stream=True)
    pieces: list[str] = []
    finish: tuple[FinishReason, str | None] = ("eos", None)
    usage: dict[str, Any] = {}
    try:
        with client.stream("POST", endpoint.url + request.path, json=body, headers=_headers(key)) as response:
            if response.status_code != 200:
                _check_status(response.status_code, response.headers, lambda: response.read().decode(errors="replace"))
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue  # comments, keep-alives and blank separators
                payload = line[5:].strip()
                if payload == "[DONE]":
                    text = "".join(pieces)
                    counts = (_count(usage, "prompt_tokens"), _count(usage, "completion_tokens"))
                    return RemoteAnswer(text, finish[0], finish[1], *counts)
                chunk = _json(payload)
                if "error" in chunk:
                    raise EndpointFailure(f"error event: {_message(chunk)}", retryable=True)
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    piece = _piece(choice, request)
                    if piece:
                        pieces.append(piece)
                        yield piece
                    if choice.get("finish_reason"):
                        finish = _finish(choice, request)
    except httpx.HTTPError as exc:
        raise _transport_failure(exc) from exc
    raise EndpointFailure("the stream ended before data: [DONE] (connection dropped)", retryable=True)


def list_models(client: httpx.Client, endpoint: RemoteEndpoint, key: str | None) -> list[str]:
    """The model names ``endpoint`` serves (``GET /models``)."""
    try:
        response = client.get(endpoint.url + "/models", headers=_headers(key))
    except httpx.HTTPError as exc:
        raise _transport_failure(exc) from exc
    _check_status(response.status_code, response.headers, lambda: response.text)
    data = _json(response.text).get("data")
    if not isinstance(data, list):
        raise EndpointFailure("malformed answer (no model list)", retryable=True)
    return [str(item.get("id")) for item in data if isinstance(item, dict)]


def api_key(endpoint: RemoteEndpoint) -> str | None:
    """The endpoint's API key from its environment variable (None when it has none); EndpointFailure when the
    variable is named but not set."""
    variable = endpoint.api_key_env
    if variable is None:
        return None
    key = os.environ.get(variable)
    if not key:
        raise EndpointFailure(f"the environment variable {variable} (its API key) is not set", retryable=True)
    return key


def _headers(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _transport_failure(exc: httpx.HTTPError) -> EndpointFailure:
    """A connection that could not be made, timed out or dropped."""
    if isinstance(exc, httpx.TimeoutException):
        return EndpointFailure(f"timed out ({type(exc).__name__})", retryable=True)
    if isinstance(exc, httpx.ConnectError):
        return EndpointFailure(f"connection failed ({type(exc).__name__}: {exc})"[:MAX_CAUSE_CHARS], retryable=True)
    return EndpointFailure(f"connection dropped ({type(exc).__name__})", retryable=True)


def _check_status(status: int, headers: httpx.Headers, body: Any) -> None:
    if status == 200:
        return
    message = _message(_json_or_none(body()))
    if status == 429:
        raise EndpointFailure(f"HTTP 429 busy: {message}", retryable=True, rest_s=_retry_after(headers))
    retryable = status >= 500 or status == 408
    raise EndpointFailure(f"HTTP {status}: {message}", retryable=retryable)


def _retry_after(headers: httpx.Headers) -> float | None:
    try:
        return max(0.0, float(headers.get("retry-after", "")))
    except ValueError:
        return None


def _json(text: str) -> dict[str, Any]:
    data = _json_or_none(text)
    if data is None:
        raise EndpointFailure("malformed answer (not a JSON object)", retryable=True)
    return data


def _json_or_none(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _message(data: dict[str, Any] | None) -> str:
    """The server's error message (OpenAI's shape: ``{"error": {"message": ...}}``), shortened."""
    if not data:
        return "no error message"
    error = data.get("error", data)
    message = error.get("message", error) if isinstance(error, dict) else error
    return str(message)[:MAX_CAUSE_CHARS]


def _piece(choice: dict[str, Any], request: RemoteRequest) -> str:
    value = (choice.get("delta") or {}).get("content") if request.chat else choice.get("text")
    return value if isinstance(value, str) else ""


def _finish(choice: dict[str, Any], request: RemoteRequest) -> tuple[FinishReason, str | None]:
    """OpenAI's ``stop`` covers both the end of sequence and a stop string; vLLM and SGLang say which string in
    ``stop_reason``."""
    if choice.get("finish_reason") == "length":
        return "length", None
    matched = choice.get("stop_reason")
    if isinstance(matched, str) and matched in request.stop:
        return "stop", matched
    return "eos", None


def _count(usage: dict[str, Any], key: str) -> int | None:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
