"""``serve.model_process``: the models run in a process of their own, and the server's process keeps HTTP.

In one process, the event loop that writes every stream's server-sent events and the batching engine's thread take
turns holding Python's GIL: with many streams the loop's share grows with each step's pieces, and the engine's steps
wait for it (measured on the H100, 130M Mamba-2, 64 streams: 2.9 ms a step in the server against about 1.2 for the
engine alone). Here the engine's process does no HTTP: a step's pieces for every request cross a pipe as one
message, and the server's loop hands them to the streams.

:class:`ModelProcessRouter` is the server's side: the calls the app makes of a router (:class:`~mamba_router.serve.
served_router.ServedRouter`), answered by :func:`~mamba_router.serve.model_worker.serve_router` in a spawned process.
Errors keep their class (and so their HTTP status); a model process that dies ends every request in flight with
ModelProcessError, and the server answers 503 from then on.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from mamba_router.generation.handoff import Finished, Handoff, put_many
from mamba_router.routing.decisions import RouteDecision
from mamba_router.routing.live_stats import LiveStats
from mamba_router.routing.streaming import RoutedStream
from mamba_router.serve.errors import ModelProcessError
from mamba_router.serve.model_worker import serve_router
from mamba_router.serve.wire import WireError
from mamba_router.settings.schema import RouterConfig

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 600.0  # building the router (backend detection, imports); models load later, in preload
CALL_TIMEOUT_S = 120.0  # a quick call (a dry-run route, the log, the gauges)


class _ServedModel:
    def __init__(self, model: str) -> None:
        self.model = model


class _ProcessStream(RoutedStream):
    """A routed answer made in the model process; cancelling it cancels the request there."""

    def __init__(self, owner: ModelProcessRouter, stream_id: int) -> None:
        super().__init__()
        self._owner = owner
        self._stream_id = stream_id

    def cancel(self) -> None:
        self._owner._cancel(self._stream_id)


class ModelProcessRouter:
    """The router of a model process started from ``config`` (and this process's environment)."""

    def __init__(self, config: str | Path | None = None, *, log_level: str = "info") -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads (and CUDA) running
        here, there = context.Pipe(duplex=True)
        self._process = context.Process(
            target=serve_router,
            args=(there, None if config is None else str(config), log_level),
            name="mamba-router-models",
        )
        self._process.start()
        there.close()
        self._connection: Connection = here
        self._config, served = self._wait_ready()
        self._mamba = _ServedModel(served["mamba"]) if served["mamba"] is not None else None
        self._transformer = _ServedModel(str(served["transformer"]))
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._streams: dict[int, _ProcessStream] = {}
        self._calls: dict[int, Future[Any]] = {}
        self._ids = itertools.count()
        self._gone: str | None = None  # why the model process cannot answer any more
        self._closing = False
        self._receiver = threading.Thread(target=self._receive, name="mamba-router-receiver", daemon=True)
        self._receiver.start()

    def _wait_ready(self) -> tuple[RouterConfig, dict[str, str | None]]:
        if not self._connection.poll(START_TIMEOUT_S):
            self._process.kill()
            raise ModelProcessError(f"the model process did not start within {START_TIMEOUT_S:.0f} s")
        try:
            message = self._connection.recv()
        except EOFError:
            self._process.join(5)
            raise ModelProcessError(
                f"the model process exited while starting (exit code {self._process.exitcode}); see its log"
            ) from None
        if message[0] == "failed":
            self._process.join(30)
            raise message[1].rebuilt()
        return message[1], message[2]

    @property
    def pid(self) -> int | None:
        """The model process's id."""
        return self._process.pid

    # -- what the app reads ----------------------------------------------------------------------------------------

    @property
    def config(self) -> RouterConfig:
        return self._config

    @property
    def mamba(self) -> _ServedModel | None:
        return self._mamba

    @property
    def transformer(self) -> _ServedModel:
        return self._transformer

    @property
    def unavailable_reason(self) -> str | None:
        """Why the model process cannot answer (it ended); None while it can."""
        return self._gone

    def astream(self, query: str, context: str | Sequence[str] | None = None, **options: Any) -> RoutedStream:
        """The answer as the model process generates it (as ``Router.astream``)."""
        stream_id = next(self._ids)
        stream = _ProcessStream(self, stream_id)
        with self._lock:
            if self._gone is not None:
                raise ModelProcessError(self._gone)
            self._streams[stream_id] = stream
        self._send(("start", stream_id, query, _plain_context(context), options))
        return stream

    stream = astream

    def route(
        self, query: str, context: str | Sequence[str] | None = None, *, pages: int | None = None
    ) -> RouteDecision:
        decision: RouteDecision = self._call("route", (query, _plain_context(context)), {"pages": pages})
        return decision

    def read_log(self, limit: int | None = 20) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = self._call("read_log", (limit,))
        return records

    def preload(self) -> dict[str, str]:
        status: dict[str, str] = self._call("preload", wait_s=None)  # loading and warming up take minutes
        return status

    def live_stats(self) -> LiveStats:
        stats: LiveStats = self._call("live_stats")
        return stats

    def close(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Close the router in the model process (with ``drain``, running requests finish first, up to ``timeout``
        seconds an engine), then end it; every answer's pieces and end have reached their streams when this returns."""
        self._closing = True
        try:
            if self._gone is None:
                self._call("close", (), {"drain": drain, "timeout": timeout}, wait_s=None)
        finally:
            self._process.join(30)
            if self._process.is_alive():
                logger.warning("the model process did not exit after closing; terminating it")
                self._process.terminate()
                self._process.join(10)
            self._receiver.join(10)  # it reads to the end of the pipe: the last items, then EOF
            self._connection.close()

    # -- the pipe --------------------------------------------------------------------------------------------------

    def _call(
        self,
        name: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        wait_s: float | None = CALL_TIMEOUT_S,
    ) -> Any:
        """``router.name(*args, **kwargs)`` in the model process; its answer within ``wait_s`` seconds."""
        call_id = next(self._ids)
        answer: Future[Any] = Future()
        with self._lock:
            if self._gone is not None:
                raise ModelProcessError(self._gone)
            self._calls[call_id] = answer
        self._send(("call", call_id, name, args, kwargs or {}))
        return answer.result(timeout=wait_s)

    def _cancel(self, stream_id: int) -> None:
        if self._gone is None:
            self._send(("cancel", stream_id))

    def _send(self, message: tuple[Any, ...]) -> None:
        try:
            with self._send_lock:
                self._connection.send(message)
        except (OSError, ValueError) as exc:
            self._lost(f"the model process is gone ({type(exc).__name__})")
            raise ModelProcessError(self._gone or "the model process is gone") from None

    def _receive(self) -> None:
        while True:
            try:
                message = self._connection.recv()
            except (EOFError, OSError):
                code = self._process.exitcode
                self._lost(
                    "the model process has ended" + (f" (exit code {code})" if code else ""), quiet=self._closing
                )
                return
            except Exception as exc:  # a message that does not unpickle here: its requests end at their time limit
                logger.error("a message from the model process could not be read: %s: %s", type(exc).__name__, exc)
                continue
            if message[0] == "items":
                self._deliver(message[1])
            elif message[0] == "reply":
                _, call_id, ok, value = message
                with self._lock:
                    answer = self._calls.pop(call_id, None)
                if answer is not None and ok:
                    answer.set_result(value)
                elif answer is not None:
                    answer.set_exception(value.rebuilt())

    def _deliver(self, items: list[tuple[int, Any]]) -> None:
        """Put each item into its stream's hand-off: one wake-up of the event loop for the whole message."""
        routed: list[tuple[Handoff, Any]] = []
        with self._lock:
            for stream_id, item in items:
                stream = self._streams.get(stream_id)
                if stream is None:
                    continue
                if isinstance(item, Finished):
                    del self._streams[stream_id]
                    if isinstance(item.error, WireError):
                        item = Finished(error=item.error.rebuilt())
                routed.append((stream.handoff, item))
        put_many(routed)

    def _lost(self, why: str, *, quiet: bool = False) -> None:
        """The model process cannot answer: every request and call in flight ends with ModelProcessError."""
        with self._lock:
            if self._gone is not None:
                return
            self._gone = why
            streams, self._streams = list(self._streams.values()), {}
            calls, self._calls = list(self._calls.values()), {}
        if not quiet or streams or calls:
            logger.error("%s; %d requests in flight end with ModelProcessError", why, len(streams))
        put_many([(s.handoff, Finished(error=ModelProcessError(why))) for s in streams])
        for answer in calls:
            answer.set_exception(ModelProcessError(why))


def _plain_context(context: str | Sequence[str] | None) -> str | list[str] | None:
    """A context the pipe takes: a list, whatever sequence it was (the router checks what is in it)."""
    if context is None or isinstance(context, str):
        return context
    return list(context)
