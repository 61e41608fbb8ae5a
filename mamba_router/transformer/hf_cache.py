"""How a Hugging Face causal LM takes and returns its KV cache: as ``cache`` from transformers 5.24 on (where
``past_key_values`` is deprecated and warns), as ``past_key_values`` before."""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any


def cache_argument(model: Any, cache: Any) -> dict[str, Any]:
    """The keyword argument that passes ``cache`` to ``model``'s forward."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft wrapper forwards kwargs
    model_class: Any = type(base)
    return {_keyword(model_class): cache}


def returned_cache(output: Any) -> Any:
    """The KV cache in a forward's output."""
    cache = output.get("cache") if hasattr(output, "get") else None
    return cache if cache is not None else output.past_key_values


@lru_cache(maxsize=64)
def _keyword(model_class: Any) -> str:
    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"
