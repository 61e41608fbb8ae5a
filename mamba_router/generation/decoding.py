"""Backend-independent generation: token choice, stop strings, streaming text.

A backend supplies a :class:`TokenStepper` (prefill the prompt, then one token at a time); this module runs the
loop, chooses tokens (greedy or temperature/top-k/top-p sampling from a seeded stream), turns tokens into text
incrementally (never splitting a multi-byte character), ends on EOS, a stop string or ``max_new_tokens``, and
returns a :class:`GenerationResult` or a :class:`GenerationStream` of text pieces. Streamed pieces joined equal the
non-streamed text, because both come out of the same loop.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from mamba_router.generation.requests import GenerationRequest
from mamba_router.generation.results import FinishReason, GenerationResult, Timings
from mamba_router.generation.sampling import RowSampling, random_seed, sample_rows, seed_for, stream_key
from mamba_router.generation.text_assembly import Detokenizer, TextAssembler, fast_detokenizer


def choose_next_tokens(
    logits: torch.Tensor, request: GenerationRequest, seed: int | None = None, draw: int = 0
) -> torch.Tensor:
    """Pick one token per row of ``logits`` (batch, vocab): argmax when greedy, else temperature/top-k/top-p sampling
    (:mod:`~mamba_router.generation.sampling`). ``seed``: the sequence's seed (the request's, or one drawn for it;
    None draws a fresh one); ``draw``: how many tokens it drew before. Row i is the i-th prompt of one call."""
    if request.greedy:
        return logits.argmax(dim=-1)
    seed = random_seed() if seed is None else seed
    rows = [
        RowSampling(request.temperature, request.top_k, request.top_p, stream_key(seed, draw, row))
        for row in range(logits.shape[0])
    ]
    return sample_rows(logits, rows)


class TokenStepper(Protocol):
    """What a backend provides: read a batch of prompts, then feed one token per sequence at a time."""

    def prefill(self, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        """Read the prompts (each a 1-D tensor of ids); return the next-token logits, shape (batch, vocab)."""
        ...

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per sequence, shape (batch,); return the next-token logits, shape (batch, vocab)."""
        ...


@dataclass(frozen=True)
class ModelIdentity:
    """The fields of a GenerationResult that name who generated it."""

    backend: str
    device: str
    model_id: str


class GenerationStream:
    """An iterator of text pieces; ``result`` holds the full :class:`GenerationResult` once it is exhausted."""

    def __init__(self, pieces: Generator[str, None, GenerationResult]) -> None:
        self._pieces = pieces
        self.result: GenerationResult | None = None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        try:
            return next(self._pieces)
        except StopIteration as done:
            self.result = done.value
            raise

    def close(self) -> None:
        """Stop generating early."""
        self._pieces.close()

    def collect(self) -> GenerationResult:
        """Consume the rest of the stream and return the result."""
        for _ in self:
            pass
        assert self.result is not None
        return self.result


def run_generation(
    stepper: TokenStepper,
    prompt_ids: torch.Tensor,
    request: GenerationRequest,
    tokenizer: Detokenizer,
    eos_token_ids: Sequence[int],
    identity: ModelIdentity,
    *,
    stream: bool,
    sync_every: int = 1,
) -> GenerationResult | GenerationStream:
    """Generate for one prompt (1-D ids); return the result, or a stream of text pieces when ``stream``."""
    core = _decode(stepper, [prompt_ids], request, tokenizer, eos_token_ids, identity, sync_every)
    pieces = GenerationStream(_pieces_of_first(core))
    return pieces if stream else pieces.collect()


def run_batch_generation(
    stepper: TokenStepper,
    prompts: Sequence[torch.Tensor],
    request: GenerationRequest,
    tokenizer: Detokenizer,
    eos_token_ids: Sequence[int],
    identity: ModelIdentity,
    *,
    sync_every: int = 1,
) -> list[GenerationResult]:
    """Generate for several prompts at once; each sequence ends on its own EOS or stop string."""
    core = _decode(stepper, prompts, request, tokenizer, eos_token_ids, identity, sync_every)
    while True:
        try:
            next(core)
        except StopIteration as done:
            return done.value


def _pieces_of_first(
    core: Generator[tuple[int, str], None, list[GenerationResult]],
) -> Generator[str, None, GenerationResult]:
    while True:
        try:
            _, piece = next(core)
        except StopIteration as done:
            return done.value[0]
        yield piece


class DecodedSequence:
    """One sequence of a batch: its text so far, its token ids, and how it ended."""

    def __init__(self, assembler: TextAssembler) -> None:
        self.assembler = assembler
        self.token_ids: list[int] = []
        self.finish: FinishReason | None = None

    def consume(self, token_id: int, eos: frozenset[int]) -> str:
        self.token_ids.append(token_id)
        if token_id in eos:
            self.finish = "eos"
            return ""
        piece = self.assembler.add(token_id)
        if self.assembler.stopped:
            self.finish = "stop"
        return piece


def _decode(
    stepper: TokenStepper,
    prompts: Sequence[torch.Tensor],
    request: GenerationRequest,
    tokenizer: Detokenizer,
    eos_token_ids: Sequence[int],
    identity: ModelIdentity,
    sync_every: int,
) -> Generator[tuple[int, str], None, list[GenerationResult]]:
    """The decoding loop. Yields (sequence index, text piece); returns one result per prompt.

    With ``sync_every > 1`` the next block of up to that many steps is queued on the device before the text of the
    previous block is worked out, and the host reads tokens back once per block: the device never waits for the
    tokenizer. Tokens computed past a sequence's end are discarded, so the text does not depend on ``sync_every``.
    """
    eos = frozenset(int(i) for i in eos_token_ids)
    detokenizer = fast_detokenizer(tokenizer)
    sequences = [DecodedSequence(TextAssembler(detokenizer, request.stop)) for _ in prompts]
    seed = seed_for(request)
    limit = request.max_new_tokens

    def run_ahead(last: torch.Tensor, produced: int, count: int) -> tuple[list[torch.Tensor], int]:
        block: list[torch.Tensor] = []
        while len(block) < count and produced < limit:
            last = choose_next_tokens(stepper.step(last), request, seed, produced)
            block.append(last)
            produced += 1
        return block, produced

    started = time.perf_counter()
    block = [choose_next_tokens(stepper.prefill(prompts), request, seed, 0)]
    produced = 1
    ids = torch.stack(block, dim=1).tolist()  # waits for the device: the prefill time is honest
    prefill_done = time.perf_counter()
    first_piece_at: float | None = None
    while True:
        queued: list[torch.Tensor] = []
        if sync_every > 1:
            queued, produced = run_ahead(block[-1], produced, sync_every)
        for column in range(len(block)):
            for index, sequence in enumerate(sequences):
                if sequence.finish is None:
                    piece = sequence.consume(ids[index][column], eos)
                    if piece:
                        first_piece_at = first_piece_at or time.perf_counter()
                        yield index, piece
        if all(s.finish is not None for s in sequences):
            break
        if not queued:
            queued, produced = run_ahead(block[-1], produced, 1)
            if not queued:
                break
        block = queued
        ids = torch.stack(block, dim=1).tolist()
    for index, sequence in enumerate(sequences):
        last = sequence.assembler.finish()
        if last:
            first_piece_at = first_piece_at or time.perf_counter()
            yield index, last
    ended = time.perf_counter()
    decode_s = ended - prefill_done
    most = max(len(s.token_ids) for s in sequences)
    timings = Timings(
        prefill_ms=(prefill_done - started) * 1000,
        decode_ms=decode_s * 1000,
        total_ms=(ended - started) * 1000,
        time_to_first_token_ms=(first_piece_at - started) * 1000 if first_piece_at else None,
        decode_tokens_per_second=(most - 1) * len(sequences) / decode_s if most > 1 and decode_s > 0 else None,
    )
    return [
        GenerationResult(
            text=s.assembler.text,
            token_ids=s.token_ids,
            prompt_tokens=int(prompt.shape[-1]),
            completion_tokens=len(s.token_ids),
            finish_reason=s.finish or "length",
            stop_sequence=s.assembler.stop_sequence,
            backend=identity.backend,
            device=identity.device,
            model_id=identity.model_id,
            timings=timings,
        )
        for s, prompt in zip(sequences, prompts)
    ]
