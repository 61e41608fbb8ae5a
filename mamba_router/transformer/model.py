"""A Hugging Face causal LM behind the loaded-model interface: decoding with its KV cache, the KV cache as a
document state (this module owns that layout: ``key.i``/``value.i`` per layer), and what LoRA adapts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mamba_router.backends.devices import dtype_name
from mamba_router.errors import CorruptCheckpointError
from mamba_router.generation.batching import RowPrefill, SlotBatch
from mamba_router.generation.loaded_model import TokenizerModel, eos_token_ids
from mamba_router.models.linear_modules import attention_linear_names
from mamba_router.transformer.hf_cache import cache_argument, returned_cache

if TYPE_CHECKING:
    from mamba_router.generation.document_state import DocumentState


class KVCacheStepper:
    """Prefill then one token at a time, keeping the model's KV cache between calls (optionally starting from one)."""

    def __init__(self, model: Any, past: Any = None) -> None:
        self._model = model
        self._past: Any = past

    @torch.inference_mode()
    def prefill(self, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        (input_ids,) = prompts  # one sequence at a time: no padding, so no attention mask is needed
        out = self._model(
            input_ids=input_ids.view(1, -1), **cache_argument(self._model, self._past), use_cache=True, logits_to_keep=1
        )
        self._past = returned_cache(out)
        return out.logits[:, -1, :]

    @torch.inference_mode()
    def step(self, token: torch.Tensor) -> torch.Tensor:
        out = self._model(input_ids=token.view(1, 1), **cache_argument(self._model, self._past), use_cache=True)
        self._past = returned_cache(out)
        return out.logits[:, -1, :]


class TransformerModel(TokenizerModel):
    """A Hugging Face causal LM loaded by the ``transformer`` backend."""

    batch_decoding = False  # the stepper reads one sequence at a time (no padding, so no attention mask)

    def __init__(
        self, model: Any, tokenizer: Any, *, model_id: str, device: torch.device, backend: str = "transformer"
    ) -> None:
        super().__init__(
            tokenizer, backend=backend, device=device, model_id=model_id, eos_ids=eos_token_ids(tokenizer, model)
        )
        self.model = model
        self.dtype = dtype_name(next(model.parameters()).dtype)
        self.context_window = context_window(model.config)

    def _new_stepper(self, batch_size: int, start: DocumentState | None = None) -> KVCacheStepper:
        return KVCacheStepper(self.model, None if start is None else kv_cache_from_tensors(start.tensors))

    def begin_prefill(self, ids: torch.Tensor, start: DocumentState | None = None) -> RowPrefill:
        """Start reading ``ids`` into a KV cache of its own (see :mod:`~mamba_router.generation.batching`)."""
        from mamba_router.transformer.batch import KVRowPrefill

        return KVRowPrefill(self.model, ids, None if start is None else kv_cache_from_tensors(start.tensors))

    def slot_batch(self, max_rows: int) -> SlotBatch:
        """An empty running batch: left-padded rows with their padding masked."""
        from mamba_router.transformer.batch import PaddedKVSlots

        return PaddedKVSlots(self.model, max_rows)

    def _read_state(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """The KV cache after the document."""
        out = self.model(input_ids=ids.view(1, -1), use_cache=True, logits_to_keep=1)
        return kv_cache_to_tensors(returned_cache(out))

    def _identity_config(self) -> object:
        return self.model.config

    def lora_module(self) -> nn.Module:
        """The Hugging Face model itself."""
        return self.model

    def default_lora_targets(self) -> list[str]:
        """The linear layers of the attention blocks (q/k/v/o_proj on Llama-like models, c_attn/c_proj on GPT-2)."""
        return attention_linear_names(self.model)

    def lora_logits(self, module: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        """``module`` is the Hugging Face model or a peft wrapper of it."""
        logits: torch.Tensor = module(input_ids=input_ids).logits
        return logits


def kv_cache_to_tensors(cache: Any) -> dict[str, torch.Tensor]:
    """A transformers cache as ``key.i``/``value.i`` tensors (the document-state layout of this backend)."""
    tensors = {}
    for i, layer in enumerate(cache.layers):
        tensors[f"key.{i}"], tensors[f"value.{i}"] = layer.keys, layer.values
    return tensors


def kv_cache_from_tensors(tensors: Mapping[str, torch.Tensor]) -> Any:
    """A fresh ``DynamicCache`` holding copies of the tensors (the stored ones serve the next question too)."""
    from transformers import DynamicCache

    layers = sum(1 for name in tensors if name.startswith("key."))
    if not layers or len(tensors) != 2 * layers:
        raise CorruptCheckpointError(f"a KV-cache state holds key.i and value.i per layer, found {sorted(tensors)[:6]}")
    cache = DynamicCache()
    for i in range(layers):
        cache.update(tensors[f"key.{i}"].clone(), tensors[f"value.{i}"].clone(), i)
    return cache


def context_window(config: Any) -> int | None:
    """The longest input the model reads, from its config."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
