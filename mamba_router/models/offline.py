"""Offline building blocks for demos and tests: a tokenizer trained on the spot, and a marker for random weights.

No network is needed: the tokenizer is a byte-level BPE trained in well under a second on the embedded text, so it
encodes any input. Models built with it have random weights; their output is meaningless and says nothing about
quality. It shows that loading, routing and generation work end to end.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mamba_router.samples import sample_judgment

OFFLINE_MARKER = "mamba_router_offline.json"
SPECIAL_TOKEN = "<|endoftext|>"


def build_offline_tokenizer(texts: Iterable[str] | None = None, vocab_size: int = 512) -> Any:
    """Train a byte-level BPE tokenizer on ``texts`` (default: the sample judgment).

    Returns a ``transformers.PreTrainedTokenizerFast`` whose BOS, EOS, UNK and PAD are ``<|endoftext|>``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = list(texts) if texts is not None else [sample_judgment()]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=SPECIAL_TOKEN,
        eos_token=SPECIAL_TOKEN,
        unk_token=SPECIAL_TOKEN,
        pad_token=SPECIAL_TOKEN,
    )


def write_offline_marker(directory: Path, description: str) -> None:
    """Mark ``directory`` as holding a random-weight model built offline."""
    payload = {"random_weights": True, "description": description}
    (directory / OFFLINE_MARKER).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def is_offline_model(directory: str | Path) -> bool:
    """True when ``directory`` was written by a backend's ``write_offline_model`` (random weights)."""
    return (Path(directory) / OFFLINE_MARKER).is_file()
