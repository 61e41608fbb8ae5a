"""Read once, ask many: time to first token of a question with a cached document state, against answering with no
document and against reading the document again; and the size of that state next to a Transformer's KV cache.

    python benchmarks/bench_document_state.py [--tokens 65536] [--sizes 130m 1.4b] [--layers Mamba1 Mamba2]
        [--out results.json]
    python benchmarks/bench_document_state.py --cpu [--tokens 8192]     # the mamba2 backend on the CPU

With ``--cpu`` the Mamba rows are the pure-PyTorch mamba2 backend (float32, 512-token segments) and the Llama runs on
the CPU too; only the 130M shape, and a shorter document, fit a CPU run.

Models: the 130M and 1.4B shapes (random weights of a mamba-ssm ``MambaLMHeadModel``, bfloat16) on the real-mamba
backend, and a Llama of the same width for the KV cache (transformer backend, sdpa). The document is random words of
a word-level tokenizer, so it is exactly ``--tokens`` tokens; the question is 24 tokens. Every time is the median of
5 runs after a warm-up, with the GPU synchronised; "TTFT" is ``ask``/``generate`` with ``max_new_tokens=1``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
from bench_real_mamba import LLAMA, SIZES, VOCAB, mamba_ssm_model, ours_from_mamba_ssm
from common import markdown_table, median_seconds, wordlevel_tokenizer

QUESTION_TOKENS = 24


def words(count: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(f"w{rng.randint(1, VOCAB - 1)}" for _ in range(count))


def real_mamba(size: str, layer: str, tokenizer: Any) -> Any:
    return ours_from_mamba_ssm(mamba_ssm_model(size, layer), tokenizer, f"mamba-{size}-{layer}")


def pure_mamba_cpu(size: str, layer: str, tokenizer: Any) -> Any:
    from mamba_router.generation.ssm_model import EagerDecoder, SSMModel
    from mamba_router.models.mamba import random_mamba
    from mamba_router.models.mamba_config import SSMConfig
    from mamba_router.models.torch_ops import TorchOps

    arch = "mamba1" if layer == "Mamba1" else "mamba2"
    extra = {"d_state": 128, "headdim": 64} if arch == "mamba2" else {}
    lm = random_mamba(SSMConfig(arch=arch, vocab_size=VOCAB, **SIZES[size], **extra), TorchOps()).eval()
    return SSMModel(
        lm,
        tokenizer,
        model_id=f"mamba2-backend-{size}-{layer}",
        device=torch.device("cpu"),
        backend="mamba2",
        checkpoint_format="mamba-ssm",
        decoder=EagerDecoder(lm),
    )


def llama(size: str, tokenizer: Any, device: str) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    from mamba_router.transformer import TransformerModel

    cfg = LlamaConfig(
        vocab_size=VOCAB,
        max_position_embeddings=140_000,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
        **LLAMA[size],
    )
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    hf = LlamaForCausalLM(cfg).to(device, dtype).eval()
    return TransformerModel(hf, tokenizer, model_id=f"llama-{size}", device=torch.device(device))


def measure(model: Any, name: str, document: str, question: str, *, compare_tokens: bool) -> dict[str, Any]:
    """Read time, the three times to first token, the state's size, and (Mamba) whether the tokens match."""
    state = model.read(document)
    row = {
        "model": name,
        "read_s": median_seconds(lambda: model.read(document), repeats=3),
        "ttft_cached_ms": 1000 * median_seconds(lambda: model.ask(state, question, max_new_tokens=1), repeats=5),
        "ttft_no_document_ms": 1000 * median_seconds(lambda: model.generate(question, max_new_tokens=1), repeats=5),
        "ttft_reread_ms": 1000
        * median_seconds(
            lambda: model.generate_with_state_space(question, context=document, max_new_tokens=1), repeats=3
        ),
        "state_bytes": state.nbytes,
        "document_tokens": state.document_tokens,
    }
    if compare_tokens:
        cached = model.ask(state, question, max_new_tokens=16)
        scratch = model.generate_with_state_space(question, context=document, max_new_tokens=16)
        row["same_tokens_as_scratch"] = cached.token_ids == scratch.token_ids
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=65536)
    parser.add_argument("--sizes", nargs="+", default=["130m", "1.4b"], choices=sorted(SIZES))
    parser.add_argument("--layers", nargs="+", default=["Mamba1", "Mamba2"])
    parser.add_argument("--out", help="write the rows as JSON here")
    parser.add_argument("--cpu", action="store_true", help="mamba2 backend and Llama on the CPU (130m only)")
    args = parser.parse_args(argv)
    if args.cpu:
        args.sizes = ["130m"]
        if args.tokens == 65536:
            args.tokens = 8192
    device = "cpu" if args.cpu else "cuda"
    sync_name = "mamba2 (CPU)" if args.cpu else "real-mamba"

    tokenizer = wordlevel_tokenizer(VOCAB)
    document, question = words(args.tokens, 1), words(QUESTION_TOKENS, 2)
    rows = []
    for size in args.sizes:
        for layer in args.layers:
            model = pure_mamba_cpu(size, layer, tokenizer) if args.cpu else real_mamba(size, layer, tokenizer)
            rows.append(measure(model, f"{sync_name} {size} {layer}", document, question, compare_tokens=True))
            del model
            torch.cuda.empty_cache()
            print(json.dumps(rows[-1]), file=sys.stderr)
        rows.append(
            measure(
                llama(size, tokenizer, device), f"transformer llama {size}", document, question, compare_tokens=False
            )
        )
        torch.cuda.empty_cache()
        print(json.dumps(rows[-1]), file=sys.stderr)

    where = f"CPU, {torch.get_num_threads()} threads, float32" if args.cpu else f"{torch.cuda.get_device_name()}, bf16"
    print(
        f"# Read once, ask many: {where}, {args.tokens:,}-token document, "
        f"{QUESTION_TOKENS}-token question, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}\n"
    )
    table = []
    for r in rows:
        table.append(
            [
                r["model"],
                f"{r['read_s']:.3f}",
                f"{r['ttft_cached_ms']:.2f}",
                f"{r['ttft_no_document_ms']:.2f}",
                f"{r['ttft_cached_ms'] / r['ttft_no_document_ms']:.2f}x",
                f"{r['ttft_reread_ms']:.1f}",
                f"{r['ttft_reread_ms'] / r['ttft_cached_ms']:.0f}x",
                f"{r['state_bytes'] / 2**20:,.2f}",
                str(r.get("same_tokens_as_scratch", "-")),
            ]
        )
    print(
        markdown_table(
            [
                "model",
                "read doc (s)",
                "TTFT cached (ms)",
                "TTFT no doc (ms)",
                "cached / no doc",
                "TTFT re-read (ms)",
                "speed-up vs re-read",
                "state MiB",
                "same tokens",
            ],
            table,
        )
    )
    for size in args.sizes:
        mamba = [r for r in rows if r["model"].startswith(f"{sync_name} {size}")]
        kv_row = next(r for r in rows if r["model"] == f"transformer llama {size}")
        for r in mamba:
            print(
                f"\n{r['model']}: state {r['state_bytes'] / 2**20:.2f} MiB vs same-width Llama KV cache "
                f"{kv_row['state_bytes'] / 2**20:,.0f} MiB ({LLAMA[size]['num_hidden_layers']} layers): "
                f"{kv_row['state_bytes'] / r['state_bytes']:,.0f}x smaller"
            )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
