"""The batching engine: one thread per loaded model decodes every running request as one batch.

Requests join the running batch between decoding steps and leave it when they end (continuous batching). Each
pass of the engine's loop

1. drops waiting and running requests that were cancelled or ran past their time limit (their rows are freed);
2. reads waiting prompts (or documents) up to a token budget, so a long prompt is read over several passes
   instead of stalling the running sequences; a prompt read to its end picks its first token and joins the batch.
   Waiting prompts that fit the budget together (rows x the longest) are read in one right-padded pass where the
   model can (Mamba stacks without attention), as if each were read alone: on a GPU a short read costs its kernel
   launches whatever its length, so a burst of new prompts costs one read instead of one each.
   A short prompt (a question about a cached document) joins unread where the batch allows it
   (``SlotBatch.prompt_step_limit``): its tokens are fed through the batch's next steps, one per step, which costs
   the running rows nothing, and its first token comes from the step that fed its last one;
3. runs one decoding step for all running rows, picks each row's next token with that request's own sampling
   settings and seeded random stream, turns tokens into text (stop strings per request) and ends finished sequences.

A request's result is token for token what the model's own ``generate`` gives for it alone (the rows of a batch do
not mix; fp32 exactly, lower precisions within rounding). Callers wait on an :class:`EngineJob`: blocking
(``result()``, iteration over text pieces) or from asyncio (``await aresult()``, ``async for`` over
``astream()``), so threads and event loops share one engine. The engine is below the router (which sends every
request through it, sync or async) and the HTTP server, which is why it lives in ``generation`` rather than
``serve``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from mamba_router.backends.boundary import backend_boundary
from mamba_router.errors import (
    ConfigurationError,
    EngineClosedError,
    MambaRouterError,
    RequestCancelledError,
    RequestTimeoutError,
    ServerBusyError,
)
from mamba_router.generation.batching import RowPrefill, SlotBatch, SupportsBatching, SupportsReadingTogether
from mamba_router.generation.decoding import DecodedSequence
from mamba_router.generation.handoff import Finished, Handoff, put_many
from mamba_router.generation.loaded_model import PreparedRead
from mamba_router.generation.results import GenerationResult, Timings
from mamba_router.generation.sampling import GREEDY_ROW, RowSampling, draw_key, sample_rows, seed_for, stream_base
from mamba_router.generation.text_assembly import TextAssembler, fast_detokenizer

if TYPE_CHECKING:
    from mamba_router.generation.document_state import DocumentState
    from mamba_router.generation.loaded_model import PreparedPrompt, TokenizerModel

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_QUEUE = 256
MAX_READ_ROWS = 32  # prompts read in one padded pass at most
WARM_UP_READ_TOKENS = 48  # the length of the dummy prompts a warm-up reads together
# where a pass of the engine's loop spends its time: taking requests in (reads included), queueing a step, waiting
# for the device's tokens, turning tokens into text and ending requests, handing pieces to their consumers
PASS_PHASES = ("admit", "launch", "wait_for_device", "collect", "choose", "hand_out")


class EngineJob:
    """One request in an engine: wait for its text pieces and result from a thread or from asyncio.

    Pieces are consumed once, by one consumer: iterate (or ``astream``) for pieces then read ``result``, or call
    ``result()`` / ``aresult()`` alone (pieces are skipped). Pieces that are ready together come as one piece.
    ``cancel()`` stops it and frees its row.
    """

    def __init__(
        self,
        kind: str,
        ids: torch.Tensor,
        start: DocumentState | None,
        timeout_s: float | None,
        pieces: Handoff | None = None,
    ) -> None:
        self.kind = kind
        self.ids = ids
        self.start = start
        self.prefill: RowPrefill | None = None  # made on the engine thread, which owns every device buffer
        self.submitted = time.perf_counter()
        self.admitted: float | None = None  # when the engine took it from the queue (its read or its row began)
        self.deadline = None if timeout_s is None else self.submitted + timeout_s
        self.timeout_s = timeout_s
        self.cancelled = False
        self.pieces_to = pieces  # where text pieces go, if not to this job's own consumer
        self.pieces_sent = False  # a piece went to ``pieces_to``
        self._outbox = Handoff()
        self._done: Finished | None = None

    def cancel(self) -> None:
        """Stop the request (a client went away); its row is freed on the engine's next pass."""
        self.cancelled = True

    @property
    def done(self) -> bool:
        """True once the result or error has been taken by the consumer."""
        return self._done is not None

    def __iter__(self) -> Iterator[str]:
        """Text pieces as they are generated (blocking); the error, if the request failed, is raised at its end."""
        while self._done is None:
            piece = self._outbox.joined_with_ready(self._outbox.get(), self._note_end)
            if piece:
                yield piece
        if self._done.error is not None:
            raise self._done.error

    async def astream(self) -> AsyncIterator[str]:
        """Text pieces as they are generated, for ``async for``; the error is raised at its end."""
        while self._done is None:
            piece = self._outbox.joined_with_ready(await self._outbox.aget(), self._note_end)
            if piece:
                yield piece
        if self._done.error is not None:
            raise self._done.error

    def _note_end(self, item: Any) -> None:
        assert isinstance(item, Finished), f"an outbox holds text pieces and one end, not {type(item).__name__}"
        self._done = item

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the end (pieces not read yet are skipped) and return the result, or raise the request's error."""
        limit = None if timeout is None else time.perf_counter() + timeout
        while self._done is None:
            item = self._outbox.get(None if limit is None else max(0.0, limit - time.perf_counter()))
            if isinstance(item, Finished):
                self._done = item
        if self._done.error is not None:
            raise self._done.error
        return self._done.value

    async def aresult(self) -> Any:
        """``result()`` for asyncio; cancelling the awaiting task cancels the request."""
        try:
            while self._done is None:
                item = await self._outbox.aget()
                if isinstance(item, Finished):
                    self._done = item
        except asyncio.CancelledError:
            self.cancel()
            raise
        if self._done.error is not None:
            raise self._done.error
        return self._done.value


class _GenerateJob(EngineJob):
    def __init__(self, prepared: PreparedPrompt, timeout_s: float | None, pieces: Handoff | None) -> None:
        super().__init__("generate", prepared.ids, prepared.start, timeout_s, pieces)
        self.prepared = prepared


class _ReadJob(EngineJob):
    def __init__(self, prepared: PreparedRead, timeout_s: float | None) -> None:
        super().__init__("read", prepared.ids, None, timeout_s)
        self.prepared = prepared


class _WarmUpJob(EngineJob):
    def __init__(self) -> None:
        super().__init__("warm-up", torch.empty(0, dtype=torch.long), None, None)


@dataclass(eq=False)
class _Running:
    """A sequence in the batch: its job, text and timings."""

    job: _GenerateJob
    sequence: DecodedSequence
    stream: int | None  # stream_base of its seed (the request's, or one drawn for it); None when greedy
    started: float
    prefill_done: float | None  # None while its prompt is being stepped in
    prompt_left: deque[int] = field(default_factory=deque)  # prompt tokens still to feed through the batch's steps
    first_piece_at: float | None = None
    left: bool = False  # out of the batch (ended, cancelled): tokens still in flight for it are dropped
    draws: int = 0  # tokens chosen for it so far

    def next_choice(self) -> RowSampling:
        """How its next token is chosen (one more draw): its sampling settings and the key of its next draw, or
        GREEDY_ROW for a greedy request."""
        request = self.job.prepared.request
        draw, self.draws = self.draws, self.draws + 1
        if self.stream is None:
            return GREEDY_ROW
        return RowSampling(request.temperature, request.top_k, request.top_p, draw_key(self.stream, draw))

    def take(self, token: int, eos: frozenset[int]) -> str:
        """Consume the chosen token: return its text, and end the sequence on EOS, a stop string or the length."""
        piece = self.sequence.consume(token, eos)
        if piece:
            self.first_piece_at = self.first_piece_at or time.perf_counter()
        if self.sequence.finish is None and len(self.sequence.token_ids) >= self.job.prepared.request.max_new_tokens:
            self.sequence.finish = "length"
        return piece


@dataclass
class _Launched:
    """A decoding step queued on the device whose tokens the host has not read yet. Its tokens are chosen (from
    ``logits``) after the step before it is collected, in the rows' order then: ``rows`` and ``emits`` follow."""

    rows: list[_Running]  # the batch's rows, in row order (when launched; when its tokens were chosen)
    emits: list[bool]  # per row: False when the step fed a prompt token that is not the prompt's last
    logits: torch.Tensor | None  # the step's output until its tokens are chosen
    started: float
    tokens: torch.Tensor | None = None  # the chosen tokens, on the host once ``ready`` has happened
    ready: torch.cuda.Event | None = None  # None: ``tokens`` is already there (the CPU)


@dataclass
class EngineStats:
    """Counters of one engine (read by the server's metrics)."""

    submitted: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    timed_out: int = 0
    rejected: int = 0
    prompt_tokens: int = 0
    prompts_stepped_in: int = 0  # prompts fed through the batch's steps instead of read
    reads_together: int = 0  # passes that read several waiting prompts at once
    prompts_read_together: int = 0  # prompts read in those passes
    generated_tokens: int = 0
    steps: int = 0
    batch_rows_stepped: int = 0  # sum over steps of the rows stepped (mean batch = this / steps)
    largest_batch: int = 0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=256))  # seconds per recent step
    passes: int = 0  # passes of the engine's loop that had work
    # seconds the engine's thread spent in each phase of its passes (PASS_PHASES), the GIL waits inside them included
    pass_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PASS_PHASES, 0.0))

    def note(self, phase: str, since: float) -> float:
        """Add the time from ``since`` to now to ``phase``; returns now."""
        now = time.perf_counter()
        self.pass_seconds[phase] += now - since
        return now


class BatchingEngine:
    """Continuous batching for one loaded model (see the module docstring).

    ``max_batch`` rows decode at once; at most ``max_queue`` requests wait (more: :class:`ServerBusyError`);
    ``prefill_budget`` prompt tokens are read per pass while others decode (default: the model's own).
    ``run_ahead`` queues each step before the previous step's tokens are turned into text (default: on a CUDA
    device). ``stepped_prompt_tokens``: prompts up to this long join the batch unread and are fed through its steps
    (default: the batch's own limit; 0: every prompt is read first; a batch that cannot step prompts in, a
    Transformer's, reads them whatever this says). ``read_together``: waiting prompts that fit one pass are read in
    one padded pass where the model can (False: one read each, for comparison).
    """

    def __init__(
        self,
        model: TokenizerModel,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_queue: int = DEFAULT_MAX_QUEUE,
        prefill_budget: int | None = None,
        run_ahead: bool | None = None,
        stepped_prompt_tokens: int | None = None,
        read_together: bool = True,
    ) -> None:
        if not isinstance(model, SupportsBatching):
            raise ConfigurationError(f"{type(model).__name__} cannot decode a batch that requests join and leave")
        prefill_budget = model.prefill_budget if prefill_budget is None else prefill_budget
        for name, value in (("max_batch", max_batch), ("max_queue", max_queue), ("prefill_budget", prefill_budget)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
        steps = stepped_prompt_tokens
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
            raise ConfigurationError(f"stepped_prompt_tokens must be None or an int >= 0, got {steps!r}")
        self.model = model
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.prefill_budget = prefill_budget
        self.stats = EngineStats()
        self._eos = frozenset(model.eos_ids)
        self._detokenizer = fast_detokenizer(model.tokenizer)
        self._device = torch.device(model.device)
        self._batch: SlotBatch = model.slot_batch(max_batch)
        self._stepped_prompt_tokens = stepped_prompt_tokens
        # waiting prompts that fit one pass are read together (one launch of the prompt kernels for all of them)
        self._reads_together = (
            read_together and isinstance(model, SupportsReadingTogether) and model.reads_rows_together
        )
        self._rows: list[_Running] = []
        # each row's next input token stays on the device: a step's chosen tokens feed the next step directly
        self._next = torch.zeros(max_batch, dtype=torch.long, device=self._device)
        # run-ahead: the next step is queued before the host turns the last step's tokens into text (the default on
        # a GPU, where the two overlap; on the CPU it would only delay each piece by a step)
        self._run_ahead = self._device.type == "cuda" if run_ahead is None else run_ahead
        pinned = self._device.type == "cuda"
        self._host_tokens = [torch.zeros(max_batch, dtype=torch.long, pin_memory=pinned) for _ in range(2)]
        self._launched: _Launched | None = None
        self._last_collect: float | None = None
        self._outgoing: list[tuple[Handoff, Any]] = []  # pieces and ends of this pass, handed out at its end
        self._waiting: deque[EngineJob] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._drain = True
        self._thread = threading.Thread(target=self._loop, name=f"mamba-router-engine:{model.model_id}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"BatchingEngine({self.model!r}, running={self.running}, waiting={self.waiting})"

    @property
    def running(self) -> int:
        """Sequences in the batch now."""
        return len(self._rows)

    @property
    def waiting(self) -> int:
        """Requests waiting to be read."""
        return len(self._waiting)

    @property
    def run_ahead(self) -> bool:
        """True when each step is queued before the previous step's tokens are read."""
        return self._run_ahead

    @property
    def stepped_prompt_tokens(self) -> int:
        """Prompts up to this many tokens join the batch unread and are fed through its steps (0: none)."""
        limit = self._batch.prompt_step_limit
        return limit if self._stepped_prompt_tokens is None or limit == 0 else self._stepped_prompt_tokens

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closing

    # -- submitting ---------------------------------------------------------------------------------------------

    def submit(
        self, prepared: PreparedPrompt, *, timeout_s: float | None = None, pieces: Handoff | None = None
    ) -> EngineJob:
        """Queue a prepared request (``model.prepare_generate`` / ``prepare_ask``); raises ServerBusyError when
        ``max_queue`` requests are waiting, EngineClosedError after :meth:`close`. With ``pieces``, the text pieces
        go straight into that hand-off (a stream's consumer, woken with the other streams once per step) and the
        job itself gives only the result."""
        return self._enqueue(_GenerateJob(prepared, timeout_s, pieces))

    def submit_many(
        self, prepared: Sequence[PreparedPrompt | PreparedRead], *, timeout_s: float | None = None
    ) -> list[EngineJob]:
        """Queue several prepared requests and document reads at once: the engine sees them together, so prompts
        that fit one pass are read together. All or none: ServerBusyError when the queue has no room for all."""
        return self._enqueue_all(
            [
                _ReadJob(p, timeout_s) if isinstance(p, PreparedRead) else _GenerateJob(p, timeout_s, None)
                for p in prepared
            ]
        )

    def submit_read(self, prepared: PreparedRead, *, timeout_s: float | None = None) -> EngineJob:
        """Queue a document read (``model.prepare_read``); the job's result is the :class:`DocumentState`."""
        return self._enqueue(_ReadJob(prepared, timeout_s))

    def warm_up(self, timeout: float | None = None) -> float:
        """Make on the engine thread what the first step at each batch size would make (the CUDA graphs of the
        batch-size ladder on real-mamba), so that no request waits for a capture; return the seconds it took."""
        return float(self._enqueue(_WarmUpJob(), counted=False).result(timeout))

    def _enqueue(self, job: EngineJob, *, counted: bool = True) -> EngineJob:
        """Queue ``job``; ``counted``: a request (in the stats), not the engine's own work."""
        return self._enqueue_all([job], counted=counted)[0]

    def _enqueue_all(self, jobs: list[EngineJob], *, counted: bool = True) -> list[EngineJob]:
        with self._cond:
            if self._closing:
                raise EngineClosedError(f"the engine of {self.model.model_id} is shut down; no new request is taken")
            if len(self._waiting) + len(jobs) > self.max_queue:
                self.stats.rejected += len(jobs)
                asked = f" and {len(jobs)} more were submitted together" if len(jobs) > 1 else ""
                raise ServerBusyError(
                    f"{len(self._waiting)} requests are already waiting for {self.model.model_id}{asked} (the limit "
                    f"is {self.max_queue}); retry shortly",
                    retry_after_s=self._retry_after(),
                )
            self.stats.submitted += len(jobs) if counted else 0
            self._waiting.extend(jobs)
            self._cond.notify_all()
        return jobs

    def _retry_after(self) -> float:
        """A guess of when a queue slot frees: the recent step time times the tokens ahead, 1 s at least."""
        recent = self.stats.recent
        step = sum(recent) / len(recent) if recent else 0.05
        return max(1.0, round(step * 64, 1))

    def close(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Stop taking requests; with ``drain`` finish the running and waiting ones, else fail them with
        EngineClosedError. Waits up to ``timeout`` seconds for the engine thread."""
        with self._cond:
            self._closing = True
            self._drain = drain
            self._cond.notify_all()
        self._thread.join(timeout)

    # -- the loop (engine thread) -------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(self._has_work, timeout=0.5)
                if self._closing and not self._drain:
                    self._fail_everything(EngineClosedError("the engine was shut down before this request ended"))
                if self._closing and not self._has_work():
                    self._hand_out()
                    return
                if not self._has_work():
                    continue
            try:
                with self.model.exclusive():
                    started = time.perf_counter()
                    self._drop_stopped()
                    self._admit()
                    self.stats.note("admit", started)
                    self._advance()
            except Exception:  # never leave the loop: a failure fails its requests, not the engine
                logger.exception("the batching engine of %s failed a pass", self.model.model_id)
            finally:
                started = time.perf_counter()
                self._hand_out()
                self.stats.note("hand_out", started)
                self.stats.passes += 1

    def _has_work(self) -> bool:
        return bool(self._waiting or self._rows or self._launched is not None)

    def _hand_out(self) -> None:
        """Give this pass's pieces and ends to their consumers, waking each event loop once."""
        outgoing, self._outgoing = self._outgoing, []
        put_many(outgoing)

    def _send(self, job: EngineJob, item: Any) -> None:
        if job.pieces_to is not None and not isinstance(item, Finished):
            job.pieces_sent = True
            self._outgoing.append((job.pieces_to, item))
        else:
            self._outgoing.append((job._outbox, item))

    def _boundary(self) -> Any:
        return backend_boundary(self.model.backend, self.model.model_id, "generate", device=self.model.device)

    def _admit(self) -> None:
        budget = self.prefill_budget if self._rows else max(self.prefill_budget, 1 << 30)
        while budget > 0:
            with self._cond:
                if not self._waiting:
                    return
                job = self._waiting[0]
            if isinstance(job, _GenerateJob) and len(self._rows) >= self.max_batch:
                return
            if isinstance(job, _WarmUpJob):
                self._pop_waiting(job)
                self._warm_up(job)
                continue
            stopped = _stop_error(job)
            if stopped is not None:
                self._pop_waiting(job)
                self._fail(job, stopped)
                continue
            if isinstance(job, _GenerateJob) and job.prefill is None and self._steps_in(job):
                self._pop_waiting(job)
                self._join_unread(job)
                continue
            if job.prefill is None and self._reads_together:
                group = self._read_group(budget)
                if len(group) > 1:
                    budget -= self._read_together(group)
                    continue
            try:
                with self._boundary():
                    if job.prefill is None:
                        job.prefill = self._begin_prefill(job)
                    before = job.prefill.tokens_left
                    logits = job.prefill.read(budget)
            except MambaRouterError as exc:
                self._pop_waiting(job)
                self._fail(job, exc)
                continue
            budget -= max(1, before - job.prefill.tokens_left)
            if logits is None:
                return  # the rest of this prompt is read on the next pass
            self._prompt_read(job, logits)

    def _read_group(self, budget: int) -> list[EngineJob]:
        """The waiting prompts from the head of the queue that one padded pass reads whole: unread, at most
        ``MAX_READ_ROWS``, rows x the longest within ``budget`` (and the engine's own budget), generate jobs within
        the batch's free rows. Stops at the first that does not qualify, so none is overtaken by a later one."""
        limit = min(budget, self.prefill_budget)
        free_rows = self.max_batch - len(self._rows)
        group: list[EngineJob] = []
        longest = 0
        with self._cond:
            waiting = list(self._waiting)
        for job in waiting:
            if not isinstance(job, (_GenerateJob, _ReadJob)) or job.prefill is not None or _stop_error(job):
                break
            generating = isinstance(job, _GenerateJob)
            if generating and (free_rows == 0 or self._steps_in(job)):
                break
            length = int(job.ids.numel())
            if not length or (len(group) + 1) * max(longest, length) > limit:
                break
            group.append(job)
            longest = max(longest, length)
            free_rows -= generating
            if len(group) == MAX_READ_ROWS:
                break
        return group

    def _read_together(self, group: list[EngineJob]) -> int:
        """Read ``group``'s prompts in one pass; each then finishes (a document read) or joins the batch as if
        read alone. Returns the tokens it counts against the pass's budget (rows x the longest)."""
        jobs: list[EngineJob] = []
        prefills: list[RowPrefill] = []
        for job in group:
            try:
                with self._boundary():
                    job.prefill = self._begin_prefill(job)
            except MambaRouterError as exc:  # this one's own fault (a state of another model): the others go on
                self._pop_waiting(job)
                self._fail(job, exc)
                continue
            jobs.append(job)
            prefills.append(job.prefill)
        if not jobs:
            return 0
        try:
            with self._boundary():
                assert isinstance(self.model, SupportsReadingTogether)
                logits = self.model.read_together(prefills)
        except MambaRouterError as exc:
            for job in jobs:
                self._pop_waiting(job)
                self._fail(job, exc)
            return 0
        self.stats.reads_together += 1
        self.stats.prompts_read_together += len(jobs)
        for job, row in zip(jobs, logits, strict=True):
            self._prompt_read(job, row)
        return len(jobs) * max(int(job.ids.numel()) for job in jobs)

    def _prompt_read(self, job: EngineJob, logits: torch.Tensor) -> None:
        """``job``'s prompt is read to its end: a document read finishes, a request picks its first token and joins."""
        self._pop_waiting(job)
        if isinstance(job, _ReadJob):
            self._finish_read(job)
        else:
            assert isinstance(job, _GenerateJob)
            self._start(job, logits)

    def _begin_prefill(self, job: EngineJob) -> RowPrefill:
        """The engine takes ``job`` from its queue (noted for its ``queue_ms``): its prompt, on the device, starting
        from its state."""
        job.admitted = time.perf_counter()
        return self.model.begin_prefill(self._on_device(job.ids), job.start)

    def _on_device(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids`` (host) on the model's device; on a GPU through pinned memory, so the steps already queued go on
        (a plain copy would wait for them)."""
        if self._device.type != "cuda" or ids.device.type != "cpu":
            return ids.to(self._device)
        return ids.pin_memory().to(self._device, non_blocking=True)

    def _steps_in(self, job: EngineJob) -> bool:
        """True when ``job``'s prompt is short enough to be fed through the batch's steps."""
        return 0 < int(job.ids.numel()) <= self.stepped_prompt_tokens

    def _join_unread(self, job: _GenerateJob) -> None:
        """Add ``job`` as a row holding its starting state (empty, or its document's); its prompt is stepped in."""
        try:
            with self._boundary():
                self._batch.add(self._begin_prefill(job))
        except MambaRouterError as exc:
            self._fail(job, exc)
            return
        self.stats.prompt_tokens += int(job.prepared.ids.numel())
        self.stats.prompts_stepped_in += 1
        self._rows.append(self._running(job, prefill_done=None, prompt_left=deque(job.ids.tolist())))

    def _running(self, job: _GenerateJob, *, prefill_done: float | None, prompt_left: deque[int]) -> _Running:
        request = job.prepared.request
        seed = seed_for(request)
        return _Running(
            job=job,
            sequence=DecodedSequence(TextAssembler(self._detokenizer, request.stop)),
            stream=None if seed is None else stream_base(seed),
            started=job.submitted,
            prefill_done=prefill_done,
            prompt_left=prompt_left,
        )

    def _warm_up(self, job: _WarmUpJob) -> None:
        started = time.perf_counter()
        try:
            with self._boundary():
                self._batch.warm_up()
                if self._reads_together:
                    self._warm_up_reads_together()
        except MambaRouterError as exc:
            self._send(job, Finished(error=exc))
            return
        self._send(job, Finished(value=time.perf_counter() - started))

    def _warm_up_reads_together(self) -> None:
        """Read a few short dummy prompts together at 2 and 16 rows, so the kernels a padded read needs are compiled
        before the first request (Triton specializes integer arguments equal to 1 or divisible by 16, so several
        rows can need variants a one-row read never made). On the H100 the first padded read of 16 rows took about
        a second without this (benchmarks/bench_engine.py, 512-token prompts)."""
        assert isinstance(self.model, SupportsReadingTogether)
        ids = torch.zeros(WARM_UP_READ_TOKENS, dtype=torch.long, device=self._device)
        for rows in (2, 16):
            self.model.read_together([self.model.begin_prefill(ids) for _ in range(rows)])

    def _pop_waiting(self, job: EngineJob) -> None:
        with self._cond:
            self._waiting.remove(job)

    def _finish_read(self, job: _ReadJob) -> None:
        try:
            with self._boundary():
                assert job.prefill is not None
                state: DocumentState = job.prepared.state(job.prefill.state_tensors())
        except MambaRouterError as exc:
            self._fail(job, exc)
            return
        self.stats.prompt_tokens += int(job.prepared.ids.numel())
        self.stats.completed += 1
        self._send(job, Finished(value=state))

    def _start(self, job: _GenerateJob, logits: torch.Tensor) -> None:
        running = self._running(job, prefill_done=time.perf_counter(), prompt_left=deque())
        self.stats.prompt_tokens += int(job.prepared.ids.numel())
        try:
            with self._boundary():
                token = int(sample_rows(logits, [running.next_choice()])[0])
        except MambaRouterError as exc:
            self._fail(job, exc)
            return
        self._take(running, token)
        if running.sequence.finish is not None:
            self._complete(running)
            return
        try:
            with self._boundary():
                assert job.prefill is not None
                self._batch.add(job.prefill)
                self._next[len(self._rows)].fill_(token)
        except MambaRouterError as exc:
            self._fail(job, exc)
            return
        self._rows.append(running)
        job.prefill = None  # the row holds the state now; the prompt's copy can go

    def _take(self, running: _Running, token: int) -> None:
        piece = running.take(token, self._eos)
        if piece:
            self._send(running.job, piece)

    def _advance(self) -> None:
        """Queue a step for the running rows, read the tokens of the step before it (on a GPU the host's text work
        overlaps the device's new step), then choose the new step's tokens; without run-ahead, step, choose and read
        at once. Choosing after the read lets a choice that must ask the device something (a sampling shortlist's
        check) wait while the device steps rather than while the host works."""
        started = time.perf_counter()
        launched = self._launch() if self._rows else None
        self.stats.note("launch", started)
        if self._run_ahead:
            previous, self._launched = self._launched, launched
            if previous is not None:
                self._collect(previous)
            if launched is not None and self._launched is launched:  # (a failed read fails the batch)
                self._choose_tokens(launched)
        elif launched is not None:
            self._choose_tokens(launched)
            if launched.tokens is not None:
                self._collect(launched)

    def _launch(self) -> _Launched | None:
        rows = list(self._rows)
        size = len(rows)
        started = time.perf_counter()
        emits = [True] * size
        try:
            with self._boundary():
                for index, running in enumerate(rows):
                    if running.prompt_left:  # this step feeds the row's next prompt token instead of its last choice
                        self._next[index].fill_(running.prompt_left.popleft())
                        emits[index] = not running.prompt_left
                logits = self._batch.step(self._next[:size])
        except MambaRouterError as exc:
            self._fail_batch(exc)
            return None
        stats = self.stats
        stats.steps += 1
        stats.batch_rows_stepped += size
        stats.largest_batch = max(stats.largest_batch, size)
        return _Launched(rows=rows, emits=emits, logits=logits, started=started)

    def _choose_tokens(self, launched: _Launched) -> None:
        """Choose ``launched``'s tokens for the rows running now (rows that ended since it was launched moved: their
        logits move with them) as the next step's input, and start their copy to the host."""
        assert launched.logits is not None
        started = time.perf_counter()
        logits = launched.logits
        if len(self._rows) != len(launched.rows) or any(a is not b for a, b in zip(self._rows, launched.rows)):
            where = {id(running): index for index, running in enumerate(launched.rows)}
            order = [where[id(running)] for running in self._rows]
            launched.emits = [launched.emits[index] for index in order]
            launched.rows = list(self._rows)
            logits = logits[self._on_device(torch.tensor(order))] if order else logits[:0]
        launched.logits = None
        size = len(launched.rows)
        if not size:  # every row ended: nothing to read
            if self._launched is launched:
                self._launched = None
            return
        try:
            with self._boundary():
                chosen = self._choose(logits, launched.rows, launched.emits)
                self._next[:size].copy_(chosen)
                tokens = chosen
                if self._run_ahead:  # to the host without waiting: read after the next step is queued
                    tokens = self._host_tokens[self.stats.steps % 2][:size]  # the step in flight has the other
                    tokens.copy_(chosen, non_blocking=True)
                    if self._device.type == "cuda":
                        launched.ready = torch.cuda.Event()
                        launched.ready.record()
        except MambaRouterError as exc:
            self._fail_batch(exc)
            return
        launched.tokens = tokens
        self.stats.note("choose", started)

    def _collect(self, launched: _Launched) -> None:
        """Read a launched step's tokens, hand out their text and end the sequences that finished."""
        started = time.perf_counter()
        try:
            with self._boundary():
                if launched.ready is not None:
                    launched.ready.synchronize()
                assert launched.tokens is not None, "a step is read after its tokens are chosen"
                tokens = launched.tokens.tolist()
        except MambaRouterError as exc:
            self._fail_batch(exc)
            return
        now = self.stats.note("wait_for_device", started)
        self.stats.recent.append(now - (self._last_collect or launched.started))
        self._last_collect = now
        ended = []
        for running, emits, token in zip(launched.rows, launched.emits, tokens):
            if running.left or not emits:
                continue  # ended or dropped after this step was queued, or the step fed a prompt token: no output
            if running.prefill_done is None:
                running.prefill_done = now  # the step that fed the prompt's last token chose the first new token
            self._take(running, token)
            if running.sequence.finish is not None:
                ended.append(running)
        for running in ended:
            self._complete(running)
        self._remove(ended)
        self.stats.note("collect", now)

    def _fail_batch(self, error: MambaRouterError) -> None:
        """A step failed: the batch's states are unknown now, so every running request fails."""
        for running in self._rows:
            self._fail(running.job, error)
        self._reset_batch()

    def _reset_batch(self) -> None:
        for running in self._rows:
            running.left = True
        self._rows = []
        self._launched = None
        self._batch = self.model.slot_batch(self.max_batch)

    def _choose(self, logits: torch.Tensor, rows: list[_Running], emits: list[bool]) -> torch.Tensor:
        """Each row's next token, on the device: one argmax when every row is greedy, else one batched draw in which
        each sampled row draws from its own stream and the others take their argmax (rows that are still being fed
        their prompt draw nothing)."""
        return sample_rows(logits, [r.next_choice() if emits[i] else GREEDY_ROW for i, r in enumerate(rows)])

    def _drop_stopped(self) -> None:
        """Waiting and running requests that were cancelled or ran out of time leave the queue and the batch."""
        with self._cond:
            gone = [(job, error) for job in self._waiting if (error := _stop_error(job)) is not None]
            for job, _ in gone:
                self._waiting.remove(job)
        for job, error in gone:
            self._fail(job, error)
        dropped = []
        for running in self._rows:
            error = _stop_error(running.job)
            if error is not None:
                self._fail(running.job, error)
                dropped.append(running)
        self._remove(dropped)

    def _remove(self, leaving: list[_Running]) -> None:
        """Take rows out of the batch; the last row moves into each freed one (its next token moves with it)."""
        if not leaving:
            return
        indices = sorted((self._rows.index(running) for running in leaving), reverse=True)
        for index in indices:  # from the end, so the row that moves in is never one that leaves
            self._rows[index].left = True
            moved = self._batch.remove(index)
            last = self._rows.pop()
            if moved is not None:
                self._rows[index] = last
                self._next[index].copy_(self._next[moved])

    def _complete(self, running: _Running) -> None:
        sequence = running.sequence
        last = sequence.assembler.finish()
        if last:
            running.first_piece_at = running.first_piece_at or time.perf_counter()
            self._send(running.job, last)
        ended = time.perf_counter()
        assert running.prefill_done is not None, "a sequence ends only after its first token"
        decode_s = ended - running.prefill_done
        produced = len(sequence.token_ids)
        prepared = running.job.prepared
        model = self.model
        self.stats.generated_tokens += produced
        self.stats.completed += 1
        result = GenerationResult(
            text=sequence.assembler.text,
            token_ids=sequence.token_ids,
            prompt_tokens=int(prepared.ids.numel()),
            completion_tokens=produced,
            finish_reason=sequence.finish or "length",
            stop_sequence=sequence.assembler.stop_sequence,
            backend=model.backend,
            device=model.device,
            model_id=model.model_id,
            timings=Timings(
                prefill_ms=(running.prefill_done - running.started) * 1000,
                decode_ms=decode_s * 1000,
                total_ms=(ended - running.started) * 1000,
                time_to_first_token_ms=(running.first_piece_at - running.started) * 1000
                if running.first_piece_at
                else None,
                decode_tokens_per_second=(produced - 1) / decode_s if produced > 1 and decode_s > 0 else None,
                queue_ms=None if running.job.admitted is None else (running.job.admitted - running.started) * 1000,
            ),
        )
        self._send(running.job, Finished(value=result))

    def _fail(self, job: EngineJob, error: BaseException) -> None:
        if isinstance(error, RequestCancelledError):
            self.stats.cancelled += 1
        elif isinstance(error, RequestTimeoutError):
            self.stats.timed_out += 1
        else:
            self.stats.failed += 1
        self._send(job, Finished(error=error))

    def _fail_everything(self, error: MambaRouterError) -> None:
        """Called with the condition held: fail every waiting and running request."""
        while self._waiting:
            self._fail(self._waiting.popleft(), error)
        for running in self._rows:
            self._fail(running.job, error)
        self._reset_batch()


def _stop_error(job: EngineJob) -> MambaRouterError | None:
    """Why ``job`` must stop now (cancelled, out of time), or None."""
    if job.cancelled:
        return RequestCancelledError("the request was cancelled")
    if job.deadline is not None and time.perf_counter() > job.deadline:
        return RequestTimeoutError(f"the request ran past its time limit of {job.timeout_s:g} s")
    return None
