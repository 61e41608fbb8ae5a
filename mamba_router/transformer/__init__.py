"""The built-in ``transformer`` backend: any Hugging Face causal LM, on CUDA, MPS or CPU.

It is a backend like the ones in other distributions (registered through the same entry-point group), shipped
with the core so that every machine has the fallback.
"""

from mamba_router.transformer.backend import DEFAULT_TRANSFORMER_MODEL, TransformerBackend
from mamba_router.transformer.model import TransformerModel

__all__ = ["DEFAULT_TRANSFORMER_MODEL", "TransformerBackend", "TransformerModel"]
