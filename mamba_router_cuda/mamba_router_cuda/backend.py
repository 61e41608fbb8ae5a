"""The ``real-mamba`` backend: Mamba-1 and Mamba-2 checkpoints on the official mamba-ssm CUDA kernels."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from mamba_router.devices import resolve_device, resolve_dtype
from mamba_router.errors import BackendUnavailableError, InvalidRequestError
from mamba_router.model_source import resolve_model_source
from mamba_router.offline import build_offline_tokenizer, is_offline_model, write_offline_marker
from mamba_router.platform_facts import collect_platform_facts
from mamba_router.records import Availability, PlatformFacts
from mamba_router.tokenizer_loading import GPT_NEOX_TOKENIZER, load_tokenizer
from mamba_router_cuda.checkpoint import load_weights_into, locate_checkpoint, read_state_dict, save_checkpoint
from mamba_router_cuda.model import RealMambaModel
from mamba_router_cuda.probe import INSTALL_BACKEND, INSTALL_MAMBA_SSM, assess, collect_kernel_facts

logger = logging.getLogger(__name__)


class RealMambaBackend:
    """Mamba-1 and Mamba-2 checkpoints on the official mamba-ssm CUDA kernels, with CUDA-graph decoding."""

    name = "real-mamba"
    family = "mamba"
    priority = 20
    default_model = "state-spaces/mamba-130m"
    install_command = INSTALL_BACKEND

    def probe(self, platform: PlatformFacts) -> Availability:
        """Cheap: reads platform facts and package metadata; imports no kernel and loads no model."""
        return assess(platform, collect_kernel_facts())

    def load(
        self,
        model: str,
        *,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        tokenizer: str | None = None,
        use_cuda_graph: bool = True,
    ) -> RealMambaModel:
        """Load a mamba-ssm checkpoint (hub id or directory); bfloat16 on the GPU unless ``dtype`` says otherwise.

        The tokenizer comes from ``tokenizer``, else from the model directory, else GPT-NeoX-20B (the state-spaces
        models' tokenizer).
        """
        availability = self.probe(collect_platform_facts())
        if not availability.available:
            raise BackendUnavailableError(self.name, availability.reason, availability.install_command)
        target = resolve_device(device or "cuda")
        if target.type != "cuda":
            raise InvalidRequestError(f"real-mamba runs on CUDA devices only, not {target}; use device='cuda'")
        torch_dtype = resolve_dtype(dtype, target)
        source = resolve_model_source(model)
        checkpoint = locate_checkpoint(source)
        if checkpoint.layer == "Mamba1" and availability.details.get("mamba1_kernel") != "present":
            raise BackendUnavailableError(
                self.name,
                f"{source.model_id} is a Mamba-1 checkpoint and mamba-ssm's selective_scan_cuda kernel is missing",
                INSTALL_MAMBA_SSM,
            )
        lm = _build_model(checkpoint.config, target, torch_dtype)
        load_weights_into(
            lm,
            read_state_dict(checkpoint.weights),
            tied=checkpoint.config.get("tie_embeddings", True),
            where=checkpoint.weights,
        )
        lm.eval()
        if source.local_path is not None and is_offline_model(source.local_path):
            logger.warning("model at %s has random weights (built offline); its output is meaningless", source.location)
        return RealMambaModel(
            lm,
            load_tokenizer(source.model_id, source.local_path, tokenizer, GPT_NEOX_TOKENIZER),
            model_id=source.model_id,
            device=target,
            layer=checkpoint.layer,
            use_cuda_graph=use_cuda_graph,
            backend=self.name,
        )

    def write_offline_model(self, directory: Path) -> Path:
        """Write a tiny random-weight Mamba-2 in mamba-ssm's format with an offline-trained tokenizer."""
        from mamba_ssm.models.config_mamba import MambaConfig
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

        tokenizer = build_offline_tokenizer()
        config = MambaConfig(
            d_model=128,
            n_layer=2,
            vocab_size=len(tokenizer),
            ssm_cfg={"layer": "Mamba2", "headdim": 32},
            pad_vocab_size_multiple=16,
        )
        torch.manual_seed(0)
        directory = save_checkpoint(MambaLMHeadModel(config), Path(directory))
        tokenizer.save_pretrained(directory)
        write_offline_marker(directory, "tiny Mamba-2, 2 layers x 128, random weights")
        return directory


def _build_model(config: dict[str, Any], device: torch.device, dtype: torch.dtype) -> Any:
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel
    from mamba_ssm.modules import mamba2

    lm = MambaLMHeadModel(MambaConfig(**config), device=device, dtype=dtype)
    if mamba2.causal_conv1d_fn is None:
        # mamba-ssm's fused Mamba-2 forward calls causal_conv1d unconditionally; take the unfused path instead
        for module in lm.modules():
            if isinstance(module, mamba2.Mamba2):
                module.use_mem_eff_path = False
    return lm
