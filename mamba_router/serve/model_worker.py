"""The model process's side of ``serve.model_process``: the router and its batching engines, answering the server
over a pipe (see :mod:`mamba_router.serve.model_process`).

The engines' pieces do not wait in per-request hand-offs here: each request's hand-off puts its items into one
outbox, and a sender thread ships what the outbox holds as one message (a batching engine hands out a piece for
every running request each step, and wakes the sender once for all of them). A request's decision, its first item,
goes out at once from the router's thread: the server waits for it before it answers, and one thread hand-off
fewer is one wait for the GIL fewer under load. The process has no event loop and
writes no HTTP, so its engine threads never wait for the GIL behind the server's streams.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from multiprocessing.connection import Connection
from typing import Any

from mamba_router.errors import GenerationError, InvalidRequestError
from mamba_router.generation.handoff import Finished, Handoff, Waiter
from mamba_router.routing.router import Router
from mamba_router.routing.streaming import Decided, RoutedStream
from mamba_router.serve.server import use_switch_interval
from mamba_router.serve.wire import WireError

logger = logging.getLogger(__name__)

CALLS = frozenset({"route", "read_log", "preload", "live_stats", "close"})  # router methods the server may call


class _Outbox:
    """Items of every request, in order, waiting for the sender; ``call_soon_threadsafe`` makes it a hand-off's
    waker (see :class:`~mamba_router.generation.handoff.Waker`): a step's items wake the sender once."""

    def __init__(self) -> None:
        self._items: list[tuple[int, Any]] = []
        self._cond = threading.Condition()
        self._closed = False

    def add(self, stream_id: int, item: Any) -> None:
        with self._cond:
            self._items.append((stream_id, item))

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> None:
        with self._cond:
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def take(self) -> list[tuple[int, Any]] | None:
        """Everything there (waiting for something); None once closed and empty."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._closed)
            items, self._items = self._items, []
            return items or None


class _ForwardingHandoff(Handoff):
    """One request's hand-off: its items go to the outbox, tagged with the request's id; its decision, the first
    item and the one the server waits for before it answers, goes out at once from the router's thread (nothing of
    the request can be in the outbox before it), without waiting for the sender thread."""

    def __init__(self, stream_id: int, outbox: _Outbox, send: Callable[[int, Any], None]) -> None:
        super().__init__()
        self._stream_id = stream_id
        self._outbox = outbox
        self._send = send
        self._waiter: list[Waiter] = [(outbox, None)]
        self.ended = False  # its end went to the outbox

    def _append(self, item: Any) -> list[Waiter]:
        if isinstance(item, Decided):
            self._send(self._stream_id, item)
            return []
        self.ended = self.ended or isinstance(item, Finished)
        self._outbox.add(self._stream_id, item)
        return self._waiter


class ModelWorker:
    """A router serving one server over ``connection``."""

    def __init__(self, router: Router, connection: Connection) -> None:
        self.router = router
        self.connection = connection
        self.outbox = _Outbox()
        self.streams: dict[int, RoutedStream] = {}
        self._send_lock = threading.Lock()
        self._calls = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mamba-router-call")
        self._sender = threading.Thread(target=self._send_items, name="mamba-router-sender", daemon=True)

    def run(self) -> None:
        """Answer messages until the server closes the router or goes away."""
        self._sender.start()
        try:
            while True:
                try:
                    message = self.connection.recv()
                except (EOFError, OSError):  # the server is gone: finish what runs, keep the log whole
                    self.router.close(drain=False)
                    return
                if message[0] == "start":
                    self._start(*message[1:])
                elif message[0] == "cancel":
                    stream = self.streams.get(message[1])
                    if stream is not None:
                        stream.cancel()
                elif message[0] == "call":
                    if self._call(*message[1:]):
                        return
        finally:
            self.outbox.close()
            if self._sender.is_alive():
                self._sender.join(timeout=30)
            self._calls.shutdown(wait=False)

    def _start(self, stream_id: int, query: str, context: Any, options: dict[str, Any]) -> None:
        handoff = _ForwardingHandoff(stream_id, self.outbox, self._send_item)
        try:
            self.streams[stream_id] = self.router.stream(query, context, into=handoff, **options)
        except Exception as exc:  # refused at once (busy, closed, a bad option): the request's end
            handoff.put(Finished(error=exc))
        if handoff.ended:  # it ended before it was noted here (the sender forgets a stream when its end goes out)
            self.streams.pop(stream_id, None)

    def _call(self, call_id: int, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Run a router call (in a worker thread: a preload takes minutes); True after ``close``."""
        if name not in CALLS:
            self._reply(call_id, lambda: _refuse(name))
            return False
        if name == "close":  # here, so no message is taken after it; answered after the last items went out
            reply = self._run(call_id, lambda: self.router.close(*args, **kwargs))
            self.outbox.close()
            self._sender.join()
            self._send(reply)
            return True
        self._calls.submit(self._reply, call_id, lambda: getattr(self.router, name)(*args, **kwargs))
        return False

    def _reply(self, call_id: int, call: Callable[[], Any]) -> None:
        # an answer that does not pickle: the caller gets the error instead of waiting
        self._send_else(self._run(call_id, call), lambda error: ("reply", call_id, False, WireError.of(error)))

    @staticmethod
    def _run(call_id: int, call: Callable[[], Any]) -> tuple[Any, ...]:
        try:
            return ("reply", call_id, True, call())
        except Exception as exc:
            return ("reply", call_id, False, WireError.of(exc))

    def _send_items(self) -> None:
        while (items := self.outbox.take()) is not None:
            wire = []
            for stream_id, item in items:
                if isinstance(item, Finished):
                    self.streams.pop(stream_id, None)
                    if item.error is not None:
                        item = Finished(error=WireError.of(item.error))  # type: ignore[arg-type]  # rebuilt there
                wire.append((stream_id, item))
            try:
                self._send(("items", wire))
            except Exception as exc:  # something does not pickle: each item alone, an unsendable one as its error
                logger.error(
                    "a message to the server failed (%s: %s); sending its items one by one", type(exc).__name__, exc
                )
                for stream_id, item in wire:
                    self._send_item(stream_id, item)

    def _send_item(self, stream_id: int, item: Any) -> None:
        """Send one item of a stream as a message of its own, from the calling thread; an item that does not pickle
        ends the stream with that error instead."""
        self._send_else(("items", [(stream_id, item)]), partial(_ending, stream_id))

    def _send_else(self, message: tuple[Any, ...], instead: Callable[[GenerationError], tuple[Any, ...]]) -> None:
        """Send ``message``; if it does not pickle, send what ``instead`` makes of the error."""
        try:
            self._send(message)
        except Exception as exc:
            self._send(instead(_unsendable(exc)))

    def _send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            try:
                self.connection.send(message)
            except (OSError, ValueError):  # the server is gone
                logger.warning("the server's end of the pipe is closed; dropping a %s message", message[0])


def _refuse(name: str) -> Any:
    raise InvalidRequestError(f"the model process answers {sorted(CALLS)}, not {name!r}")


def _ending(stream_id: int, error: GenerationError) -> tuple[Any, ...]:
    """An items message that ends ``stream_id``'s request with ``error`` (rebuilt on the server's side)."""
    return ("items", [(stream_id, Finished(error=WireError.of(error)))])  # type: ignore[arg-type]


def _unsendable(error: BaseException) -> GenerationError:
    return GenerationError(f"an answer could not be sent to the server: {type(error).__name__}: {error}")


def serve_router(connection: Connection, config: str | None, log_level: str) -> None:
    """The model process's entry: build the router of ``config`` (with the environment), tell the server what it
    serves, then answer it until it closes the router."""
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     model process: %(name)s: %(message)s")
    # The server decides when this process ends (it drains its requests, then closes the router and the pipe); a
    # signal sent to the whole group (Ctrl+C in a terminal, systemd stopping the service) must not cut them short.
    # If the server itself dies, the pipe's end closes and this process stops.
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.SIG_IGN)
    try:
        router = Router.from_config(config)
    except Exception as exc:
        connection.send(("failed", WireError.of(exc)))
        return
    use_switch_interval(router.config.serve.switch_interval_ms)
    served = {
        "mamba": router.mamba.model if router.mamba is not None else None,
        "transformer": router.transformer.model,
    }
    connection.send(("ready", router.config, served))
    ModelWorker(router, connection).run()
