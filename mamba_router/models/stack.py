"""The base of every layer stack (Mamba-1, Mamba-2 and hybrids): what the generation code asks of a model."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mamba_router.models.ops import SSMOps
from mamba_router.models.ssm_cache import SSMCache


class LayerStack(nn.Module):
    """A language model whose memory is an :class:`~mamba_router.models.ssm_cache.SSMCache`, on a backend's ops.

    Subclasses build their layers and implement ``forward`` (logits for a block of tokens, continuing the cache),
    :meth:`step` (one token per sequence) and :meth:`new_cache`. ``ops`` is not a module: swapping it
    (``model.ops = other``) runs the same weights on other kernels. ``graph_capturable``: one decoding step touches
    only fixed-size buffers, so it can be captured in a CUDA graph.
    """

    graph_capturable: bool = True
    cfg: Any
    lm_head: nn.Linear

    def __init__(self, ops: SSMOps, ssm_state_dtype: torch.dtype) -> None:
        super().__init__()
        self.ops = ops
        self.ssm_state_dtype = ssm_state_dtype

    @property
    def lora_targets(self) -> list[str]:
        """The projections LoRA adapts by default."""
        raise NotImplementedError

    @property
    def reads_padded_rows(self) -> bool:
        """True when rows of different lengths can be read as one right-padded batch (``read(..., lengths=)``):
        the padding leaves every state as it was. False here: a stack with attention layers would keep the
        padding's keys and values."""
        return False

    def new_cache(self, batch_size: int) -> SSMCache:
        """Empty states for ``batch_size`` sequences on the model's device."""
        raise NotImplementedError

    def step(self, tokens: torch.Tensor, cache: SSMCache) -> torch.Tensor:
        """Feed one token per sequence (b,); return the next-token logits (b, vocab). States update in place."""
        raise NotImplementedError

    def read(
        self,
        input_ids: torch.Tensor,
        cache: SSMCache,
        *,
        segment: int | None = None,
        chunk_size: int | None = None,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Read ``input_ids`` (b, l) into ``cache``, ``segment`` tokens at a time (all at once when None); return
        the last position's logits (b, vocab). Peak memory depends on the segment, not on the input's length.

        ``lengths`` (b,): row i is ``lengths[i]`` tokens long and right-padded to l (only where
        ``reads_padded_rows``); each row's states end after its own tokens, and its logits are its last token's.
        """
        if input_ids.shape[1] == 0:
            raise ValueError("input_ids is empty")
        step = segment or input_ids.shape[1]
        logits = None
        for start in range(0, input_ids.shape[1], step):
            if lengths is None:
                logits = self(input_ids[:, start : start + step], cache, last_only=True, chunk_size=chunk_size)
                continue
            here = (lengths - start).clamp(0, step)  # each row's real tokens in this segment
            part = self(input_ids[:, start : start + step], cache, last_only=True, chunk_size=chunk_size, lengths=here)
            ends_here = ((lengths > start) & (lengths <= start + step))[:, None]
            logits = part if logits is None else torch.where(ends_here, part, logits)
        assert logits is not None
        return logits
