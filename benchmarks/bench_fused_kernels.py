"""The fused step's matrix-vector kernels against the unfused chain they replace, one layer's projections at a time.

For each projection of a decode step (Mamba-2 130M, 1.4B and 2.8B shapes, the Codestral and Granite-4.0-H-1B shapes
with Granite's MLP; the 130M lm_head) and batch size, in bf16:
  unfused  the kernels the unfused step launches: mamba-ssm's layer_norm_fn + F.linear (cuBLAS) + causal-conv1d's
           update for in_proj; mamba-ssm's gated rmsnorm_fn + F.linear for out_proj; layer_norm_fn + F.linear for
           the lm_head and an MLP's input; silu(gate) * up + F.linear for an MLP's output
  linear   F.linear alone (what the projection costs with no norm or conv at all)
  fused    mamba_router_cuda.fused_step with the default tiles, and the best of a sweep of tile sizes
Times are per launch, from CUDA graphs of 50 launches replayed 20 times (as decoding runs them), each launch reading
the next of several copies of the weights (together over 4x the L2 cache, so they come from memory as in a decode
step, where every layer has its own); GB/s counts the weight bytes.

    python benchmarks/bench_fused_kernels.py --out results.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from common import markdown_table, write_partial_results

LAUNCHES = 50
REPLAYS = 20
ROTATED_BYTES = 256 << 20  # weight copies cycled through: over 4x the H100/H200 L2 cache
SHAPES = {  # name -> (kind, n_in, n_out, extra)
    "130m in_proj": ("in_proj", 768, 3352, {"d_inner": 1536, "conv": 1792}),
    "130m out_proj": ("out_proj", 1536, 768, {"group": 1536}),
    "1.4b in_proj": ("in_proj", 2048, 8512, {"d_inner": 4096, "conv": 4352}),
    "1.4b out_proj": ("out_proj", 4096, 2048, {"group": 4096}),
    "2.8b in_proj": ("in_proj", 2560, 10576, {"d_inner": 5120, "conv": 5376}),
    "2.8b out_proj": ("out_proj", 5120, 2560, {"group": 5120}),
    "130m lm_head": ("norm_linear", 768, 50280, {}),
    "codestral in_proj": ("in_proj", 2048, 10304, {"d_inner": 4096, "conv": 6144}),
    "codestral out_proj": ("out_proj", 4096, 2048, {"group": 512}),
    "granite in_proj": ("in_proj", 1536, 6448, {"d_inner": 3072, "conv": 3328}),
    "granite out_proj": ("out_proj", 3072, 1536, {"group": 3072}),
    "granite mlp input": ("norm_linear", 1536, 8192, {}),
    "granite mlp output": ("gate_linear", 4096, 1536, {}),
}


def per_launch_us(fn: Callable[[torch.Tensor], Any], weights: list[torch.Tensor]) -> float:
    """Microseconds per call of ``fn`` replayed from a CUDA graph of LAUNCHES calls, call i on ``weights[i % n]``."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for w in weights[:3]:
            fn(w)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(LAUNCHES):
            fn(weights[i % len(weights)])
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(REPLAYS):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000 / (REPLAYS * LAUNCHES)


def sweep_tiles(rows: int, n_in: int) -> list[Any]:
    from mamba_router_cuda.fused_step import MatVecShape

    if rows == 1:  # multiply-and-sum, from short strides of many outputs to whole rows of a few; then tl.dot
        # tiles (the row padded to 16), whose loads Triton pipelines through shared memory
        return [
            MatVecShape(1, n, k, False, warps, stages)
            for n, k, warps, stages in itertools.product(
                (2, 4, 8, 16, 32, 64), (128, 256, 512, 1024, 2048, 4096), (2, 4, 8), (1, 3)
            )
            if 2048 <= n * k <= 16384 and k < 2 * n_in and (warps > 2 or n * k <= 4096) and (stages == 1 or k < n_in)
        ] + [
            MatVecShape(16, n, k, True, warps, stages)
            for n, k, warps, stages in itertools.product((32, 64, 128), (64, 128, 256), (4, 8), (3, 5))
            if 4096 <= n * k <= 16384
        ]
    # several rows: tl.dot tiles (the CUDA-core float32 product measured 1.8x slower on the H100, 2026-12-06b)
    # programs split the rows too where blocks of fewer rows than the batch give the GPU more programs
    # and the product computed transposed (swap_ab: the weights' outputs on the matrix unit's long side)
    most = min(64, max(16, 1 << (rows - 1).bit_length()))
    return [
        MatVecShape(block_b, n, k, True, 4, stages)
        for block_b, n, k, stages in itertools.product((16, 32, 64), (16, 32, 64), (64, 128, 256), (3, 4))
        if block_b <= most and block_b * k <= 8192
    ] + [
        MatVecShape(most, n, k, True, warps, stages, swap_ab=True)
        for n, k, warps, stages in itertools.product((32, 64, 128), (64, 128, 256), (4, 8), (3, 4))
        if n * k <= 16384 and most * k <= 16384
    ]


Case = Callable[[Any, torch.Tensor], Any]


def weight_copies(n_out: int, n_in: int) -> list[torch.Tensor]:
    """Random projection weights, enough copies to fill ROTATED_BYTES."""
    copies = max(1, -(-ROTATED_BYTES // (n_out * n_in * 2)))
    return [torch.randn(n_out, n_in, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(copies)]


def cases(name: str, rows: int) -> dict[str, Case]:
    """The unfused chain, the bare linear, and the fused call (taking a kernels object and the weight) for one
    shape."""
    from mamba_ssm.ops.triton.layer_norm import layer_norm_fn
    from mamba_ssm.ops.triton.layernorm_gated import rmsnorm_fn

    from mamba_router.models.ops import ConvUpdate

    kind, n_in, n_out, extra = SHAPES[name]
    dev, dt = "cuda", torch.bfloat16
    x = torch.randn(rows, n_in, device=dev, dtype=dt)
    residual = torch.randn(rows, n_in, device=dev, dtype=torch.float32)
    norm_w = torch.rand(n_in, device=dev, dtype=dt) + 0.5
    z = torch.randn(rows, n_in, device=dev, dtype=dt)
    if kind == "gate_linear":  # a gated MLP's output: silu(gate) * up, then the projection
        return {
            "unfused": lambda _, w: F.linear(F.silu(z) * x, w),
            "linear": lambda _, w: F.linear(x, w),
            "fused": lambda k, w: k.gated_norm_linear(x, z, None, 0.0, n_in, "gate_only", w, None),
        }
    if kind == "out_proj":
        return {
            "unfused": lambda _, w: F.linear(rmsnorm_fn(x, norm_w, None, z=z, eps=1e-5, group_size=extra["group"]), w),
            "linear": lambda _, w: F.linear(x, w),
            "fused": lambda k, w: k.gated_norm_linear(x, z, norm_w, 1e-5, extra["group"], "norm_of_gated", w, None),
        }

    def normed() -> torch.Tensor:
        out, _ = layer_norm_fn(
            x, norm_w, None, residual=residual, eps=1e-5, prenorm=True, residual_in_fp32=True, is_rms_norm=True
        )
        return out

    if kind == "norm_linear":
        return {
            "unfused": lambda _, w: F.linear(normed(), w),
            "linear": lambda _, w: F.linear(x, w),
            "fused": lambda k, w: k.norm_linear(x, residual, norm_w, 1e-5, w, None, residual_in_fp32=True),
        }
    from causal_conv1d import causal_conv1d_update

    conv_state = torch.randn(rows, extra["conv"], 3, device=dev, dtype=dt)
    conv_w = torch.randn(extra["conv"], 4, device=dev, dtype=dt)
    conv_b = torch.randn(extra["conv"], device=dev, dtype=dt)
    first = extra["d_inner"]
    conv = ConvUpdate(conv_state, conv_w, conv_b, first)

    def unfused(_: Any, w: torch.Tensor) -> torch.Tensor:
        projected = F.linear(normed(), w)
        return causal_conv1d_update(projected[:, first : first + extra["conv"]], conv_state, conv_w, conv_b, "silu")

    return {
        "unfused": unfused,
        "linear": lambda _, w: F.linear(x, w),
        "fused": lambda k, w: k.norm_linear(x, residual, norm_w, 1e-5, w, None, residual_in_fp32=True, conv=conv),
    }


def main() -> None:
    from mamba_router_cuda.fused_step import FusedStepKernels, matvec_shape

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 64])
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.cuda.get_device_name(0)
    results = []
    rows_out = []
    for name, rows in itertools.product(args.shapes, args.batches):
        kind, n_in, n_out, _ = SHAPES[name]
        weight_bytes = n_in * n_out * 2
        fns = cases(name, rows)
        weights = weight_copies(n_out, n_in)
        default = FusedStepKernels()
        timed = {key: per_launch_us(lambda w, f=fn: f(default, w), weights) for key, fn in fns.items()}
        best: tuple[float, Any] = (timed["fused"], matvec_shape(rows, n_out, n_in))
        swept = []
        if not args.no_sweep:
            for tiles in sweep_tiles(rows, n_in):
                try:
                    kernels = FusedStepKernels(lambda *_, t=tiles: t)
                    us = per_launch_us(lambda w, k=kernels: fns["fused"](k, w), weights)
                except Exception as exc:  # a tile the compiler refuses (registers, shared memory) is skipped
                    print(f"{name} b{rows} {tiles}: {type(exc).__name__}", flush=True)
                    continue
                swept.append({"us": us, **vars(tiles)})
                best = min(best, (us, tiles), key=lambda pair: pair[0])
        record = {"shape": name, "batch": rows, **{f"{k}_us": v for k, v in timed.items()}}
        record.update(
            best_us=best[0], best_tiles=vars(best[1]), default_tiles=vars(matvec_shape(rows, n_out, n_in)), swept=swept
        )
        results.append(record)
        print(json.dumps(record), flush=True)
        write_partial_results(args.out, device, results)
        del weights
        torch.cuda.empty_cache()
        rows_out.append(
            [name, str(rows)]
            + [f"{timed[k]:.1f} ({weight_bytes / timed[k] / 1e3:,.0f})" for k in ("unfused", "linear", "fused")]
            + [f"{best[0]:.1f} ({weight_bytes / best[0] / 1e3:,.0f})", str(vars(best[1]))]
        )
    print(f"\ndevice: {device}, torch {torch.__version__}; microseconds per launch (weight GB/s)\n")
    header = ["projection", "batch", "unfused chain", "F.linear alone", "fused (default tiles)", "fused (best)", "best"]
    print(markdown_table(header, rows_out))


if __name__ == "__main__":
    main()
