"""Which modules LoRA adapts, read from the loaded model itself.

- Mamba-1 (mamba-ssm and HF naming): ``in_proj``, ``x_proj``, ``dt_proj``, ``out_proj``.
- Mamba-2: ``in_proj``, ``out_proj``.
- Transformers: the linear layers of the attention blocks (``q_proj``/``k_proj``/``v_proj``/``o_proj`` on Llama-like
  models, ``c_attn``/``c_proj`` on GPT-2), found by walking ``named_modules()``.

A configured target that matches no module is an error listing the linear modules that exist.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mamba_router.errors import ConfigurationError

MAMBA1_TARGETS = ("in_proj", "x_proj", "dt_proj", "out_proj")
MAMBA2_TARGETS = ("in_proj", "out_proj")
_OUTPUT_LAYERS = frozenset({"lm_head", "embed_out", "output", "score"})


def _is_linear(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    # GPT-2's transformers.pytorch_utils.Conv1D is a linear layer with a transposed weight; peft adapts it.
    return type(module).__name__ == "Conv1D" and isinstance(getattr(module, "weight", None), torch.Tensor)


def linear_module_names(model: nn.Module) -> list[str]:
    """The distinct last names of the linear layers inside the model (``q_proj``, ``in_proj``, ...), output layer out."""
    names: dict[str, None] = {}
    for path, module in model.named_modules():
        leaf = path.rsplit(".", 1)[-1]
        if path and _is_linear(module) and leaf not in _OUTPUT_LAYERS:
            names.setdefault(leaf, None)
    return list(names)


def mamba_architecture(model: nn.Module) -> str | None:
    """'mamba1' or 'mamba2' from the mixer layers' module names; None for a model without Mamba mixers."""
    leaves = {path.rsplit(".", 1)[-1] for path, _ in model.named_modules()}
    paths = [path for path, _ in model.named_modules()]
    if not any(".mixer." in f".{p}." or p.endswith(".mixer") for p in paths):
        return None
    return "mamba1" if {"x_proj", "dt_proj"} <= leaves else "mamba2"


def default_targets(model: nn.Module) -> list[str]:
    """The modules to adapt when the config names none, by architecture (see the module docstring)."""
    arch = mamba_architecture(model)
    if arch == "mamba1":
        return list(MAMBA1_TARGETS)
    if arch == "mamba2":
        return list(MAMBA2_TARGETS)
    attention = {}
    for path, module in model.named_modules():
        parts = path.split(".")
        if _is_linear(module) and any("attn" in p or "attention" in p for p in parts[:-1]):
            attention.setdefault(parts[-1], None)
    if attention:
        return list(attention)
    found = linear_module_names(model)
    if not found:
        raise ConfigurationError("the model has no linear layers that LoRA could adapt")
    return found


def check_targets(model: nn.Module, targets: Sequence[str]) -> list[str]:
    """Return ``targets`` if every one names at least one linear module; else raise listing what exists."""
    if isinstance(targets, str) or not targets:
        raise ConfigurationError(
            "target_modules must be a non-empty list of module names, e.g. ['in_proj', 'out_proj']"
        )
    available = linear_module_names(model)
    missing = [t for t in targets if t not in available]
    if missing:
        raise ConfigurationError(
            f"target_modules {missing} match no linear module of this model; the linear modules are: "
            f"{', '.join(available) or '(none)'}"
        )
    return list(dict.fromkeys(targets))
