"""What every loaded model shares: token counting, argument checks, the context-then-question prompt.

A backend's model class subclasses :class:`TokenizerModel` and implements ``_generate`` (and ``_generate_batch``
where it can run several prompts at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from mamba_router.decoding import (
    GenerationRequest,
    GenerationStream,
    ModelIdentity,
    check_request,
    check_text,
    compose_context_prompt,
    generation_kwargs,
    run_generation,
)
from mamba_router.errors import ContextTooLongError, GenerationError, InvalidRequestError
from mamba_router.records import GenerationResult

if TYPE_CHECKING:
    from mamba_router.document_state import DocumentState


class TokenizerModel:
    """Base of loaded models: a tokenizer, an identity, and the public generation methods."""

    available = True
    reason = "loaded"
    context_window: int | None = None

    def __init__(self, tokenizer: Any, *, backend: str, device: torch.device, model_id: str) -> None:
        self.tokenizer = tokenizer
        self.backend = backend
        self.device = str(device)
        self.model_id = model_id
        self._torch_device = device

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_id={self.model_id!r}, device={self.device!r})"

    @property
    def identity(self) -> ModelIdentity:
        """Backend, device and model id, as stamped on every result."""
        return ModelIdentity(backend=self.backend, device=self.device, model_id=self.model_id)

    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` takes with this model's tokenizer (no special tokens)."""
        check_text(text, "text", allow_empty=True)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(self, text: str) -> torch.Tensor:
        """The ids the model reads for ``text`` (special tokens added as the tokenizer does), on the model's device."""
        ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        if not ids:
            raise InvalidRequestError(f"the prompt {text[:40]!r} encodes to no tokens")
        return torch.tensor(ids, dtype=torch.long, device=self._torch_device)

    def generate(
        self,
        prompt: str,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        stream: bool = False,
    ) -> GenerationResult | GenerationStream:
        """Continue ``prompt``; greedy at temperature 0; an iterator of text pieces when ``stream``."""
        request = check_request(
            prompt,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            stop=stop,
            seed=seed,
        )
        ids = self.encode(request.prompt)
        self._check_fits(int(ids.numel()), request.max_new_tokens)
        return self._generate(ids, request, stream=bool(stream))

    def generate_batch(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
    ) -> list[GenerationResult]:
        """Generate for several prompts with the same settings; one result per prompt, in order."""
        if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not prompts:
            raise InvalidRequestError("prompts must be a non-empty list of strings")
        requests = [
            check_request(
                p,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                stop=stop,
                seed=seed,
            )
            for p in prompts
        ]
        encoded = [self.encode(r.prompt) for r in requests]
        for ids in encoded:
            self._check_fits(int(ids.numel()), requests[0].max_new_tokens)
        return self._generate_batch(encoded, requests[0])

    def generate_with_state_space(
        self, prompt: str, context: str | None = None, max_new_tokens: int = 256, **kwargs: Any
    ) -> GenerationResult | GenerationStream:
        """Answer ``prompt`` about ``context`` (context first, question after it)."""
        return self.generate(
            compose_context_prompt(prompt, context), max_new_tokens=max_new_tokens, **generation_kwargs(**kwargs)
        )

    # -- read once, ask many (see mamba_router.document_state) -------------------------------------------------

    @property
    def state_identity(self) -> str:
        """Fingerprint a saved document state must carry to be used with this model."""
        from mamba_router.document_state import model_identity

        module = getattr(self, "model", None)
        config = getattr(module, "config", None) or getattr(module, "cfg", None)
        return model_identity(self.backend, self.model_id, config, getattr(self, "dtype", None))

    @property
    def supports_document_state(self) -> bool:
        """True when this backend can keep a document's state (``read``/``ask``)."""
        return type(self)._read_state is not TokenizerModel._read_state

    def read(self, document: str) -> DocumentState:
        """Read ``document`` once and keep the model's memory of it (recurrent states, or the KV cache)."""
        from mamba_router.document_state import DocumentState, document_hash, split_prompt

        document_part, _ = split_prompt("?", document)
        ids = self.encode(document_part)
        try:
            tensors = self._read_state(ids)
        except torch.OutOfMemoryError as exc:
            raise GenerationError(
                f"{self.backend} ran out of memory reading the document on {self.device}: {exc}"
            ) from exc
        return DocumentState(self.state_identity, document_hash(document), int(ids.numel()), tensors)

    def ask(
        self, state: DocumentState, question: str, *, max_new_tokens: int = 256, stream: bool = False, **sampling: Any
    ) -> GenerationResult | GenerationStream:
        """Answer ``question`` about the document ``state`` was read from; equal, token for token under greedy
        decoding, to reading document and question from scratch. ``state`` is left unchanged."""
        from mamba_router.document_state import StateMismatchError, split_prompt

        if state.model_identity != self.state_identity:
            raise StateMismatchError("this document state was read by another model; read the document with this one")
        _, question_part = split_prompt(question, "document")
        request = check_request(question_part, max_new_tokens=max_new_tokens, **generation_kwargs(**sampling))
        ids = torch.tensor(
            self.tokenizer(question_part, add_special_tokens=False)["input_ids"],
            dtype=torch.long,
            device=self._torch_device,
        )
        self._check_fits(state.document_tokens + int(ids.numel()), request.max_new_tokens)
        try:
            return self._run_stepper(self._stepper_from_state(state), ids, request, stream=bool(stream))
        except torch.OutOfMemoryError as exc:
            raise GenerationError(f"{self.backend} ran out of memory on {self.device}: {exc}") from exc

    def _run_stepper(
        self, stepper: Any, ids: torch.Tensor, request: GenerationRequest, *, stream: bool
    ) -> GenerationResult | GenerationStream:
        """Decode with ``stepper``; backends with shared decoding buffers override this to lock them."""
        return run_generation(stepper, ids, request, self.tokenizer, self._eos, self.identity, stream=stream)

    def _read_state(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} cannot keep a document state")

    def _stepper_from_state(self, state: DocumentState) -> Any:
        raise NotImplementedError(f"{type(self).__name__} cannot answer from a document state")

    def _generate(
        self, ids: torch.Tensor, request: GenerationRequest, *, stream: bool
    ) -> GenerationResult | GenerationStream:
        raise NotImplementedError

    def _generate_batch(self, prompts: list[torch.Tensor], request: GenerationRequest) -> list[GenerationResult]:
        """Default: one prompt after another."""
        results = []
        for ids in prompts:
            result = self._generate(ids, request, stream=False)
            assert isinstance(result, GenerationResult)
            results.append(result)
        return results

    def _check_fits(self, prompt_tokens: int, max_new_tokens: int) -> None:
        window = self.context_window
        if window is not None and prompt_tokens + max_new_tokens > window:
            raise ContextTooLongError(
                f"the prompt has {prompt_tokens} tokens and max_new_tokens is {max_new_tokens}, but "
                f"{self.model_id} reads at most {window} tokens; shorten the prompt or lower max_new_tokens "
                f"(at most {max(window - prompt_tokens, 0)})"
            )


def eos_token_ids(tokenizer: Any, model: Any = None) -> list[int]:
    """EOS ids from the model's generation config and the tokenizer."""
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in configured if isinstance(configured, (list, tuple)) else [configured]:
        if isinstance(value, int):
            ids.append(value)
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.append(int(tokenizer.eos_token_id))
    return sorted(set(ids))
