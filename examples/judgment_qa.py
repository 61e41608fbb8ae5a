"""Question answering over a long judgment, routed between Mamba and a Transformer: the routing, the fallback and
the log, end to end.

    python examples/judgment_qa.py                                  # offline: tiny random-weight models
    python examples/judgment_qa.py --judgment ruling.txt \\
        --mamba-model state-spaces/mamba-130m --transformer-model Qwen/Qwen2.5-0.5B-Instruct

Without model arguments the script writes tiny random-weight models (their answers are gibberish; the routing,
token counts, fallback and log are real) and a 40-page synthetic judgment. It runs three acts:

1. dry runs: where each question would go, and why, with no model loaded;
2. answers on Mamba (the pure-PyTorch mamba2 backend, forced, so it runs on any CPU); the second question about the
   same judgment reuses the document's state instead of reading it again;
3. the same long question with Mamba switched off: the Transformer answers with ``fallback_used`` and the reason,
   and because the tiny Transformer's window is small, the context is truncated as configured and reported.

Then it prints the routing log, which holds lengths and salted hashes, never the text.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from mamba_router import Router, load_config
from mamba_router.samples.synthetic import synthetic_judgment

QUESTIONS = (
    "What is the date today?",
    "What did the court order the respondent to pay?",
    "Summarise the reasons given in paragraph 12.",
)


def build_offline_models(directory: Path) -> tuple[str, str]:
    """Tiny random-weight models written by the real backends' checkpoint code."""
    from mamba_router.transformer import TransformerBackend
    from mamba_router_mps.backend import Mamba2Backend

    mamba = Mamba2Backend().write_offline_model(directory / "mamba2")
    transformer = TransformerBackend().write_offline_model(directory / "transformer")
    return str(mamba), str(transformer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judgment", help="a UTF-8 judgment text (default: a 40-page synthetic one)")
    parser.add_argument("--mamba-model", help="Mamba checkpoint (hub id or directory) for the mamba2 backend")
    parser.add_argument("--transformer-model", help="Transformer checkpoint (hub id or directory)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    work = Path(tempfile.mkdtemp(prefix="judgment-qa-"))
    judgment = Path(args.judgment).read_text(encoding="utf-8") if args.judgment else synthetic_judgment(40, seed=7)
    if args.mamba_model and args.transformer_model:
        mamba_model, transformer_model = args.mamba_model, args.transformer_model
    else:
        print("(no models given: using tiny random-weight models built offline; their answers are meaningless)\n")
        mamba_model, transformer_model = build_offline_models(work)

    settings = {
        "mamba.backend": "mamba2",  # the pure-PyTorch backend runs on any CPU when asked for explicitly
        "mamba.mamba2_model": mamba_model,
        "transformer.model": transformer_model,
        "model_routing.truncation": "keep_end",
        "log.path": str(work / "routing.jsonl"),
    }
    router = Router(load_config(overrides=settings))
    print(f"router: {router!r}\njudgment: {len(judgment):,} characters\n")

    print("== 1. dry runs (no model loaded)")
    for question in QUESTIONS:
        print(router.route(question, judgment), end="\n\n")
    print(router.route("What is the date today?"), end="\n\n")

    print("== 2. answers on Mamba")
    result = router.generate(QUESTIONS[1], judgment, max_new_tokens=args.max_new_tokens)
    print(result, end="\n\n")
    print("   a second question about the same judgment: its Mamba state is reused, nothing is read again")
    result = router.generate(QUESTIONS[2], judgment, max_new_tokens=args.max_new_tokens)
    print(result, end="\n\n")

    print("== 3. Mamba switched off: the Transformer answers, with the fallback reason")
    off = Router(load_config(overrides={**settings, "model_routing.enable_mamba": False}))
    result = off.generate(QUESTIONS[1], judgment, max_new_tokens=args.max_new_tokens)
    print(result, end="\n\n")

    print(f"== the routing log ({router.log.path if router.log else 'off'}): no text, only lengths and hashes")
    for record in router.read_log(limit=10):
        shown = {
            k: record.get(k)
            for k in (
                "kind",
                "model_used",
                "backend",
                "fallback_used",
                "token_count",
                "pages",
                "query_chars",
                "context_chars",
                "query_hash",
            )
        }
        print(json.dumps(shown))


if __name__ == "__main__":
    main()
