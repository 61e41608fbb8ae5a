"""Load the tokenizer a model needs: an explicit one, the one saved beside the weights, or a default hub id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mamba_router.errors import ModelLoadError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
GPT_NEOX_TOKENIZER = "EleutherAI/gpt-neox-20b"  # the tokenizer of the state-spaces Mamba checkpoints


def load_tokenizer(model_id: str, directory: Path | None, explicit: str | None, default: str | None) -> Any:
    """``explicit`` if given, else the tokenizer files in ``directory``, else ``default`` (no remote code)."""
    from transformers import AutoTokenizer

    if explicit is not None:
        location = explicit
    elif directory is not None and (default is None or any((directory / f).is_file() for f in TOKENIZER_FILES)):
        location = str(directory)
    elif default is not None:
        location = default
    else:
        location = model_id
    try:
        return AutoTokenizer.from_pretrained(location, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(
            f"could not load a tokenizer for {model_id!r} from {location!r}: {exc}. Save one next to the model with "
            "tokenizer.save_pretrained(directory), or pass tokenizer=PATH"
        ) from exc
