"""Helpers shared by the benchmarks: timing on the device, peak memory, a large offline tokenizer, tables."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
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


def write_partial_results(path: str | None, device: str, results: list[dict[str, Any]]) -> None:
    """The results so far as JSON at ``path`` (None: nowhere), written after every measurement, so a run cut short
    keeps what it measured."""
    if path is None:
        return
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"device": device, "torch": torch.__version__, "results": results}, f, indent=2)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-style table."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def column_table(columns: list[tuple[str, str]], rows: list[dict[str, Any]]) -> str:
    """A table of ``rows`` (dicts) with one column per (header, key); a missing value is an empty cell."""
    return markdown_table(
        [header for header, _ in columns],
        [["" if r.get(key) is None else str(r[key]) for _, key in columns] for r in rows],
    )


def fmt(value: float | None, digits: int = 2) -> str:
    """A number or the reason it is missing."""
    return "n/a" if value is None else f"{value:.{digits}f}"


VOCAB = 50280
MODELS = {  # name -> (kind, size settings)
    "mamba2-130m": ("Mamba2", {"d_model": 768, "n_layer": 24}),
    "mamba1-130m": ("Mamba1", {"d_model": 768, "n_layer": 24}),
    "mamba2-1.4b": ("Mamba2", {"d_model": 2048, "n_layer": 48}),
    "mamba1-1.4b": ("Mamba1", {"d_model": 2048, "n_layer": 48}),
    "llama-130m": ("llama", {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12}),
}


def write_model(name: str, directory: Path) -> tuple[Path, str]:
    """A random-weight checkpoint of ``name`` (mamba-ssm's format for the Mambas, bf16) with a word-level
    tokenizer; returns (directory, family)."""
    kind, dims = MODELS[name]
    tokenizer = wordlevel_tokenizer(VOCAB)
    torch.manual_seed(0)
    if kind == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            vocab_size=VOCAB, intermediate_size=4 * dims["hidden_size"], max_position_embeddings=32_768, **dims
        )
        LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(directory)
        family = "transformer"
    else:
        from mamba_ssm.models.config_mamba import MambaConfig
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

        cfg = MambaConfig(**dims, vocab_size=VOCAB, ssm_cfg={"layer": kind}, pad_vocab_size_multiple=8)
        MambaLMHeadModel(cfg, device="cuda", dtype=torch.bfloat16).save_pretrained(str(directory))
        family = "mamba"
    tokenizer.save_pretrained(directory)
    return directory, family


def document(tokens: int, seed: int) -> str:
    """A document of exactly ``tokens`` word-level tokens."""
    return " ".join(f"w{(seed * 7919 + i * 104729) % (VOCAB - 1) + 1}" for i in range(tokens))


def backend_class(name: str) -> Any:
    """The backend class called ``name`` (real-mamba, mamba2 or transformer)."""
    if name == "real-mamba":
        from mamba_router_cuda.backend import RealMambaBackend

        return RealMambaBackend
    if name == "mamba2":
        from mamba_router_mps.backend import Mamba2Backend

        return Mamba2Backend
    from mamba_router.transformer import TransformerBackend

    return TransformerBackend
