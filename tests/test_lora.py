"""LoRA on tiny models of every family (CPU): targets read from the model, adapters really on the forward path,
training that lowers the held-out loss, adapters that reload to the same logits, data problems with line numbers,
checkpoints and resume, and the CLI's dry run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("peft")

from mamba_router.cli import main
from mamba_router.errors import ConfigurationError, ModelLoadError
from mamba_router.generation.loading import load_model
from mamba_router.lora.config import load_lora_config
from mamba_router.lora.data import TrainingDataError, read_examples
from mamba_router.lora.targets import check_targets
from mamba_router.lora.trainable import TrainableModel, trainable_view
from mamba_router.lora.trainer import check_adapters_run, completion_loss, lora_model, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mamba1_dir(tmp_path_factory, offline_tokenizer) -> Path:
    """A tiny Mamba-1 saved with HF transformers' save_pretrained (read by the mamba2 backend)."""
    from transformers import MambaConfig, MambaForCausalLM

    # initializer_range 0.5: the tied 32-wide embedding must allow confident logits (see llama_train_dir)
    config = MambaConfig(
        vocab_size=len(offline_tokenizer),
        hidden_size=32,
        state_size=8,
        num_hidden_layers=2,
        expand=2,
        initializer_range=0.5,
    )
    torch.manual_seed(3)
    directory = tmp_path_factory.mktemp("mamba1")
    MambaForCausalLM(config).save_pretrained(directory)
    offline_tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def granite_h_dir(tmp_path_factory, offline_tokenizer) -> Path:
    """A tiny Granite-4.0-H hybrid (Mamba-2 + attention) saved with transformers' save_pretrained."""
    from transformers import GraniteMoeHybridConfig, GraniteMoeHybridForCausalLM

    config = GraniteMoeHybridConfig(
        vocab_size=len(offline_tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        layer_types=["mamba", "attention"],
        num_attention_heads=4,
        shared_intermediate_size=48,
        num_local_experts=0,
        mamba_n_heads=4,
        mamba_d_head=16,
        mamba_d_state=8,
        initializer_range=0.5,
        tie_word_embeddings=True,
    )
    torch.manual_seed(3)
    directory = tmp_path_factory.mktemp("granite-h")
    GraniteMoeHybridForCausalLM(config).save_pretrained(directory)
    offline_tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def llama_train_dir(tmp_path_factory, offline_tokenizer) -> Path:
    """A tiny Llama whose frozen output head is large enough to express a confident answer.

    With the default initializer_range (0.02) a 32-wide random head caps every logit near 0.6, so no adapter can push
    the loss far below log(vocab); 0.3 lifts that cap without changing anything else.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(offline_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.3,
        bos_token_id=offline_tokenizer.bos_token_id,
        eos_token_id=offline_tokenizer.eos_token_id,
    )
    torch.manual_seed(4)
    directory = tmp_path_factory.mktemp("llama-train")
    LlamaForCausalLM(config).save_pretrained(directory)
    offline_tokenizer.save_pretrained(directory)
    return directory


def _load(kind: str, dirs: dict[str, Path]):
    backend = "transformer" if kind.startswith(("llama", "gpt2")) else "mamba2"
    return load_model(dirs[kind], backend=backend, device="cpu", dtype="float32")


@pytest.fixture()
def dirs(llama_dir, gpt2_dir, mamba_dir, mamba1_dir, llama_train_dir, granite_h_dir) -> dict[str, Path]:
    return {
        "granite-h": granite_h_dir,
        "llama": llama_dir,
        "gpt2": gpt2_dir,
        "mamba2": mamba_dir,
        "mamba1": mamba1_dir,
        "llama-train": llama_train_dir,
    }


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("llama", ["q_proj", "k_proj", "v_proj", "o_proj"]),
        ("gpt2", ["c_attn", "c_proj"]),
        ("mamba1", ["in_proj", "x_proj", "dt_proj", "out_proj"]),
        ("mamba2", ["in_proj", "out_proj"]),
        ("granite-h", ["in_proj", "out_proj", "q_proj", "k_proj", "v_proj", "o_proj"]),
    ],
)
def test_targets_are_read_from_the_loaded_model(dirs, kind, expected) -> None:
    trainable = trainable_view(_load(kind, dirs))
    assert trainable.default_targets == expected
    with pytest.raises(ConfigurationError) as info:
        check_targets(trainable.module, [*expected[:1], "query_key_value"])
    assert "query_key_value" in str(info.value) and expected[0] in str(info.value)


def _config(tmp_path: Path, data: Path, **extra):
    settings = {
        "data": str(data),
        "output_dir": str(tmp_path / "adapter"),
        "learning_rate": 5e-3,
        "batch_size": 8,
        "eval_fraction": 0.25,
        "eval_every": 1000,
        "save_every": 1000,
        **extra,
    }
    return load_lora_config(None, **settings)


@pytest.fixture(scope="module")
def task_data(tmp_path_factory) -> Path:
    """A small synthetic task: every judgment's answer is the same sentence; held-out prompts differ."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(48):
            case = rng.randint(1, 999)
            handle.write(
                json.dumps(
                    {
                        "prompt": f"Case {case} of {rng.randint(1990, 2024)}. Result:",
                        "completion": " The appeal is allowed.",
                    }
                )
                + "\n"
            )
    return path


@pytest.mark.parametrize("kind", ["llama", "gpt2", "mamba1", "mamba2", "granite-h"])
def test_every_adapter_is_on_the_forward_path_zero_init_is_neutral_and_one_step_changes_logits(
    dirs, task_data, tmp_path, kind
) -> None:
    trainable = trainable_view(_load(kind, dirs))
    ids = torch.tensor([[5, 17, 42, 8, 99, 3]])
    base = trainable.logits(trainable.module, ids).detach().clone()
    config = _config(tmp_path, task_data)
    peft_model = lora_model(trainable, config, trainable.default_targets)
    check_adapters_run(peft_model, trainable.logits, trainable.device)
    with peft_model.disable_adapter():  # the same wrapped modules without their adapters
        unadapted = trainable.logits(peft_model, ids).detach().clone()
    torch.testing.assert_close(trainable.logits(peft_model, ids), unadapted, rtol=0, atol=0)  # B starts at zero
    # A wrapped projection is called as a module; a plain one may be computed in another layout (Mamba-1's
    # channel-first read), so the unwrapped model agrees to float32 rounding.
    torch.testing.assert_close(unadapted, base, rtol=1e-4, atol=1e-4)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    labels = ids.clone()
    completion_loss(trainable.logits(peft_model, ids), labels).backward()
    optimizer.step()
    assert not torch.allclose(trainable.logits(peft_model, ids), base)


def test_an_adapter_that_a_fused_path_skips_is_an_error(tmp_path, task_data, offline_tokenizer) -> None:
    class Fused(nn.Module):
        """Reads its projection's weight directly, as mamba-ssm's fused kernels do."""

        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(64, 8)
            self.in_proj = nn.Linear(8, 8)
            self.head = nn.Linear(8, 64)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(nn.functional.linear(self.embed(ids), self.in_proj.weight, self.in_proj.bias))

    trainable = TrainableModel(Fused(), lambda m, ids: m(ids), offline_tokenizer, "test", "fused", torch.device("cpu"))
    peft_model = lora_model(trainable, _config(tmp_path, task_data), ["in_proj"])
    with pytest.raises(ConfigurationError, match="not on the model's forward path"):
        check_adapters_run(peft_model, trainable.logits, trainable.device)


@pytest.mark.parametrize("kind", ["llama-train", "mamba2", "mamba1", "granite-h"])
def test_training_halves_the_held_out_loss_and_the_adapter_reloads_to_the_same_logits(
    dirs, task_data, tmp_path, kind
) -> None:
    backend = "transformer" if kind.startswith("llama") else "mamba2"
    trainable = trainable_view(_load(kind, dirs))
    targets = (
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        if kind.startswith("llama")
        else None
    )
    config = _config(tmp_path, task_data, epochs=8, learning_rate=3e-2, target_modules=targets)
    outcome = train(trainable, config, progress=False)
    first, last = outcome.eval_losses[0], outcome.eval_losses[-1]
    assert first[0] == 0 and last[1] < first[1] / 2, outcome.eval_losses
    adapter = tmp_path / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    ids = torch.tensor([[5, 17, 42, 8, 99, 3, 7]])
    trained_module = trainable.module  # peft injected the adapters into it in place
    with torch.no_grad():
        expected = trainable.logits(trained_module, ids)
    reloaded = load_model(dirs[kind], backend=backend, device="cpu", dtype="float32", adapter=adapter)
    with torch.no_grad():
        got = trainable_view(reloaded).logits(reloaded.model, ids)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert set(reloaded.adapted_modules) and all("." in m for m in reloaded.adapted_modules)
    base = load_model(dirs[kind], backend=backend, device="cpu", dtype="float32")
    assert reloaded.state_identity != base.state_identity  # a state read by the base model is not the tuned one's
    log = json.loads((adapter / "training_log.json").read_text())
    assert log["steps"] == outcome.steps and log["eval_losses"][0][0] == 0


def test_an_adapter_for_another_model_is_refused(dirs, task_data, tmp_path) -> None:
    trainable = trainable_view(_load("mamba2", dirs))
    train(trainable, _config(tmp_path, task_data, max_steps=1), progress=False)
    with pytest.raises(ModelLoadError, match="does not have"):
        load_model(dirs["llama"], backend="transformer", device="cpu", adapter=tmp_path / "adapter")
    with pytest.raises(ModelLoadError, match="not a LoRA adapter directory"):
        load_model(dirs["llama"], backend="transformer", device="cpu", adapter=tmp_path)


def test_checkpoints_and_resume_continue_where_the_run_stopped(dirs, task_data, tmp_path) -> None:
    trainable = trainable_view(_load("mamba2", dirs))
    config = _config(tmp_path, task_data, max_steps=10, save_every=4, batch_size=4)
    full = train(trainable, config, progress=False)
    assert sorted(p.name for p in (tmp_path / "adapter").glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]
    resumed_trainable = trainable_view(_load("mamba2", dirs))
    resumed = train(resumed_trainable, config, resume=True, progress=False)
    assert resumed.resumed_from == 8 and resumed.steps == 10
    assert [s for s, _ in resumed.train_losses] == list(range(1, 11))
    assert resumed.train_losses[:8] == full.train_losses[:8]


def test_bad_data_lines_are_reported_with_line_numbers(tmp_path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(
        b'{"prompt": "a", "completion": "b"}\n'
        b'{"prompt": "a"}\n'
        b"[1, 2]\n"
        b'{"prompt": "a", "completion": "  "}\n'
        b'{"prompt": 3, "completion": "x"}\n'
        b"\n"
        b'{"prompt": "\xff", "completion": "x"}\n'
        b"{oops\n"
    )
    report = read_examples(path)
    assert len(report.examples) == 1 and report.examples[0].line == 1
    assert report.problems == [
        "line 2: missing field 'completion'",
        "line 3: a JSON object with 'prompt' and 'completion' is needed, found list",
        "line 4: empty completion",
        "line 5: field 'prompt' must be a string, found int",
        "line 7: not UTF-8 (invalid start byte at byte 12)",
        "line 8: not valid JSON (Expecting property name enclosed in double quotes at column 2)",
    ]
    with pytest.raises(TrainingDataError, match="line 2: missing field 'completion'"):
        read_examples(path, on_bad_line="error")


def test_the_seed_config_files_parse(tmp_path) -> None:
    for name in ("lora_mamba.yaml", "lora_transformer.yaml"):
        config = load_lora_config(REPO / "configs" / name)
        assert config.base_model and config.data is not None and config.data.is_file()
    mamba = load_lora_config(REPO / "configs" / "lora_mamba.yaml")
    assert mamba.r == 8 and mamba.alpha == 16 and mamba.target_modules == ("in_proj", "x_proj", "dt_proj", "out_proj")
    bad = tmp_path / "bad.yaml"
    bad.write_text("base_model: x\nlora_rank: 4\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="unknown key 'lora.lora_rank'"):
        load_lora_config(bad)


def test_cli_dry_run_prints_the_plan_without_training(dirs, task_data, tmp_path, capsys) -> None:
    config = tmp_path / "lora.yaml"
    config.write_text(f"base_model: /nowhere\ndata: {task_data}\noutput_dir: {tmp_path / 'out'}\n", encoding="utf-8")
    args = [
        "lora",
        "--config",
        str(config),
        "--dry-run",
        "--json",
        "--model",
        str(dirs["mamba1"]),
        "--backend",
        "mamba2",
    ]
    assert main(args) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["backend"] == "mamba2" and plan["model"] == str(dirs["mamba1"])
    assert plan["target_modules"] == ["in_proj", "x_proj", "dt_proj", "out_proj"]
    assert 0 < plan["trainable_params"] < plan["total_params"]
    assert plan["data"]["examples"] == 48 and not (tmp_path / "out").exists()
    assert (
        main(["lora", "--config", str(config), "--dry-run", "--model", str(dirs["llama"]), "--backend", "transformer"])
        == 0
    )
    out = capsys.readouterr().out
    assert "q_proj, k_proj, v_proj, o_proj" in out and "nothing trained" in out
    assert main(["lora", "--config", str(config), "--dry-run"]) == 2  # /nowhere does not exist


def test_gradient_accumulation_takes_one_optimiser_step_per_group_of_batches(dirs, task_data, tmp_path) -> None:
    trainable = trainable_view(_load("mamba2", dirs))
    config = _config(tmp_path, task_data, batch_size=4, gradient_accumulation_steps=3, epochs=2)
    outcome = train(trainable, config, progress=False)
    batches_per_epoch = -(-36 // 4)  # 48 examples, a quarter held out
    assert outcome.steps == 2 * -(-batches_per_epoch // 3)
