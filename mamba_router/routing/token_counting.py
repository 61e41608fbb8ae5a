"""Count tokens with the tokenizer of the model that would run a request, without loading that model.

The tokenizer is read from the model's directory, or from the local Hugging Face cache for a hub id; nothing is
downloaded while deciding a route. Mamba checkpoints written by mamba-ssm carry no tokenizer: theirs is GPT-NeoX's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

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
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def find_local_tokenizer(model: str, family: Family) -> LocalTokenizer:
    """The tokenizer ``model`` uses, from disk only; ``problem`` says why when there is none."""
    from transformers import AutoTokenizer

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
        try:
            tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=True, trust_remote_code=False)
        except Exception as exc:  # best effort: any unreadable tokenizer means counting by estimate, said why
            problems.append(f"{location}: {type(exc).__name__}")
            continue
        return LocalTokenizer(tokenizer=tokenizer, source=location, problem=None)
    reason = "no tokenizer on this machine for " + repr(model) + (f" ({'; '.join(problems)})" if problems else "")
    logger.info("%s; token counts will be estimated", reason)
    return LocalTokenizer(tokenizer=None, source=None, problem=reason)
