"""mamba2 backend (pure PyTorch) vs. HF transformers' Mamba2ForCausalLM torch path, same config, on the CPU.

A 130M-parameter Mamba-2 configuration (d_model 768, 24 layers, d_state 128, head dim 64, chunk 256, vocab 50280),
random weights, float32; ours reads 512 tokens per segment (MAMBA2_BENCH_SEGMENT). Each measurement runs in its own process; "activation GiB" is the process's peak resident
memory during the prefill minus its resident memory just before it (so the weights are not counted). HF runs under
an address-space limit so that a length it cannot fit fails with MemoryError instead of swapping the machine.
Decode ms/token = (time for 33 tokens - time for 1 token) / 32 after a 1k-token prompt.

    python benchmarks/bench_mamba2_cpu.py --ours 4096 16384 65536 --hf 4096 8192 16384
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

from common import fmt, markdown_table

VOCAB = 50280
SEGMENT = int(__import__("os").environ.get("MAMBA2_BENCH_SEGMENT", "512"))  # the backend's default


def _rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**30


def _child(path: str, task: str, length: int, limit_gib: float) -> dict:
    import torch

    torch.manual_seed(0)
    if path == "hf":
        from transformers import Mamba2Config, Mamba2ForCausalLM

        config = Mamba2Config(
            vocab_size=VOCAB,
            hidden_size=768,
            num_hidden_layers=24,
            num_heads=24,
            head_dim=64,
            state_size=128,
            n_groups=1,
            chunk_size=256,
        )
        model = Mamba2ForCausalLM(config).eval()

        def prefill(ids):
            return model(ids, use_cache=True, logits_to_keep=1).logits

        def generate(ids, n):
            return model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
    else:
        from mamba_router.generation.decoding import choose_next_tokens
        from mamba_router.generation.requests import check_request
        from mamba_router.generation.ssm_model import EagerDecoder
        from mamba_router.models.mamba import random_mamba
        from mamba_router.models.mamba_config import SSMConfig
        from mamba_router.models.torch_ops import TorchOps

        cfg = SSMConfig(
            arch="mamba2", d_model=768, n_layer=24, vocab_size=VOCAB, d_state=128, headdim=64, chunk_size=256
        )
        model = random_mamba(cfg, TorchOps()).eval()
        decoder = EagerDecoder(model, SEGMENT)

        def prefill(ids):
            return model.read(ids, model.new_cache(1), segment=SEGMENT)

        def generate(ids, n):
            stepper = decoder.stepper(1)
            request = check_request("x", max_new_tokens=n)
            token = choose_next_tokens(stepper.prefill([ids[0]]), request, None)
            for _ in range(n - 1):
                token = choose_next_tokens(stepper.step(token), request, None)
            return token

    ids = torch.randint(1, VOCAB - 1, (1, length))
    with torch.inference_mode():
        prefill(ids[:, :300])
        if limit_gib:
            limit = int(limit_gib * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        if task == "prefill":
            before = _rss_gib()
            started = time.perf_counter()
            prefill(ids)
            seconds = time.perf_counter() - started
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
            return {"ms": seconds * 1000, "activation_gib": peak - before}
        one = _timed(lambda: generate(ids, 1))
        many = _timed(lambda: generate(ids, 33))
        return {"ms_per_token": (many - one) * 1000 / 32}


def _timed(fn) -> float:
    times = []
    for _ in range(3):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return sorted(times)[1]


def run(path: str, task: str, length: int, limit_gib: float) -> dict:
    cmd = [sys.executable, __file__, "--child", path, task, str(length), str(limit_gib)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["killed"])[-1]
        return {
            "error": "out of memory" if "MemoryError" in done.stderr or "alloc" in done.stderr.lower() else last[:100]
        }
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, path, task, length, limit = sys.argv
        print(json.dumps(_child(path, task, int(length), float(limit))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ours", nargs="*", type=int, default=[4096, 16384, 65536])
    parser.add_argument("--hf", nargs="*", type=int, default=[4096, 8192, 16384])
    parser.add_argument("--hf-limit-gib", type=float, default=20.0)
    parser.add_argument("--decode-prompt", type=int, default=1024)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results = []
    for path, lengths, limit in (("ours", args.ours, 0.0), ("hf", args.hf, args.hf_limit_gib)):
        if not lengths:
            continue
        for length in lengths:
            results.append({"path": path, "task": "prefill", "length": length, **run(path, "prefill", length, limit)})
            print(json.dumps(results[-1]), flush=True)
        results.append(
            {
                "path": path,
                "task": "decode",
                "length": args.decode_prompt,
                **run(path, "decode", args.decode_prompt, limit),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    rows = []
    for r in results:
        value = r.get("error") or (
            f"{fmt(r['ms'] / 1000, 2)} s, {fmt(r['activation_gib'])} GiB"
            if r["task"] == "prefill"
            else f"{fmt(r['ms_per_token'], 1)} ms/token"
        )
        rows.append(
            [
                {"ours": "mamba2 backend (ours)", "hf": "HF Mamba2ForCausalLM torch path"}[r["path"]],
                r["task"],
                str(r["length"]),
                value,
            ]
        )
    print(f"\nmachine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores\n")
    print(markdown_table(["path", "task", "tokens", "time, activation memory"], rows))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
