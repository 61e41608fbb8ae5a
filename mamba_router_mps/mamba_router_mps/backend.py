"""The ``mamba2`` backend: every Mamba family on the plain-PyTorch reference ops, chosen on Apple silicon (MPS),
forceable anywhere.

The model code is the core's (:mod:`mamba_router.models`); this backend chooses the device, runs the reference ops
(:class:`~mamba_router.models.torch_ops.TorchOps`, memory-flat) and reads prompts segment by segment
(:class:`~mamba_router.generation.ssm_model.EagerDecoder`). Where MPS is missing the probe says so and marks the
backend *forceable*: ``MAMBA_ROUTER_BACKEND=mamba2`` (or ``backend="mamba2"``) then runs it on the CPU, and the
loaded model's ``device`` says ``cpu``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from mamba_router.backends.devices import resolve_device, resolve_dtype
from mamba_router.backends.install_hints import distribution_install_command
from mamba_router.backends.reports import Availability, PlatformFacts
from mamba_router.errors import InvalidRequestError
from mamba_router.generation.ssm_model import (
    DEFAULT_SEGMENT,
    EagerDecoder,
    SSMModel,
    load_ssm_model,
    write_offline_mamba,
)
from mamba_router.models.torch_ops import TorchOps

logger = logging.getLogger(__name__)

INSTALL_COMMAND = distribution_install_command("mamba-router-mps", "mps")  # as the core was installed
MIXERS = "mamba1,mamba2,attention"  # the reference ops run every mixer kind


class Mamba2Backend:
    """Mamba-2 and Mamba-1 in pure PyTorch; targets Apple silicon (MPS), runs on CPU when forced."""

    name = "mamba2"
    family = "mamba"
    priority = 10
    default_model = "ibm-granite/granite-4.0-h-350m"
    install_command = INSTALL_COMMAND

    def probe(self, platform: PlatformFacts) -> Availability:
        """Usable on macOS with MPS; elsewhere forceable, running on the CPU."""
        if platform.torch_version is None:
            return Availability.unusable("torch is not importable", "pip install torch")
        if platform.system == "darwin" and platform.mps_available:
            return Availability.usable("pure-PyTorch Mamba on Apple silicon (MPS)", device="mps", mixers=MIXERS)
        return Availability.unusable(
            f"MPS is not available ({platform.system}, {platform.machine}); mamba2 targets Apple silicon. "
            "Forcing it (MAMBA_ROUTER_BACKEND=mamba2) runs the pure-PyTorch model on the CPU",
            None,
            forceable=True,
            device="cpu",
            mixers=MIXERS,
        )

    def load(
        self,
        model: str,
        *,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        tokenizer: str | None = None,
        segment: int = DEFAULT_SEGMENT,
    ) -> SSMModel:
        """Load a mamba-ssm or HF transformers Mamba/Mamba2 checkpoint (directory or hub id)."""
        if not isinstance(segment, int) or isinstance(segment, bool) or segment < 1:
            raise InvalidRequestError(f"segment must be a positive int, got {segment!r}")
        target = resolve_device(device)
        if target.type == "cpu":
            logger.warning("mamba2 backend: running on the CPU (no MPS here); expect it to be slow on long inputs")
        torch_dtype = (
            torch.float32 if target.type == "cpu" and dtype in (None, "auto") else resolve_dtype(dtype, target)
        )
        return load_ssm_model(
            model,
            backend=self.name,
            ops=TorchOps(),
            device=target,
            dtype=torch_dtype,
            tokenizer=tokenizer,
            make_decoder=lambda lm: EagerDecoder(lm, segment),
        )

    def write_offline_model(self, directory: Path) -> Path:
        """Write a tiny random-weight Mamba-2 in mamba-ssm's format with an offline-trained tokenizer."""
        return write_offline_mamba(
            Path(directory), d_model=64, headdim=16, description="tiny Mamba-2, 2 layers x 64, random weights"
        )
