"""A routed request in flight: the link between one router call and the engine job answering it (pieces out, cancel
in), and :class:`RoutedStream`, the text of a routed answer as it is generated, for threads and for asyncio."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from mamba_router.errors import RequestCancelledError
from mamba_router.generation.handoff import Finished, Handoff

if TYPE_CHECKING:
    from mamba_router.generation.engine import EngineJob
    from mamba_router.routing.decisions import RouteDecision, RoutedResult


class CallLink:
    """What a router call shares with whoever waits for it: text pieces and the decision out, cancellation in."""

    def __init__(
        self,
        on_piece: Callable[[str], None] | None = None,
        on_decision: Callable[[RouteDecision], None] | None = None,
        pieces: Handoff | None = None,
    ) -> None:
        self.on_piece = on_piece
        self.on_decision = on_decision
        self.pieces = pieces  # where an engine job may put pieces itself (see :meth:`wait`); else ``on_piece``
        self.emitted = False  # a piece went out: a failure now cannot fall back to another model
        self._job: EngineJob | None = None
        self._cancelled = False
        self._lock = threading.Lock()

    def decided(self, decision: RouteDecision) -> None:
        """The route is chosen (before any model runs)."""
        if self.on_decision is not None:
            self.on_decision(decision)

    def check(self) -> None:
        """Raise RequestCancelledError if the call was cancelled."""
        if self._cancelled:
            raise RequestCancelledError("the request was cancelled")

    def piece(self, text: str) -> None:
        """Pass on a piece of the answer."""
        if self.on_piece is not None and text:
            self.emitted = True
            self.on_piece(text)

    def wait(self, job: EngineJob) -> Any:
        """Follow ``job`` to its end (passing its pieces on) and return its result. A job submitted with
        ``pieces=link.pieces`` has put its pieces there itself (no hop through this thread)."""
        with self._lock:
            self._job = job
            if self._cancelled:
                job.cancel()
        if job.pieces_to is not None:
            try:
                return job.result()
            finally:
                self.emitted = self.emitted or job.pieces_sent
        if self.on_piece is not None:
            for text in job:
                self.piece(text)
        return job.result()

    def cancel(self) -> None:
        """Stop the call: its engine job is cancelled and its batch row freed."""
        with self._lock:
            self._cancelled = True
            job = self._job
        if job is not None:
            job.cancel()


class RoutedStream:
    """The text of a routed answer, piece by piece (``for`` or ``async for``); ``decision`` is set once the route is
    chosen and ``result`` (a RoutedResult) once the stream ends. An error of the request is raised at its end.
    ``cancel()`` (or ``aclose`` of an ``async for``) stops it and frees its batch row."""

    def __init__(self, handoff: Handoff | None = None) -> None:
        """``handoff``: where the call's pieces, decision and end are put (default: a hand-off of its own, read by
        iterating this stream; a model process passes one that forwards them to the serving process instead)."""
        self._handoff = handoff if handoff is not None else Handoff()
        self._pending: deque[str] = deque()
        self.link = CallLink(
            on_piece=self._handoff.put, on_decision=lambda d: self._handoff.put(Decided(d)), pieces=self._handoff
        )
        self.decision: RouteDecision | None = None
        self.result: RoutedResult | None = None
        self._finished: Finished | None = None

    # the producer's side
    def finish(self, result: RoutedResult) -> None:
        """The call ended with ``result``."""
        self._handoff.put(Finished(value=result))

    def fail(self, error: BaseException) -> None:
        """The call ended with ``error``."""
        self._handoff.put(Finished(error=error))

    # the consumer's side
    @property
    def handoff(self) -> Handoff:
        """The hand-off this stream reads (its producer puts text pieces, the decision and the end there)."""
        return self._handoff

    def cancel(self) -> None:
        """Stop generating; the answer ends with RequestCancelledError."""
        self.link.cancel()

    def _take(self, item: Any) -> str | None:
        """``item`` and the pieces ready behind it as one piece (see ``Handoff.joined_with_ready``); None when no
        text came."""
        return self._handoff.joined_with_ready(item, self._note) or None

    def _note(self, item: Any) -> None:
        """A decision or the end."""
        if isinstance(item, Decided):
            self.decision = item.decision
        else:
            assert isinstance(item, Finished), f"a stream holds text, a decision and one end, not {type(item).__name__}"
            self._finished = item
            if item.error is None:
                self.result = item.value

    def __iter__(self) -> Iterator[str]:
        while self._pending:
            yield self._pending.popleft()
        while self._finished is None:
            piece = self._take(self._handoff.get())
            if piece is not None:
                yield piece
        self._raise()

    async def __aiter__(self) -> AsyncIterator[str]:
        while self._pending:
            yield self._pending.popleft()
        while self._finished is None:
            piece = self._take(await self._handoff.aget())
            if piece is not None:
                yield piece
        self._raise()

    async def adecision(self) -> RouteDecision:
        """Wait until the route is chosen (pieces that arrive meanwhile are kept for the iteration); an error that
        ends the call before that is raised."""
        while self.decision is None and self._finished is None:
            piece = self._take(await self._handoff.aget())
            if piece is not None:
                self._pending.append(piece)
        if self.decision is None:
            self._raise()
        assert self.decision is not None
        return self.decision

    def collect(self) -> RoutedResult:
        """Read to the end and return the result."""
        for _ in self:
            pass
        assert self.result is not None
        return self.result

    async def acollect(self) -> RoutedResult:
        """``collect`` for asyncio."""
        async for _ in self:
            pass
        assert self.result is not None
        return self.result

    def _raise(self) -> None:
        if self._finished is not None and self._finished.error is not None:
            raise self._finished.error


class Decided:
    """The route was chosen: the stream's decision."""

    def __init__(self, decision: RouteDecision) -> None:
        self.decision = decision
