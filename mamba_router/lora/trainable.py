"""A loaded model seen as a trainable ``nn.Module`` whose forward runs every adapted projection as a module call.

The loaded model says what that is (:class:`~mamba_router.generation.protocols.SupportsLora`): the module, its
family's default targets, and how to get logits from it. For the Mamba backends it is the shared layer stack
(:mod:`mamba_router.models.mamba`), whose projections are ``nn.Linear`` modules on every backend's ops; mamba-ssm's
kernels have backward passes, so ``real-mamba`` trains on them directly. For the transformer backend it is the
Hugging Face model. Adapters are merged into the weights for inference (``loaded.merge_adapter``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mamba_router.errors import ConfigurationError
from mamba_router.generation.protocols import SupportsLora


@dataclass
class TrainableModel:
    """The module to adapt, how to get logits from it, and what it came from."""

    module: nn.Module
    logits: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    tokenizer: Any
    backend: str
    model_id: str
    device: torch.device
    default_targets: list[str] = field(default_factory=list)


def trainable_view(loaded: Any) -> TrainableModel:
    """The trainable module behind a loaded model that supports LoRA."""
    if not isinstance(loaded, SupportsLora):
        raise ConfigurationError(
            f"LoRA training needs a model that exposes its module (lora_module, default_lora_targets, lora_logits); "
            f"{type(loaded).__name__} from backend {getattr(loaded, 'backend', '?')!r} does not"
        )
    return TrainableModel(
        module=loaded.lora_module(),
        logits=loaded.lora_logits,
        tokenizer=getattr(loaded, "tokenizer", None),
        backend=str(getattr(loaded, "backend", "?")),
        model_id=str(getattr(loaded, "model_id", "?")),
        device=torch.device(str(getattr(loaded, "device", "cpu"))),
        default_targets=loaded.default_lora_targets(),
    )
