"""The built-in ``transformer`` backend: any Hugging Face causal LM, on CUDA, MPS or CPU.

Loads with ``trust_remote_code=False`` and prefers safetensors; pickled ``*.bin`` weights are read by transformers
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mamba_router.decoding import GenerationRequest, GenerationStream, run_generation
from mamba_router.devices import dtype_name, resolve_device, resolve_dtype
from mamba_router.errors import (
    CorruptCheckpointError,
    GenerationError,
    ModelLoadError,
    ModelNotFoundError,
)
from mamba_router.loaded_model import TokenizerModel, eos_token_ids
from mamba_router.model_source import ModelSource, find_weight_files, read_config_json, resolve_model_source
from mamba_router.offline import build_offline_tokenizer, is_offline_model, write_offline_marker
from mamba_router.records import Availability, GenerationResult, PlatformFacts
from mamba_router.tokenizer_loading import load_tokenizer

logger = logging.getLogger(__name__)

DEFAULT_TRANSFORMER_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"


class TransformerBackend:
    """Runs Hugging Face ``AutoModelForCausalLM`` models; the fallback that works everywhere."""

    name = "transformer"
    family = "transformer"
    priority = 0
    default_model = DEFAULT_TRANSFORMER_MODEL
    install_command = "pip install mamba-router"

    def probe(self, platform: PlatformFacts) -> Availability:
        """Usable wherever torch and transformers import; names the device it would run on."""
        if platform.torch_version is None:
            return Availability.unusable("torch is not importable", "pip install torch")
        if importlib.util.find_spec("transformers") is None:
            return Availability.unusable("transformers is not installed", "pip install transformers")
        device = "cuda" if platform.cuda_available else "mps" if platform.mps_available else "cpu"
        return Availability.usable(f"Hugging Face transformers on {device}", device=device)

    def load(
        self, model: str, *, device: str | None = None, dtype: str | torch.dtype | None = None
    ) -> TransformerModel:
        """Load a causal LM and its tokenizer from a hub id or a ``save_pretrained`` directory."""
        source = resolve_model_source(model)
        target = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, target)
        use_safetensors = _check_local_checkpoint(source.local_path) if source.local_path else None
        tokenizer = load_tokenizer(source.model_id, source.local_path, None, None)
        hf_model = _load_causal_lm(source, torch_dtype, use_safetensors)
        hf_model.to(target)
        hf_model.eval()
        if source.local_path is not None and is_offline_model(source.local_path):
            logger.warning("model at %s has random weights (built offline); its output is meaningless", source.location)
        return TransformerModel(hf_model, tokenizer, model_id=source.model_id, device=target, backend=self.name)

    def write_offline_model(self, directory: Path) -> Path:
        """Write a tiny random-weight Llama-style model and an offline-trained tokenizer into ``directory``."""
        from transformers import LlamaConfig, LlamaForCausalLM

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tokenizer = build_offline_tokenizer()
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        write_offline_marker(directory, "tiny Llama-style transformer, 2 layers x 64, random weights")
        return directory


def _check_local_checkpoint(directory: Path) -> bool:
    """Validate a local model directory before transformers sees it; return whether to read safetensors."""
    config = read_config_json(directory)
    if "model_type" not in config:
        raise CorruptCheckpointError(
            f"{directory / 'config.json'} has no 'model_type'; it was not written by a transformers save_pretrained"
        )
    safetensors, pickles = find_weight_files(directory)
    if not safetensors and not pickles:
        raise CorruptCheckpointError(
            f"{directory} has a config.json but no weights (*.safetensors or *.bin); save the model again"
        )
    return bool(safetensors)


def _load_causal_lm(source: ModelSource, dtype: torch.dtype, use_safetensors: bool | None) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(source.location, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        if source.is_local:
            raise CorruptCheckpointError(
                f"config in {source.location!r} cannot be read by transformers: {exc}"
            ) from exc
        raise ModelNotFoundError(
            f"could not fetch {source.model_id!r} from the Hugging Face Hub: {exc}. "
            f"Without network access, download it elsewhere (huggingface-cli download {source.model_id}) "
            "and pass the local directory"
        ) from exc
    try:
        return AutoModelForCausalLM.from_pretrained(
            source.location,
            config=config,
            dtype=dtype,
            trust_remote_code=False,
            use_safetensors=use_safetensors,
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"could not load causal-LM weights from {source.location!r}: {exc}") from exc


class _KVCacheStepper:
    """Prefill then one token at a time, keeping the model's KV cache between calls (optionally starting from one)."""

    def __init__(self, model: Any, past: Any = None) -> None:
        self._model = model
        self._past: Any = past

    @torch.inference_mode()
    def prefill(self, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        (input_ids,) = prompts  # one sequence at a time: no padding, so no attention mask is needed
        out = self._model(input_ids=input_ids.view(1, -1), past_key_values=self._past, use_cache=True, logits_to_keep=1)
        self._past = out.past_key_values
        return out.logits[:, -1, :]

    @torch.inference_mode()
    def step(self, token: torch.Tensor) -> torch.Tensor:
        out = self._model(input_ids=token.view(1, 1), past_key_values=self._past, use_cache=True)
        self._past = out.past_key_values
        return out.logits[:, -1, :]


class TransformerModel(TokenizerModel):
    """A Hugging Face causal LM loaded by the ``transformer`` backend."""

    def __init__(
        self, model: Any, tokenizer: Any, *, model_id: str, device: torch.device, backend: str = "transformer"
    ) -> None:
        super().__init__(tokenizer, backend=backend, device=device, model_id=model_id)
        self.model = model
        self.dtype = dtype_name(next(model.parameters()).dtype)
        self.context_window = _context_window(model.config)
        self._eos = eos_token_ids(tokenizer, model)

    def _generate(
        self, ids: torch.Tensor, request: GenerationRequest, *, stream: bool
    ) -> GenerationResult | GenerationStream:
        try:
            return run_generation(
                _KVCacheStepper(self.model), ids, request, self.tokenizer, self._eos, self.identity, stream=stream
            )
        except torch.OutOfMemoryError as exc:
            raise GenerationError(f"{self.backend} ran out of memory on {self.device}: {exc}") from exc

    @torch.inference_mode()
    def _read_state(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """The KV cache after the document: key.i and value.i for every layer."""
        self._check_fits(int(ids.numel()), 1)
        out = self.model(input_ids=ids.view(1, -1), use_cache=True, logits_to_keep=1)
        tensors = {}
        for i, layer in enumerate(out.past_key_values.layers):
            tensors[f"key.{i}"], tensors[f"value.{i}"] = layer.keys, layer.values
        return tensors

    def _stepper_from_state(self, state: Any) -> _KVCacheStepper:
        from transformers import DynamicCache

        cache = DynamicCache()
        for i, (key, value) in enumerate(zip(state.layer_tensors("key"), state.layer_tensors("value"))):
            cache.update(key.clone(), value.clone(), i)  # copies: the document's cache serves the next question too
        return _KVCacheStepper(self.model, cache)


def _context_window(config: Any) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
