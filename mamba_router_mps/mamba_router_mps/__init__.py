"""mamba-router-mps: the ``mamba2`` backend (pure PyTorch Mamba-2/Mamba-1 for Apple silicon, runnable on CPU)."""

__version__ = "0.1.0"
