"""The compatibility API and the ``mamba-router`` command line, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import mamba_router as mr

ON_CPU_ONLY = not torch.cuda.is_available() and not torch.backends.mps.is_available()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("ENABLE_MAMBA", "MAMBA_ROUTER_BACKEND")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mamba_router", *args], capture_output=True, text=True, env=full_env, timeout=120
    )


def test_get_mamba_info_has_the_legacy_keys_and_one_entry_per_candidate() -> None:
    info = mr.get_mamba_info()
    for key in ("backend", "available", "reason", "platform", "cuda_available", "mps_available", "install_command"):
        assert key in info
    names = {c["name"] for c in info["candidates"]}
    assert {"real-mamba", "mamba2", "transformer"} <= names
    for c in info["candidates"]:
        assert set(c) >= {
            "name",
            "distribution",
            "version",
            "family",
            "available",
            "reason",
            "install_command",
            "error",
        }
    json.dumps(info)  # plain data


@pytest.mark.skipif(not ON_CPU_ONLY, reason="describes a machine with neither CUDA nor MPS")
def test_on_a_cpu_only_machine_mamba_is_reported_unavailable_with_a_fix() -> None:
    assert mr.detect_mamba_backend() == "none"
    assert mr.is_mamba_available() is False
    model = mr.load_mamba_model()
    assert isinstance(model, mr.UnavailableMambaModel)
    assert (model.available, model.backend) == (False, "none")
    assert "CUDA" in model.reason
    with pytest.raises(mr.MambaUnavailableError) as info:
        model.generate_with_state_space(prompt="What was ordered?", context="The appeal is allowed.", max_new_tokens=8)
    assert "CUDA" in str(info.value) and info.value.install_command


@pytest.mark.skipif(not ON_CPU_ONLY, reason="describes a machine with neither CUDA nor MPS")
def test_info_json_lists_the_three_distributions_and_chooses_transformer() -> None:
    done = run_cli("info", "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["backend"] == "transformer"
    assert info["available"] is False
    by_name = {c["name"]: c for c in info["candidates"]}
    assert by_name["real-mamba"]["distribution"] == "mamba-router-cuda"
    assert by_name["mamba2"]["distribution"] == "mamba-router-mps"
    assert by_name["transformer"]["distribution"] == "mamba-router"
    real = by_name["real-mamba"]
    assert real["installed"] and not real["available"]
    assert "CUDA" in real["reason"]
    assert real["install_command"].startswith("pip install")


def test_info_prints_a_readable_report() -> None:
    done = run_cli("info")
    assert done.returncode == 0, done.stderr
    for word in ("platform", "candidates", "real-mamba", "mamba2", "transformer", "chosen", "why:"):
        assert word in done.stdout


def test_info_with_a_bad_override_reports_and_fails() -> None:
    done = run_cli("info", "--json", env={"MAMBA_ROUTER_BACKEND": "nonsense"})
    assert done.returncode == 1
    info = json.loads(done.stdout)
    assert info["backend"] == "none"
    assert "nonsense" in info["error"] and "transformer" in info["error"]


def test_demo_runs_offline_on_the_detected_backend() -> None:
    done = run_cli("demo", "--json", "--max-new-tokens", "6", env={"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    result = mr.GenerationResult.model_validate_json(done.stdout)
    assert result.completion_tokens >= 1
    assert result.prompt_tokens > 500  # the bundled judgment was read before the question


def test_cli_errors_are_typed_and_exit_2() -> None:
    done = run_cli("demo", "--backend", "real-mamba") if ON_CPU_ONLY else run_cli("demo", "--backend", "nope")
    assert done.returncode == 2
    assert "error:" in done.stderr and "Error" in done.stderr


def test_detection_renders_as_text_and_html() -> None:
    result = mr.detect()
    assert "chosen" in str(result) and "transformer" in str(result)
    assert "<table>" in result._repr_html_()


def test_demo_names_its_own_backend_option_when_the_name_is_unknown(capsys) -> None:
    """Issue 14, minor: `demo --backend x` blamed MAMBA_ROUTER_BACKEND."""
    from mamba_router.cli import main

    assert main(["demo", "--backend", "x"]) != 0
    err = capsys.readouterr().err
    assert "unknown --backend value 'x'" in err and "MAMBA_ROUTER_BACKEND" not in err
