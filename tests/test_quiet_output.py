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
