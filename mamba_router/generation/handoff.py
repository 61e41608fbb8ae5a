"""Hand-off from a producing thread (a batching engine, a router call) to one consumer that waits either in a thread
or in an asyncio event loop, without a thread per waiting coroutine."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol


class Waker(Protocol):
    """Where a waiting consumer is woken from the producer's thread: an asyncio event loop, or anything that runs a
    callback soon (a hand-off that forwards its items elsewhere wakes its forwarder)."""

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> Any: ...


Waiter = tuple[Waker, asyncio.Event | None]  # None: the waker needs no event (it forwards the items)


class Finished:
    """The last item of a job's outbox: the result, or the error."""

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error


class Handoff:
    """Items passed from a producer thread to one consumer, who waits in a thread or in an event loop."""

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._cond = threading.Condition()
        self._waiters: list[Waiter] = []

    def put(self, item: Any) -> None:
        put_many([(self, item)])

    def _append(self, item: Any) -> list[Waiter]:
        """Add ``item``, wake thread waiters; return the asyncio waiters to wake."""
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()
            return list(self._waiters)

    def take_ready(self) -> list[Any]:
        """Every item there now, without waiting (possibly none)."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            return items

    def joined_with_ready(self, first: Any, note: Callable[[Any], None]) -> str:
        """``first`` and the items ready behind it: the text pieces as one piece (a consumer that falls behind gets
        fewer, longer pieces of the same text); every other item (an end, a decision) goes to ``note``."""
        pieces = []
        for item in (first, *self.take_ready()):
            if isinstance(item, str):
                pieces.append(item)
            else:
                note(item)
        return "".join(pieces)

    def get(self, timeout: float | None = None) -> Any:
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._items), timeout):
                raise TimeoutError("no result yet")
            return self._items.popleft()

    async def aget(self) -> Any:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        waiter: Waiter = (loop, event)
        while True:
            with self._cond:
                if self._items:
                    return self._items.popleft()
                self._waiters.append(waiter)
            try:
                await event.wait()
            finally:
                with self._cond:
                    self._waiters.remove(waiter)
            event.clear()


def put_many(items: Iterable[tuple[Handoff, Any]]) -> None:
    """Put each item into its hand-off, waking each waiting event loop once for all of them (a batching engine hands
    out one piece per running request every step; one wake-up per piece would keep the loop busy)."""
    wake: dict[Waker, list[asyncio.Event | None]] = {}
    for handoff, item in items:
        for loop, event in handoff._append(item):
            wake.setdefault(loop, []).append(event)
    for loop, events in wake.items():
        try:
            loop.call_soon_threadsafe(_set_all, events)
        except RuntimeError:  # the waiter's loop is closed: nobody is waiting there any more
            pass


def _set_all(events: list[asyncio.Event | None]) -> None:
    for event in events:
        if event is not None:
            event.set()
