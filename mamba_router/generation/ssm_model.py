"""A Mamba-family model loaded by any Mamba backend: the same layer stack, the backend's ops and decoder.

:class:`SSMModel` is the loaded model every Mamba backend returns. What differs between backends is passed in:
the ops the model was built on, and a :class:`Decoder` that makes token steppers. :class:`EagerDecoder` (this
module) reads prompts segment by segment and steps the model in Python; ``real-mamba`` supplies a decoder that
replays the step from a CUDA graph. Both read prompts through :func:`prefill`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from mamba_router.backends.devices import dtype_name
from mamba_router.generation.batching import RowPrefill, SlotBatch
from mamba_router.generation.decoding import TokenStepper
from mamba_router.generation.loaded_model import TokenizerModel, eos_token_ids
from mamba_router.generation.ssm_batch import MambaSlots, RestackedSlots, SSMRowPrefill, read_rows_together
from mamba_router.models.checkpoint import WEIGHT_PATTERNS, generation_eos_ids
from mamba_router.models.layers.ssm_decay import forget_state_decays
from mamba_router.models.mamba import random_mamba, save_mamba_ssm_format
from mamba_router.models.mamba_config import SSMConfig
from mamba_router.models.offline import build_offline_tokenizer, is_offline_model, write_offline_marker
from mamba_router.models.ops import SSMOps
from mamba_router.models.registry import load_ssm_checkpoint
from mamba_router.models.source import local_directory, resolve_model_source
from mamba_router.models.ssm_cache import SSMCache
from mamba_router.models.stack import LayerStack
from mamba_router.models.tokenizers import GPT_NEOX_TOKENIZER, load_tokenizer
from mamba_router.models.torch_ops import TorchOps

if TYPE_CHECKING:
    from mamba_router.generation.document_state import DocumentState

logger = logging.getLogger(__name__)

DEFAULT_SEGMENT = 512  # tokens read per pass on the plain path: bounds prefill memory whatever the prompt length


def prefill(
    model: LayerStack,
    cache: SSMCache,
    prompts: Sequence[torch.Tensor],
    *,
    start: SSMCache | None = None,
    segment: int | None = None,
) -> torch.Tensor:
    """Read ``prompts`` (1-D id tensors, one per cache row) into ``cache`` in place; return the next-token logits.

    With ``start`` (a one-row state, e.g. a document's), the single prompt continues from a copy of it. Prompts of
    one length are read as one batch; otherwise each is read alone and the states are stacked into the rows (a
    recurrence has no padding mask; attention keys and values are left-padded and masked).
    """
    if start is not None:
        (prompt,) = prompts
        cache.copy_from(start)  # in place: buffers a CUDA graph reads stay where they are; ``start`` is untouched
        return model.read(prompt.view(1, -1), cache, segment=segment)
    cache.tokens, cache.padding = 0, None
    if len({int(p.numel()) for p in prompts}) == 1:
        return model.read(torch.stack(list(prompts)), cache, segment=segment)
    rows, logits = [], []
    for prompt in prompts:
        rows.append(model.new_cache(1))
        logits.append(model.read(prompt.view(1, -1), rows[-1], segment=segment))
    cache.copy_from(SSMCache.stack(rows))
    return torch.cat(logits)


class SSMStepper(TokenStepper, Protocol):
    """A token stepper whose states live in ``cache``."""

    cache: SSMCache


class SlotStepper(Protocol):
    """Steps a fixed number of rows whose states the batching engine places (see :mod:`.ssm_batch`)."""

    cache: SSMCache

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row, shape (rows,); return the logits (rows, vocab). States advance in place."""
        ...

    def load(self, read: SSMCache, room: int) -> None:
        """Make ``cache`` hold ``read`` (same rows) with key/value room for ``room`` more positions."""
        ...


class Decoder(Protocol):
    """Makes token steppers for one model; a backend may supply its own (CUDA graphs)."""

    shares_buffers: bool  # steppers reuse buffers: one generation at a time
    sync_every: int  # tokens read back per host sync when not streaming
    segment: int | None  # tokens read per pass when prompts are read (None: a whole prompt at once)
    stepped_prompt_tokens: int  # in a running batch, prompts up to this long are fed through its steps, not read
    prefill_budget: int  # prompt tokens a batching engine reads per pass while the batch waits

    def stepper(self, batch_size: int, start: SSMCache | None = None) -> SSMStepper:
        """A stepper for ``batch_size`` sequences, empty or continuing from ``start``."""
        ...

    def slot_stepper(self, rows: int, cache: SSMCache | None = None) -> SlotStepper:
        """A stepper of its own (sharing no buffers with :meth:`stepper`'s) for ``rows`` rows, on ``cache`` (views
        of a larger batch's states, updated in place) or on new states."""
        ...

    def reset(self) -> None:
        """Forget anything captured from the weights (they changed)."""
        ...


class EagerStepper:
    """Reads prompts into its own cache segment by segment, then steps the model one token at a time."""

    def __init__(self, model: LayerStack, cache: SSMCache, start: SSMCache | None, segment: int | None) -> None:
        self.model = model
        self.cache = cache
        self.start = start
        self.segment = segment

    @torch.inference_mode()
    def prefill(self, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        return prefill(self.model, self.cache, prompts, start=self.start, segment=self.segment)

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.step(tokens, self.cache)


class EagerSlotStepper:
    """Steps the model on its cache in Python (the plain path of :class:`SlotStepper`)."""

    def __init__(self, model: LayerStack, cache: SSMCache) -> None:
        self.model = model
        self.cache = cache

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.step(tokens, self.cache)

    def load(self, read: SSMCache, room: int) -> None:
        """Key/value buffers grow as needed on this path, so ``room`` is not reserved."""
        self.cache = read


class EagerDecoder:
    """Steppers with their own caches: no shared buffers, so generations may run side by side."""

    shares_buffers = False
    sync_every = 1
    stepped_prompt_tokens = 16  # an eager step costs a few reads' worth of ops: only short questions are stepped
    prefill_budget = 4096

    def __init__(self, model: LayerStack, segment: int | None = DEFAULT_SEGMENT) -> None:
        self.model = model
        self.segment = segment

    def stepper(self, batch_size: int, start: SSMCache | None = None) -> EagerStepper:
        return EagerStepper(self.model, self.model.new_cache(batch_size), start, self.segment)

    def slot_stepper(self, rows: int, cache: SSMCache | None = None) -> EagerSlotStepper:
        return EagerSlotStepper(self.model, cache if cache is not None else self.model.new_cache(rows))

    def reset(self) -> None:
        """Nothing is captured."""


class _VocabStepper:
    """Logits cut to the tokenizer's vocabulary (checkpoints pad their embedding rows)."""

    def __init__(self, inner: TokenStepper, vocab_size: int) -> None:
        self.inner = inner
        self.vocab_size = vocab_size

    def prefill(self, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.inner.prefill(prompts)[:, : self.vocab_size]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.inner.step(tokens)[:, : self.vocab_size]


class SSMModel(TokenizerModel):
    """A Mamba-1, Mamba-2 or hybrid model (any checkpoint format it comes in) on a backend's ops and decoder."""

    def __init__(
        self,
        model: LayerStack,
        tokenizer: Any,
        *,
        model_id: str,
        device: torch.device,
        backend: str,
        checkpoint_format: str,
        decoder: Decoder,
        generation_eos: Sequence[int] = (),
    ) -> None:
        super().__init__(
            tokenizer,
            backend=backend,
            device=device,
            model_id=model_id,
            eos_ids=[*eos_token_ids(tokenizer), *generation_eos],
        )
        self.model = model
        self.checkpoint_format = checkpoint_format
        self.decoder = decoder
        self.dtype = dtype_name(next(model.parameters()).dtype)
        self.vocab_size = min(len(tokenizer), model.cfg.vocab_size)
        self.sync_every = decoder.sync_every
        self.prefill_budget = decoder.prefill_budget
        if decoder.shares_buffers:
            self._decode_lock = threading.Lock()

    @property
    def arch(self) -> str:
        """``mamba1``, ``mamba2`` or ``hybrid``."""
        return str(self.model.cfg.arch)

    @property
    def mixers(self) -> tuple[str, ...]:
        """The mixer kinds of the stack (``mamba1``, ``mamba2``, ``attention``)."""
        return tuple(self.model.cfg.mixers)

    @property
    def layer(self) -> str:
        """mamba-ssm's name of the Mamba mixer: ``Mamba1`` or ``Mamba2`` (hybrids: ``Mamba2``)."""
        return "Mamba1" if self.arch == "mamba1" else "Mamba2"

    def stepper(self, batch_size: int = 1) -> TokenStepper:
        """A token stepper for ``batch_size`` sequences (logits cut to the vocabulary), for checks and benchmarks."""
        return self._new_stepper(batch_size)

    @torch.inference_mode()
    def forward_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Full-sequence logits (batch, length, vocab) of one plain forward pass, for checks and scoring."""
        return self.model(input_ids)[..., : self.vocab_size]

    def _new_stepper(self, batch_size: int, start: DocumentState | None = None) -> TokenStepper:
        cache = None if start is None else SSMCache.from_tensors(start.tensors, start.document_tokens)
        return _VocabStepper(self.decoder.stepper(batch_size, cache), self.vocab_size)

    def begin_prefill(self, ids: torch.Tensor, start: DocumentState | None = None) -> RowPrefill:
        """Start reading ``ids`` into a one-row state (see :mod:`~mamba_router.generation.batching`)."""
        cache = None if start is None else SSMCache.from_tensors(start.tensors, start.document_tokens)
        return SSMRowPrefill(self.model, ids, cache, segment=self.decoder.segment, vocab_size=self.vocab_size)

    @property
    def reads_rows_together(self) -> bool:
        """True when several prompts can be read in one right-padded pass (stacks without attention layers)."""
        return self.model.reads_padded_rows

    def read_together(self, prefills: Sequence[RowPrefill]) -> list[torch.Tensor]:
        """Read unread prefills of this model to their ends in one pass; each one's logits (1, vocab)."""
        rows = [p for p in prefills if isinstance(p, SSMRowPrefill)]
        if len(rows) != len(prefills):
            raise ValueError("read_together reads prefills made by this model's begin_prefill")
        return read_rows_together(rows)

    def slot_batch(self, max_rows: int) -> SlotBatch:
        """An empty running batch: fixed-size rows for Mamba stacks, left-padded rows for hybrids."""
        kind = RestackedSlots if "attention" in self.mixers else MambaSlots
        return kind(self.model, self.decoder, max_rows, self.vocab_size)

    def _read_state(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every layer's conv and SSM state after reading ``ids`` (packed by the cache, the layout's owner)."""
        stepper = self.decoder.stepper(1)
        stepper.prefill([ids])
        return {name: t.clone() for name, t in stepper.cache.to_tensors().items()}

    def _identity_config(self) -> object:
        return self.model.cfg

    def _weights_changed(self) -> None:
        forget_state_decays(self.model)
        self.decoder.reset()

    def lora_module(self) -> nn.Module:
        """The layer stack itself: every projection is an ``nn.Linear`` called as a module, on every backend."""
        return self.model

    def default_lora_targets(self) -> list[str]:
        """Mamba-1: in/x/dt/out_proj; Mamba-2: in/out_proj."""
        return self.model.lora_targets

    def lora_logits(self, module: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        """``module`` is this model or a peft wrapper of it."""
        logits: torch.Tensor = module(input_ids)
        return logits


def load_ssm_model(
    model: str,
    *,
    backend: str,
    ops: SSMOps,
    device: torch.device,
    dtype: torch.dtype,
    tokenizer: str | None,
    make_decoder: Callable[[LayerStack], Decoder],
    ssm_state_dtype: torch.dtype = torch.float32,
) -> SSMModel:
    """The load path of every Mamba backend: find the checkpoint (directory or hub id), pick its family, build the
    layer stack on ``ops``, load the weights safely, move it to ``device``/``dtype``, and wrap it with a decoder.

    The tokenizer comes from ``tokenizer``, else from the model directory, else GPT-NeoX-20B (the tokenizer of the
    state-spaces checkpoints).
    """
    source = resolve_model_source(model)
    directory = local_directory(source, WEIGHT_PATTERNS)
    loaded = load_ssm_checkpoint(directory, ops)
    lm = loaded.model.to(device=device, dtype=dtype)
    lm.ssm_state_dtype = ssm_state_dtype
    if is_offline_model(directory):
        logger.warning("model at %s has random weights (built offline); its output is meaningless", directory)
    return SSMModel(
        lm,
        load_tokenizer(source.model_id, directory, tokenizer, GPT_NEOX_TOKENIZER),
        model_id=source.model_id,
        device=device,
        backend=backend,
        checkpoint_format=loaded.checkpoint_format,
        decoder=make_decoder(lm),
        generation_eos=generation_eos_ids(directory),
    )


def write_offline_mamba(directory: Path, *, d_model: int, headdim: int, description: str) -> Path:
    """A tiny random-weight Mamba-2 (2 layers) in mamba-ssm's format with an offline-trained tokenizer."""
    tokenizer = build_offline_tokenizer()
    cfg = SSMConfig(
        arch="mamba2", d_model=d_model, n_layer=2, vocab_size=len(tokenizer), d_state=16, headdim=headdim, chunk_size=64
    )
    directory = save_mamba_ssm_format(random_mamba(cfg, TorchOps()), Path(directory), len(tokenizer))
    tokenizer.save_pretrained(directory)
    write_offline_marker(directory, description)
    return directory
