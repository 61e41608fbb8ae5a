"""Where one decode step's GPU time goes, fused step against unfused (torch.profiler, eager steps, bf16, batch 1).

Mamba-2 and Mamba-1 at 130M and 1.4B shapes (mamba-ssm random weights), 20 profiled steps after 5 warm ones: the
kernels by GPU time per step, the kernel count per step and the device time per step for each path.

    python benchmarks/profile_fused_step.py --sizes 130m 1.4b --layers Mamba2
"""

from __future__ import annotations

import argparse

import torch
from bench_real_mamba import mamba_ssm_model, ours_from_mamba_ssm
from common import wordlevel_tokenizer

STEPS = 20


def profile(model, rows: int) -> None:
    lm = model.model
    cache = lm.new_cache(rows)
    with torch.inference_mode():
        lm.read(torch.randint(1, 1000, (rows, 64), device="cuda"), cache)
        tokens = torch.randint(1, 1000, (rows,), device="cuda")
        for _ in range(5):
            lm.step(tokens, cache)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(STEPS):
                lm.step(tokens, cache)
            torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    events.sort(key=lambda e: e.self_device_time_total, reverse=True)
    total = sum(e.self_device_time_total for e in events) / STEPS
    count = sum(e.count for e in events) / STEPS
    print(f"  device time per step {total:.1f} us, kernels per step {count:.0f}")
    for e in events[:10]:
        per_step = e.self_device_time_total / STEPS
        print(f"  {per_step:8.1f} us  x{e.count / STEPS:5.1f}  {e.key[:100]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["130m", "1.4b"])
    parser.add_argument("--layers", nargs="+", default=["Mamba2", "Mamba1"])
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    tokenizer = wordlevel_tokenizer(50280)
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, batch {args.batch}")
    for size in args.sizes:
        for layer in args.layers:
            lm = mamba_ssm_model(size, layer)
            for fused in (True, False):
                print(f"{layer} {size} {'fused' if fused else 'unfused'} step:")
                profile(ours_from_mamba_ssm(lm, tokenizer, fused_step=fused), args.batch)
            del lm
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
