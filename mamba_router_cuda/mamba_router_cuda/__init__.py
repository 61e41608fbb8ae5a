"""mamba-router-cuda: the ``real-mamba`` backend (mamba-ssm's CUDA kernels as ops, CUDA-graph decoding, the probe)."""

__version__ = "0.1.0"
