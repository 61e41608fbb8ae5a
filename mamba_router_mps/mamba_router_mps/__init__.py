"""mamba-router-mps: the ``mamba2`` backend (every Mamba family on plain-PyTorch ops, for Apple silicon; runs on CPU)."""

__version__ = "0.1.0"
