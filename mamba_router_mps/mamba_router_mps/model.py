"""The pure-PyTorch Mamba model behind the mamba_router model interface."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import torch

from mamba_router.decoding import (
    GenerationRequest,
    GenerationStream,
    check_request,
    generation_kwargs,
    run_batch_generation,
    run_generation,
)
from mamba_router.document_state import DocumentState, StateMismatchError, document_hash, model_identity, split_prompt
from mamba_router.devices import dtype_name
from mamba_router.errors import GenerationError
from mamba_router.loaded_model import TokenizerModel, eos_token_ids
from mamba_router.records import GenerationResult

from mamba_router_mps.modules import LayerState, MambaLM

DEFAULT_SEGMENT = 512  # tokens read per pass: bounds prefill memory whatever the prompt length (fastest on CPU in our runs)


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

    def _generate(self, ids: torch.Tensor, request: GenerationRequest, *, stream: bool) -> GenerationResult | GenerationStream:
        try:
            return run_generation(self._stepper(), ids, request, self.tokenizer, self._eos, self.identity, stream=stream)
        except torch.OutOfMemoryError as exc:
            raise GenerationError(f"{self.backend} ran out of memory on {self.device}: {exc}") from exc

    def _generate_batch(self, prompts: list[torch.Tensor], request: GenerationRequest) -> list[GenerationResult]:
        return run_batch_generation(self._stepper(), prompts, request, self.tokenizer, self._eos, self.identity)

    @property
    def state_identity(self) -> str:
        """Fingerprint that a saved document state must carry to be used with this model."""
        return model_identity(self.backend, self.model_id, self.model.cfg, self.dtype)

    @torch.inference_mode()
    def read(self, document: str) -> DocumentState:
        """Read ``document`` once; return every layer's state (see :mod:`mamba_router.document_state`)."""
        document_part, _ = split_prompt("?", document)
        ids = self.encode(document_part)
        try:
            _, states = self.model.read(ids.view(1, -1), segment=self.segment)
        except torch.OutOfMemoryError as exc:
            raise GenerationError(f"{self.backend} ran out of memory reading the document on {self.device}: {exc}") from exc
        return DocumentState(
            model_identity=self.state_identity,
            document_sha256=document_hash(document),
            document_tokens=int(ids.numel()),
            conv=[s.conv for s in states],
            ssm=[s.ssm for s in states],
        )

    def ask(self, state: DocumentState, question: str, *, max_new_tokens: int = 256, stream: bool = False, **sampling: Any) -> GenerationResult | GenerationStream:
        """Answer ``question`` about the document ``state`` was read from; ``state`` is left unchanged."""
        if state.model_identity != self.state_identity:
            raise StateMismatchError("this document state was read by another model; read the document with this one")
        _, question_part = split_prompt(question, "document")
        request = check_request(question_part, max_new_tokens=max_new_tokens, **generation_kwargs(**sampling))
        ids = torch.tensor(
            self.tokenizer(question_part, add_special_tokens=False)["input_ids"], dtype=torch.long, device=self._torch_device
        )
        start = [LayerState(c, s) for c, s in zip(state.conv, state.ssm)]
        stepper = ContinuingStepper(self.model, self.vocab_size, self.segment, start)
        try:
            return run_generation(stepper, ids, request, self.tokenizer, self._eos, self.identity, stream=bool(stream))
        except torch.OutOfMemoryError as exc:
            raise GenerationError(f"{self.backend} ran out of memory on {self.device}: {exc}") from exc
