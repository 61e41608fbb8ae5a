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
        """Tokens of ``text`` without special tokens."""
        assert self.tokenizer is not None
        if isinstance(self.tokenizer, RustTokenizer):
            return len(self.tokenizer.encode(text, add_special_tokens=False).ids)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def find_local_tokenizer(model: str, family: Family) -> LocalTokenizer:
    """The tokenizer ``model`` uses, from disk only; ``problem`` says why when there is none."""
    path = user_path(model, "model")
    candidates: list[str] = []
    if path.is_dir():
        if any((path / name).is_file() for name in TOKENIZER_FILES):
            candidates.append(str(path))
    else:
        candidates.append(model)
    if family == "mamba":
        candidates.append(GPT_NEOX_TOKENIZER)
    problems = []
    for location in candidates:
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
    reason = "no tokenizer on this machine for " + repr(model) + (f" ({'; '.join(problems)})" if problems else "")
    logger.info("%s; token counts will be estimated", reason)
    return LocalTokenizer(tokenizer=None, source=None, problem=reason)


def _rust_tokenizer(location: str) -> Any | None:
    """The ``tokenizer.json`` of a directory, or of a hub id in the local cache, read by ``tokenizers``; None when
    there is none or it does not read (then transformers tries)."""
    path = user_path(location, "model") / "tokenizer.json"
    if not path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(location, "tokenizer.json")
        except Exception:  # not a repo id, or an unreadable cache: transformers gets its turn
            return None
        if not isinstance(cached, str):
            return None
        path = user_path(cached, "tokenizer")
    try:
        return RustTokenizer.from_file(str(path))
    except Exception as exc:  # a tokenizer.json of another version: transformers gets its turn
        logger.debug("tokenizers could not read %s: %s", path, exc)
        return None
