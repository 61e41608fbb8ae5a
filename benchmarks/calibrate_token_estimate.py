"""Check the router's token estimate against a real tokenizer: how far under (and over) does it count?

    python benchmarks/calibrate_token_estimate.py --tokenizer path/to/tokenizer.json [TEXT_FILE ...]
        [--write-reference tests/data/token_estimate_reference.json]

Every text (the given files, the bundled judgment and synthetic judgments) is measured whole and in 1,000-character
windows; the table gives the ratio estimate / real count (below 1.0 is an under-count; the router's promise is never
below 0.90 on English legal text). ``--write-reference`` stores the real counts of the windows of the bundled and
synthetic texts, which the test suite checks the estimate against without needing the tokenizer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from mamba_router.routing.token_estimate import estimate_tokens
from mamba_router.samples import sample_judgment
from mamba_router.samples.synthetic import synthetic_judgment

WINDOW_CHARS = 1000
WINDOW_STEP = 700
REFERENCE_SEEDS = (0, 1, 2)
REFERENCE_PAGES = 4


def windows(text: str) -> list[str]:
    """Overlapping 1,000-character windows of ``text`` (the whole text when it is shorter)."""
    if len(text) <= WINDOW_CHARS:
        return [text]
    return [text[i : i + WINDOW_CHARS] for i in range(0, len(text) - WINDOW_CHARS + 1, WINDOW_STEP)]


def bundled_texts() -> dict[str, str]:
    """The texts the reference file is built from: the bundled judgment and a few synthetic ones."""
    texts = {"sample_judgment": sample_judgment()}
    for seed in REFERENCE_SEEDS:
        texts[f"synthetic_judgment(pages={REFERENCE_PAGES}, seed={seed})"] = synthetic_judgment(
            REFERENCE_PAGES, seed=seed
        )
    return texts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True, help="a tokenizer.json (e.g. GPT-NeoX-20B's, used by Mamba)")
    parser.add_argument("files", nargs="*", help="more UTF-8 text files (e.g. court opinions) to check")
    parser.add_argument("--write-reference", help="write real window counts of the bundled texts to this JSON file")
    args = parser.parse_args(argv)

    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(args.tokenizer)

    def real(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    texts = bundled_texts()
    for name in args.files:
        texts[Path(name).name] = Path(name).read_text(encoding="utf-8")
    print(f"tokenizer: {args.tokenizer}")
    print(f"{'text':48} {'chars':>8} {'real':>7} {'est':>7} {'whole':>6} {'win min':>8} {'win mean':>8} {'win max':>8}")
    all_ratios: list[float] = []
    reference: dict[str, list[list[object]]] = {}
    bundled = set(bundled_texts())
    for name, text in texts.items():
        pieces = windows(text)
        counts = [real(p) for p in pieces]
        ratios = [estimate_tokens(p) / c for p, c in zip(pieces, counts)]
        all_ratios += ratios
        whole = real(text)
        print(
            f"{name[:48]:48} {len(text):8d} {whole:7d} {estimate_tokens(text):7d} {estimate_tokens(text) / whole:6.3f} "
            f"{min(ratios):8.3f} {statistics.mean(ratios):8.3f} {max(ratios):8.3f}"
        )
        if name in bundled:
            reference[name] = [[i * WINDOW_STEP, c] for i, c in enumerate(counts)]
    print(
        f"all {len(all_ratios)} windows: min {min(all_ratios):.3f} mean {statistics.mean(all_ratios):.3f} "
        f"max {max(all_ratios):.3f} (under-counted by more than 10%: {sum(r < 0.9 for r in all_ratios)})"
    )
    big = synthetic_judgment(320)
    started = time.perf_counter()
    for _ in range(20):
        estimate_tokens(big)
    print(
        f"estimate of a {len(big.encode()) / 1e6:.2f} MB judgment: {(time.perf_counter() - started) / 20 * 1000:.2f} ms"
    )
    if args.write_reference:
        payload = {
            "tokenizer": Path(args.tokenizer).name,
            "window_chars": WINDOW_CHARS,
            "texts": reference,
            "how": "python benchmarks/calibrate_token_estimate.py --tokenizer TOKENIZER --write-reference PATH",
        }
        Path(args.write_reference).write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.write_reference}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
