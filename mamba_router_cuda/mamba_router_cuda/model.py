"""A mamba-ssm ``MambaLMHeadModel`` behind the mamba_router model interface."""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from mamba_router.decoding import GenerationRequest, GenerationStream, run_batch_generation, run_generation
from mamba_router.devices import dtype_name
from mamba_router.errors import GenerationError
from mamba_router.loaded_model import TokenizerModel, eos_token_ids
from mamba_router.records import GenerationResult
from mamba_router_cuda.decode_graph import DecodeGraph, StateContinuation, VocabStepper

SYNC_EVERY_TOKENS = 16  # tokens read back per host sync when not streaming


class RealMambaModel(TokenizerModel):
    """Mamba-1 or Mamba-2 on the mamba-ssm kernels, decoding through CUDA graphs."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str,
        device: torch.device,
        layer: str,
        use_cuda_graph: bool = True,
        backend: str = "real-mamba",
    ) -> None:
        super().__init__(tokenizer, backend=backend, device=device, model_id=model_id)
        self.model = model
        self.layer = layer
        self.dtype = dtype_name(next(model.parameters()).dtype)
        self.use_cuda_graph = use_cuda_graph
        self.vocab_size = min(len(tokenizer), int(model.lm_head.weight.shape[0]))
        self._eos = eos_token_ids(tokenizer)
        self._graphs: dict[int, DecodeGraph] = {}
        self._lock = threading.Lock()  # the graphs' static buffers serve one generation at a time

    def decode_graph(self, batch_size: int) -> DecodeGraph:
        """The state cache and captured step for ``batch_size`` (captured on first use, then reused)."""
        graph = self._graphs.get(batch_size)
        if graph is None:
            graph = DecodeGraph(self.model, batch_size, use_graph=self.use_cuda_graph)
            self._graphs[batch_size] = graph
        return graph

    @torch.inference_mode()
    def forward_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Full-sequence logits (batch, length, vocab) of one plain forward pass, for checks and scoring."""
        return self.model(input_ids).logits[..., : self.vocab_size]

    def _generate(
        self, ids: torch.Tensor, request: GenerationRequest, *, stream: bool
    ) -> GenerationResult | GenerationStream:
        return self._run_stepper(self._stepper(1), ids, request, stream=stream)

    def _run_stepper(
        self, stepper: Any, ids: torch.Tensor, request: GenerationRequest, *, stream: bool
    ) -> GenerationResult | GenerationStream:
        if stream:
            return GenerationStream(self._locked_stream(stepper, ids, request))
        with self._lock, _kernel_errors(self):
            result = run_generation(
                stepper,
                ids,
                request,
                self.tokenizer,
                self._eos,
                self.identity,
                stream=False,
                sync_every=SYNC_EVERY_TOKENS,
            )
        assert isinstance(result, GenerationResult)
        return result

    def _read_state(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every layer's conv and SSM state after reading ``ids`` in one fused forward."""
        from mamba_ssm.utils.generation import InferenceParams

        with self._lock, _kernel_errors(self), torch.inference_mode():
            params = InferenceParams(max_seqlen=1, max_batch_size=1)
            self.model(ids.view(1, -1), inference_params=params, num_last_tokens=1)
            tensors = {}
            for layer, (conv, ssm) in sorted(params.key_value_memory_dict.items()):
                tensors[f"conv.{layer}"], tensors[f"ssm.{layer}"] = conv.clone(), ssm.clone()
        return tensors

    def _stepper_from_state(self, state: Any) -> StateContinuation:
        graph = self.decode_graph(1)
        return StateContinuation(graph, state.layer_tensors("conv"), state.layer_tensors("ssm"), self.vocab_size)

    def _locked_stream(
        self, stepper: Any, ids: torch.Tensor, request: GenerationRequest
    ) -> Generator[str, None, GenerationResult]:
        with self._lock, _kernel_errors(self):
            stream = run_generation(
                stepper, ids, request, self.tokenizer, self._eos, self.identity, stream=True, sync_every=1
            )
            assert isinstance(stream, GenerationStream)
            yield from stream
            assert stream.result is not None
            return stream.result

    def _generate_batch(self, prompts: list[torch.Tensor], request: GenerationRequest) -> list[GenerationResult]:
        with self._lock, _kernel_errors(self):
            return run_batch_generation(
                self._stepper(len(prompts)),
                prompts,
                request,
                self.tokenizer,
                self._eos,
                self.identity,
                sync_every=SYNC_EVERY_TOKENS,
            )

    def _stepper(self, batch_size: int) -> VocabStepper:
        return VocabStepper(self.decode_graph(batch_size), self.vocab_size)


@contextmanager
def _kernel_errors(model: RealMambaModel) -> Iterator[None]:
    """Turn CUDA out-of-memory and kernel failures into GenerationError, so a router can fall back."""
    try:
        yield
    except GenerationError:
        raise
    except torch.OutOfMemoryError as exc:
        raise GenerationError(f"{model.backend} ran out of GPU memory on {model.device}: {exc}") from exc
    except RuntimeError as exc:
        raise GenerationError(f"{model.backend} failed in a kernel on {model.device}: {exc}") from exc
