"""The recurrent state of a Mamba layer stack, and the one place that knows its layout.

A Mamba model's whole memory of what it has read is, per layer, a conv state (the last k-1 inputs of the
convolution, in the model's dtype) and an SSM state ((b, d, n) for Mamba-1, (b, h, p, n) for Mamba-2; float32 or
the model's dtype, see :class:`~mamba_router.models.mamba.MambaLM`).
They are allocated once per batch and updated in place, so a captured CUDA graph can keep reading the same buffers.
:meth:`SSMCache.to_tensors` / :meth:`SSMCache.from_tensors` are the pack/unpack pair that document states use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from mamba_router.errors import CorruptCheckpointError


@dataclass
class SSMCache:
    """Per-layer conv and SSM states of a batch; ``tokens`` counts the positions read into it (0: empty)."""

    conv: list[torch.Tensor]
    ssm: list[torch.Tensor]
    tokens: int = 0

    @property
    def batch_size(self) -> int:
        """Rows (sequences) in the cache."""
        return int(self.conv[0].shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held by the states."""
        return sum(t.numel() * t.element_size() for t in (*self.conv, *self.ssm))

    def clone(self) -> SSMCache:
        """An independent copy."""
        return SSMCache([t.clone() for t in self.conv], [t.clone() for t in self.ssm], self.tokens)

    def copy_from(self, other: SSMCache, slot: int | None = None) -> None:
        """Copy ``other``'s states into this cache in place (into row ``slot`` when given; ``other`` has one row)."""
        for mine, theirs in zip(self.conv + self.ssm, other.conv + other.ssm, strict=True):
            (mine if slot is None else mine[slot : slot + 1]).copy_(theirs)
        self.tokens = max(self.tokens, other.tokens) if slot is not None else other.tokens

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The states by name (``conv.0``, ``ssm.0``, ...), as a document state stores them."""
        tensors = {f"conv.{i}": t for i, t in enumerate(self.conv)}
        tensors.update({f"ssm.{i}": t for i, t in enumerate(self.ssm)})
        return tensors

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], tokens: int) -> SSMCache:
        """The inverse of :meth:`to_tensors`; a state without the expected names is an error."""
        layers = sum(1 for name in tensors if name.startswith("conv."))
        try:
            conv = [tensors[f"conv.{i}"] for i in range(layers)]
            ssm = [tensors[f"ssm.{i}"] for i in range(layers)]
        except KeyError as exc:
            raise CorruptCheckpointError(
                f"a Mamba state needs conv.i and ssm.i for every layer; {exc} is missing"
            ) from None
        if not layers or len(tensors) != 2 * layers:
            raise CorruptCheckpointError(f"a Mamba state holds conv.i and ssm.i per layer, found {sorted(tensors)[:6]}")
        return cls(conv, ssm, tokens)
