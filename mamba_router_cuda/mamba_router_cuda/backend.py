"""The ``real-mamba`` backend: every Mamba family on the official mamba-ssm CUDA kernels, decoding through CUDA
graphs.

The model code is the core's (:mod:`mamba_router.models`); this backend supplies the ops
(:class:`~mamba_router_cuda.kernel_ops.KernelOps`), the decoder (:class:`~mamba_router_cuda.decode_graph.CudaGraphDecoder`)
and the probe. Checkpoints in mamba-ssm's format and in transformers' Mamba/Mamba2 format both load.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mamba_router.backends.devices import resolve_device, resolve_dtype
from mamba_router.backends.platform import collect_platform_facts
from mamba_router.backends.reports import Availability, PlatformFacts
from mamba_router.errors import BackendUnavailableError, InvalidRequestError
from mamba_router.generation.ssm_model import EagerDecoder, SSMModel, load_ssm_model, write_offline_mamba
from mamba_router.models.stack import LayerStack
from mamba_router_cuda.decode_graph import CudaGraphDecoder
from mamba_router_cuda.kernel_ops import KernelOps
from mamba_router_cuda.probe import INSTALL_BACKEND, INSTALL_MAMBA_SSM, assess, collect_kernel_facts


class RealMambaBackend:
    """Mamba-1 and Mamba-2 checkpoints on the official mamba-ssm CUDA kernels, with CUDA-graph decoding."""

    name = "real-mamba"
    family = "mamba"
    priority = 20
    default_model = "ibm-granite/granite-4.0-h-350m"
    install_command = INSTALL_BACKEND

    def probe(self, platform: PlatformFacts) -> Availability:
        """Cheap: reads platform facts and package metadata; imports no kernel and loads no model."""
        return assess(platform, collect_kernel_facts())

    def load(
        self,
        model: str,
        *,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        tokenizer: str | None = None,
        use_cuda_graph: bool = True,
        ssm_state_dtype: str = "model",
    ) -> SSMModel:
        """Load a checkpoint (hub id or directory); bfloat16 on the GPU unless ``dtype`` says otherwise.

        ``ssm_state_dtype``: ``"model"`` keeps the recurrent states in the weights' dtype, as mamba-ssm's own
        ``generate`` does (same numbers, half the state memory); ``"float32"`` keeps them exact over long decodes.

        The tokenizer comes from ``tokenizer``, else from the model directory, else GPT-NeoX-20B (the state-spaces
        models' tokenizer).
        """
        availability = self.probe(collect_platform_facts())
        if not availability.available:
            raise BackendUnavailableError(self.name, availability.reason, availability.install_command)
        target = resolve_device(device or "cuda")
        if target.type != "cuda":
            raise InvalidRequestError(f"real-mamba runs on CUDA devices only, not {target}; use device='cuda'")
        if ssm_state_dtype not in ("model", "float32"):
            raise InvalidRequestError(f"ssm_state_dtype must be 'model' or 'float32', got {ssm_state_dtype!r}")
        torch_dtype = resolve_dtype(dtype, target)
        ops = KernelOps()

        def make_decoder(lm: LayerStack) -> CudaGraphDecoder | EagerDecoder:
            ops.suit_model(lm)  # before any graph is captured
            return CudaGraphDecoder(lm, use_graph=use_cuda_graph) if lm.graph_capturable else EagerDecoder(lm, None)

        loaded = load_ssm_model(
            model,
            backend=self.name,
            ops=ops,
            device=target,
            dtype=torch_dtype,
            tokenizer=tokenizer,
            make_decoder=make_decoder,
            ssm_state_dtype=torch_dtype if ssm_state_dtype == "model" else torch.float32,
        )
        if "mamba1" in loaded.mixers and availability.details.get("mamba1_kernel") != "present":
            raise BackendUnavailableError(
                self.name,
                f"{loaded.model_id} is a Mamba-1 checkpoint and mamba-ssm's selective_scan_cuda kernel is missing",
                INSTALL_MAMBA_SSM,
            )
        return loaded

    def write_offline_model(self, directory: Path) -> Path:
        """Write a tiny random-weight Mamba-2 in mamba-ssm's format with an offline-trained tokenizer."""
        return write_offline_mamba(
            Path(directory), d_model=128, headdim=32, description="tiny Mamba-2, 2 layers x 128, random weights"
        )
