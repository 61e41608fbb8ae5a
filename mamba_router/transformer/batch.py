"""Continuous batching for a Hugging Face causal LM: prompts read into their own KV caches, and a running batch whose
rows are left-padded to one length with the padding masked.

A Transformer's memory of a sequence grows by one key and value per layer per token, and rows of a batch hold
different lengths. :class:`PaddedKVSlots` keeps every row's keys and values right-aligned in one ``DynamicCache``,
an attention mask that hides each row's padding, and each row's own position count (so rotary or learned positions
are those of the row alone). A row joining or leaving rebuilds the cache once; each decoding step then appends one
position to every row.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mamba_router.generation.batching import RowPrefill
from mamba_router.transformer.hf_cache import cache_argument, returned_cache
from mamba_router.transformer.model import kv_cache_to_tensors


class KVRowPrefill:
    """A prompt read into its own KV cache (in one pass: the window bounds a Transformer's prompt)."""

    def __init__(self, model: Any, ids: torch.Tensor, past: Any = None) -> None:
        self.model = model
        self.ids = ids.view(1, -1)
        self.past = past
        self.done = False

    @property
    def tokens_left(self) -> int:
        """Prompt tokens not read yet (all of them until the one pass)."""
        return 0 if self.done else int(self.ids.shape[1])

    @torch.inference_mode()
    def read(self, budget: int) -> torch.Tensor | None:
        out = self.model(input_ids=self.ids, **cache_argument(self.model, self.past), use_cache=True, logits_to_keep=1)
        self.past = returned_cache(out)
        self.done = True
        logits: torch.Tensor = out.logits[:, -1, :]
        return logits

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The KV cache by layer (``key.i``/``value.i``), as independent copies."""
        return {name: t.clone() for name, t in kv_cache_to_tensors(self.past).items()}


class PaddedKVSlots:
    """The running batch of a Hugging Face causal LM (see the module docstring)."""

    def __init__(self, model: Any, max_rows: int) -> None:
        self.model = model
        self.max_rows = max_rows
        self.size = 0
        self.prompt_step_limit = 0  # a prompt is read into its keys and values before the row joins
        self._past: Any = None
        self._mask: torch.Tensor | None = None  # (size, positions): 1 where a row has a real token
        self._lengths: torch.Tensor | None = None  # (size,): real positions per row

    def add(self, prefill: RowPrefill) -> None:
        assert isinstance(prefill, KVRowPrefill)
        if self.size >= self.max_rows:
            raise ValueError(f"the batch is full ({self.max_rows} rows)")
        layers = kv_cache_to_tensors(prefill.past)
        count = len(layers) // 2
        row = [(layers[f"key.{i}"], layers[f"value.{i}"]) for i in range(count)]
        self._load([*self._rows(), row])

    def remove(self, row: int) -> int | None:
        rows = self._rows()
        last = rows.pop()
        if row == len(rows):
            self._load(rows)
            return None
        rows[row] = last
        self._load(rows)
        return len(rows)

    def warm_up(self) -> None:
        """Nothing to make ahead: the Hugging Face model steps eagerly."""

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        assert self._mask is not None and self._lengths is not None, "step() needs at least one row"
        mask = torch.cat([self._mask, self._mask.new_ones(self.size, 1)], dim=1)
        out = self.model(
            input_ids=tokens.view(self.size, 1),
            attention_mask=mask,
            position_ids=self._lengths.view(self.size, 1),
            **cache_argument(self.model, self._past),
            use_cache=True,
        )
        self._past = returned_cache(out)
        self._mask = mask
        self._lengths = self._lengths + 1
        logits: torch.Tensor = out.logits[:, -1, :]
        return logits

    def _rows(self) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """Each row's keys and values per layer, padding cut off."""
        if self._past is None or self._lengths is None:
            return []
        total = int(self._mask.shape[1]) if self._mask is not None else 0
        rows = []
        for i, length in enumerate(self._lengths.tolist()):
            rows.append(
                [
                    (layer.keys[i : i + 1, :, total - length :], layer.values[i : i + 1, :, total - length :])
                    for layer in self._past.layers
                ]
            )
        return rows

    def _load(self, rows: list[list[tuple[torch.Tensor, torch.Tensor]]]) -> None:
        from transformers import DynamicCache

        self.size = len(rows)
        if not rows:
            self._past = self._mask = self._lengths = None
            return
        lengths = [int(row[0][0].shape[2]) for row in rows]
        total = max(lengths)
        past = DynamicCache()
        for layer in range(len(rows[0])):
            keys = torch.cat([F.pad(row[layer][0], (0, 0, total - n, 0)) for row, n in zip(rows, lengths)])
            values = torch.cat([F.pad(row[layer][1], (0, 0, total - n, 0)) for row, n in zip(rows, lengths)])
            past.update(keys, values, layer)
        device = rows[0][0][0].device
        lengths_t = torch.tensor(lengths, dtype=torch.long, device=device)
        self._past = past
        self._lengths = lengths_t
        self._mask = (torch.arange(total, device=device)[None, :] >= (total - lengths_t)[:, None]).long()
