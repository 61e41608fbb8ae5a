"""A loaded model seen as a trainable ``nn.Module`` whose forward runs every adapted projection as a module call.

- transformer: the Hugging Face model itself.
- mamba2 (pure PyTorch): its ``MambaLM``; every projection is an ``nn.Linear`` called as a module.
- real-mamba: mamba-ssm's fused kernels read ``in_proj``/``out_proj`` (and Mamba-1's ``dt_proj``) weights directly, so
  a LoRA wrapper on them would be skipped. Training therefore runs the same weights in the pure-PyTorch ``MambaLM``
  (on the same GPU), and the adapters are merged into mamba-ssm's weights for inference (:mod:`.adapters`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mamba_router.errors import ConfigurationError


@dataclass
class TrainableModel:
    """The module to adapt, how to get logits from it, and what it came from."""

    module: nn.Module
    logits: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    tokenizer: Any
    backend: str
    model_id: str
    device: torch.device
    family: str


def _hf_logits(module: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return module(input_ids=ids).logits


def _mamba_logits(module: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return module(ids)[0]


def trainable_view(loaded: Any) -> TrainableModel:
    """The trainable module behind a model loaded by any of the three backends."""
    backend = getattr(loaded, "backend", "?")
    device = torch.device(loaded.device)
    if backend == "transformer" or type(loaded).__name__ == "TransformerModel":
        return TrainableModel(
            loaded.model, _hf_logits, loaded.tokenizer, backend, loaded.model_id, device, "transformer"
        )
    if type(loaded).__name__ == "PureMambaModel":
        return TrainableModel(loaded.model, _mamba_logits, loaded.tokenizer, backend, loaded.model_id, device, "mamba")
    if type(loaded).__name__ == "RealMambaModel":
        return TrainableModel(
            pure_copy_of_mamba_ssm(loaded), _mamba_logits, loaded.tokenizer, backend, loaded.model_id, device, "mamba"
        )
    raise ConfigurationError(f"LoRA training does not know models of type {type(loaded).__name__} (backend {backend})")


def pure_copy_of_mamba_ssm(loaded: Any) -> nn.Module:
    """mamba-ssm's model as the pure-PyTorch ``MambaLM`` with the same weights, on the same device and dtype."""
    import dataclasses

    from mamba_router_mps.checkpoint import build_model
    from mamba_router_mps.config import config_from_json

    source = loaded.model
    cfg, _ = config_from_json(dataclasses.asdict(source.config), where=loaded.model_id)
    module = build_model(cfg, dict(source.state_dict()), loaded.model_id)
    parameter = next(source.parameters())
    return module.to(device=parameter.device, dtype=parameter.dtype)
