"""The memory of a Mamba or hybrid layer stack, and the one place that knows its layout.

A Mamba layer's whole memory of what it has read is a conv state (the last k-1 inputs of the convolution, in the
model's dtype) and an SSM state ((b, d, n) for Mamba-1, (b, h, p, n) for Mamba-2; float32 or the model's dtype, see
:class:`~mamba_router.models.mamba.MambaLM`). They are allocated once per batch and updated in place, so a captured
CUDA graph can keep reading the same buffers.

An attention layer of a hybrid stack remembers keys and values, (b, kv_heads, positions, head_dim), which grow with
the text: they live in buffers with spare room (doubled when full), so appending one token costs one token's copy.
Rows of a batch whose prompts had different lengths are left-padded; ``padding`` holds each row's count of padded
positions, which attention masks out and rotary positions skip.

For decoding through a CUDA graph a cache can be made *static* (:meth:`SSMCache.static_copy`): its key and value
buffers have a fixed capacity, ``padding`` is a tensor, and ``length`` holds the number of positions on the device,
so one captured step writes its keys and values at ``length`` and attends to the valid positions by a mask.

:meth:`SSMCache.to_tensors` / :meth:`SSMCache.from_tensors` are the pack/unpack pair that document states use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from mamba_router.errors import CorruptCheckpointError


@dataclass
class SSMCache:
    """Per-layer states of a batch: conv and SSM states per Mamba layer, key and value buffers per attention layer.

    ``tokens`` counts the positions read into it (0: empty), padding included.
    """

    conv: list[torch.Tensor]
    ssm: list[torch.Tensor]
    tokens: int = 0
    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)
    padding: torch.Tensor | None = None  # (b,) left-padded positions per row; None when no row is padded
    length: torch.Tensor | None = None  # static caches only: ``tokens`` as a device scalar, advanced by each step

    @property
    def batch_size(self) -> int:
        """Rows (sequences) in the cache."""
        return int((self.conv or self.keys)[0].shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of the states (keys and values up to ``tokens``, not the spare room)."""
        return sum(t.numel() * t.element_size() for t in (*self.conv, *self.ssm, *self.kv_tensors()))

    def kv_tensors(self) -> list[torch.Tensor]:
        """Every attention layer's keys then values, cut to the positions read."""
        return [t[:, :, : self.tokens] for t in (*self.keys, *self.values)]

    def append_kv(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``key``/``value`` (b, kv_heads, l, head_dim) after the ``tokens`` positions held for attention
        layer ``layer``; return all keys and values so far. The caller advances ``tokens`` once for all layers."""
        end = self.tokens + key.shape[2]
        if end > self.keys[layer].shape[2]:
            room = max(end, 2 * self.keys[layer].shape[2], 16)
            self.keys[layer] = _with_room(self.keys[layer], self.tokens, room)
            self.values[layer] = _with_room(self.values[layer], self.tokens, room)
        self.keys[layer][:, :, self.tokens : end] = key
        self.values[layer][:, :, self.tokens : end] = value
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    @property
    def kv_capacity(self) -> int:
        """Positions the key and value buffers hold (0 without attention layers)."""
        return int(self.keys[0].shape[2]) if self.keys else 0

    def static_copy(self, capacity: int) -> SSMCache:
        """A static copy of this cache with key/value buffers of ``capacity`` positions (see the module docstring)."""
        device = self.device
        static = SSMCache(
            [t.clone() for t in self.conv],
            [t.clone() for t in self.ssm],
            self.tokens,
            [_with_room(t, self.tokens, capacity) for t in self.keys],
            [_with_room(t, self.tokens, capacity) for t in self.values],
            torch.zeros(self.batch_size, dtype=torch.long, device=device),
            torch.zeros((), dtype=torch.long, device=device),
        )
        static.load(self)
        return static

    def load(self, other: SSMCache) -> None:
        """Copy ``other`` (a cache of the same shapes, ``tokens`` within this static cache's capacity) into this
        static cache in place, so that a graph captured on its buffers reads ``other``'s states."""
        assert self.length is not None and self.padding is not None, "load() is for static caches"
        if other.tokens > self.kv_capacity and self.keys:
            raise ValueError(f"{other.tokens} positions do not fit in {self.kv_capacity}")
        for mine, theirs in zip(self.conv + self.ssm, other.conv + other.ssm, strict=True):
            mine.copy_(theirs)
        for mine, theirs in zip(self.keys + self.values, other.keys + other.values, strict=True):
            if mine.data_ptr() != theirs.data_ptr():
                mine[:, :, : other.tokens] = theirs[:, :, : other.tokens]
        if other.padding is None:
            self.padding.zero_()
        elif other.padding.data_ptr() != self.padding.data_ptr():
            self.padding.copy_(other.padding)
        self.length.fill_(other.tokens)
        self.tokens = other.tokens

    def write_kv_at_length(
        self, layer: int, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Static caches: write one position's ``key``/``value`` (b, kv_heads, 1, head_dim) at ``length``; return the
        whole buffers (positions at and after ``length`` + 1 are masked by the caller)."""
        assert self.length is not None
        index = self.length.view(1)
        self.keys[layer].index_copy_(2, index, key)
        self.values[layer].index_copy_(2, index, value)
        return self.keys[layer], self.values[layer]

    def clone(self) -> SSMCache:
        """An independent copy."""
        return SSMCache(
            [t.clone() for t in self.conv],
            [t.clone() for t in self.ssm],
            self.tokens,
            [t[:, :, : self.tokens].clone() for t in self.keys],
            [t[:, :, : self.tokens].clone() for t in self.values],
            None if self.padding is None else self.padding.clone(),
        )

    def copy_from(self, other: SSMCache) -> None:
        """Make this cache hold ``other``'s states: conv and SSM states copied in place (buffers a CUDA graph reads
        stay where they are), keys and values copied into new buffers; ``other`` is untouched."""
        for mine, theirs in zip(self.conv + self.ssm, other.conv + other.ssm, strict=True):
            mine.copy_(theirs)
        if len(self.keys) != len(other.keys):
            raise ValueError(f"{len(other.keys)} attention layers in the state, {len(self.keys)} in the model")
        self.keys = [t[:, :, : other.tokens].clone() for t in other.keys]
        self.values = [t[:, :, : other.tokens].clone() for t in other.values]
        self.padding = None if other.padding is None else other.padding.clone()
        self.tokens = other.tokens

    def row(self, index: int) -> SSMCache:
        """An independent one-row cache holding row ``index``, its left padding cut off."""
        pad = 0 if self.padding is None else int(self.padding[index])
        return SSMCache(
            [t[index : index + 1].clone() for t in self.conv],
            [t[index : index + 1].clone() for t in self.ssm],
            self.tokens - pad,
            [t[index : index + 1, :, pad : self.tokens].clone() for t in self.keys],
            [t[index : index + 1, :, pad : self.tokens].clone() for t in self.values],
        )

    def put_row(self, index: int, row: SSMCache) -> None:
        """Copy the one-row cache ``row`` into row ``index`` in place (conv and SSM states only: caches without
        attention layers, whose rows do not share a position count)."""
        assert not self.keys, "put_row is for caches without attention layers; stack the rows instead"
        mine, theirs = self.conv + self.ssm, row.conv + row.ssm
        assert len(mine) == len(theirs), "the row's cache is of another model"
        # one multi-tensor copy (a few launches on a GPU) instead of one per layer's state: a request joining a
        # running batch holds up its next step for as long as this takes
        torch._foreach_copy_([t[index] for t in mine], [t[0] for t in theirs])

    @classmethod
    def stack(cls, rows: Sequence[SSMCache]) -> SSMCache:
        """One cache whose row i is ``rows[i]`` (each of one row); shorter rows' keys and values are left-padded."""
        tokens = max(row.tokens for row in rows)

        def padded(layer: int, values: bool) -> torch.Tensor:
            parts = [(row.values if values else row.keys)[layer][:, :, : row.tokens] for row in rows]
            return torch.cat([F.pad(p, (0, 0, tokens - p.shape[2], 0)) for p in parts])

        attention_layers = range(len(rows[0].keys))
        padding = [tokens - row.tokens + (0 if row.padding is None else int(row.padding[0])) for row in rows]
        return cls(
            [torch.cat(layer) for layer in zip(*(row.conv for row in rows), strict=True)],
            [torch.cat(layer) for layer in zip(*(row.ssm for row in rows), strict=True)],
            tokens,
            [padded(i, False) for i in attention_layers],
            [padded(i, True) for i in attention_layers],
            torch.tensor(padding, device=rows[0].device) if any(padding) else None,
        )

    @property
    def device(self) -> torch.device:
        """Where the states live."""
        return (self.conv or self.keys)[0].device

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The states by name (``conv.0``, ``ssm.0``, ..., ``key.0``, ``value.0``, ...), as a document state stores
        them; keys and values cut to the positions read."""
        tensors = {f"conv.{i}": t for i, t in enumerate(self.conv)}
        tensors.update({f"ssm.{i}": t for i, t in enumerate(self.ssm)})
        tensors.update({f"key.{i}": t[:, :, : self.tokens] for i, t in enumerate(self.keys)})
        tensors.update({f"value.{i}": t[:, :, : self.tokens] for i, t in enumerate(self.values)})
        if self.padding is not None and bool(self.padding.any()):
            tensors["padding"] = self.padding
        return tensors

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], tokens: int) -> SSMCache:
        """The inverse of :meth:`to_tensors`; a state without the expected names or lengths is an error."""
        mamba_layers = sum(1 for name in tensors if name.startswith("conv."))
        attention_layers = sum(1 for name in tensors if name.startswith("key."))
        try:
            conv = [tensors[f"conv.{i}"] for i in range(mamba_layers)]
            ssm = [tensors[f"ssm.{i}"] for i in range(mamba_layers)]
            keys = [tensors[f"key.{i}"] for i in range(attention_layers)]
            values = [tensors[f"value.{i}"] for i in range(attention_layers)]
        except KeyError as exc:
            raise CorruptCheckpointError(
                f"a model state needs conv.i and ssm.i for every Mamba layer and key.i and value.i for every "
                f"attention layer; {exc} is missing"
            ) from None
        expected = 2 * (mamba_layers + attention_layers) + ("padding" in tensors)
        if not mamba_layers + attention_layers or len(tensors) != expected:
            raise CorruptCheckpointError(
                f"a model state holds conv.i and ssm.i per Mamba layer and key.i and value.i per attention layer, "
                f"found {sorted(tensors)[:6]}"
            )
        if any(t.dim() != 4 or t.shape[2] != tokens for t in (*keys, *values)):
            raise CorruptCheckpointError(f"the attention keys and values of a model state must hold {tokens} positions")
        return cls(conv, ssm, tokens, list(keys), list(values), tensors.get("padding"))


def _with_room(buffer: torch.Tensor, used: int, room: int) -> torch.Tensor:
    """A buffer of ``room`` positions holding the first ``used`` positions of ``buffer``."""
    grown = buffer.new_zeros(buffer.shape[0], buffer.shape[1], room, buffer.shape[3])
    grown[:, :, :used] = buffer[:, :, :used]
    return grown
