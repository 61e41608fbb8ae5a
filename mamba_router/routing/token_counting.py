"""Count tokens with the tokenizer of the model that would run a request, without loading that model.

The tokenizer is read from the model's directory, or from the local Hugging Face cache for a hub id; nothing is
downloaded while deciding a route. Mamba checkpoints written by mamba-ssm carry no tokenizer: theirs is GPT-NeoX's.
A ``tokenizer.json`` is read with the Rust ``tokenizers`` library directly (milliseconds, and transformers is not
imported); only a tokenizer without one (e.g. SentencePiece files alone) goes through transformers' AutoTokenizer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tokenizers import Tokenizer as RustTokenizer

from mamba_router.backends.reports import Family
from mamba_router.models.hub import maybe_in_hub_cache
from mamba_router.models.tokenizers import GPT_NEOX_TOKENIZER, TOKENIZER_FILES
from mamba_router.paths import user_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalTokenizer:
    """A tokenizer found on disk for a model, or the reason none was found."""

    tokenizer: Any | None
    source: str | None
    problem: str | None

    def count(self, text: str) -> int:
        """Tokens of ``text`` without special tokens. The Rust tokenizer is called through ``encode_batch``, which
        releases the GIL while it works (``encode`` holds it: a 12k-token document would stall every other Python
        thread, a serving engine's included, for tens of milliseconds)."""
        assert self.tokenizer is not None
        if isinstance(self.tokenizer, RustTokenizer):
            (encoding,) = self.tokenizer.encode_batch([text], add_special_tokens=False)
            return len(encoding.ids)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def find_local_tokenizer(model: str, family: Family) -> LocalTokenizer:
    """The tokenizer ``model`` uses, from disk only; ``problem`` says why when there is none. Nothing heavy is
    imported for a tokenizer that is not on this machine (a hub id not in the local cache)."""
    candidates = [model, GPT_NEOX_TOKENIZER] if family == "mamba" else [model]
    problems = []
    for location in candidates:
        if not _tokenizer_files_here(location):
            problems.append(f"{location}: no tokenizer files here")
            continue
        rust = _rust_tokenizer(location)
        if rust is not None:
            return LocalTokenizer(tokenizer=rust, source=location, problem=None)
        try:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=True, trust_remote_code=False)
        except Exception as exc:  # best effort: any unreadable tokenizer means counting by estimate, said why
            problems.append(f"{location}: {type(exc).__name__}")
            continue
        return LocalTokenizer(tokenizer=tokenizer, source=location, problem=None)
    reason = f"no tokenizer on this machine for {model!r} ({'; '.join(problems)})"
    logger.info("%s; token counts will be estimated", reason)
    return LocalTokenizer(tokenizer=None, source=None, problem=reason)


def _tokenizer_files_here(location: str) -> bool:
    """True when a directory, or the local hub cache for a hub id, holds one of the tokenizer files."""
    path = user_path(location, "model")
    if path.is_dir():
        return any((path / name).is_file() for name in TOKENIZER_FILES)
    return any(_cached_file(location, name) is not None for name in TOKENIZER_FILES)


def _cached_file(repo: str, name: str) -> str | None:
    """The local cache's copy of ``name`` in hub repository ``repo``, or None (not cached, or not a repo id)."""
    if not maybe_in_hub_cache(repo):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo, name)
    except Exception:  # not a repo id, or an unreadable cache
        return None
    return cached if isinstance(cached, str) else None


def _rust_tokenizer(location: str) -> Any | None:
    """The ``tokenizer.json`` of a directory, or of a hub id in the local cache, read by ``tokenizers``; None when
    there is none or it does not read (then transformers tries)."""
    path = user_path(location, "model") / "tokenizer.json"
    if not path.is_file():
        cached = _cached_file(location, "tokenizer.json")
        if cached is None:
            return None
        path = user_path(cached, "tokenizer")
    try:
        return RustTokenizer.from_file(str(path))
    except Exception as exc:  # a tokenizer.json of another version: transformers gets its turn
        logger.debug("tokenizers could not read %s: %s", path, exc)
        return None
