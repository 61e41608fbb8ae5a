"""Continuous batching for Mamba and hybrid stacks: prompts read into one-row states, and the running batch.

A Mamba layer's memory of a sequence is a fixed-size conv state and SSM state, so a row of the batch is a slice of
preallocated tensors: a finished prefill is copied into the next free row, and a finished sequence's row is filled
by copying the last row into it (:class:`MambaSlots`). A step runs at the smallest rung of a ladder of batch sizes
that holds the rows, on views of the first rows of the states, so a CUDA graph captured once per rung keeps
reading the same memory whatever joins or leaves.

A hybrid's attention layers add keys and values whose length differs per row. :class:`RestackedSlots` keeps them
left-padded (each row's padding masked, rotary positions shifted) and rebuilds the batch when a row joins or leaves;
the rebuild copies every row's keys and values once, which is small next to the decoding between membership changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from mamba_router.generation.batching import RowPrefill, ladder_size
from mamba_router.models.ssm_cache import SSMCache
from mamba_router.models.stack import LayerStack

if TYPE_CHECKING:
    from mamba_router.generation.ssm_model import Decoder, SlotStepper

KV_ROOM = 1024  # key/value positions a rebuilt hybrid batch reserves beyond its longest row


class SSMRowPrefill:
    """A prompt read into a one-row cache, ``budget`` tokens per call rounded to the decoder's segment size."""

    def __init__(
        self,
        model: LayerStack,
        ids: torch.Tensor,
        start: SSMCache | None,
        *,
        segment: int | None,
        vocab_size: int,
    ) -> None:
        self.model = model
        self.ids = ids.view(1, -1)
        self.cache = model.new_cache(1) if start is None else start.clone()
        self.segment = segment
        self.vocab_size = vocab_size
        self.offset = 0

    @property
    def tokens_left(self) -> int:
        """Prompt tokens not read yet."""
        return int(self.ids.shape[1]) - self.offset

    @torch.inference_mode()
    def read(self, budget: int) -> torch.Tensor | None:
        """Read at least one segment (whole segments, so the result does not depend on the budget)."""
        count = max(budget, 1)
        if self.segment:
            count = max(self.segment, count // self.segment * self.segment)
        end = min(self.offset + count, int(self.ids.shape[1]))
        logits = self.model.read(self.ids[:, self.offset : end], self.cache, segment=self.segment)
        self.offset = end
        return logits[:, : self.vocab_size] if self.tokens_left == 0 else None

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The row's states by name (the cache's layout), as independent copies."""
        return {name: t.clone() for name, t in self.cache.to_tensors().items()}


@torch.inference_mode()
def read_rows_together(prefills: Sequence[SSMRowPrefill]) -> list[torch.Tensor]:
    """Read several prompts, none read yet, to their ends as one right-padded batch (one pass of the model's
    kernels instead of one per prompt: on a GPU a short read costs the launches, whatever its length); each prefill
    ends holding its own row's state, as if read alone. Returns each one's next-token logits (1, vocab)."""
    first = prefills[0]
    if not first.model.reads_padded_rows:
        raise ValueError(f"{type(first.model).__name__} cannot read rows of different lengths together")
    if any(p.offset or p.model is not first.model or not p.tokens_left for p in prefills):
        raise ValueError("rows read together are unread prompts of one model")
    lengths = [p.tokens_left for p in prefills]
    stacked = SSMCache.stack([p.cache for p in prefills])
    ids = torch.nn.utils.rnn.pad_sequence([p.ids[0] for p in prefills], batch_first=True)
    logits = first.model.read(ids, stacked, segment=first.segment, lengths=torch.tensor(lengths, device=ids.device))
    mine = [t for p in prefills for t in (*p.cache.conv, *p.cache.ssm)]
    read = [t[i : i + 1] for i in range(len(prefills)) for t in (*stacked.conv, *stacked.ssm)]
    torch._foreach_copy_(mine, read)  # each row back into its own prefill's cache: one multi-tensor copy
    for prefill, length in zip(prefills, lengths, strict=True):
        prefill.cache.tokens += length
        prefill.offset = length
    return [logits[i : i + 1, : first.vocab_size] for i in range(len(prefills))]


class MambaSlots:
    """Rows of a stack without attention layers: slices of states preallocated for ``max_rows`` rows."""

    def __init__(self, model: LayerStack, decoder: Decoder, max_rows: int, vocab_size: int) -> None:
        self.model = model
        self.decoder = decoder
        self.max_rows = max_rows
        self.vocab_size = vocab_size
        self.size = 0
        self.prompt_step_limit = decoder.stepped_prompt_tokens
        self.cache = model.new_cache(max_rows)
        self.tokens = torch.zeros(max_rows, dtype=torch.long, device=model.lm_head.weight.device)
        self._steppers: dict[int, SlotStepper] = {}

    def add(self, prefill: RowPrefill) -> None:
        assert isinstance(prefill, SSMRowPrefill)
        if self.size >= self.max_rows:
            raise ValueError(f"the batch is full ({self.max_rows} rows)")
        self.cache.put_row(self.size, prefill.cache)
        self.size += 1

    def remove(self, row: int) -> int | None:
        last = self.size - 1
        self.size = last
        if row == last:
            return None
        self.cache.put_row(row, self.cache.row(last))
        return last

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        stepper = self._stepper(ladder_size(self.size, self.max_rows))
        self.tokens[: self.size].copy_(tokens)
        return stepper.step(self.tokens[: stepper.cache.batch_size])[: self.size, : self.vocab_size]

    @torch.inference_mode()
    def warm_up(self) -> None:
        """A stepper (a captured CUDA graph on real-mamba) for every rung of the ladder up to ``max_rows``."""
        for rows in sorted({ladder_size(n, self.max_rows) for n in range(1, self.max_rows + 1)}):
            self._stepper(rows)

    def _stepper(self, rows: int) -> SlotStepper:
        stepper = self._steppers.get(rows)
        if stepper is None:  # views of the first rows: the stepper updates this batch's states in place
            view = SSMCache([t[:rows] for t in self.cache.conv], [t[:rows] for t in self.cache.ssm])
            stepper = self._steppers[rows] = self.decoder.slot_stepper(rows, view)
        return stepper


class RestackedSlots:
    """Rows of a stack with attention layers: left-padded keys and values, rebuilt when rows join or leave."""

    def __init__(self, model: LayerStack, decoder: Decoder, max_rows: int, vocab_size: int) -> None:
        self.model = model
        self.decoder = decoder
        self.max_rows = max_rows
        self.vocab_size = vocab_size
        self.size = 0
        # a row joins with its starting state (its document's keys and values, or none) and its prompt is fed
        # through the batch's steps, which append its keys and values as decoding does
        self.prompt_step_limit = decoder.stepped_prompt_tokens
        self._stepper: SlotStepper | None = None
        self._steppers: dict[int, SlotStepper] = {}
        self.tokens = torch.zeros(max_rows, dtype=torch.long, device=model.lm_head.weight.device)

    def add(self, prefill: RowPrefill) -> None:
        assert isinstance(prefill, SSMRowPrefill)
        if self.size >= self.max_rows:
            raise ValueError(f"the batch is full ({self.max_rows} rows)")
        self._load([*self._rows(), prefill.cache])

    def remove(self, row: int) -> int | None:
        rows = self._rows()
        last = rows.pop()
        if row == len(rows):
            self._load(rows)
            return None
        rows[row] = last
        self._load(rows)
        return len(rows)

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        assert self._stepper is not None, "step() needs at least one row"
        rows = self._stepper.cache.batch_size
        self.tokens[: self.size].copy_(tokens)
        return self._stepper.step(self.tokens[:rows])[: self.size, : self.vocab_size]

    def warm_up(self) -> None:
        """Nothing to make ahead: a hybrid's graphs are captured when rows are loaded (their key/value length)."""

    def _rows(self) -> list[SSMCache]:
        if self._stepper is None:
            return []
        return [self._stepper.cache.row(i) for i in range(self.size)]

    @torch.inference_mode()
    def _load(self, rows: list[SSMCache]) -> None:
        self.size = len(rows)
        if not rows:
            self._stepper = None
            return
        padded = ladder_size(len(rows), self.max_rows)
        empty = [self.model.new_cache(1) for _ in range(padded - len(rows))]  # fully padded: they see only their token
        stepper = self._steppers.get(padded)
        if stepper is None:
            stepper = self._steppers[padded] = self.decoder.slot_stepper(padded)
        stepper.load(SSMCache.stack([*rows, *empty]), KV_ROOM)
        self._stepper = stepper
