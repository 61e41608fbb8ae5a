"""LoRA training: plan (dry run), then train with gradient accumulation, evaluation, checkpoints and resume.

The adapters are peft LoRA layers on the target modules. Before the first step the trainer runs one forward pass
and checks that every adapter was called: an adapter that a fused kernel skips would train nothing and is an error.
The result is a peft adapter directory (``adapter_config.json`` + ``adapter_model.safetensors``) and
``training_log.json`` with the losses.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mamba_router.errors import ConfigurationError
from mamba_router.lora.config import LoraTrainingConfig
from mamba_router.lora.data import (
    IGNORE_INDEX,
    EncodedExample,
    Example,
    collate,
    encode_example,
    read_examples,
    split_examples,
)
from mamba_router.lora.targets import check_targets
from mamba_router.lora.trainable import TrainableModel

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"


@dataclass
class LoraPlan:
    """What a run would do: the model, the targets, the parameter counts and the data."""

    backend: str
    model: str
    target_modules: list[str]
    trainable_params: int
    total_params: int
    data: dict[str, Any]
    train_examples: int
    eval_examples: int
    steps_per_epoch: int
    total_steps: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dict(self.__dict__)


@dataclass
class TrainingOutcome:
    """Where the adapter went and how the losses moved."""

    adapter_dir: Path
    steps: int
    train_losses: list[tuple[int, float]] = field(default_factory=list)
    eval_losses: list[tuple[int, float]] = field(default_factory=list)
    resumed_from: int | None = None


def lora_model(trainable: TrainableModel, config: LoraTrainingConfig, targets: list[str]) -> Any:
    """The peft-wrapped module (adapters zero-initialised on B, so the model starts exactly as the base)."""
    from peft import LoraConfig, get_peft_model

    peft_config = LoraConfig(
        r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=targets, bias="none"
    )
    return get_peft_model(trainable.module, peft_config)


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights are counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for parameter in module.parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        total += parameter.numel()
        if parameter.requires_grad:
            trainable += parameter.numel()
    return trainable, total


def resolve_targets(trainable: TrainableModel, config: LoraTrainingConfig) -> list[str]:
    """The configured targets, checked against the model, or the model's defaults."""
    if config.target_modules:
        return check_targets(trainable.module, list(config.target_modules))
    if not trainable.default_targets:
        raise ConfigurationError(f"{trainable.model_id} declares no default LoRA targets; set target_modules")
    return list(trainable.default_targets)


def encode_all(trainable: TrainableModel, report_examples: list[Example], max_length: int) -> list[EncodedExample]:
    """Tokenised examples (those whose completion is cut off entirely by ``max_length`` are dropped, and logged)."""
    tokenizer = trainable.tokenizer
    eos = getattr(tokenizer, "eos_token_id", None)
    encoded = []
    for example in report_examples:
        item = encode_example(tokenizer, example, max_length, eos)
        if item is None:
            logger.warning(
                "line %d: the prompt fills max_length=%d; no completion token left, skipped", example.line, max_length
            )
            continue
        encoded.append(item)
    return encoded


def plan_run(
    trainable: TrainableModel, config: LoraTrainingConfig
) -> tuple[LoraPlan, Any, list[Example], list[Example]]:
    """Everything a dry run prints; also the peft model and the train / held-out split for a real run."""
    if config.data is None:
        raise ConfigurationError("the LoRA config needs 'data': a JSONL file of prompt/completion pairs")
    targets = resolve_targets(trainable, config)
    report = read_examples(config.data, on_bad_line=config.on_bad_line)
    train, held_out = split_examples(report.examples, config.eval_fraction, config.seed)
    torch.manual_seed(config.seed)  # the adapters' A matrices start random: seeded, so runs repeat
    peft_model = lora_model(trainable, config, targets)
    trainable_params, total = count_parameters(peft_model)
    per_epoch = max(1, math.ceil(len(train) / (config.batch_size * config.gradient_accumulation_steps)))
    total_steps = config.max_steps or per_epoch * config.epochs
    plan = LoraPlan(
        backend=trainable.backend,
        model=trainable.model_id,
        target_modules=targets,
        trainable_params=trainable_params,
        total_params=total,
        data=report.summary(),
        train_examples=len(train),
        eval_examples=len(held_out),
        steps_per_epoch=per_epoch,
        total_steps=total_steps,
    )
    return plan, peft_model, train, held_out


def check_adapters_run(peft_model: Any, logits_fn: Any, device: torch.device) -> None:
    """One forward pass with a hook on every LoRA layer; raise if any adapter was not called."""
    from peft.tuners.lora import LoraLayer

    layers = {name: m for name, m in peft_model.named_modules() if isinstance(m, LoraLayer)}
    called: set[str] = set()
    hooks = [m.lora_A["default"].register_forward_hook(lambda *_, n=name: called.add(n)) for name, m in layers.items()]
    try:
        with torch.no_grad():
            logits_fn(peft_model, torch.zeros((1, 4), dtype=torch.long, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    skipped = sorted(set(layers) - called)
    if not layers or skipped:
        raise ConfigurationError(
            "these LoRA adapters are not on the model's forward path (a fused kernel reads the base weight "
            f"directly), so training would not change them: {skipped or '(no adapters at all)'}"
        )


def completion_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over completion tokens (labels != -100), next-token shifted."""
    vocab = logits.shape[-1]
    return nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, vocab).float(), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )


def evaluate(
    peft_model: Any, trainable: TrainableModel, examples: list[EncodedExample], batch_size: int, pad_id: int
) -> float:
    """Completion-token loss over ``examples`` (token-weighted)."""
    peft_model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            ids, labels = collate(examples[start : start + batch_size], pad_id)
            ids, labels = ids.to(trainable.device), labels.to(trainable.device)
            count = int((labels[:, 1:] != IGNORE_INDEX).sum())
            total += float(completion_loss(trainable.logits(peft_model, ids), labels)) * count
            tokens += count
    peft_model.train()
    return total / max(tokens, 1)


def train(
    trainable: TrainableModel, config: LoraTrainingConfig, *, resume: bool = False, progress: bool = True
) -> TrainingOutcome:
    """Train LoRA adapters and write the adapter directory to ``config.output_dir``."""
    plan, peft_model, train_set, held_out = plan_run(trainable, config)
    check_adapters_run(peft_model, trainable.logits, trainable.device)
    train_encoded = encode_all(trainable, train_set, config.max_length)
    eval_encoded = encode_all(trainable, held_out, config.max_length)
    if not train_encoded:
        raise ConfigurationError("no training example has a completion token within max_length")
    tokenizer = trainable.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=config.learning_rate)
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    outcome = TrainingOutcome(adapter_dir=output, steps=0)
    step, start_epoch, start_batch = 0, 0, 0
    if resume:
        restored = _latest_checkpoint(output)
        if restored is not None:
            step, start_epoch, start_batch = _restore(restored, peft_model, optimizer, outcome)
            outcome.resumed_from = step
            logger.info("resumed from %s at step %d", restored, step)
    if eval_encoded and step == 0:
        outcome.eval_losses.append((0, evaluate(peft_model, trainable, eval_encoded, config.batch_size, pad_id)))
    torch.manual_seed(config.seed + step)
    peft_model.train()
    bar = _progress(plan.total_steps, step, progress)
    micro = config.batch_size
    accumulate = config.gradient_accumulation_steps
    done = step >= plan.total_steps
    for epoch in range(start_epoch, config.epochs if config.max_steps is None else 10**9):
        if done:
            break
        order = list(range(len(train_encoded)))
        random.Random(config.seed * 1000 + epoch).shuffle(order)
        batches = [order[i : i + micro] for i in range(0, len(order), micro)]
        first = start_batch if epoch == start_epoch else 0
        for index in range(first, len(batches)):
            ids, labels = collate([train_encoded[i] for i in batches[index]], pad_id)
            ids, labels = ids.to(trainable.device), labels.to(trainable.device)
            loss = completion_loss(trainable.logits(peft_model, ids), labels)
            (loss / accumulate).backward()
            if (index + 1) % accumulate != 0 and index + 1 != len(batches):
                continue
            torch.nn.utils.clip_grad_norm_(
                [p for p in peft_model.parameters() if p.requires_grad], config.max_grad_norm
            )
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            outcome.train_losses.append((step, float(loss.detach())))
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
            if eval_encoded and (step % config.eval_every == 0 or step == plan.total_steps):
                outcome.eval_losses.append((step, evaluate(peft_model, trainable, eval_encoded, micro, pad_id)))
            if step % config.save_every == 0 and step < plan.total_steps:
                _save_checkpoint(output / f"checkpoint-{step}", peft_model, optimizer, step, epoch, index + 1, outcome)
            if step >= plan.total_steps:
                done = True
                break
    bar.close()
    if eval_encoded and (not outcome.eval_losses or outcome.eval_losses[-1][0] != step):
        outcome.eval_losses.append((step, evaluate(peft_model, trainable, eval_encoded, micro, pad_id)))
    outcome.steps = step
    peft_model.save_pretrained(str(output))
    _write_log(output, plan, outcome)
    return outcome


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="lora", unit="step")


def _save_checkpoint(
    directory: Path, peft_model: Any, optimizer: Any, step: int, epoch: int, batch: int, outcome: TrainingOutcome
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(directory))
    torch.save(
        {
            "step": step,
            "epoch": epoch,
            "batch": batch,
            "optimizer": optimizer.state_dict(),
            "train_losses": outcome.train_losses,
            "eval_losses": outcome.eval_losses,
        },
        directory / STATE_FILE,
    )


def _latest_checkpoint(output: Path) -> Path | None:
    found = [p for p in output.glob("checkpoint-*") if (p / STATE_FILE).is_file() and p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None


def _restore(directory: Path, peft_model: Any, optimizer: Any, outcome: TrainingOutcome) -> tuple[int, int, int]:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(peft_model, load_file(str(directory / "adapter_model.safetensors")))
    state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    outcome.train_losses = [tuple(x) for x in state["train_losses"]]
    outcome.eval_losses = [tuple(x) for x in state["eval_losses"]]
    return int(state["step"]), int(state["epoch"]), int(state["batch"])


def _write_log(output: Path, plan: LoraPlan, outcome: TrainingOutcome) -> None:
    payload = {
        "plan": plan.as_dict(),
        "steps": outcome.steps,
        "resumed_from": outcome.resumed_from,
        "train_losses": outcome.train_losses,
        "eval_losses": outcome.eval_losses,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (output / "training_log.json").write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
