"""Read once, ask many: a Mamba model's whole memory of a document is its per-layer recurrent state.

``state = model.read(document)`` runs the document once and keeps the conv and SSM states of every layer;
``model.ask(state, question)`` answers from a copy of them, so the state serves the next question unchanged.

Where the cut falls: at the document's end, in the plain prompt ``document + "\\n\\n" + question`` or inside the
chat template's user turn (:mod:`~mamba_router.generation.prompt_format` places it, moving it back over a few
characters, the state's ``tail``, where a tokenizer would merge across it). The state records the format and a hash
of the system prompt it was read with; asking in another format or with another system prompt is refused.

What the tensors are is decided by the model that read the document (its state layout's owner: conv/SSM states per
layer for Mamba, keys and values per layer for a Transformer); a DocumentState only carries them. States are saved
as safetensors with the model's identity in the metadata; loading one into another model (another
checkpoint, architecture or library version) is refused. The in-memory cache of states by document hash is
:class:`~mamba_router.generation.state_cache.DocumentStateCache` (re-exported here).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from mamba_router.errors import ModelLoadError
from mamba_router.generation.state_cache import DocumentStateCache, document_hash, system_prompt_hash

__all__ = [
    "CorruptStateError",
    "DocumentState",
    "DocumentStateCache",
    "StateMismatchError",
    "check_state_tensors",
    "document_hash",
    "system_prompt_hash",
]

STATE_FORMAT_VERSION = 2  # 2: the prompt layout (format, tail, system prompt hash) is part of a state


class StateMismatchError(ModelLoadError):
    """A saved document state belongs to another model or format version, or does not fit the model's layout."""


class CorruptStateError(StateMismatchError):
    """A saved document state's metadata or tensors are malformed."""


WEIGHT_SAMPLES = 64  # values read from each parameter for the weights fingerprint


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A digest of ``module``'s weights as loaded: every parameter's name, shape, dtype and 64 values spread over it
    (a retrained checkpoint or a merged adapter changes them). Reads a few KB from the device, not the weights."""
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, parameter in sorted(module.named_parameters(), key=lambda item: item[0]):
            flat = parameter.detach().reshape(-1)
            count = min(WEIGHT_SAMPLES, flat.numel())
            # integer steps: float32 linspace rounds past the last index of a tensor with more than 2**24 values
            index = torch.arange(count, device=flat.device) * (flat.numel() - 1) // max(count - 1, 1)
            digest.update(f"{name}{tuple(parameter.shape)}{parameter.dtype}".encode())
            digest.update(flat[index].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:24]


@dataclass
class DocumentState:
    """A model's memory of one document: Mamba's per-layer conv/SSM states, or a Transformer's KV cache."""

    model_identity: str
    document_sha256: str
    document_tokens: int
    tensors: dict[str, torch.Tensor]
    prompt_format: str = "plain"  # "plain" or "chat": how the document was laid out when it was read
    tail: str = ""  # the document's last characters, read by each question (see prompt_format)
    system_prompt_sha256: str = ""  # hash of the system prompt the document was read after ("" for none)

    @property
    def layout(self) -> tuple[str, str, str]:
        """What a question must match to continue this state: format, tail and system prompt hash."""
        return self.prompt_format, self.tail, self.system_prompt_sha256

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
            "prompt_format": self.prompt_format,
            "tail": self.tail,
            "system_prompt_sha256": self.system_prompt_sha256,
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
        return cls(model_identity, *_checked_metadata(metadata, source), tensors, *_checked_layout(metadata, source))


def model_identity(*parts: object) -> str:
    """A stable fingerprint of a model: backend, model id, config and library version."""
    from mamba_router.version import __version__

    text = json.dumps([str(p) for p in (*parts, __version__)], sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def _checked_metadata(metadata: dict[str, str], source: Path) -> tuple[str, int]:
    """The document hash and token count of a state file, or a CorruptStateError naming the bad field."""
    digest, tokens = metadata.get("document_sha256", ""), metadata.get("document_tokens", "")
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise CorruptStateError(f"{source}: document_sha256 must be 64 hex digits, got {digest[:80]!r}")
    if not tokens.isdigit() or int(tokens) < 1:
        raise CorruptStateError(f"{source}: document_tokens must be a positive integer, got {tokens[:80]!r}")
    return digest, int(tokens)


def _checked_layout(metadata: dict[str, str], source: Path) -> tuple[str, str, str]:
    """The prompt format, tail and system prompt hash of a state file, checked."""
    fmt, tail, system = (
        metadata.get(k, d) for k, d in (("prompt_format", "plain"), ("tail", ""), ("system_prompt_sha256", ""))
    )
    if fmt not in ("plain", "chat"):
        raise CorruptStateError(f"{source}: prompt_format must be 'plain' or 'chat', got {fmt[:40]!r}")
    if len(tail) > 64:
        raise CorruptStateError(f"{source}: the tail of a state is a few characters, found {len(tail)}")
    if system and len(system) != 64:
        raise CorruptStateError(f"{source}: system_prompt_sha256 must be 64 hex digits or empty")
    return fmt, tail, system


def check_state_tensors(state: DocumentState, expected: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> None:
    """``state``'s tensors against the model's layout: ``expected`` maps each name to its shape for one position
    (dimension 2 of keys and values is the number of positions) and dtype; anything else is a StateMismatchError."""
    names = sorted(state.tensors)
    if names != sorted(expected):
        raise StateMismatchError(
            f"the state holds tensors {names[:6]}, the model needs {sorted(expected)[:6]}; read the document again"
        )
    for name, (shape, dtype) in expected.items():
        tensor = state.tensors[name]
        want = list(shape)
        if name.startswith(("key.", "value.")):
            want[2] = state.document_tokens
        if list(tensor.shape) != want or tensor.dtype != dtype:
            raise StateMismatchError(
                f"state tensor {name} is {tuple(tensor.shape)} {tensor.dtype}, the model needs {tuple(want)} {dtype}; "
                "read the document again with this model"
            )
