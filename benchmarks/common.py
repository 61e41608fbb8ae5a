"""Helpers shared by the benchmarks: timing on the device, peak memory, a large offline tokenizer, tables."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def sync() -> None:
    """Wait for the GPU (no-op on CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` runs, device work included."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        started = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def peak_gib(fn: Callable[[], Any]) -> tuple[float, float]:
    """Run ``fn`` once; return (seconds, peak GiB allocated during it, weights included)."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    sync()
    started = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - started, torch.cuda.max_memory_allocated() / 2**30


def wordlevel_tokenizer(vocab_size: int) -> Any:
    """A real (Rust) tokenizer with ``vocab_size`` entries, made offline: token i is the word ``w<i>``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<eos>": 0, **{f"w{i}": i for i in range(1, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<eos>", pad_token="<eos>")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-style table."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 2) -> str:
    """A number or the reason it is missing."""
    return "n/a" if value is None else f"{value:.{digits}f}"
