"""Shared fixtures: an offline tokenizer and tiny Transformer checkpoints written with the real save code."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from mamba_router.models.offline import build_offline_tokenizer
from mamba_router.samples import sample_judgment

# The fuzz suite's long run (tests/test_fuzz_entry_points.py): pytest -m slow --hypothesis-profile=slow
settings.register_profile("slow", max_examples=2000, deadline=None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` skip where torch sees no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def offline_tokenizer():
    """A byte-level BPE tokenizer trained on the bundled judgment (no download)."""
    return build_offline_tokenizer([sample_judgment()], vocab_size=400)


def _save(model: torch.nn.Module, tokenizer, directory: Path) -> Path:
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory: pytest.TempPathFactory, offline_tokenizer) -> Path:
    """A 2-layer Llama-style model (random weights) saved with save_pretrained as safetensors."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(offline_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=offline_tokenizer.bos_token_id,
        eos_token_id=offline_tokenizer.eos_token_id,
    )
    torch.manual_seed(1)
    return _save(LlamaForCausalLM(config), offline_tokenizer, tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory, offline_tokenizer) -> Path:
    """A 2-layer GPT-2-style model (random weights) saved with save_pretrained."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(offline_tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=256,
        bos_token_id=offline_tokenizer.bos_token_id,
        eos_token_id=offline_tokenizer.eos_token_id,
    )
    torch.manual_seed(2)
    return _save(GPT2LMHeadModel(config), offline_tokenizer, tmp_path_factory.mktemp("gpt2"))


# No hub in tests: everything is built locally, and a stray download attempt fails at once instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The detection cache (and anything else cached) goes to a directory of this run, never the user's ~/.cache.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="mamba-router-tests-cache-")

# Test harness for "kernel package missing" runs on the GPU machine: modules named here import as absent.
for _name in filter(None, (n.strip() for n in os.environ.get("MAMBA_ROUTER_TEST_HIDE_MODULES", "").split(","))):
    sys.modules[_name] = None  # type: ignore[assignment]


@pytest.fixture(autouse=True)
def _private_state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default routing log goes to XDG_STATE_HOME: keep it inside a temp dir, never the user's home."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
    for name in [n for n in os.environ if n.startswith("MAMBA_ROUTER__") or n == "MAMBA_ROUTER_CONFIG"]:
        monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def mamba_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Mamba-2 in mamba-ssm's checkpoint format, written by the mamba2 backend, with its tokenizer."""
    from mamba_router_mps.backend import Mamba2Backend

    return Mamba2Backend().write_offline_model(tmp_path_factory.mktemp("mamba2"))
