"""One sampling step of a batch: ``sample_rows`` filtering on a shortlist of the best tokens against ranking the
whole vocabulary, on flat and on peaked scores.

    python benchmarks/bench_sampling.py [--rows 1 16 64] [--vocab 50280] [--out results.json]
        [--before DIR]     # also time DIR/mamba_router/generation/sampling.py (an earlier tree) on the same inputs

Scores: "flat" is N(0, 0.5) for every token (what a random-weight model gives: a top-p nucleus spans most of the
vocabulary, so the shortlist cannot hold it and the step falls back to the full ranking); "peaked" is N(0, 2) with 20
tokens raised by 12 (a trained model's usual shape: the nucleus is a few tokens). Settings: temperature 0.8 alone,
with top-p 0.95, and with top-k 50. Every time is the median of 20 steps after warm-up, device synchronised, float32
logits on the GPU where there is one.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import torch
from common import markdown_table, median_seconds

from mamba_router.generation.sampling import SHORTLIST, RowSampling, sample_rows, stream_key

SETTINGS: dict[str, tuple[int | None, float | None]] = {
    "temperature": (None, None),
    "top-p 0.95": (None, 0.95),
    "top-k 50": (50, None),
}


def scores(kind: str, rows: int, vocab: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    if kind == "flat":
        return (torch.randn(rows, vocab, generator=generator) * 0.5).to(device)
    peaked = torch.randn(rows, vocab, generator=generator) * 2.0
    peaked[:, :20] += 12.0
    return peaked.to(device)


def earlier_sampling(tree: str) -> Any:
    """The sampling module of an earlier tree, loaded under its own name beside this one."""
    spec = importlib.util.spec_from_file_location(
        "earlier_sampling", Path(tree) / "mamba_router/generation/sampling.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["earlier_sampling"] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--vocab", type=int, default=50280)
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--before", help="an earlier tree whose sample_rows to time too")
    args = parser.parse_args(argv)
    before = earlier_sampling(args.before) if args.before else None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    results: list[dict[str, Any]] = []
    for rows in args.rows:
        for kind in ("flat", "peaked"):
            logits = scores(kind, rows, args.vocab, device)
            for name, (top_k, top_p) in SETTINGS.items():
                settings = [RowSampling(0.8, top_k, top_p, stream_key(row, 1)) for row in range(rows)]
                times = {
                    width: median_seconds(lambda w=width: sample_rows(logits, settings, w), repeats=20, warmup=3)
                    for width in (0, SHORTLIST)
                }
                result = {"rows": rows, "scores": kind, "settings": name, "full_ms": times[0] * 1e3,
                          "shortlist_ms": times[SHORTLIST] * 1e3}  # fmt: skip
                if before is not None:
                    old = [before.RowSampling(r.temperature, r.top_k, r.top_p, r.key) for r in settings]
                    result["before_ms"] = median_seconds(lambda: before.sample_rows(logits, old), 20, 3) * 1e3
                results.append(result)
    table = [
        [str(r["rows"]), r["scores"], r["settings"], f"{r['full_ms']:.3f}", f"{r['shortlist_ms']:.3f}",
         f"{r['full_ms'] / r['shortlist_ms']:.2f}x", f"{r['before_ms']:.3f}" if "before_ms" in r else "-"]
        for r in results
    ]  # fmt: skip
    header = ["rows", "scores", "settings", "full ranking ms", f"shortlist {SHORTLIST} ms", "full / shortlist",
              "before ms"]  # fmt: skip
    print(f"device: {device_name}, vocabulary {args.vocab}")
    print(markdown_table(header, table))
    if args.out:
        with open(args.out, "w") as file:
            json.dump({"device": device_name, "vocab": args.vocab, "results": results}, file, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
