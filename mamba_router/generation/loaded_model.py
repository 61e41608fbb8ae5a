"""What every loaded model shares: token counting, argument checks, the decoding loop, read once / ask many, adapter
merging, and one error boundary.

A backend's model class subclasses :class:`TokenizerModel` and supplies its decoding through a few hooks:

- ``_new_stepper(batch_size, start)``: a :class:`~mamba_router.generation.decoding.TokenStepper`, empty or starting
  from a document state's tensors;
- ``_read_state(ids)``: the tensors that are the model's memory of a document (layout owned by the subclass);
- ``lora_module`` / ``default_lora_targets`` / ``lora_logits``: what LoRA adapts (:class:`SupportsLora`);
- ``_weights_changed()``: called after an adapter is merged (drop anything captured from the old weights).

Every public entry point (``generate``, ``generate_batch``, ``read``, ``ask``, streams included) runs inside one
boundary that turns out-of-memory and kernel failures into :class:`~mamba_router.errors.GenerationError`, so a
router can fall back, whatever the backend.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mamba_router.backends.boundary import backend_boundary
from mamba_router.errors import ContextTooLongError, InvalidRequestError
from mamba_router.generation.decoding import (
    GenerationStream,
    ModelIdentity,
    TokenStepper,
    run_batch_generation,
    run_generation,
)
from mamba_router.generation.prompt_format import PromptLayout, end_of_turn_ids
from mamba_router.generation.requests import (
    GenerationRequest,
    check_request,
    check_text,
    compose_context_prompt,
    generation_kwargs,
    sampling_kwargs,
)
from mamba_router.generation.results import GenerationResult

if TYPE_CHECKING:
    from mamba_router.generation.document_state import DocumentState


@dataclass(frozen=True)
class PreparedPrompt:
    """A checked, tokenized request: the ids to read (after ``start``, a document's state, if any) and settings.

    The ids stay on the host: whoever runs the request moves them (a batching engine without waiting for the device,
    so a request joining never stalls the steps already queued)."""

    ids: torch.Tensor
    request: GenerationRequest
    start: DocumentState | None = None


@dataclass(frozen=True)
class PreparedRead:
    """A checked, tokenized document read: the ids (on the host), and how the state read from them becomes a
    DocumentState."""

    ids: torch.Tensor
    state: Callable[[dict[str, torch.Tensor]], DocumentState]


class TokenizerModel:
    """Base of loaded models: a tokenizer, an identity, and the public generation methods."""

    available = True
    reason = "loaded"
    context_window: int | None = None
    sync_every = 1  # tokens read back per host sync when not streaming; larger hides the host from the device
    prefill_budget = 4096  # prompt tokens a batching engine reads per pass while other sequences decode
    batch_decoding = True  # whether one stepper decodes several prompts at once (else one after another)
    adapter: str | None = None
    _layout_cache: dict[str, tuple[tuple[int, ...], torch.dtype]] | None = None  # see _state_layout
    _weights_digest: str | None = None  # see state_identity

    def __init__(
        self, tokenizer: Any, *, backend: str, device: torch.device, model_id: str, eos_ids: Sequence[int]
    ) -> None:
        self.tokenizer = tokenizer
        self.backend = backend
        self.device = str(device)
        self.model_id = model_id
        self._torch_device = device
        self.prompts = PromptLayout(tokenizer)
        self._eos = sorted(set(eos_ids) | set(end_of_turn_ids(tokenizer)))
        self._decode_lock: threading.Lock | None = None  # set by models whose steppers share buffers

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
        return self._ids_tensor(self.tokenizer(text, add_special_tokens=True)["input_ids"], text).to(self._torch_device)

    # -- generating ----------------------------------------------------------------------------------------------

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
        prompt_format: str = "auto",
        system_prompt: str | None = None,
    ) -> GenerationResult | GenerationStream:
        """Continue ``prompt``; greedy at temperature 0; an iterator of text pieces when ``stream``.

        ``prompt_format`` (``auto``, ``chat``, ``plain``) and ``system_prompt``: see
        :mod:`~mamba_router.generation.prompt_format`; ``auto`` uses the tokenizer's chat template when it has one.
        """
        prepared = self.prepare_generate(
            prompt,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            stop=stop,
            seed=seed,
            prompt_format=prompt_format,
            system_prompt=system_prompt,
        )
        ids = prepared.ids.to(self._torch_device)
        return self._decode(lambda: self._new_stepper(1), ids, prepared.request, stream=bool(stream))

    def prepare_generate(
        self,
        prompt: str,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        prompt_format: str = "auto",
        system_prompt: str | None = None,
    ) -> PreparedPrompt:
        """Check and tokenize a ``generate`` call without running it (a batching engine runs it)."""
        request = check_request(
            prompt,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            stop=stop,
            seed=seed,
        )
        ids = self._prompt_ids(request.prompt, prompt_format, system_prompt)
        self._check_fits(int(ids.numel()), request.max_new_tokens)
        return PreparedPrompt(ids, request)

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
        prompt_format: str = "auto",
        system_prompt: str | None = None,
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
        encoded = [self._prompt_ids(r.prompt, prompt_format, system_prompt).to(self._torch_device) for r in requests]
        for ids in encoded:
            self._check_fits(int(ids.numel()), requests[0].max_new_tokens)
        return self._decode_all(encoded, requests[0])

    def generate_ids(
        self, prompts: Sequence[torch.Tensor], *, max_new_tokens: int = 256, **sampling: Any
    ) -> list[GenerationResult]:
        """Generate from token ids (1-D tensors; the caller tokenized them); one result per prompt, in order.

        For callers that own tokenization (benchmarks, a serving engine). Sampling keywords as for ``generate``.
        """
        if not prompts or any(not isinstance(p, torch.Tensor) or p.dim() != 1 or p.numel() == 0 for p in prompts):
            raise InvalidRequestError("prompts must be a non-empty list of non-empty 1-D tensors of token ids")
        request = check_request("ids", max_new_tokens=max_new_tokens, **sampling_kwargs(**sampling))
        encoded = [p.to(device=self._torch_device, dtype=torch.long) for p in prompts]
        for ids in encoded:
            self._check_fits(int(ids.numel()), request.max_new_tokens)
        return self._decode_all(encoded, request)

    def generate_with_state_space(
        self, prompt: str, context: str | None = None, max_new_tokens: int = 256, **kwargs: Any
    ) -> GenerationResult | GenerationStream:
        """Answer ``prompt`` about ``context`` (context first, question after it)."""
        return self.generate(
            compose_context_prompt(prompt, context), max_new_tokens=max_new_tokens, **generation_kwargs(**kwargs)
        )

    # -- read once, ask many (see mamba_router.generation.document_state) ---------------------------------------

    @property
    def state_identity(self) -> str:
        """Fingerprint a saved document state must carry to be used with this model: backend, model id, config,
        dtype, library version and a fingerprint of the weights as loaded (adapters merged included)."""
        from mamba_router.generation.document_state import model_identity, weights_fingerprint

        if self._weights_digest is None:
            self._weights_digest = weights_fingerprint(self.lora_module())
        return model_identity(
            self.backend, self.model_id, self._identity_config(), getattr(self, "dtype", None), self._weights_digest
        )

    def read(self, document: str, *, prompt_format: str = "auto", system_prompt: str | None = None) -> DocumentState:
        """Read ``document`` once and keep the model's memory of it (recurrent states, or the KV cache), laid out as
        the prompts of questions about it will be (``prompt_format``, ``system_prompt``)."""
        pending = self.prepare_read(document, prompt_format=prompt_format, system_prompt=system_prompt)
        with self._boundary(), self._exclusive(), torch.inference_mode():
            tensors = self._read_state(pending.ids.to(self._torch_device))
        return pending.state(tensors)

    def prepare_read(
        self, document: str, *, prompt_format: str = "auto", system_prompt: str | None = None
    ) -> PreparedRead:
        """Check and tokenize a ``read`` without running it (a batching engine runs it)."""
        from mamba_router.generation.document_state import DocumentState, document_hash, system_prompt_hash

        check_text(document, "the document to read")
        fmt = self.prompts.resolve(prompt_format)
        cut = self.prompts.cut_document(document, fmt, system_prompt)
        ids = torch.tensor(cut.ids, dtype=torch.long)
        self._check_fits(int(ids.numel()), 1)
        identity, digest, system = self.state_identity, document_hash(document), system_prompt_hash(system_prompt)
        return PreparedRead(
            ids, lambda tensors: DocumentState(identity, digest, int(ids.numel()), tensors, fmt, cut.tail, system)
        )

    def ask(
        self,
        state: DocumentState,
        question: str,
        *,
        max_new_tokens: int = 256,
        stream: bool = False,
        prompt_format: str = "auto",
        system_prompt: str | None = None,
        **sampling: Any,
    ) -> GenerationResult | GenerationStream:
        """Answer ``question`` about the document ``state`` was read from; equal, token for token under greedy
        decoding, to reading document and question from scratch in the same format. ``state`` is left unchanged."""
        prepared = self.prepare_ask(
            state,
            question,
            max_new_tokens=max_new_tokens,
            prompt_format=prompt_format,
            system_prompt=system_prompt,
            **sampling,
        )
        ids = prepared.ids.to(self._torch_device)
        return self._decode(lambda: self._new_stepper(1, state), ids, prepared.request, stream=bool(stream))

    def prepare_ask(
        self,
        state: DocumentState,
        question: str,
        *,
        max_new_tokens: int = 256,
        prompt_format: str = "auto",
        system_prompt: str | None = None,
        **sampling: Any,
    ) -> PreparedPrompt:
        """Check a state and tokenize a question about it without running it (a batching engine runs it)."""
        from mamba_router.generation.document_state import StateMismatchError, check_state_tensors, system_prompt_hash

        if state.model_identity != self.state_identity:
            raise StateMismatchError("this document state was read by another model; read the document with this one")
        check_state_tensors(state, self._state_layout())
        state.tensors = {name: t.to(self._torch_device) for name, t in state.tensors.items()}
        request = check_request(question, max_new_tokens=max_new_tokens, **sampling_kwargs(**sampling))
        fmt = self.prompts.resolve(prompt_format)
        if (state.prompt_format, state.system_prompt_sha256) != (fmt, system_prompt_hash(system_prompt)):
            raise StateMismatchError(
                f"this document state was read as a {state.prompt_format} prompt"
                f"{' after a system prompt' if state.system_prompt_sha256 else ''}; ask with the same prompt_format "
                "and system_prompt, or read the document again"
            )
        ids = torch.tensor(self.prompts.question_ids(request.prompt, state.tail, fmt, system_prompt), dtype=torch.long)
        self._check_fits(state.document_tokens + int(ids.numel()), request.max_new_tokens)
        return PreparedPrompt(ids, request, state)

    # -- adapters -------------------------------------------------------------------------------------------------

    def merge_adapter(self, path: str | Path) -> list[str]:
        """Merge the LoRA adapter at ``path`` into the weights (every path, fused kernels included, then runs the
        adapted model); return the adapted module names."""
        from mamba_router.models.adapters import merge_adapter

        merged = merge_adapter(self.lora_module(), path)
        self._weights_digest = None  # states read before the merge belong to the old weights
        self._weights_changed()
        self.adapter = str(path)
        self.adapted_modules = merged
        return merged

    # -- hooks for subclasses ---------------------------------------------------------------------------------

    def _new_stepper(self, batch_size: int, start: DocumentState | None = None) -> TokenStepper:
        raise NotImplementedError(f"{type(self).__name__} does not decode")

    def _read_state(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} cannot keep a document state")

    def _state_layout(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Each state tensor's shape for a one-position document and its dtype (read once from a real state)."""
        if self._layout_cache is None:
            first = self.encode("a")[:1]
            with self._boundary(), self._exclusive(), torch.inference_mode():
                tensors = self._read_state(first)
            self._layout_cache = {name: (tuple(t.shape), t.dtype) for name, t in tensors.items()}
        layout: dict[str, tuple[tuple[int, ...], torch.dtype]] = self._layout_cache
        return layout

    def _identity_config(self) -> object:
        """The part of the model's configuration that a document state depends on."""
        return None

    def _weights_changed(self) -> None:
        """Called after the weights changed in place (an adapter was merged)."""

    def lora_module(self) -> nn.Module:
        """The module LoRA adapts."""
        raise NotImplementedError(f"{type(self).__name__} exposes no module for LoRA")

    # -- the shared machinery ------------------------------------------------------------------------------------

    def _decode(
        self, make_stepper: Any, ids: torch.Tensor, request: GenerationRequest, *, stream: bool
    ) -> GenerationResult | GenerationStream:
        if stream:
            return GenerationStream(self._guarded_stream(make_stepper, ids, request))
        return self._decode_collected(make_stepper, ids, request)

    def _decode_all(self, prompts: list[torch.Tensor], request: GenerationRequest) -> list[GenerationResult]:
        """Several prompts: one batched stepper where the model decodes batches, else one after another."""
        if not self.batch_decoding or len(prompts) == 1:
            return [self._decode_collected(lambda: self._new_stepper(1), ids, request) for ids in prompts]
        with self._boundary(), self._exclusive():
            return run_batch_generation(
                self._new_stepper(len(prompts)),
                prompts,
                request,
                self.tokenizer,
                self._eos,
                self.identity,
                sync_every=self.sync_every,
            )

    def _decode_collected(self, make_stepper: Any, ids: torch.Tensor, request: GenerationRequest) -> GenerationResult:
        with self._boundary(), self._exclusive():
            result = run_generation(
                make_stepper(),
                ids,
                request,
                self.tokenizer,
                self._eos,
                self.identity,
                stream=False,
                sync_every=self.sync_every,
            )
        assert isinstance(result, GenerationResult)
        return result

    def _guarded_stream(
        self, make_stepper: Any, ids: torch.Tensor, request: GenerationRequest
    ) -> Generator[str, None, GenerationResult]:
        with self._boundary(), self._exclusive():
            stream = run_generation(
                make_stepper(), ids, request, self.tokenizer, self._eos, self.identity, stream=True, sync_every=1
            )
            assert isinstance(stream, GenerationStream)
            yield from stream
            assert stream.result is not None
            return stream.result

    def _exclusive(self) -> Any:
        """Holds the decode lock of models whose steppers share buffers (a stream holds it while it runs)."""
        return self._decode_lock if self._decode_lock is not None else nullcontext()

    def exclusive(self) -> Any:
        """A context in which no other generation of this model runs (for a batching engine's steps; a no-op for
        models whose steppers share no buffers)."""
        return self._exclusive()

    @property
    def eos_ids(self) -> list[int]:
        """The token ids that end a generation (EOS and the chat template's end of turn)."""
        return list(self._eos)

    def _boundary(self) -> Any:
        """The one error boundary (:func:`~mamba_router.backends.boundary.backend_boundary`): out-of-memory, kernel
        failures and anything else a backend raises while generating become GenerationError."""
        return backend_boundary(self.backend, self.model_id, "generate", device=str(self.device))

    def _prompt_ids(self, text: str, prompt_format: str, system_prompt: str | None) -> torch.Tensor:
        """The ids of a whole prompt in the chosen format (on the host)."""
        return self._ids_tensor(self.prompts.prompt_ids(text, self.prompts.resolve(prompt_format), system_prompt), text)

    def _ids_tensor(self, ids: Sequence[int], text: str) -> torch.Tensor:
        if not ids:  # the message gives the size, never the text (it may be a confidential document)
            raise InvalidRequestError(f"the prompt ({len(text):,} characters) encodes to no tokens; send some text")
        return torch.tensor(ids, dtype=torch.long)

    def _check_fits(self, prompt_tokens: int, max_new_tokens: int) -> None:
        window = self.context_window
        if window is not None and prompt_tokens + max_new_tokens > window:
            room = window - prompt_tokens
            fix = (
                f"shorten the prompt or lower max_new_tokens (at most {room})"
                if room > 0
                else f"shorten the prompt by at least {1 - room} tokens (a long document belongs on a Mamba model)"
            )
            raise ContextTooLongError(
                f"the prompt has {prompt_tokens} tokens and max_new_tokens is {max_new_tokens}, but "
                f"{self.model_id} reads at most {window} tokens; {fix}"
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
