"""The ``mamba2`` backend: Mamba-2 and Mamba-1 in pure PyTorch, chosen on Apple silicon (MPS), forceable anywhere.

Where MPS is missing the probe says so and marks the backend *forceable*: ``MAMBA_ROUTER_BACKEND=mamba2`` (or
``backend="mamba2"``) then runs it on the CPU, and the loaded model's ``device`` says ``cpu``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from mamba_router.devices import resolve_device, resolve_dtype
from mamba_router.errors import InvalidRequestError, ModelNotFoundError
from mamba_router.model_source import resolve_model_source
from mamba_router.offline import build_offline_tokenizer, is_offline_model, write_offline_marker
from mamba_router.records import Availability, PlatformFacts
from mamba_router.tokenizer_loading import GPT_NEOX_TOKENIZER, load_tokenizer
from mamba_router_mps.checkpoint import load_directory, save_mamba_ssm_format
from mamba_router_mps.config import SSMConfig
from mamba_router_mps.model import DEFAULT_SEGMENT, PureMambaModel
from mamba_router_mps.modules import MambaLM

logger = logging.getLogger(__name__)

INSTALL_COMMAND = "pip install 'mamba-router[mps]'"


class Mamba2Backend:
    """Mamba-2 and Mamba-1 in pure PyTorch; targets Apple silicon (MPS), runs on CPU when forced."""

    name = "mamba2"
    family = "mamba"
    priority = 10
    default_model = "state-spaces/mamba2-130m"
    install_command = INSTALL_COMMAND

    def probe(self, platform: PlatformFacts) -> Availability:
        """Usable on macOS with MPS; elsewhere forceable, running on the CPU."""
        if platform.torch_version is None:
            return Availability.unusable("torch is not importable", "pip install torch")
        if platform.system == "darwin" and platform.mps_available:
            return Availability.usable("pure-PyTorch Mamba on Apple silicon (MPS)", device="mps")
        return Availability.unusable(
            f"MPS is not available ({platform.system}, {platform.machine}); mamba2 targets Apple silicon. "
            "Forcing it (MAMBA_ROUTER_BACKEND=mamba2) runs the pure-PyTorch model on the CPU",
            None,
            forceable=True,
            device="cpu",
        )

    def load(
        self,
        model: str,
        *,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        tokenizer: str | None = None,
        segment: int = DEFAULT_SEGMENT,
    ) -> PureMambaModel:
        """Load a mamba-ssm or HF transformers Mamba/Mamba2 checkpoint (directory or hub id)."""
        if not isinstance(segment, int) or segment < 1:
            raise InvalidRequestError(f"segment must be a positive int, got {segment!r}")
        source = resolve_model_source(model)
        target = resolve_device(device)
        if target.type == "cpu":
            logger.warning("mamba2 backend: running on the CPU (no MPS here); expect it to be slow on long inputs")
        torch_dtype = (
            torch.float32 if target.type == "cpu" and dtype in (None, "auto") else resolve_dtype(dtype, target)
        )
        directory = source.local_path if source.local_path is not None else _download(source.model_id)
        lm, fmt = load_directory(directory)
        lm = lm.to(device=target, dtype=torch_dtype)
        if is_offline_model(directory):
            logger.warning("model at %s has random weights (built offline); its output is meaningless", directory)
        return PureMambaModel(
            lm,
            load_tokenizer(source.model_id, directory, tokenizer, GPT_NEOX_TOKENIZER),
            model_id=source.model_id,
            device=target,
            checkpoint_format=fmt,
            segment=segment,
            backend=self.name,
        )

    def write_offline_model(self, directory: Path) -> Path:
        """Write a tiny random-weight Mamba-2 in mamba-ssm's format with an offline-trained tokenizer."""
        tokenizer = build_offline_tokenizer()
        cfg = SSMConfig(
            arch="mamba2", d_model=64, n_layer=2, vocab_size=len(tokenizer), d_state=16, headdim=16, chunk_size=64
        )
        torch.manual_seed(0)
        model = MambaLM(cfg)
        with torch.no_grad():
            for layer in model.backbone.layers:
                layer.mixer.dt_bias.uniform_(-4.0, -2.0)  # softplus^-1 of dt around 0.02-0.13, as mamba-ssm initialises
        directory = save_mamba_ssm_format(model, Path(directory), len(tokenizer))
        tokenizer.save_pretrained(directory)
        write_offline_marker(directory, "tiny Mamba-2, 2 layers x 64, random weights")
        return directory


def _download(repo: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(repo, allow_patterns=["*.json", "*.safetensors", "pytorch_model.bin", "*.txt", "*.model"])
        )
    except Exception as exc:
        raise ModelNotFoundError(
            f"could not fetch {repo!r} from the Hugging Face Hub: {type(exc).__name__}: {exc}. Without network access, "
            f"download it elsewhere (huggingface-cli download {repo}) and pass the directory"
        ) from exc
