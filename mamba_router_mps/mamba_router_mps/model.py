"""The pure-PyTorch Mamba model behind the mamba_router model interface."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import torch

from mamba_router.decoding import GenerationRequest, GenerationStream, run_batch_generation, run_generation
from mamba_router.devices import dtype_name
from mamba_router.document_state import DocumentState
from mamba_router.errors import GenerationError
from mamba_router.loaded_model import TokenizerModel, eos_token_ids
from mamba_router.records import GenerationResult
from mamba_router_mps.modules import LayerState, MambaLM

DEFAULT_SEGMENT = (
    512  # tokens read per pass: bounds prefill memory whatever the prompt length (fastest on CPU in our runs)
)


class StateStepper:
    """Reads prompts into per-layer states, then feeds one token per sequence at a time."""

    def __init__(self, model: MambaLM, vocab_size: int, segment: int) -> None:
        self.model = model
        self.vocab_size = vocab_size
        self.segment = segment
        self.states: list[LayerState] = []

    @torch.inference_mode()
    def prefill(self, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        rows, per_prompt = [], []
        for prompt in prompts:  # each alone: a recurrence has no padding mask
            logits, states = self.model.read(prompt.view(1, -1), segment=self.segment)
            rows.append(logits)
            per_prompt.append(states)
        self.states = [
            LayerState(torch.cat([s[i].conv for s in per_prompt]), torch.cat([s[i].ssm for s in per_prompt]))
            for i in range(len(per_prompt[0]))
        ]
        return torch.cat(rows)[:, : self.vocab_size].float()

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        logits, self.states = self.model(tokens.view(-1, 1), self.states)
        return logits[:, -1, : self.vocab_size].float()


class ContinuingStepper(StateStepper):
    """A stepper that starts from copies of a read document's states instead of empty ones."""

    def __init__(self, model: MambaLM, vocab_size: int, segment: int, start: list[LayerState]) -> None:
        super().__init__(model, vocab_size, segment)
        self._start = start

    @torch.inference_mode()
    def prefill(self, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        (prompt,) = prompts
        states = [s.clone() for s in self._start]  # the document's state stays as it was for the next question
        logits, self.states = self.model.read(prompt.view(1, -1), states, segment=self.segment)
        return logits[:, : self.vocab_size].float()


class PureMambaModel(TokenizerModel):
    """Mamba-1 or Mamba-2 in plain PyTorch on MPS or CPU."""

    def __init__(
        self,
        model: MambaLM,
        tokenizer: Any,
        *,
        model_id: str,
        device: torch.device,
        checkpoint_format: str,
        segment: int = DEFAULT_SEGMENT,
        backend: str = "mamba2",
    ) -> None:
        super().__init__(tokenizer, backend=backend, device=device, model_id=model_id)
        self.model = model
        self.arch = model.cfg.arch
        self.checkpoint_format = checkpoint_format
        self.segment = segment
        self.dtype = dtype_name(next(model.parameters()).dtype)
        self.vocab_size = min(len(tokenizer), model.cfg.vocab_size)
        self._eos = eos_token_ids(tokenizer)
        self._lock = threading.Lock()

    def _stepper(self) -> StateStepper:
        return StateStepper(self.model, self.vocab_size, self.segment)

    def _generate(
        self, ids: torch.Tensor, request: GenerationRequest, *, stream: bool
    ) -> GenerationResult | GenerationStream:
        try:
            return run_generation(
                self._stepper(), ids, request, self.tokenizer, self._eos, self.identity, stream=stream
            )
        except torch.OutOfMemoryError as exc:
            raise GenerationError(f"{self.backend} ran out of memory on {self.device}: {exc}") from exc

    def _generate_batch(self, prompts: list[torch.Tensor], request: GenerationRequest) -> list[GenerationResult]:
        return run_batch_generation(self._stepper(), prompts, request, self.tokenizer, self._eos, self.identity)

    def _read_state(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            _, states = self.model.read(ids.view(1, -1), segment=self.segment)
        tensors = {f"conv.{i}": s.conv for i, s in enumerate(states)}
        tensors.update({f"ssm.{i}": s.ssm for i, s in enumerate(states)})
        return tensors

    def _stepper_from_state(self, state: DocumentState) -> ContinuingStepper:
        start = [LayerState(c, s) for c, s in zip(state.layer_tensors("conv"), state.layer_tensors("ssm"))]
        return ContinuingStepper(self.model, self.vocab_size, self.segment, start)
