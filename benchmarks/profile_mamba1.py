"""Where a Mamba-1 read and a decode step spend their GPU time: ours (real-mamba) against mamba-ssm, kernel by kernel.

Three prefill paths over the same weights (bf16, batch 1): ours (``MambaLM.read`` on KernelOps), mamba-ssm's fused
forward (``mamba_inner_fn``, keeps no state) and mamba-ssm's unfused forward (``inference_params`` given: the
state-returning path its ``generate`` prefills with). Then one eager decode step each (ours ``MambaLM.step``,
mamba-ssm ``Mamba.step`` through ``inference_params``). For each: wall time (median of 3) and the top CUDA kernels
by total device time from ``torch.profiler``.

With ``--decode-batch B``: instead, whole greedy generations at batch ``B`` from a ``--length`` prompt, ours
(``generate_ids``, CUDA graphs) against mamba-ssm's ``generate(cg=True)``: ms per token as the benchmark measures it,
the device's busy time per token (sum of kernel times: the rest is the device waiting for the host), the top CUDA
kernels and the top host operations.

    python benchmarks/profile_mamba1.py --size 130m --length 131072
    python benchmarks/profile_mamba1.py --size 130m --length 1024 --decode-batch 8
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch
from bench_real_mamba import VOCAB, mamba_ssm_model, ours_from_mamba_ssm
from common import median_seconds, wordlevel_tokenizer
from torch.profiler import ProfilerActivity, profile


def kernel_table(fn: Callable[[], Any], rows: int) -> str:
    """The top ``rows`` device kernels of one run of ``fn``, by total CUDA time."""
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        fn()
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=70)
    copies = [e for e in prof.key_averages(group_by_input_shape=True) if e.key == "aten::copy_"]
    copies.sort(key=lambda e: e.device_time_total, reverse=True)
    lines = [f"  copy_ x{e.count}: {e.device_time_total / 1000:.2f} ms, shapes {e.input_shapes}" for e in copies[:6]]
    return table + "\nlargest copies:\n" + "\n".join(lines)


def decode_profile(lm: Any, ours: Any, batch: int, length: int, tokens: int, rows: int) -> None:
    """Generations of ``tokens`` tokens at ``batch``: where each path's time per token goes."""
    ids = torch.randint(1, 50000, (batch, length), device="cuda")

    def ours_generate(count: int) -> Any:
        return ours.generate_ids(list(ids), max_new_tokens=count)

    @torch.inference_mode()
    def ssm_generate(count: int) -> Any:
        return lm.generate(ids, max_length=length + count, cg=True, top_k=1)

    for name, generate in {"ours generate_ids": ours_generate, "mamba-ssm generate(cg=True)": ssm_generate}.items():
        one = median_seconds(lambda: generate(1), repeats=3, warmup=2)
        many = median_seconds(lambda: generate(tokens + 1), repeats=3, warmup=1)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            generate(tokens + 1)
            torch.cuda.synchronize()
        averages = prof.key_averages()
        kernels = [e for e in averages if e.device_type == torch.autograd.DeviceType.CUDA]
        busy_ms = sum(e.self_device_time_total for e in kernels) / 1000
        print(
            f"\n=== {name}: batch {batch}, prompt {length}: {(many - one) * 1000 / tokens:.3f} ms/token "
            f"(wall, (T({tokens + 1}) - T(1)) / {tokens}); device busy {busy_ms / (tokens + 1):.3f} ms/token"
        )
        print(averages.table(sort_by="self_cuda_time_total", row_limit=rows, max_name_column_width=60))
        print(averages.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="130m")
    parser.add_argument("--length", type=int, default=131072)
    parser.add_argument("--rows", type=int, default=14)
    parser.add_argument("--decode-batch", type=int, default=None, help="profile whole generations at this batch")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per profiled generation")
    args = parser.parse_args()

    from mamba_ssm.utils.generation import InferenceParams

    lm = mamba_ssm_model(args.size, "Mamba1")
    ours = ours_from_mamba_ssm(lm, wordlevel_tokenizer(VOCAB if args.decode_batch else 16))
    if args.decode_batch is not None:
        decode_profile(lm, ours, args.decode_batch, args.length, args.tokens, args.rows)
        return
    ids = torch.randint(1, 50000, (1, args.length), device="cuda")

    def ours_prefill() -> Any:
        return ours.stepper(1).prefill(list(ids))

    @torch.inference_mode()
    def fused_prefill() -> Any:
        return lm(ids, num_last_tokens=1).logits

    @torch.inference_mode()
    def unfused_prefill() -> Any:
        params = InferenceParams(max_seqlen=args.length + 1, max_batch_size=1)
        return lm(ids, inference_params=params, num_last_tokens=1).logits

    token = ids[:, -1:]
    cache = ours.model.new_cache(1)
    params = InferenceParams(max_seqlen=args.length + 1, max_batch_size=1)
    with torch.inference_mode():
        lm(ids[:, :16], inference_params=params, num_last_tokens=1)
    params.seqlen_offset = 16

    @torch.inference_mode()
    def ours_step() -> Any:
        return ours.model.step(token[:, 0], cache)

    @torch.inference_mode()
    def ssm_step() -> Any:
        return lm(token, inference_params=params, num_last_tokens=1).logits

    paths = {
        "ours prefill": ours_prefill,
        "mamba-ssm fused prefill": fused_prefill,
        "mamba-ssm unfused prefill": unfused_prefill,
        "ours eager step": ours_step,
        "mamba-ssm eager step": ssm_step,
    }
    for name, fn in paths.items():
        seconds = median_seconds(fn, repeats=3, warmup=2)
        print(f"\n=== {name}: {seconds * 1000:.2f} ms (median of 3), {args.size}, length {args.length}")
        print(kernel_table(fn, args.rows))


if __name__ == "__main__":
    main()
