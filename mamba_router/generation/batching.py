"""What a model gives the batching engine: prompts read a chunk at a time into one row, and a batch of rows that
sequences join and leave between decoding steps.

- :class:`RowPrefill`: one prompt being read into a one-row state (empty, or a copy of a document's state), up to
  a token budget per call, so a long prompt is read between the decoding steps of the running batch instead of
  stalling it.
- :class:`SlotBatch`: the running batch. Rows are dense (``0 .. size-1``): a finished prompt is added as the last
  row; removing a row moves the last row into its place (and says so), so no index is ever a hole. ``step`` feeds
  one token per row and returns one row of logits per row. How the rows are held is the model's business: Mamba
  stacks keep fixed-size states in place (and replay CUDA graphs captured for a ladder of batch sizes), stacks with
  attention layers keep left-padded keys and values with each row's padding masked. A batch whose rows are
  fixed-size states can also take a short prompt unread (``prompt_step_limit``): the row joins with its starting
  state and the engine feeds the prompt's tokens through the batch's own steps, so reading a question about a cached
  document costs the running rows nothing and the question no prompt-kernel launches.
- :class:`SupportsBatching`: a loaded model that makes both (checked with ``isinstance``); one that is also
  :class:`SupportsReadingTogether` reads several waiting prompts in one right-padded pass.

The engine that runs them is :mod:`mamba_router.generation.engine`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from mamba_router.generation.document_state import DocumentState

BATCH_LADDER = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)  # batch sizes a padded step runs at


def ladder_size(rows: int, most: int) -> int:
    """The batch size a step over ``rows`` rows runs at: the smallest rung of the ladder that holds them (at most
    ``most``, the batch's largest size)."""
    for size in BATCH_LADDER:
        if size >= rows:
            return min(size, most)
    return most


class RowPrefill(Protocol):
    """A prompt being read into a one-row state."""

    @property
    def tokens_left(self) -> int:
        """Prompt tokens not read yet."""
        ...

    def read(self, budget: int) -> torch.Tensor | None:
        """Read about ``budget`` more tokens (a model may round to its own segment size, and reads at least one
        segment); return the next-token logits (1, vocab) once the whole prompt is read, else None."""
        ...

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The finished row's state as a document state stores it (independent copies)."""
        ...


class SlotBatch(Protocol):
    """The rows of a running batch (see the module docstring)."""

    size: int  # rows held
    max_rows: int  # rows it can hold
    prompt_step_limit: int  # prompts up to this many tokens may join unread and be stepped in (0: none)

    def add(self, prefill: RowPrefill) -> None:
        """Add the state of a prefill as the last row: a finished one, or an unread one (its starting state) whose
        prompt the engine then feeds through :meth:`step` (only when ``prompt_step_limit`` allows)."""
        ...

    def remove(self, row: int) -> int | None:
        """Drop ``row``; the last row moves into its place: return that row's old index (None if ``row`` was last)."""
        ...

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row, shape (size,); return next-token logits (size, vocab). States advance."""
        ...

    def warm_up(self) -> None:
        """Make now what the first step at each batch size would make (CUDA graphs), so no request waits for it."""
        ...


@runtime_checkable
class SupportsReadingTogether(Protocol):
    """A model that reads several prompts in one pass (prompts of different lengths, right-padded)."""

    @property
    def reads_rows_together(self) -> bool:
        """False where this model's stack cannot (attention layers would keep the padding)."""
        ...

    def read_together(self, prefills: Sequence[RowPrefill]) -> list[torch.Tensor]:
        """Read unread prefills (from :meth:`SupportsBatching.begin_prefill`) to their ends in one pass, each into
        its own state as if read alone; return each one's next-token logits (1, vocab)."""
        ...


@runtime_checkable
class SupportsBatching(Protocol):
    """A model that decodes many sequences as one batch that they join and leave (continuous batching)."""

    def begin_prefill(self, ids: torch.Tensor, start: DocumentState | None = None) -> RowPrefill:
        """Start reading ``ids`` (1-D, on the model's device) into a new row, empty or from a copy of ``start``."""
        ...

    def slot_batch(self, max_rows: int) -> SlotBatch:
        """An empty batch of at most ``max_rows`` rows."""
        ...
