"""What a loaded model is, and the capabilities it may declare (checked with ``isinstance``, never by class name).

- :class:`LoadedModel`: counts tokens and generates; every backend's ``load`` returns one.
- :class:`SupportsDocumentState`: reads a document once (``read``) and answers many questions from the kept state
  (``ask``); the router's state cache uses it.
- :class:`SupportsDocumentQuestions`: keeps document states elsewhere (a Ray Serve deployment); the router gives it
  the document and the question apart.
- :class:`SupportsConcurrentCalls`: takes calls from many threads at once (a pool of remote servers).
- :class:`SupportsLora`: exposes the ``nn.Module`` that LoRA adapts, the default target module names of its
  family, and how to get logits from it; :mod:`mamba_router.lora` trains through it, and ``load_model(adapter=...)``
  merges a trained adapter through it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from mamba_router.generation.results import DocumentStateUse, GenerationResult

if TYPE_CHECKING:
    import torch
    from torch import nn

    from mamba_router.generation.decoding import GenerationStream
    from mamba_router.generation.document_state import DocumentState


@runtime_checkable
class LoadedModel(Protocol):
    """A model ready to count tokens and generate, whichever backend loaded it."""

    backend: str
    device: str
    model_id: str
    available: bool
    reason: str
    context_window: int | None

    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` takes for this model's tokenizer (no special tokens added)."""
        ...

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
        """Continue ``prompt``. Temperature 0 is greedy. With ``stream=True`` returns an iterator of text pieces.
        ``prompt_format``: ``auto`` (the chat template when the tokenizer has one), ``chat`` or ``plain``."""
        ...

    def generate_with_state_space(
        self, prompt: str, context: str | None = None, max_new_tokens: int = 256, **kwargs: Any
    ) -> GenerationResult | GenerationStream:
        """Answer ``prompt`` about ``context``: the context is read first, the question after it."""
        ...


@runtime_checkable
class SupportsDocumentState(Protocol):
    """A model that keeps its memory of a document: read once, ask many."""

    @property
    def state_identity(self) -> str:
        """Fingerprint a saved document state must carry to be used with this model."""
        ...

    def read(self, document: str, *, prompt_format: str = "auto", system_prompt: str | None = None) -> DocumentState:
        """Read ``document`` once and keep the model's memory of it, laid out as questions about it will be."""
        ...

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
        """Answer ``question`` from ``state``; the state is left unchanged."""
        ...


@runtime_checkable
class SupportsDocumentQuestions(Protocol):
    """A model served elsewhere that keeps document states itself (a Ray Serve deployment of Mamba replicas): the
    router hands it the document and the question apart, so the replica that read the document answers from its
    state."""

    def answer_about(self, document: str, question: str, *, stream: bool = False, **options: Any) -> DocumentAnswer:
        """Answer ``question`` about ``document``; the answer says whether a kept state was reused."""
        ...


class DocumentAnswer:
    """What :meth:`SupportsDocumentQuestions.answer_about` gives: the answer (or its stream), and whether the
    document was read or a kept state reused (known once a stream has ended)."""

    def __init__(
        self, produced: GenerationResult | GenerationStream, state_use: Callable[[], DocumentStateUse | None]
    ) -> None:
        self.produced = produced
        self.state_use = state_use


@runtime_checkable
class SupportsConcurrentCalls(Protocol):
    """A model whose ``generate`` may run in many threads at once (remote endpoints); the router holds a lock around
    every other model's generations that no batching engine runs."""

    concurrent_calls: bool


@runtime_checkable
class SupportsLora(Protocol):
    """A model whose weights LoRA can adapt: the module, its family's default targets, and its logits."""

    def lora_module(self) -> nn.Module:
        """The module to wrap with adapters; every projection it adapts must be called as a module."""
        ...

    def default_lora_targets(self) -> list[str]:
        """The module names LoRA adapts when the configuration names none."""
        ...

    def lora_logits(self, module: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits (batch, length, vocab) of ``module`` (the base or a peft wrapper of it) for ``input_ids``."""
        ...

    def merge_adapter(self, path: str | Path) -> list[str]:
        """Merge the LoRA adapter at ``path`` into the weights; return the adapted module names."""
        ...
