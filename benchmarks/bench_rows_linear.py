"""A decode step's projections at 2-64 rows: ``F.linear`` (cuBLAS) against ``mamba_router_cuda.rows_linear`` (the
product computed transposed, weights' outputs on the tensor cores' long side, inputs split across programs where
the outputs are few), with a sweep of its tiles.

Shapes are ``bench_fused_kernels.py``'s in_proj and out_proj (Mamba-2 130M, 1.4B, 2.8B, Codestral, Granite-4.0-H-1B),
bf16. Times are per launch from CUDA graphs, each launch reading the next of several weight copies (over 4x the L2
cache, so they come from memory as in a decode step); a split launch's zeroing and rounding kernels are in its time.
GB/s counts the weight bytes.

    python benchmarks/bench_rows_linear.py --batches 4 16 64 --out rows_linear.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from typing import Any

import torch
import torch.nn.functional as F
from bench_fused_kernels import SHAPES, per_launch_us, weight_copies
from common import markdown_table

PROJECTIONS = [name for name, (kind, *_) in SHAPES.items() if kind in ("in_proj", "out_proj")]
SMEM_BYTES = 200 << 10  # what a program's pipelined tiles may take of an H100/H200 SM's shared memory


def sweep(rows: int) -> list[Any]:
    from mamba_router_cuda.rows_linear import RowsTiles

    block_b = max(16, 1 << (rows - 1).bit_length())
    return [
        RowsTiles(n, k, split, warps, stages)
        for n, k, split, warps, stages in itertools.product((32, 64, 128), (64, 128, 256), (1, 2, 4, 8), (4, 8), (3, 5))
        if (n * k + k * block_b) * 2 * stages <= SMEM_BYTES
    ]


def measure(name: str, rows: int, with_sweep: bool) -> dict[str, Any]:
    from mamba_router_cuda.rows_linear import rows_linear, rows_tiles

    _, n_in, n_out, _ = SHAPES[name]
    weights = weight_copies(n_out, n_in)
    x = torch.randn(rows, n_in, device="cuda", dtype=torch.bfloat16)
    reference = F.linear(x, weights[0])
    error = (rows_linear(x, weights[0]).float() - reference.float()).abs().max().item()
    row: dict[str, Any] = {"shape": name, "rows": rows, "n_in": n_in, "n_out": n_out, "max_abs_error": error}
    row["F.linear us"] = per_launch_us(lambda w: F.linear(x, w), weights)
    default = rows_tiles(rows, n_out, n_in)
    row["default us"] = per_launch_us(lambda w: rows_linear(x, w, tiles=default), weights)
    row["default tiles"] = str(default)
    if with_sweep:
        timed = []
        for tiles in sweep(rows):
            try:
                timed.append((per_launch_us(lambda w, t=tiles: rows_linear(x, w, tiles=t), weights), tiles))
            except Exception as exc:  # tiles the GPU cannot take (shared memory, registers): skipped
                print(f"  {tiles}: {type(exc).__name__}", flush=True)
        timed.sort(key=lambda pair: pair[0])
        row["best us"], best = timed[0]
        row["best tiles"] = str(best)
        row["top 5"] = [(round(us, 2), str(t)) for us, t in timed[:5]]
    weight_bytes = n_in * n_out * 2
    for key in ("F.linear us", "default us", "best us"):
        if key in row:
            row[key.replace("us", "GB/s")] = weight_bytes / (row[key] * 1e-6) / 1e9
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=PROJECTIONS, choices=PROJECTIONS)
    parser.add_argument("--batches", nargs="+", type=int, default=[4, 16, 64])
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--budget-s", type=float, default=400, help="stop starting new shapes after this long")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    for name, batch in itertools.product(args.shapes, args.batches):
        if time.monotonic() - started > args.budget_s:
            print(f"budget spent; {name} at {batch} rows and after not run", flush=True)
            break
        rows.append(measure(name, batch, not args.no_sweep))
        print(json.dumps(rows[-1]), flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)
    print(f"\ndevice: {torch.cuda.get_device_name()}; bf16; us per launch (weight GB/s)\n")
    table = [
        [
            r["shape"],
            str(r["rows"]),
            f"{r['F.linear us']:.1f} ({r['F.linear GB/s']:,.0f})",
            f"{r['default us']:.1f} ({r['default GB/s']:,.0f})",
            f"{r['best us']:.1f} ({r['best GB/s']:,.0f})" if "best us" in r else "-",
            r.get("best tiles", "-"),
            f"{r['F.linear us'] / r.get('best us', r['default us']):.2f}x",
        ]
        for r in rows
    ]
    print(
        markdown_table(
            [
                "projection",
                "rows",
                "F.linear",
                "rows_linear default",
                "rows_linear best",
                "best tiles",
                "F.linear / ours",
            ],
            table,
        )
    )


if __name__ == "__main__":
    main()
