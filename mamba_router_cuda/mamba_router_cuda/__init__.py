"""mamba-router-cuda: the ``real-mamba`` backend on the official mamba-ssm CUDA kernels."""

__version__ = "0.1.0"
