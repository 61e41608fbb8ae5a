"""A loaded model whose calls go to a pool of OpenAI-compatible endpoints, with retries across them.

Each attempt goes to the endpoint the pool picks (fewest requests in flight, not resting); a retryable failure puts
that endpoint to rest, waits ``backoff_s`` (doubled at each retry) and tries the next, up to ``retries`` more
times. A stream is retried only until its first piece has gone out; after that a failure ends the stream (the
caller already holds part of an answer). When no endpoint answers, the call raises GenerationError, on which the
router falls back to the other family as for a local backend's failure. Every failure is logged with the endpoint
and its cause, never with the request's text or a key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any

import httpx

from mamba_router.errors import GenerationError
from mamba_router.generation.decoding import GenerationStream
from mamba_router.generation.prompt_format import check_prompt_format
from mamba_router.generation.requests import check_request, compose_context_prompt, generation_kwargs
from mamba_router.generation.results import GenerationResult, Timings
from mamba_router.remote.client import EndpointFailure, RemoteAnswer, RemoteRequest, api_key, call, stream_call
from mamba_router.remote.endpoints import EndpointHealth, EndpointPool, EndpointState
from mamba_router.settings.schema import RemoteSection

logger = logging.getLogger(__name__)


class RemoteModel:
    """A model served by OpenAI-compatible endpoints (one family's ``[[remote.*]]`` entries).

    ``count`` counts a text's tokens (the router gives the local tokenizer of the model where it is on disk, else
    its estimate); it also fills in token counts an endpoint did not send.
    """

    backend = "remote"
    available = True
    context_window: int | None = None  # the server knows its own window and refuses what does not fit
    concurrent_calls = True  # calls from many threads at once are the servers' business: no lock around them

    def __init__(
        self,
        family: str,
        settings: RemoteSection,
        count: Callable[[str], int],
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        endpoints = settings.endpoints_of(family)
        self.family = family
        self.settings = settings
        self.pool = EndpointPool(endpoints, cooldown_s=settings.cooldown_s)
        self.model_id = endpoints[0].model
        self.device = f"remote:{endpoints[0].label}"
        self.reason = f"{len(endpoints)} remote endpoint(s): " + ", ".join(e.label for e in endpoints)
        self._count = count
        timeout = httpx.Timeout(
            settings.read_timeout_s, connect=settings.connect_timeout_s, pool=settings.connect_timeout_s
        )
        self._client = httpx.Client(timeout=timeout, transport=transport, follow_redirects=False)

    def __repr__(self) -> str:
        return f"RemoteModel(family={self.family!r}, {self.reason})"

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def health(self) -> list[EndpointHealth]:
        """Each endpoint's counters (in flight, answered, failed, resting, last error)."""
        return self.pool.health()

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as the router counts them for this model (local tokenizer, else the estimate)."""
        return self._count(text)

    def generate(
        self,
        prompt: str,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        stream: bool = False,
        prompt_format: str = "auto",
        system_prompt: str | None = None,
    ) -> GenerationResult | GenerationStream:
        """Ask the endpoints; ``chat`` and ``auto`` send the prompt as a user message (the server applies the
        model's template), ``plain`` as a completion prompt."""
        checked = check_request(
            prompt,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            stop=stop,
            seed=seed,
        )
        request = RemoteRequest(
            checked, chat=check_prompt_format(prompt_format) != "plain", system_prompt=system_prompt
        )
        if stream:
            return GenerationStream(self._streamed(request))
        return self._attempts(request, lambda state, key: call(self._client, state.endpoint, request, key))

    def generate_with_state_space(
        self, prompt: str, context: str | None = None, max_new_tokens: int = 256, **kwargs: Any
    ) -> GenerationResult | GenerationStream:
        """``generate`` on the document followed by the question (the server keeps no state between calls)."""
        return self.generate(
            compose_context_prompt(prompt, context), max_new_tokens=max_new_tokens, **generation_kwargs(**kwargs)
        )

    # -- attempts ------------------------------------------------------------------------------------------------

    def _attempts(
        self, request: RemoteRequest, attempt: Callable[[EndpointState, str | None], RemoteAnswer]
    ) -> GenerationResult:
        started = time.perf_counter()
        tried: set[int] = set()
        causes: list[str] = []
        while (picked := self._next(tried, causes)) is not None:
            state, key = picked
            try:
                answer = attempt(state, key)
            except EndpointFailure as failure:
                self._failed(state, failure, causes)
                continue
            self.pool.succeeded(state)
            return self._result(state, request, answer, started, first_piece_at=None)
        raise self._no_answer(causes)

    def _streamed(self, request: RemoteRequest) -> Generator[str, None, GenerationResult]:
        started = time.perf_counter()
        tried: set[int] = set()
        causes: list[str] = []
        while (picked := self._next(tried, causes)) is not None:
            state, key = picked
            pieces = stream_call(self._client, state.endpoint, request, key)
            first_piece_at: float | None = None
            try:
                while True:
                    piece = next(pieces)
                    first_piece_at = first_piece_at or time.perf_counter()
                    yield piece
            except StopIteration as done:
                self.pool.succeeded(state)
                return self._result(state, request, done.value, started, first_piece_at=first_piece_at)
            except EndpointFailure as failure:
                self._failed(state, failure, causes)
                if first_piece_at is not None:  # part of the answer went out: it cannot be asked again elsewhere
                    raise GenerationError(
                        f"the remote answer from {state.endpoint.label} broke off: {failure.cause}"
                    ) from failure
            except GeneratorExit:  # the consumer stopped reading (a client went away)
                pieces.close()
                self.pool.released(state)
                raise
        raise self._no_answer(causes)

    def _next(self, tried: set[int], causes: list[str]) -> tuple[EndpointState, str | None] | None:
        """The next endpoint to try and its key, after the back-off; None when retries or endpoints ran out."""
        if len(causes) > self.settings.retries:
            return None
        while (taken := self.pool.take(tried)) is not None:
            index, state = taken
            tried.add(index)
            try:
                key = api_key(state.endpoint)
            except EndpointFailure as missing:
                self.pool.failed(state, missing.cause)
                causes.append(f"{state.endpoint.label}: {missing.cause}")
                continue
            if causes:
                time.sleep(self.settings.backoff_s * 2 ** (len(causes) - 1))
            return state, key
        return None

    def _failed(self, state: EndpointState, failure: EndpointFailure, causes: list[str]) -> None:
        causes.append(f"{state.endpoint.label}: {failure.cause}")
        if failure.retryable:
            self.pool.failed(state, failure.cause, failure.rest_s)
            logger.warning("remote endpoint %s failed (%s); trying another", state.endpoint.label, failure.cause)
            return
        self.pool.released(state)  # the request was refused as such: another endpoint would refuse it too
        raise GenerationError(f"{state.endpoint.label} refused the request: {failure.cause}") from failure

    def _no_answer(self, causes: list[str]) -> GenerationError:
        if not causes:
            return GenerationError(f"no remote {self.family} endpoint could be tried")
        return GenerationError(f"no remote {self.family} endpoint answered ({'; '.join(causes)})")

    def _result(
        self,
        state: EndpointState,
        request: RemoteRequest,
        answer: RemoteAnswer,
        started: float,
        *,
        first_piece_at: float | None,
    ) -> GenerationResult:
        ended = time.perf_counter()
        prompt_tokens = answer.prompt_tokens
        if prompt_tokens is None:
            prompt_tokens = self._count(request.checked.prompt)
        completion = answer.completion_tokens
        if completion is None:
            completion = self._count(answer.text) if answer.text else 0
        first = first_piece_at or ended
        decode_s = ended - first
        return GenerationResult(
            text=answer.text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion,
            finish_reason=answer.finish_reason,
            stop_sequence=answer.stop_sequence,
            backend=self.backend,
            device=f"remote:{state.endpoint.label}",
            model_id=state.endpoint.model,
            timings=Timings(
                prefill_ms=(first - started) * 1000,
                decode_ms=decode_s * 1000,
                total_ms=(ended - started) * 1000,
                time_to_first_token_ms=(first_piece_at - started) * 1000 if first_piece_at else None,
                decode_tokens_per_second=(completion - 1) / decode_s if completion > 1 and decode_s > 0 else None,
            ),
        )
