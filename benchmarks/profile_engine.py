"""Where the batching engine's time goes at a batch size: cProfile of the engine thread while N requests decode
(after an unprofiled round that compiles and tunes the kernels), next to the batch's raw step time.

    python benchmarks/profile_engine.py --model mamba2-130m --batch 64 --out profile.txt
    python benchmarks/profile_engine.py --tiny --batch 64 --prompt-tokens 32   # the engine's host work, on the CPU
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_engine import raw_step_ms
from common import MODELS, backend_class, document, sync, write_model

from mamba_router.generation.engine import BatchingEngine


class ProfiledEngine(BatchingEngine):
    """An engine whose thread runs under cProfile (the profile is kept when the thread ends)."""

    profile: cProfile.Profile | None = None

    def _loop(self) -> None:
        profile = cProfile.Profile()
        profile.enable()
        try:
            super()._loop()
        finally:
            profile.disable()
            self.profile = profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mamba2-130m", choices=sorted(MODELS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--tiny", action="store_true", help="on the CPU: `mamba-router init`'s offline Mamba-2")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.tiny:
        directory = Path(tempfile.mkdtemp(prefix="profile-engine-")) / "tiny"
        subprocess.run([sys.executable, "-m", "mamba_router", "init", str(directory)], check=True)
        model: Any = backend_class("mamba2")().load(str(directory / "mamba"), device="cpu", dtype="float32")
    else:
        directory, family = write_model(args.model, Path(f"/tmp/profile-engine-{args.model}"))
        model = backend_class("real-mamba" if family == "mamba" else "transformer")().load(
            str(directory), device=None, dtype=args.dtype
        )
    prepared = [
        model.prepare_generate(document(args.prompt_tokens, i), max_new_tokens=args.new_tokens)
        for i in range(args.batch)
    ]
    unprofiled = BatchingEngine(model, max_batch=args.batch)  # a first round compiles and tunes every kernel
    unprofiled.warm_up()
    for job in [unprofiled.submit(p) for p in prepared]:
        job.result()
    unprofiled.close()
    engine = ProfiledEngine(model, max_batch=args.batch)
    warm_s = engine.warm_up()
    sync()
    started = time.perf_counter()
    jobs = [engine.submit(p) for p in prepared]
    first = jobs[0].result()
    results = [job.result() for job in jobs]
    wall = time.perf_counter() - started
    engine.close()
    raw = raw_step_ms(model, args.batch, 50)
    tokens = sum(r.completion_tokens for r in results)
    lines = [
        f"{args.model} batch {args.batch}: warm-up {warm_s:.2f} s; wall {wall:.3f} s for {tokens} tokens "
        f"({tokens / wall:.0f} tokens/s); steps {engine.stats.steps}; raw step {raw:.3f} ms; "
        f"first request: prefill {first.timings.prefill_ms:.1f} ms, decode {first.timings.decode_ms:.1f} ms",
    ]
    stream = io.StringIO()
    assert engine.profile is not None
    stats = pstats.Stats(engine.profile, stream=stream)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(30)
    text = "\n".join(lines) + "\n" + stream.getvalue()
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
