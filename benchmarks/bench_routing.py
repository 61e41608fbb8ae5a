"""How long deciding a route takes, next to how long the model needs to read the same document, on the CPU.

    python benchmarks/bench_routing.py [--tokenizer path/to/tokenizer.json] [--megabytes 1.0]
        [--prefill-tokens 512 1024 2048] [--json out.json]

The document is a synthetic judgment of about 1 MB (``mamba_router.synthetic_judgment``). ``Router.route`` is timed
end to end (request checks, token count, page markers, keywords, the decision record and the log write) in two
modes: ``estimate`` (no tokenizer) and ``tokenizer`` (the exact count with the fast tokenizer of the model that would
run it). The reading cost is the transformer backend's prefill on a Qwen2.5-0.5B-shaped model (896 wide, 24 layers,
14 heads / 2 KV heads, MLP 4864; random weights, float32) at a few lengths; the 1 MB document is far beyond its
32k-token window, so its prefill time is extrapolated linearly from the longest length measured: a lower bound,
since attention grows faster than linearly. The ratio column is decision time / that lower bound.

Cold and warm, on a 3 KB document: fresh ``mamba-router route`` processes, start to exit: the first with no stored
detection (it probes every backend, importing torch and the plugins), then three that read the detection it stored;
what detection and the decision took inside them (the ``detected`` and ``decided`` lines the CLI prints); and a warm
decision in a running process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import markdown_table

from mamba_router.routing.pages import count_pages
from mamba_router.routing.router import Router
from mamba_router.routing.token_estimate import estimate_tokens
from mamba_router.samples.synthetic import synthetic_judgment
from mamba_router.settings.schema import load_config

QUERY = "What did the court order the respondent to pay, and from which date does interest run?"


def median_ms(fn: Any, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def document(megabytes: float) -> str:
    pages = 20
    text = synthetic_judgment(pages)
    while len(text.encode("utf-8")) < megabytes * 1e6:
        pages = int(pages * megabytes * 1e6 / len(text.encode("utf-8"))) + 1
        text = synthetic_judgment(pages)
    return text


def load_tokenizer(path: str | None) -> tuple[Any, str]:
    from transformers import PreTrainedTokenizerFast

    if path is None:
        from mamba_router.models.offline import build_offline_tokenizer

        return build_offline_tokenizer(
            vocab_size=8000
        ), "offline byte-level BPE (8k vocab, trained on the bundled judgment)"
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=path, eos_token="<|endoftext|>")
    return tokenizer, f"{Path(path).name} ({len(tokenizer)} tokens)"


def qwen_shaped_model(vocab_size: int) -> Any:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).eval()


def cold_and_warm(model_dir: Path, work: Path, warm_router: Router) -> dict[str, float]:
    """Fresh CLI processes deciding a 3 KB document (the first with no stored detection, then three that read the
    one it stored), what detection and the first decision took inside them, and a warm decision."""
    small = synthetic_judgment(1, seed=2)[:3000]
    context = work / "judgment-3kb.txt"
    context.write_text(small, encoding="utf-8")
    env = {**os.environ, "MAMBA_ROUTER__LOG__PATH": str(work / "cold.jsonl"), "ENABLE_MAMBA": "0"}
    env["XDG_CACHE_HOME"] = str(work / "cache")  # starts empty: the first process probes
    command = [sys.executable, "-m", "mamba_router", "route", "--query", QUERY]
    command += ["--transformer-model", str(model_dir), "--context-file", str(context)]
    runs = []
    for _ in range(4):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
        wall = (time.perf_counter() - started) * 1000
        runs.append((wall, _printed_ms("detected", done.stdout), _printed_ms("decided", done.stdout)))
    first, later = runs[0], runs[1:]
    return {
        "route process, no stored detection: start to exit": first[0],
        "  of which detection (probing every backend)": first[1],
        "route process, stored detection: start to exit (median of 3)": statistics.median(r[0] for r in later),
        "  of which detection (reading the stored one)": statistics.median(r[1] for r in later),
        "  of which the decision (decided in)": statistics.median(r[2] for r in later),
        "warm decision in a running process (median of 21)": median_ms(
            lambda: warm_router.route(QUERY, small), repeats=21
        ),
    }


def _printed_ms(label: str, output: str) -> float:
    """The milliseconds on the CLI's ``label`` line (``decided  in 3.2 ms``)."""
    line = next(line for line in output.splitlines() if line.startswith(label))
    return float(re.search(r"in ([\d,.]+) ms", line).group(1).replace(",", ""))  # type: ignore[union-attr]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", help="tokenizer.json of a real model (default: an offline BPE)")
    parser.add_argument("--megabytes", type=float, default=1.0)
    parser.add_argument("--prefill-tokens", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)

    text = document(args.megabytes)
    size_mb = len(text.encode("utf-8")) / 1e6
    tokenizer, tokenizer_name = load_tokenizer(args.tokenizer)
    work = Path(tempfile.mkdtemp(prefix="bench-routing-"))
    model_dir = work / "transformer"
    model_dir.mkdir()
    tokenizer.save_pretrained(model_dir)  # route() reads only the tokenizer: no weights are needed to decide

    def router(counting: str) -> Router:
        overrides = {
            "transformer.model": str(model_dir),
            "model_routing.token_counting": counting,
            "model_routing.enable_mamba": False,
            "log.path": str(work / f"log-{counting}.jsonl"),
        }
        return Router(load_config(environ={}, overrides=overrides))

    estimate_router, tokenizer_router = router("estimate"), router("tokenizer")
    quiet_router = Router(
        load_config(
            environ={},
            overrides={
                "transformer.model": str(model_dir),
                "model_routing.token_counting": "estimate",
                "model_routing.enable_mamba": False,
                "log.enabled": False,
            },
        )
    )
    # Estimate paths first: the Rust tokenizer's worker threads, once used, compete for the two cores for a while.
    estimate_rows = {
        "route(), estimate": median_ms(lambda: estimate_router.route(QUERY, text), repeats=21),
        "route(), estimate, routing log off": median_ms(lambda: quiet_router.route(QUERY, text), repeats=21),
        "  of which: estimate_tokens": median_ms(lambda: estimate_tokens(text), repeats=21),
        "  of which: page markers": median_ms(lambda: count_pages(text), repeats=21),
        "  of which: log record (salted hashes, one locked append)": median_ms(
            lambda: estimate_router.log.append({"h": estimate_router.log.salted_hash(text)}), repeats=21
        ),
    }
    rows_decide = {
        **estimate_rows,
        "route(), exact tokenizer count": median_ms(lambda: tokenizer_router.route(QUERY, text), repeats=5),
        "  of which: tokenizer count": median_ms(lambda: tokenizer(text, add_special_tokens=False), repeats=5),
    }
    decision = tokenizer_router.route(QUERY, text)
    doc_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])

    cold = cold_and_warm(model_dir, work, tokenizer_router)

    from mamba_router.transformer.model import KVCacheStepper, TransformerModel

    model = TransformerModel(
        qwen_shaped_model(len(tokenizer)), tokenizer, model_id="qwen2.5-0.5b-shaped", device=torch.device("cpu")
    )
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    prefill_ms = {}
    torch.set_grad_enabled(False)
    for n in args.prefill_tokens:
        prefill_ms[n] = median_ms(lambda: KVCacheStepper(model.model).prefill([ids[:n]]), repeats=2)
        print(f"prefill {n} tokens: {prefill_ms[n]:.0f} ms", file=sys.stderr)
    longest = max(prefill_ms)
    lower_bound_ms = prefill_ms[longest] / longest * doc_tokens

    print(
        f"# Deciding a route vs. reading the document (CPU, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__})\n"
    )
    print(
        f"document: synthetic judgment, {size_mb:.2f} MB, {decision.pages} pages, {doc_tokens:,} tokens with {tokenizer_name}"
    )
    print(f"decision: {decision.model_used} ({decision.backend}); fired: {', '.join(decision.fired_rules)}\n")
    print(
        markdown_table(
            ["prefill length (tokens)", "prefill ms", "ms / token"],
            [[f"{n:,}", f"{ms:,.0f}", f"{ms / n:.2f}"] for n, ms in prefill_ms.items()],
        )
    )
    print(f"\nreading the whole document: at least {lower_bound_ms / 1000:,.0f} s (linear from {longest:,} tokens)\n")
    print(
        markdown_table(
            ["decision path (1 MB document)", "ms (median)", "% of reading it (lower bound)"],
            [[name, f"{ms:.2f}", f"{100 * ms / lower_bound_ms:.4f}%"] for name, ms in rows_decide.items()],
        )
    )
    print()
    print(
        markdown_table(
            ["3 KB document", "ms"],
            [[name, f"{ms:,.1f}"] for name, ms in cold.items()],
        )
    )
    if args.json:
        payload = {
            "cold_3kb_ms": cold,
            "document_mb": size_mb,
            "document_tokens": doc_tokens,
            "tokenizer": tokenizer_name,
            "decide_ms": rows_decide,
            "prefill_ms": prefill_ms,
            "read_lower_bound_ms": lower_bound_ms,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d"),
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
