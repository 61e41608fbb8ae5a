"""Issue 15, item 4 (first part): the CLI's stderr carries no progress bars and no Python warnings of the
dependencies by default; only the library's own log lines."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

NOISE = ("Loading weights", "Writing model shards", "it/s]", "Warning:", "FutureWarning", "UserWarning")


@pytest.mark.parametrize(
    "command",
    [
        ["route", "--query", "What did the court order?"],
        ["generate", "--query", "What did the court order?", "--max-new-tokens", "3"],
        ["demo", "--max-new-tokens", "3"],
    ],
)
def test_no_dependency_noise_on_stderr(tmp_path, llama_dir, command) -> None:
    env = {**os.environ, "MAMBA_ROUTER__TRANSFORMER__MODEL": str(llama_dir), "ENABLE_MAMBA": "0"}
    env["MAMBA_ROUTER__LOG__PATH"] = str(tmp_path / "routing.jsonl")
    env.pop("MAMBA_ROUTER_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "mamba_router", *command], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    noisy = [line for line in done.stderr.splitlines() if any(mark in line for mark in NOISE)]
    assert not noisy, noisy


def test_a_result_reads_route_then_answer_with_a_short_fallback_and_timings_that_add_up(tmp_path, llama_dir) -> None:
    """Issue 15, item 4: the ~300-character fallback reason was on every line; the answer came before the route;
    the attempt's time (with loading) had nothing accounting for it next to prefill and total."""
    import re

    from mamba_router import Router, load_config

    overrides = {"transformer.model": str(llama_dir), "log.path": str(tmp_path / "routing.jsonl")}
    router = Router(load_config(environ={"ENABLE_MAMBA": "0"}, overrides=overrides))
    result = router.generate("What did the court order?", max_new_tokens=4)
    text = result.to_text()
    labels = [line.split()[0] for line in text.splitlines()]
    assert labels.index("route") < labels.index("rule") < labels.index("answer") < labels.index("time")
    route = text.splitlines()[0]
    assert result.fallback_reason and result.fallback_reason.split(" (")[0] in route and len(route) < 220
    time_line = next(line for line in text.splitlines() if line.startswith("time"))
    parts = [float(x) for x in re.findall(r"(?:decide|setup|prefill|decode) ([0-9.]+) ms", time_line)]
    attempt_ms = result.attempts[-1].elapsed_ms
    assert len(parts) == 4 and abs(sum(parts[1:]) - attempt_ms) <= 0.2 + 0.01 * attempt_ms  # load + generation
    assert "[x] legal_keywords" in text and "fired=" not in text


def test_counting_reads_tokenizer_json_directly_and_counts_as_transformers_does(llama_dir) -> None:
    """Issue 15, item 3: the first decision took ~2.7 s loading the tokenizer through transformers; the Rust
    tokenizers library reads tokenizer.json in milliseconds, with the same counts."""
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from mamba_router.routing.token_counting import find_local_tokenizer

    fast = find_local_tokenizer(str(llama_dir), "transformer")
    assert isinstance(fast.tokenizer, Tokenizer) and fast.source == str(llama_dir)
    reference = AutoTokenizer.from_pretrained(str(llama_dir))

    @settings(max_examples=60, deadline=None)
    @given(text=st.text(max_size=200))
    def same_count(text: str) -> None:
        assert fast.count(text) == len(reference(text, add_special_tokens=False)["input_ids"])

    same_count()
