"""The built-in transformer backend end to end on CPU, on tiny models saved with save_pretrained."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import mamba_router as mr

PROMPT = "The appeal is allowed and the respondent shall"


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model_dir(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(f"{request.param}_dir")


@pytest.fixture(scope="module")
def loaded(model_dir: Path):
    return mr.load_model(model_dir, backend="transformer", device="cpu")


def test_loaded_model_describes_itself(loaded, model_dir: Path) -> None:
    assert isinstance(loaded, mr.LoadedModel)
    assert (loaded.backend, loaded.device, loaded.available) == ("transformer", "cpu", True)
    assert loaded.model_id == str(model_dir.resolve())
    assert loaded.dtype == "float32"


def test_count_tokens_matches_an_independently_loaded_tokenizer(loaded, model_dir: Path) -> None:
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(model_dir)
    for text in ["", "Section 96 of the Code", "Judgment\f Page 2 of 3 — ₹38,40,000"]:
        assert loaded.count_tokens(text) == len(reference.encode(text, add_special_tokens=False))


def test_greedy_matches_transformers_generate_on_the_same_weights(loaded, model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    reference = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    expected_ids = reference.generate(ids, max_new_tokens=16, do_sample=False)[0, ids.shape[1] :]
    expected = tokenizer.decode(expected_ids, skip_special_tokens=True)

    result = loaded.generate(PROMPT, max_new_tokens=16)
    assert result.text == expected
    assert result.completion_tokens == len(expected_ids)
    assert result.prompt_tokens == ids.shape[1]
    assert result.finish_reason in ("length", "eos")
    assert result.timings.total_ms >= result.timings.prefill_ms > 0


def test_seeded_sampling_is_reproducible_and_the_seed_matters(loaded) -> None:
    def sample(seed: int) -> str:
        return loaded.generate(PROMPT, max_new_tokens=12, temperature=1.0, seed=seed).text

    assert sample(7) == sample(7)
    assert len({sample(seed) for seed in range(5)}) > 1


def test_top_k_one_is_greedy(loaded) -> None:
    greedy = loaded.generate(PROMPT, max_new_tokens=10).text
    assert loaded.generate(PROMPT, max_new_tokens=10, temperature=0.8, top_k=1, seed=3).text == greedy


@pytest.mark.parametrize("sampling", [{}, {"temperature": 0.9, "top_p": 0.9, "seed": 11}])
def test_streaming_yields_the_same_text_as_not_streaming(loaded, sampling: dict) -> None:
    whole = loaded.generate(PROMPT, max_new_tokens=20, **sampling)
    stream = loaded.generate(PROMPT, max_new_tokens=20, stream=True, **sampling)
    assert isinstance(stream, mr.GenerationStream)
    pieces = list(stream)
    assert len(pieces) > 1
    assert all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces) == whole.text
    assert stream.result is not None and stream.result.text == whole.text


def test_stop_strings_end_the_text_before_them(loaded) -> None:
    free = loaded.generate(PROMPT, max_new_tokens=24).text
    assert len(free) >= 8, f"need some text to cut: {free!r}"
    stop = free[4:7]
    cut = free[: free.find(stop)]
    result = loaded.generate(PROMPT, max_new_tokens=24, stop=[stop, "\x07never"])
    assert (result.text, result.finish_reason, result.stop_sequence) == (cut, "stop", stop)
    assert "".join(loaded.generate(PROMPT, max_new_tokens=24, stop=stop, stream=True)) == cut


def test_generate_with_state_space_reads_the_context_first(loaded) -> None:
    context = "Civil Appeal No. 1184 of 2024. The appeal is allowed."
    question = "What happened to the appeal?"
    answer = loaded.generate_with_state_space(prompt=question, context=context, max_new_tokens=8)
    direct = loaded.generate(f"{context}\n\n{question}", max_new_tokens=8)
    assert answer.text == direct.text
    assert answer.prompt_tokens == direct.prompt_tokens > loaded.count_tokens(question)
    with pytest.raises(mr.InvalidRequestError, match="unknown generation argument"):
        loaded.generate_with_state_space(prompt=question, context=context, max_tokens=8)


def test_a_prompt_longer_than_the_window_is_an_error_not_a_truncation(loaded) -> None:
    long_prompt = "judgment " * 400
    with pytest.raises(mr.ContextTooLongError, match="reads at most 256 tokens") as caught:
        loaded.generate(long_prompt, max_new_tokens=4)
    assert "at most 0" not in str(caught.value) and "shorten the prompt by at least" in str(caught.value)
    with pytest.raises(mr.ContextTooLongError, match="lower max_new_tokens"):
        loaded.generate(PROMPT, max_new_tokens=250)


def test_bad_arguments_are_typed_errors(loaded) -> None:
    with pytest.raises(mr.InvalidRequestError, match="prompt is empty"):
        loaded.generate("")
    with pytest.raises(mr.InvalidRequestError, match="must be a str"):
        loaded.generate(None)  # type: ignore[arg-type]
    with pytest.raises(mr.InvalidRequestError, match="max_new_tokens"):
        loaded.generate(PROMPT, max_new_tokens=-5)
    with pytest.raises(mr.InvalidRequestError, match="max_new_tokens"):
        loaded.generate(PROMPT, max_new_tokens=10**9)
    with pytest.raises(mr.InvalidRequestError, match="text must be a str"):
        loaded.count_tokens(b"bytes")  # type: ignore[arg-type]


def test_safetensors_are_preferred_over_pickles(llama_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    target = tmp_path / "both"
    shutil.copytree(llama_dir, target)
    decoy = AutoModelForCausalLM.from_pretrained(llama_dir)
    torch.save({k: torch.zeros_like(v) for k, v in decoy.state_dict().items()}, target / "pytorch_model.bin")
    model = mr.load_model(target, backend="transformer")
    assert any(p.abs().sum() > 0 for p in model.model.parameters()), "the zeroed pickle was loaded"


def test_pickled_weights_load_when_they_are_all_there_is(llama_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    target = tmp_path / "pickle-only"
    shutil.copytree(llama_dir, target)
    reference = AutoModelForCausalLM.from_pretrained(llama_dir)
    for f in target.glob("*.safetensors"):
        f.unlink()
    torch.save(reference.state_dict(), target / "pytorch_model.bin")
    loaded = mr.load_model(target, backend="transformer")
    expected = mr.load_model(llama_dir, backend="transformer").generate(PROMPT, max_new_tokens=8).text
    assert loaded.generate(PROMPT, max_new_tokens=8).text == expected


@pytest.mark.parametrize("path", ["/no/such/model/dir", "./missing-model", "~/nothing-here/model"])
def test_missing_model_directory(path: str) -> None:
    with pytest.raises(mr.ModelNotFoundError, match="does not exist"):
        mr.load_model(path, backend="transformer")


def test_model_path_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "weights.bin"
    f.write_bytes(b"\0")
    with pytest.raises(mr.ModelNotFoundError, match="is a file"):
        mr.load_model(f, backend="transformer")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "config.json").write_text("{not json", encoding="utf-8"), "not valid JSON"),
        (lambda d: (d / "config.json").write_text("[1, 2]", encoding="utf-8"), "must hold a JSON object"),
        (lambda d: (d / "config.json").write_text(json.dumps({"hidden_size": 4}), encoding="utf-8"), "no 'model_type'"),
        (lambda d: (d / "config.json").unlink(), "has no config.json"),
        (lambda d: [f.unlink() for f in d.glob("*.safetensors")], "no weights"),
        (lambda d: (d / "config.json").write_bytes(b"\xff\xfe{"), "not UTF-8"),
    ],
)
def test_corrupt_checkpoints_are_reported(llama_dir: Path, tmp_path: Path, damage, message: str) -> None:
    target = tmp_path / "damaged"
    shutil.copytree(llama_dir, target)
    damage(target)
    with pytest.raises(mr.CorruptCheckpointError, match=message):
        mr.load_model(target, backend="transformer")


def test_a_model_directory_without_a_tokenizer(llama_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "no-tokenizer"
    shutil.copytree(llama_dir, target)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (target / name).unlink(missing_ok=True)
    with pytest.raises(mr.ModelLoadError, match="tokenizer"):
        mr.load_model(target, backend="transformer")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device": "cuda"} if not torch.cuda.is_available() else {"device": "cuda:99"}, "CUDA"),
        ({"device": "tpu"}, "not a torch device|not supported"),
        ({"dtype": "float64"}, "float64"),
    ],
)
def test_bad_device_or_dtype(llama_dir: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(mr.InvalidRequestError, match=message):
        mr.load_model(llama_dir, backend="transformer", **kwargs)


@pytest.mark.parametrize("model", [123, "", "   ", ["dir"]])
def test_bad_model_argument(model: object) -> None:
    with pytest.raises(mr.InvalidRequestError, match="model must be"):
        mr.load_model(model, backend="transformer")  # type: ignore[arg-type]


def test_offline_model_written_by_the_backend_loads_back(tmp_path: Path) -> None:
    backend = mr.get_backend("transformer")
    path = backend.write_offline_model(tmp_path / "tiny")
    model = backend.load(str(path))
    result = model.generate("Page 1 of 3", max_new_tokens=4, seed=0)
    assert result.completion_tokens >= 1 and result.backend == "transformer"


@pytest.mark.parametrize("kind", ["mamba", "mamba2", "falcon_mamba"])
def test_a_mamba_family_checkpoint_is_refused_with_the_backend_that_runs_it(tmp_path: Path, kind: str) -> None:
    """transformers would load it and then fail in a KV-cache decode loop; the backend says where it runs instead."""
    from transformers import (
        FalconMambaConfig,
        FalconMambaForCausalLM,
        Mamba2Config,
        Mamba2ForCausalLM,
        MambaConfig,
        MambaForCausalLM,
    )

    config, cls = {
        "mamba": (MambaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1), MambaForCausalLM),
        "mamba2": (
            Mamba2Config(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_heads=4, head_dim=8, state_size=8),
            Mamba2ForCausalLM,
        ),
        "falcon_mamba": (FalconMambaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1), FalconMambaForCausalLM),
    }[kind]
    cls(config).save_pretrained(tmp_path)
    with pytest.raises(mr.WrongBackendError, match=f"{kind} checkpoint.*backend='mamba2'"):
        mr.get_backend("transformer").load(str(tmp_path), device="cpu")
