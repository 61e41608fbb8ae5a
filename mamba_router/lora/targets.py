"""Which modules LoRA adapts: the loaded model declares its defaults, a configured list is checked against it.

- Mamba-1 (mamba-ssm and HF naming): ``in_proj``, ``x_proj``, ``dt_proj``, ``out_proj``.
- Mamba-2: ``in_proj``, ``out_proj``.
- Transformers: the linear layers of the attention blocks (``q_proj``/``k_proj``/``v_proj``/``o_proj`` on Llama-like
  models, ``c_attn``/``c_proj`` on GPT-2), found by walking ``named_modules()``.

Each model family says which (``default_lora_targets`` of a
:class:`~mamba_router.generation.protocols.SupportsLora` model). A configured target that matches no module is an
error listing the linear modules that exist.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mamba_router.errors import ConfigurationError
from mamba_router.models.linear_modules import linear_module_names


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
