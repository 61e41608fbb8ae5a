"""The token estimate used when no tokenizer is at hand: never far under the real count, monotone, fast enough."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mamba_router.routing.token_estimate import estimate_tokens
from mamba_router.samples import sample_judgment
from mamba_router.samples.synthetic import synthetic_judgment

REFERENCE = Path(__file__).parent / "data" / "token_estimate_reference.json"
REFERENCE_PAGES = 4


def _reference_texts() -> dict[str, str]:
    texts = {"sample_judgment": sample_judgment()}
    for seed in (0, 1, 2):
        texts[f"synthetic_judgment(pages={REFERENCE_PAGES}, seed={seed})"] = synthetic_judgment(
            REFERENCE_PAGES, seed=seed
        )
    return texts


def test_the_estimate_never_undercounts_real_gpt_neox_counts_by_more_than_10_percent() -> None:
    """Real GPT-NeoX (Mamba's tokenizer) counts of 1,000-character windows, measured by
    benchmarks/calibrate_token_estimate.py and stored; the texts are rebuilt here from the bundled generator."""
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    window = reference["window_chars"]
    texts = _reference_texts()
    assert set(reference["texts"]) == set(texts), "regenerate the reference with the calibration script"
    ratios = []
    for name, windows in reference["texts"].items():
        for start, real in windows:
            piece = texts[name][start : start + window]
            ratios.append(estimate_tokens(piece) / real)
    assert len(ratios) > 50
    assert min(ratios) >= 0.90, f"worst window under-counted: ratio {min(ratios):.3f}"
    assert sum(ratios) / len(ratios) < 1.25, "the estimate should not be wildly high either"


@given(st.text(max_size=300), st.text(max_size=300))
def test_appending_text_never_lowers_the_estimate(text, more) -> None:
    assert estimate_tokens(text + more) >= estimate_tokens(text)


@given(st.text(min_size=1, max_size=200))
def test_any_non_empty_text_has_at_least_one_token(text) -> None:
    assert estimate_tokens(text) >= 1
    assert estimate_tokens("") == 0


def test_non_ascii_text_is_counted_as_a_byte_level_worst_case() -> None:
    text = "法院判决书" * 10  # 50 characters, 150 UTF-8 bytes
    assert estimate_tokens(text) >= 150
    assert estimate_tokens("\ud800 lone surrogate") > 0  # never raises on odd input
