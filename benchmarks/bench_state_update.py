"""Mamba-2's one-token state update: mamba-ssm's ``selective_state_update`` against ours, by batch size and tiles.

At one row a decode step's state update is small; at 16-64 rows it is the largest read of the step (the 1.4B model
moves 64 rows x 48 layers x 1 MiB of bf16 state in and out each token), so how close it runs to the memory's
bandwidth decides how much a batch costs. For each Mamba-2 shape and batch size, in bf16 (states in bf16, as served):
  mamba-ssm  ``selective_state_update`` through real-mamba's unfused ops (``KernelOps(fused_step=False).state_step``)
  ours       ``mamba_router_cuda.fused_step``'s state kernel with its default tiles, and the best of a sweep
Times are per launch, from CUDA graphs of launches replayed (as decoding runs them), each launch on the next of
several state copies (together over 4x the L2 cache, so states come from memory as in a step, where every layer has
its own); GB/s counts the state read and written.

    python benchmarks/bench_state_update.py --out results.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from typing import Any

import torch
from bench_fused_kernels import ROTATED_BYTES, per_launch_us
from common import markdown_table, write_partial_results

SHAPES = {  # name -> (heads, head_dim, state_size, groups)
    "130m": (24, 64, 128, 1),
    "1.4b": (64, 64, 128, 1),
    "2.8b": (80, 64, 128, 1),
    "codestral": (128, 64, 128, 8),
    "granite-1b": (48, 64, 128, 1),
}


def state_copies(rows: int, heads: int, head_dim: int, state_size: int) -> list[torch.Tensor]:
    """Random bf16 states, enough copies to fill ROTATED_BYTES (at least two)."""
    size = rows * heads * head_dim * state_size * 2
    copies = max(2, -(-ROTATED_BYTES // size))
    return [torch.randn(rows, heads, head_dim, state_size, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]


def sweep() -> list[Any]:
    from mamba_router_cuda.fused_step import StateTiles

    return [StateTiles(p, w) for p, w in itertools.product((4, 8, 16, 32, 64), (1, 2, 4, 8)) if p * 128 // w <= 2048]


def main() -> None:
    from mamba_router.models.ops import NO_DT_LIMIT
    from mamba_router_cuda.fused_step import FusedStepKernels, mamba2_state_tiles
    from mamba_router_cuda.kernel_ops import KernelOps

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 16, 32, 64])
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.cuda.get_device_name(0)
    kernels = FusedStepKernels()
    unfused = KernelOps(fused_step=False)
    results, table = [], []
    for name, rows in itertools.product(args.shapes, args.batches):
        heads, head_dim, state_size, groups = SHAPES[name]
        d_inner, gn = heads * head_dim, groups * state_size
        projected = torch.randn(rows, d_inner + 2 * gn + heads, device="cuda", dtype=torch.bfloat16)
        x, b, c, dt = projected.split([d_inner, gn, gn, heads], dim=-1)
        a = -torch.rand(heads, device="cuda") - 0.5
        d = torch.randn(heads, device="cuda")
        dt_bias = torch.randn(heads, device="cuda") * 0.1
        states = state_copies(rows, heads, head_dim, state_size)
        moved = 2 * states[0].numel() * 2

        def upstream(state: torch.Tensor) -> Any:
            return unfused.state_step(
                state,
                x.reshape(rows, heads, head_dim),
                dt,
                a,
                b.reshape(rows, groups, state_size),
                c.reshape(rows, groups, state_size),
                d,
                None,
                dt_bias,
                NO_DT_LIMIT,
            )

        def ours(state: torch.Tensor, tiles: Any = None) -> Any:
            return kernels.mamba2_state_update(state, x, b, c, dt, a, d, dt_bias, NO_DT_LIMIT, tiles=tiles)

        timed = {"mamba-ssm": per_launch_us(upstream, states), "ours": per_launch_us(ours, states)}
        default = mamba2_state_tiles(head_dim, state_size)
        best: tuple[float, Any] = (timed["ours"], default)
        swept = []
        if not args.no_sweep:
            for tiles in sweep():
                us = per_launch_us(lambda s, t=tiles: ours(s, t), states)
                swept.append({"us": us, **vars(tiles)})
                best = min(best, (us, tiles), key=lambda pair: pair[0])
        record = {"shape": name, "batch": rows, "bytes_moved": moved, **{f"{k}_us": v for k, v in timed.items()}}
        record.update(best_us=best[0], best_tiles=vars(best[1]), default_tiles=vars(default), swept=swept)
        results.append(record)
        print(json.dumps({k: v for k, v in record.items() if k != "swept"}), flush=True)
        write_partial_results(args.out, device, results)
        del states
        torch.cuda.empty_cache()
        table.append(
            [name, str(rows)]
            + [f"{timed[k]:.1f} ({moved / timed[k] / 1e3:,.0f})" for k in ("mamba-ssm", "ours")]
            + [f"{best[0]:.1f} ({moved / best[0] / 1e3:,.0f})", f"{best[1].block_p} x {best[1].num_warps} warps"]
        )
    print(f"\ndevice: {device}, torch {torch.__version__}; microseconds per launch (GB/s of state read and written)\n")
    header = ["shape", "batch", "mamba-ssm", "ours (default tiles)", "ours (best)", "best tiles (head-dim rows)"]
    print(markdown_table(header, table))


if __name__ == "__main__":
    main()
