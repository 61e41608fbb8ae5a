"""Hand-off from a producing thread (a batching engine, a router call) to one consumer that waits either in a thread
or in an asyncio event loop, without a thread per waiting coroutine."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any


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
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def put(self, item: Any) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()
            waiters = list(self._waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the waiter's loop is closed: nobody is waiting there any more
                pass

    def get(self, timeout: float | None = None) -> Any:
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._items), timeout):
                raise TimeoutError("no result yet")
            return self._items.popleft()

    async def aget(self) -> Any:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        waiter = (loop, event)
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
