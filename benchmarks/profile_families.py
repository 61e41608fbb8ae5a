"""Where a deployed family's decode step spends its GPU time on real-mamba: kernels per token, busy time per token,
the top kernels, and the weights-read floor.

The shapes are ``bench_families.py``'s (about 1B parameters, random weights, bf16, built with transformers' own
classes, saved with ``save_pretrained`` and loaded through ``mr.load_model(backend="real-mamba")``). One greedy
generation of ``--tokens`` tokens after a ``--length`` prompt is timed (median of 3, minus a 1-token generation) and
profiled with ``torch.profiler``: device busy time per token is the sum of kernel times (the rest is the device
waiting for the host), and the kernel count per token shows what a CUDA-graph step replays.

    python benchmarks/profile_families.py --families falcon_mamba granite_h codestral
"""

from __future__ import annotations

import argparse
import gc
import tempfile
from typing import Any

import torch
from bench_families import SHAPES, hf_model
from bench_real_mamba import VOCAB
from common import median_seconds, wordlevel_tokenizer
from torch.profiler import ProfilerActivity, profile


def profile_family(family: str, length: int, tokens: int, rows: int, peak_tb_s: float) -> dict[str, Any]:
    """Decode timings and the kernel table of one family's shape."""
    import mamba_router as mr

    hf = hf_model(family).to(torch.bfloat16)
    parameters = sum(p.numel() for p in hf.parameters())
    with tempfile.TemporaryDirectory() as directory:
        hf.save_pretrained(directory)
        wordlevel_tokenizer(VOCAB).save_pretrained(directory)
        del hf
        model = mr.load_model(directory, backend="real-mamba", dtype="bfloat16", device="cuda")
    model._eos = []  # random weights: never stop early
    ids = [torch.randint(1, VOCAB - 8, (length,), device="cuda")]

    def generate(count: int) -> Any:
        return model.generate_ids(ids, max_new_tokens=count)

    one = median_seconds(lambda: generate(1), repeats=3, warmup=2)
    many = median_seconds(lambda: generate(tokens + 1), repeats=3, warmup=1)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        generate(tokens + 1)
        torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernels.sort(key=lambda e: e.device_time_total, reverse=True)
    busy_us = sum(e.device_time_total for e in kernels)
    count = sum(e.count for e in kernels)
    ms_per_token = (many - one) / tokens * 1000
    floor_ms = parameters * 2 / (peak_tb_s * 1e12) * 1000
    print(f"\n## {family}: {parameters / 1e9:.2f}B parameters, prompt {length}, {tokens} tokens")
    print(
        f"decode {ms_per_token:.3f} ms/token; weights-read floor {floor_ms:.3f} ms ({ms_per_token / floor_ms:.1f}x); "
        f"whole generation: {count} kernels, device busy {busy_us / 1000:.1f} ms "
        f"(about {count / (tokens + 1):.0f} kernels and {busy_us / 1000 / (tokens + 1):.3f} ms busy per token, "
        "prefill included)"
    )
    print("| kernel | calls | total ms | us/call |\n| --- | --- | --- | --- |")
    for e in kernels[:rows]:
        name = e.key if len(e.key) <= 90 else e.key[:87] + "..."
        print(f"| {name} | {e.count} | {e.device_time_total / 1000:.2f} | {e.device_time_total / e.count:.1f} |")
    return {"ms_per_token": ms_per_token, "floor_ms": floor_ms, "kernels": count, "busy_ms": busy_us / 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=["falcon_mamba", "granite_h", "codestral"], choices=SHAPES)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rows", type=int, default=18)
    parser.add_argument("--peak-tb-s", type=float, default=3.35, help="memory bandwidth (H100 SXM 3.35, H200 4.8)")
    parser.add_argument(
        "--fresh-decay", action="store_true", help="compute -exp(A_log) in every step (the step before it was kept)"
    )
    args = parser.parse_args()
    if args.fresh_decay:
        from mamba_router.models.layers import mamba1, mamba2

        def fresh(mixer: Any) -> torch.Tensor:
            return -torch.exp(mixer.A_log.float())

        mamba1.state_decay = mamba2.state_decay = fresh  # type: ignore[assignment]
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    for family in args.families:
        profile_family(family, args.length, args.tokens, args.rows, args.peak_tb_s)
        gc.collect()
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
