"""Read once, ask many: a Mamba model's whole memory of a document is its per-layer recurrent state.

``state = model.read(document)`` runs the document once and keeps the conv and SSM states of every layer;
``model.ask(state, question)`` answers from a copy of them, so the state serves the next question unchanged.

Where the cut falls: the document is read as ``document.rstrip()`` (with the tokenizer's special tokens), the question
as ``"\\n\\n" + question``, exactly the two halves of
:func:`~mamba_router.generation.requests.compose_context_prompt`. A
byte-level BPE (GPT-NeoX, GPT-2) never merges a token across the boundary between the document's last non-space
character and a newline, so the token ids are the same as those of the whole prompt read from scratch.

What the tensors are is decided by the model that read the document (its state layout's owner: conv/SSM states per
layer for Mamba, keys and values per layer for a Transformer); a DocumentState only carries them. States are saved
as safetensors with the model's identity in the metadata; loading one into another model (another
checkpoint, architecture or library version) is refused. :class:`DocumentStateCache` keeps states in memory by
document hash within a byte budget, least recently used out first.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from mamba_router.errors import ConfigurationError, InvalidRequestError, ModelLoadError

STATE_FORMAT_VERSION = 1
QUESTION_SEPARATOR = "\n\n"


class StateMismatchError(ModelLoadError):
    """A saved document state belongs to another model or format version."""


def document_hash(document: str) -> str:
    """SHA-256 of the document text (the cache key; never the text itself)."""
    return hashlib.sha256(document.encode("utf-8", errors="surrogatepass")).hexdigest()


@dataclass
class DocumentState:
    """A model's memory of one document: Mamba's per-layer conv/SSM states, or a Transformer's KV cache."""

    model_identity: str
    document_sha256: str
    document_tokens: int
    tensors: dict[str, torch.Tensor]

    @property
    def nbytes(self) -> int:
        """Bytes held by the state tensors."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def __repr__(self) -> str:
        return (
            f"DocumentState({self.document_tokens} tokens, {len(self.tensors)} tensors, {self.nbytes / 2**20:.2f} MiB, "
            f"document {self.document_sha256[:12]})"
        )

    def save(self, path: str | Path) -> Path:
        """Write the state as safetensors; the model identity and document hash go into the metadata."""
        from safetensors.torch import save_file

        target = Path(path)
        metadata = {
            "format_version": str(STATE_FORMAT_VERSION),
            "model_identity": self.model_identity,
            "document_sha256": self.document_sha256,
            "document_tokens": str(self.document_tokens),
        }
        save_file({k: t.contiguous().cpu() for k, t in self.tensors.items()}, str(target), metadata=metadata)
        return target

    @classmethod
    def load(cls, path: str | Path, *, model_identity: str, device: torch.device | str = "cpu") -> DocumentState:
        """Read a saved state; refuse one written for another model (``model_identity``) or format version."""
        from safetensors import safe_open

        source = Path(path)
        if not source.is_file():
            raise ModelLoadError(f"no document state at {source}")
        try:
            with safe_open(str(source), framework="pt", device="cpu") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key).to(device) for key in handle.keys()}
        except Exception as exc:
            raise ModelLoadError(f"{source} is not a readable document state: {type(exc).__name__}: {exc}") from exc
        if metadata.get("format_version") != str(STATE_FORMAT_VERSION):
            raise StateMismatchError(
                f"{source} has state format {metadata.get('format_version')!r}; this version reads "
                f"{STATE_FORMAT_VERSION}: read the document again"
            )
        if metadata.get("model_identity") != model_identity:
            raise StateMismatchError(
                f"{source} was written by {metadata.get('model_identity')!r}, not by this model ({model_identity!r}); "
                "a state only makes sense to the model that read the document"
            )
        return cls(model_identity, metadata["document_sha256"], int(metadata["document_tokens"]), tensors)


def model_identity(*parts: object) -> str:
    """A stable fingerprint of a model: backend, model id, config and library version."""
    from mamba_router.version import __version__

    text = json.dumps([str(p) for p in (*parts, __version__)], sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def split_prompt(question: str, document: str) -> tuple[str, str]:
    """The document half and the question half of the prompt, cut where no token spans the cut."""
    if not isinstance(document, str) or not document.strip():
        raise InvalidRequestError("the document to read is empty; pass its text")
    if not isinstance(question, str) or not question.strip():
        raise InvalidRequestError("the question is empty; pass the text to ask")
    return document.rstrip(), QUESTION_SEPARATOR + question


class DocumentStateCache:
    """Document states in memory, keyed by (model identity, document hash), within ``max_bytes``; LRU eviction."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        if max_bytes < 0:
            raise ConfigurationError(f"the state cache budget must be 0 or more bytes, got {max_bytes}")
        self.max_bytes = max_bytes
        self._states: OrderedDict[tuple[str, str], DocumentState] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return sum(s.nbytes for s in self._states.values())

    def __len__(self) -> int:
        return len(self._states)

    def get_or_read(
        self, identity: str, document: str, read: Callable[[], DocumentState]
    ) -> tuple[DocumentState, bool]:
        """The cached state for ``document`` (and True), or ``read()``'s, cached (and False)."""
        key = (identity, document_hash(document))
        with self._lock:
            state = self._states.get(key)
            if state is not None:
                self._states.move_to_end(key)
                self.hits += 1
                return state, True
            self.misses += 1
        state = read()
        with self._lock:
            if state.nbytes <= self.max_bytes:
                self._states[key] = state
                self._states.move_to_end(key)
                while self.nbytes > self.max_bytes:
                    self._states.popitem(last=False)
        return state, False
