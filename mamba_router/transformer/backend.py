"""The built-in ``transformer`` backend's entry point: probe, load and the offline model.

Loads with ``trust_remote_code=False`` and prefers safetensors; pickled ``*.bin`` weights are read by transformers
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import torch

from mamba_router.backends.devices import resolve_device, resolve_dtype
from mamba_router.backends.reports import Availability, PlatformFacts
from mamba_router.errors import CorruptCheckpointError, ModelLoadError, ModelNotFoundError, WrongBackendError
from mamba_router.models.checkpoint import find_weight_files, read_config_json
from mamba_router.models.offline import build_offline_tokenizer, is_offline_model, write_offline_marker
from mamba_router.models.quiet import quiet_dependencies
from mamba_router.models.registry import family_of, has_mamba_layers
from mamba_router.models.source import ModelSource, resolve_model_source
from mamba_router.models.tokenizers import load_tokenizer
from mamba_router.transformer.model import TransformerModel

logger = logging.getLogger(__name__)

DEFAULT_TRANSFORMER_MODEL = "ibm-granite/granite-4.0-350m"


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
        with quiet_dependencies():
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
        with quiet_dependencies():
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


def refuse_state_space_models(config: Any, model_id: str) -> None:
    """A checkpoint with Mamba layers is an error here (this backend decodes with a KV cache), naming the backends
    that run it; transformers would load it and then fail while decoding. A hybrid family's config with attention
    layers only (e.g. Granite-4.0's dense models) runs here."""
    data = config.to_dict()
    if has_mamba_layers(data, model_id):
        family = family_of(data, model_id)
        raise WrongBackendError(
            f"{model_id} is a {family.name} checkpoint (model_type {config.model_type!r}), a state-space model that "
            "the transformer backend does not decode; load it with a Mamba backend: backend='real-mamba' on a CUDA "
            "GPU, or backend='mamba2' (Apple silicon, or the CPU when forced)"
        )


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
    refuse_state_space_models(config, source.model_id)
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
