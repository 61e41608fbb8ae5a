"""The batching engine alone (no HTTP): what continuous batching gives over one request at a time, and what the
engine costs over the model's own decoding step.

For each model (random weights, written to disk and loaded through the library) and each batch size N:

  alone        ``model.generate`` for one request (the library's own single-sequence path): ms per token
  raw step     the batch's decoding step alone (``slot_batch(N).step``, CUDA graphs on real-mamba): ms per step
  engine       N requests submitted at once to a ``BatchingEngine`` (short distinct prompts, 128 new tokens) after
               its warm-up (graphs captured): generated tokens per second, ms per step, and the ratio to N = 1;
               "stepped" is the engine's limit for prompts fed through the batch's steps instead of read
               (``--compare-stepped`` also runs each N with every prompt read, limit 0); "read together" counts
               prompts read in shared padded passes (``--compare-read-together`` also runs each N with one read
               per prompt); ``--compare-sampled`` also runs each N with every request sampled (``--sampling``:
               temperature 0.8 and top-p 0.95, or top-k 50, or temperature 1 alone; a seed each): the cost of
               choosing tokens by sampling instead of argmax (random weights give flat scores: a top-p nucleus
               spans most of the vocabulary)
  document     tokenizing a 12k-token document and reading it into one row's state

    python benchmarks/bench_engine.py --models mamba2-130m mamba2-1.4b --batch 1 16 64 --out engine.json
    python benchmarks/bench_engine.py --prompt-tokens 32 --compare-stepped   # questions about cached documents
    python benchmarks/bench_engine.py --prompt-tokens 512 --compare-read-together   # a burst of new prompts
    python benchmarks/bench_engine.py --tiny      # CPU smoke run on `mamba-router init`'s offline models
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import MODELS, backend_class, column_table, document, sync, write_model

from mamba_router.errors import ContextTooLongError
from mamba_router.generation.engine import BatchingEngine


def raw_step_ms(model: Any, rows: int, steps: int) -> float:
    """The batch's step alone: ``rows`` rows read from a short prompt, ``steps`` steps timed after a warm-up."""
    batch = model.slot_batch(rows)
    ids = torch.arange(1, 17, device=model.device)
    for _ in range(rows):
        prefill = model.begin_prefill(ids)
        prefill.read(1 << 30)
        batch.add(prefill)
    tokens = torch.ones(rows, dtype=torch.long, device=model.device)
    for _ in range(5):
        batch.step(tokens)
    sync()
    started = time.perf_counter()
    for _ in range(steps):
        batch.step(tokens)
    sync()
    return (time.perf_counter() - started) / steps * 1000


def read_costs(model: Any, tokens: int) -> dict[str, Any]:
    """A document of ``tokens`` tokens: tokenizing it (``prepare_read``) and reading it into a row's state."""
    doc = document(tokens, 11)
    started = time.perf_counter()
    prepared = model.prepare_read(doc, prompt_format="plain")
    tokenize_s = time.perf_counter() - started

    def read() -> None:
        model.begin_prefill(prepared.ids.to(model.device)).read(1 << 30)

    read()
    sync()
    started = time.perf_counter()
    read()
    sync()
    return {
        "doc_tokens": tokens,
        "tokenize_ms": round(tokenize_s * 1000, 2),
        "read_ms": round((time.perf_counter() - started) * 1000, 2),
    }


def engine_run(
    model: Any,
    rows: int,
    prompt_tokens: int,
    new: int,
    run_ahead: bool | None = None,
    stepped: int | None = None,
    together: bool = True,
    sampled: str | None = None,
) -> dict[str, Any]:
    """``rows`` requests submitted at once; wall time from submission to the last result. ``sampled``: every
    request samples with these settings (:data:`SAMPLINGS`, a seed each) instead of choosing greedily. Also the
    engine thread's time per step in each phase of its passes (microseconds, the model's steps included)."""
    engine = BatchingEngine(
        model, max_batch=max(rows, 1), run_ahead=run_ahead, stepped_prompt_tokens=stepped, read_together=together
    )
    try:
        warm_up_s = engine.warm_up()  # the ladder's graphs, as `mamba-router serve` captures them at start
        engine.submit(model.prepare_generate(document(prompt_tokens, 1), max_new_tokens=4)).result()  # warm-up
        sampling = SAMPLINGS[sampled] if sampled else {}
        prepared = [
            model.prepare_generate(
                document(prompt_tokens, 100 + i), max_new_tokens=new, **sampling, seed=i if sampled else None
            )
            for i in range(rows)
        ]
        steps_before = engine.stats.steps
        phases_before = dict(engine.stats.pass_seconds)
        sync()
        started = time.perf_counter()
        jobs = engine.submit_many(prepared)  # queued together: prompts that fit one pass are read together
        results = [job.result() for job in jobs]
        wall = time.perf_counter() - started
        steps = engine.stats.steps - steps_before
        phases = {k: (v - phases_before[k]) * 1e6 / max(1, steps) for k, v in engine.stats.pass_seconds.items()}
    finally:
        engine.close()
    tokens = sum(r.completion_tokens for r in results)
    decode_ms = statistics.median(r.timings.decode_ms for r in results)
    return {
        "tokens": tokens,
        "wall_s": round(wall, 4),
        "tokens_per_s": round(tokens / wall, 1),
        "steps": steps,
        "engine_ms_per_step": round(decode_ms / max(1, new - 1), 4),
        "run_ahead": engine.run_ahead,
        "sampled": sampled,
        "stepped": engine.stepped_prompt_tokens,
        "read_together": engine.stats.prompts_read_together,
        "ttft_ms": round(statistics.median(r.timings.prefill_ms for r in results), 2),
        "warm_up_s": round(warm_up_s, 3),
        "phase_us_per_step": " ".join(f"{name} {us:.0f}" for name, us in phases.items()),
    }


def measure(name: str, directory: Path, backend: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    model = backend_class(backend)().load(str(directory), device=None, dtype=args.dtype)
    prompt = document(args.prompt_tokens, 5)
    model.generate(prompt, max_new_tokens=4)
    alone = [model.generate(prompt, max_new_tokens=args.new_tokens) for _ in range(3)]
    alone_ms = statistics.median(r.timings.decode_ms / (r.completion_tokens - 1) for r in alone)
    try:
        costs = read_costs(model, args.doc_tokens) if hasattr(model, "begin_prefill") else {}
    except ContextTooLongError:  # a Transformer with a short window (the tiny one): no document read to time
        costs = {}
    print(f"{name}: {costs}", flush=True)
    rows = []
    base: float | None = None
    # the engine's defaults, then each compared variant: what it changes of engine_run's settings
    compared = {
        "compare_run_ahead": {"run_ahead": False},
        "compare_stepped": {"stepped": 0},
        "compare_read_together": {"together": False},
        "compare_sampled": {"sampled": args.sampling},
    }
    variants: list[dict[str, Any]] = [{}, *(change for flag, change in compared.items() if getattr(args, flag))]
    for n in args.batch:
        for variant in variants:
            measured = engine_run(model, n, args.prompt_tokens, args.new_tokens, **variant)
            raw = raw_step_ms(model, n, 50) if hasattr(model, "slot_batch") else None
            if n == 1 and base is None:
                base = measured["tokens_per_s"]
            rows.append(
                {
                    "model": name,
                    "backend": backend,
                    "batch": n,
                    **measured,
                    "x_batch_1": round(measured["tokens_per_s"] / base, 2) if base else None,
                    "raw_ms_per_step": round(raw, 4) if raw is not None else None,
                    "alone_ms_per_token": round(alone_ms, 4),
                    **costs,
                }
            )
            print(render(rows[-1:]), flush=True)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rows


SAMPLINGS: dict[str, dict[str, Any]] = {  # --compare-sampled's settings (each request has a seed of its own)
    "top-p": {"temperature": 0.8, "top_p": 0.95},
    "top-k": {"temperature": 0.8, "top_k": 50},
    "temperature": {"temperature": 1.0},  # what an OpenAI client sends by default: no filter
}

COLUMNS = [  # (header, key)
    ("model", "model"),
    ("backend", "backend"),
    ("N", "batch"),
    ("run-ahead", "run_ahead"),
    ("stepped", "stepped"),
    ("sampled", "sampled"),
    ("read together", "read_together"),
    ("tokens/s", "tokens_per_s"),
    ("x N=1", "x_batch_1"),
    ("engine ms/step", "engine_ms_per_step"),
    ("median TTFT ms", "ttft_ms"),
    ("raw ms/step", "raw_ms_per_step"),
    ("alone ms/tok", "alone_ms_per_token"),
    ("warm-up s", "warm_up_s"),
    ("engine thread us/step by phase", "phase_us_per_step"),
    ("tokenize doc ms", "tokenize_ms"),
    ("read doc ms", "read_ms"),
]


def render(rows: list[dict[str, Any]]) -> str:
    return column_table(COLUMNS, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mamba2-130m"], choices=sorted(MODELS))
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--doc-tokens", type=int, default=12_000, help="the document whose reading is timed")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--compare-run-ahead", action="store_true", help="also run each batch without run-ahead")
    parser.add_argument("--compare-stepped", action="store_true", help="also run each batch with every prompt read")
    parser.add_argument(
        "--compare-sampled", action="store_true", help="also run each batch with every request sampled (top-p, seeds)"
    )
    parser.add_argument(
        "--sampling", choices=sorted(SAMPLINGS), default="top-p", help="the settings of --compare-sampled's requests"
    )
    parser.add_argument(
        "--compare-read-together",
        action="store_true",
        help="also run each batch with one read per prompt (the engine's read_together off)",
    )
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run on `mamba-router init`'s offline models")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    rows: list[dict[str, Any]] = []
    if args.tiny:
        subprocess.run([sys.executable, "-m", "mamba_router", "init", str(work / "tiny")], check=True)
        args.dtype = "float32"
        args.prompt_tokens = min(args.prompt_tokens, 32)
        rows += measure("tiny-mamba2", work / "tiny/mamba", "mamba2", args)
        rows += measure("tiny-transformer", work / "tiny/transformer", "transformer", args)
    else:
        for name in args.models:
            directory, family = write_model(name, work / name)
            backend = "real-mamba" if family == "mamba" else "transformer"
            rows += measure(name, directory, backend, args)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"\ndevice: {device}; prompts {args.prompt_tokens} tokens, {args.new_tokens} new tokens, {args.dtype}")
    print(render(rows))
    if args.out:
        args.out.write_text(
            json.dumps(
                {"device": device, "args": vars(args) | {"out": str(args.out)}, "rows": rows}, default=str, indent=1
            )
        )


if __name__ == "__main__":
    main()
