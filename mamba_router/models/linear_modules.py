"""The linear layers of a module, by their last names: what LoRA can adapt.

GPT-2's ``transformers.pytorch_utils.Conv1D`` counts as linear (a linear layer with a transposed weight; peft adapts
it). Output layers (``lm_head``, ...) are left out.
"""

from __future__ import annotations

import torch
from torch import nn

OUTPUT_LAYERS = frozenset({"lm_head", "embed_out", "output", "score"})


def is_linear(module: nn.Module) -> bool:
    """An ``nn.Linear`` or GPT-2's ``Conv1D``."""
    if isinstance(module, nn.Linear):
        return True
    return type(module).__name__ == "Conv1D" and isinstance(getattr(module, "weight", None), torch.Tensor)


def linear_module_names(model: nn.Module) -> list[str]:
    """The distinct last names of the linear layers inside the model (``q_proj``, ``in_proj``, ...), output out."""
    names: dict[str, None] = {}
    for path, module in model.named_modules():
        leaf = path.rsplit(".", 1)[-1]
        if path and is_linear(module) and leaf not in OUTPUT_LAYERS:
            names.setdefault(leaf, None)
    return list(names)


def attention_linear_names(model: nn.Module) -> list[str]:
    """The last names of the linear layers inside attention blocks; every linear layer when there are none."""
    attention: dict[str, None] = {}
    for path, module in model.named_modules():
        parts = path.split(".")
        if is_linear(module) and any("attn" in p or "attention" in p for p in parts[:-1]):
            attention.setdefault(parts[-1], None)
    return list(attention) or linear_module_names(model)
