"""Issue 14, item 3: every backend's load and generate failures leave as typed errors and are logged as failed
attempts; nothing untyped escapes ``Router.generate``, ``load_model`` or the CLI."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from mamba_router.backends.boundary import backend_boundary
from mamba_router.backends.reports import Availability
from mamba_router.errors import CorruptCheckpointError, GenerationError, MambaRouterError, ModelLoadError
from mamba_router.generation.loading import load_model
from mamba_router.routing.router import Router
from mamba_router.settings.schema import load_config
from mamba_router.transformer import TransformerBackend


class _RunsCode:
    """A pickle that would run a shell command if unpickled unsafely."""

    def __reduce__(self) -> Any:
        return (os.system, ("echo unpickled-unsafely > /dev/null",))


def _pickle_payload(d: Path) -> None:
    for weights in d.glob("*.safetensors"):
        weights.unlink()
    (d / "pytorch_model.bin").write_bytes(pickle.dumps(_RunsCode()))


def _truncated_safetensors(d: Path) -> None:
    weights = next(d.glob("*.safetensors"))
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])


def _deeply_nested_config(d: Path) -> None:
    (d / "config.json").write_text('{"model_type": "llama", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")


def _hidden_size_big(d: Path) -> None:
    config = json.loads((d / "config.json").read_text())
    config["hidden_size"] = "big"
    (d / "config.json").write_text(json.dumps(config))


BROKEN = {
    "pickle payload": (_pickle_payload, "refused the pickled weights"),
    "truncated safetensors": (_truncated_safetensors, "SafetensorError"),
    "deeply nested config": (_deeply_nested_config, "nests too deeply"),
    "hidden_size 'big'": (_hidden_size_big, "hidden_size"),
}


def _router(tmp_path: Path, model: Path, backends: list[Any] | None = None) -> Router:
    overrides = {"transformer.model": str(model), "log.path": str(tmp_path / "routing.jsonl")}
    config = load_config(environ={}, overrides=overrides)
    return Router(config, backends=backends or [TransformerBackend()])


def _records(router: Router) -> list[dict[str, Any]]:
    assert router.log is not None
    return [json.loads(line) for line in router.log.path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_transformer_checkpoint_is_a_typed_error_and_a_logged_failed_attempt(
    tmp_path, llama_dir, case
) -> None:
    breaks, message = BROKEN[case]
    model = tmp_path / "model"
    shutil.copytree(llama_dir, model)
    breaks(model)
    router = _router(tmp_path, model)
    with pytest.raises(CorruptCheckpointError, match=message):
        router.generate("Was the appeal allowed?", max_new_tokens=3)
    record = _records(router)[-1]
    assert record["outcome"] == "error" and record["error_type"] == "CorruptCheckpointError"
    assert [(a["backend"], a["ok"]) for a in record["attempts"]] == [("transformer", False)]
    with pytest.raises(CorruptCheckpointError, match=message):
        load_model(model, backend="transformer")


def test_the_pickle_is_never_executed_and_the_message_does_not_suggest_weights_only_false(tmp_path, llama_dir) -> None:
    model = tmp_path / "model"
    shutil.copytree(llama_dir, model)
    _pickle_payload(model)
    with pytest.raises(CorruptCheckpointError) as caught:
        load_model(model, backend="transformer")
    assert "weights_only=False" not in str(caught.value) and "safetensors" in str(caught.value)
    assert isinstance(caught.value.__cause__, pickle.UnpicklingError)


def test_the_cli_reports_a_broken_checkpoint_without_a_traceback(tmp_path, llama_dir, monkeypatch, capsys) -> None:
    from mamba_router.cli import main

    model = tmp_path / "model"
    shutil.copytree(llama_dir, model)
    _truncated_safetensors(model)
    monkeypatch.setenv("MAMBA_ROUTER__TRANSFORMER__MODEL", str(model))
    monkeypatch.setenv("MAMBA_ROUTER__LOG__PATH", str(tmp_path / "cli.jsonl"))
    monkeypatch.setenv("ENABLE_MAMBA", "0")
    assert main(["generate", "--query", "Was the appeal allowed?", "--max-new-tokens", "2"]) != 0
    err = capsys.readouterr().err
    assert "CorruptCheckpointError" in err or "could not read the checkpoint" in err
    assert "Traceback" not in err


def test_a_tiny_temperature_samples_the_top_token_instead_of_failing(tmp_path, llama_dir) -> None:
    """temperature 1e-300 gave "probability tensor contains either inf, nan"; in the limit it is greedy."""
    router = _router(tmp_path, llama_dir)
    tiny = router.generate("Was the appeal allowed?", max_new_tokens=8, temperature=1e-300, seed=1)
    greedy = router.generate("Was the appeal allowed?", max_new_tokens=8, temperature=0.0)
    assert tiny.generation.token_ids == greedy.generation.token_ids


class _ThirdPartyBackend:
    """A plugin backend whose code raises its own exception types."""

    name = "third-party"
    family = "transformer"
    priority = 1
    default_model = "whatever"
    install_command = "pip install third-party"

    def __init__(self, on_load: Exception | None, inner: Any = None) -> None:
        self.on_load = on_load
        self.inner = inner

    def probe(self, platform: Any) -> Availability:
        return Availability.usable("always")

    def load(self, model: str, *, device: str | None = None, dtype: str | None = None) -> Any:
        if self.on_load is not None:
            raise self.on_load
        return self.inner

    def write_offline_model(self, directory: Path) -> Path:  # pragma: no cover - not used here
        raise NotImplementedError


class _PluginFailure(Exception):
    """Not a MambaRouterError, not a RuntimeError."""


class _ModelThatFails:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.backend, self.device, self.model_id = "third-party", inner.device, inner.model_id
        self.available, self.reason, self.context_window = True, "loaded", inner.context_window

    def count_tokens(self, text: str) -> int:
        return int(self.inner.count_tokens(text))

    def generate(self, prompt: str, **kwargs: Any) -> Any:
        raise _PluginFailure("the plugin's decoder broke (injected)")


def test_a_plugin_backend_s_own_exceptions_become_typed_errors_and_are_logged(tmp_path, llama_dir) -> None:
    router = _router(tmp_path, llama_dir, [_ThirdPartyBackend(_PluginFailure("no such weights (injected)"))])
    with pytest.raises(ModelLoadError, match=r"third-party could not load .*_PluginFailure: no such weights"):
        router.generate("q", max_new_tokens=2)
    inner = TransformerBackend().load(str(llama_dir), device="cpu")
    router = _router(tmp_path / "b", llama_dir, [_ThirdPartyBackend(None, _ModelThatFails(inner))])
    with pytest.raises(GenerationError, match="third-party failed while running .*decoder broke") as caught:
        router.generate("q", max_new_tokens=2)
    assert isinstance(caught.value.__cause__, _PluginFailure)
    record = _records(router)[-1]
    assert record["error_type"] == "GenerationError" and record["attempts"][0]["ok"] is False


@pytest.mark.parametrize(
    ("raised", "action", "expected"),
    [
        (torch.OutOfMemoryError("CUDA out of memory (injected)"), "generate", GenerationError),
        (MemoryError(), "load", ModelLoadError),
        (ValueError("bad shape (injected)"), "generate", GenerationError),
        (KeyError("lm_head.weight"), "load", ModelLoadError),
        (RecursionError("deep (injected)"), "load", CorruptCheckpointError),
    ],
)
def test_the_boundary_types_every_exception_and_keeps_the_cause(raised, action, expected) -> None:
    with pytest.raises(expected) as caught, backend_boundary("some-backend", "some/model", action, device="cuda:0"):
        raise raised
    assert "some-backend" in str(caught.value) and "some/model" in str(caught.value)
    assert caught.value.__cause__ is raised


def test_the_boundary_lets_typed_errors_and_interrupts_through() -> None:
    typed = GenerationError("already typed")
    with pytest.raises(GenerationError) as caught, backend_boundary("b", "m", "generate"):
        raise typed
    assert caught.value is typed
    with pytest.raises(KeyboardInterrupt), backend_boundary("b", "m", "load"):
        raise KeyboardInterrupt
    assert issubclass(GenerationError, MambaRouterError)
