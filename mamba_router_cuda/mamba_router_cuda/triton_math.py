"""Elementwise functions the Triton kernels share, written as mamba-ssm's kernels compute them (float32)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def silu(x):
    return x * tl.sigmoid(x)


@triton.jit
def softplus(x):
    """log(1 + exp(x)), and x itself above 20 (as torch's softplus with its default threshold)."""
    return tl.where(x <= 20.0, tl.log(1.0 + tl.exp(x)), x)
