"""Issue 15, item 1: offline first. A model that is not on this machine fails at once, naming the setting it came
from and the ways out, when the hub cannot be reached (no retry loop); a hub id in the local cache loads without a
network request; `mamba-router init` writes offline models and a config the CLI then runs with; --model picks the
Mamba or the Transformer side from the checkpoint's family."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mamba_router as mr
from mamba_router.cli import main
from mamba_router.errors import ModelNotFoundError
from mamba_router.models.source import resolve_model_source


def _unreachable_hub(tmp_path: Path) -> dict[str, str]:
    """An environment in which the hub cannot be reached (a closed local port) and offline mode is not set."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(
        HF_ENDPOINT="http://127.0.0.1:9",
        HF_HOME=str(tmp_path / "hf-home"),
        MAMBA_ROUTER__LOG__PATH=str(tmp_path / "routing.jsonl"),
        ENABLE_MAMBA="0",
    )
    for name in ("MAMBA_ROUTER_CONFIG", "HTTPS_PROXY", "https_proxy", "MAMBA_ROUTER__TRANSFORMER__MODEL"):
        env.pop(name, None)
    return env


def _put_in_hub_cache(env: dict[str, str], repo_id: str, model_dir: Path) -> tuple[Path, str]:
    """``model_dir`` as hub repository ``repo_id`` in the local cache of ``env``, laid out as huggingface_hub lays it
    out (refs/main names the snapshot that holds the files); the repository folder and the revision."""
    repo = Path(env["HF_HOME"]) / "hub" / ("models--" + repo_id.replace("/", "--"))
    revision = "0" * 40
    shutil.copytree(model_dir, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    return repo, revision


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mamba_router", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def test_the_default_model_fails_at_once_naming_the_setting_and_the_ways_out(tmp_path) -> None:
    """It waited ~50 s through hub retries and then blamed the tokenizer."""
    done = _cli("generate", "--query", "What did the court order?", env=_unreachable_hub(tmp_path))
    assert done.returncode == 2
    assert "ModelNotFoundError" in done.stderr and "is not on this machine" in done.stderr
    assert "transformer.model" in done.stderr and "MAMBA_ROUTER__TRANSFORMER__MODEL" in done.stderr
    assert "mamba-router init" in done.stderr
    assert "Retrying" not in done.stderr and "Traceback" not in done.stderr


def test_offline_mode_fails_without_touching_the_network(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelNotFoundError, match=r"offline mode is on \(HF_HUB_OFFLINE=1\)"):
        resolve_model_source("some-org/not-downloaded")


def test_a_hub_id_in_the_local_cache_loads_with_no_network(tmp_path, llama_dir) -> None:
    """In a fresh process whose hub cannot be reached and whose offline mode is off."""
    env = _unreachable_hub(tmp_path)
    repo, revision = _put_in_hub_cache(env, "court-lab/tiny-llama", llama_dir)
    script = (
        "import mamba_router as mr\n"
        "from mamba_router.models.source import resolve_model_source\n"
        "print(resolve_model_source('court-lab/tiny-llama').local_path)\n"
        "model = mr.load_model('court-lab/tiny-llama', backend='transformer', device='cpu')\n"
        "print(model.generate('Was the appeal allowed?', max_new_tokens=3).completion_tokens)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    path, tokens = done.stdout.split()[-2:]
    assert Path(path) == repo / "snapshots" / revision and int(tokens) >= 1
    assert "Retrying" not in done.stderr


def test_init_writes_models_and_a_config_that_the_cli_then_runs_with(tmp_path) -> None:
    env = _unreachable_hub(tmp_path)
    env.pop("ENABLE_MAMBA")
    written = _cli("init", str(tmp_path / "starter"), "--json", env=env)
    assert written.returncode == 0, written.stderr
    paths = json.loads(written.stdout)
    config = Path(paths["config_file"])
    assert config.is_file() and Path(paths["transformer"], "config.json").is_file()
    assert paths["mamba"] is None or Path(paths["mamba"], "config.json").is_file()
    answered = _cli(
        "generate", "--query", "What did the court order?", "--max-new-tokens", "4", "--json",
        env={**env, "MAMBA_ROUTER_CONFIG": str(config)},
    )  # fmt: skip
    assert answered.returncode == 0, answered.stderr
    result = json.loads(answered.stdout)
    assert result["model"] in (paths["transformer"], paths["mamba"]) and result["generation"]["completion_tokens"] >= 1


def test_model_flags_set_the_side_the_checkpoint_belongs_to(tmp_path, llama_dir, mamba_dir, monkeypatch, capsys):
    monkeypatch.setenv("MAMBA_ROUTER__LOG__PATH", str(tmp_path / "routing.jsonl"))
    monkeypatch.delenv("MAMBA_ROUTER_CONFIG", raising=False)
    query = ["--query", "What did the court order?", "--json"]
    assert main(["route", "--model", str(mamba_dir), "--transformer-model", str(llama_dir), *query]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["model"] in (str(mamba_dir), str(llama_dir))  # Mamba when a Mamba backend runs here
    assert main(["route", "--model", str(llama_dir), *query]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["model_used"] == "transformer" or decision["model"] != str(llama_dir)
    config = mr.load_config(environ={}, overrides={"transformer.model": str(llama_dir)}).config
    assert config.transformer.model == str(llama_dir)
    assert main(["route", "--model", "court-lab/not-here", *query]) == 2  # not on this machine: cannot tell the side


def test_the_demo_keeps_its_model_when_asked_and_the_cli_answers_with_it(tmp_path, capsys, monkeypatch) -> None:
    """The demo deleted the model it built; with --keep it stays, and --model uses it."""
    monkeypatch.setenv("MAMBA_ROUTER__LOG__PATH", str(tmp_path / "routing.jsonl"))
    monkeypatch.delenv("MAMBA_ROUTER_CONFIG", raising=False)
    assert main(["demo", "--keep", str(tmp_path / "kept"), "--max-new-tokens", "2"]) == 0
    kept = next((tmp_path / "kept").iterdir())
    assert (kept / "config.json").is_file() and str(kept) in capsys.readouterr().out
    query = ["--query", "What did the court order?", "--max-new-tokens", "2", "--json"]
    assert main(["generate", "--model", str(kept), *query]) == 0
    assert json.loads(capsys.readouterr().out)["generation"]["completion_tokens"] >= 1


def test_the_readme_walk_from_the_demo_to_your_own_model_runs_as_written(tmp_path) -> None:
    """The README's "From the demo to your own model" commands, run by a shell in a fresh directory (the lines that
    name the reader's own /models are examples and are left out)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## From the demo to your own model", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("  #")[0].strip() for line in block.splitlines()]
    commands = [c for c in commands if c and not c.endswith("\\") and "/models/" not in c and not c.startswith("--")]
    assert commands[0].startswith("mamba-router init") and any(c.startswith("mamba-router generate") for c in commands)
    env = _unreachable_hub(tmp_path)
    env.pop("ENABLE_MAMBA")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    script = "set -e\n" + "\n".join(commands) + "\n"
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, (script, done.stderr[-2000:])
    assert "answer" in done.stdout and (tmp_path / "starter" / "mamba-router.toml").is_file()


COUNT = (
    "import json, sys\nimport mamba_router as mr\n"
    "router = mr.Router(mr.load_config(overrides={'transformer.model': sys.argv[1]}))\n"
    "d = router.route('What did the court order?', 'The court orders the appeal dismissed.')\n"
    "print(json.dumps([d.token_count_method, d.token_counter, 'transformers' in sys.modules, 'torch' in sys.modules]))\n"
)


def test_route_counts_with_a_cached_hub_tokenizer_and_looks_no_further_for_one_not_here(tmp_path, llama_dir) -> None:
    """A hub id not in the local cache made the first decision import transformers and torch to find that out
    (4-10 s); one in the cache counts with its tokenizer.json, read by the Rust tokenizers library."""
    env = _unreachable_hub(tmp_path)
    _put_in_hub_cache(env, "court-lab/tiny-llama", llama_dir)
    assert _cli("info", env=env).returncode == 0  # stores the detection: the processes below do not probe

    def count(model: str) -> list:
        done = subprocess.run(
            [sys.executable, "-c", COUNT, model], capture_output=True, text=True, env=env, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    assert count("court-lab/tiny-llama") == ["tokenizer", "court-lab/tiny-llama", False, False]
    assert count("court-lab/not-here") == ["estimate", "estimate", False, False]
