"""Training data: a JSONL file of ``{"prompt": ..., "completion": ...}`` objects.

Every line that cannot be used (not UTF-8, not JSON, not an object, a missing or non-string field, an empty
completion) is reported with its line number; ``on_bad_line='skip'`` leaves it out and says so, ``'error'`` stops.
The loss is computed on the completion only: prompt positions get the label -100.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from mamba_router.errors import ConfigurationError, InvalidRequestError
from mamba_router.paths import user_path

IGNORE_INDEX = -100
BadLinePolicy = Literal["skip", "error"]


class TrainingDataError(InvalidRequestError):
    """The training data has lines that cannot be used and the policy is to stop."""


@dataclass(frozen=True)
class Example:
    """One prompt/completion pair and the line it came from."""

    line: int
    prompt: str
    completion: str


@dataclass
class DataReport:
    """What was read: usable examples and one message per rejected line."""

    path: Path
    examples: list[Example] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Counts and the first problems, for dry runs and logs."""
        return {
            "path": str(self.path),
            "examples": len(self.examples),
            "skipped_lines": len(self.problems),
            "problems": self.problems[:20],
        }


def read_examples(path: str | Path, *, on_bad_line: BadLinePolicy = "skip") -> DataReport:
    """Read ``path``; raise :class:`TrainingDataError` on a bad line when ``on_bad_line='error'``."""
    source = user_path(path, "training data")
    if not source.is_file():
        raise ConfigurationError(f"training data {source} does not exist; give a JSONL file of prompt/completion pairs")
    report = DataReport(path=source)
    with open(source, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            example, problem = _parse_line(number, raw)
            if problem is not None:
                if on_bad_line == "error":
                    raise TrainingDataError(f"{source}: {problem} (set on_bad_line: skip to leave such lines out)")
                report.problems.append(problem)
            else:
                assert example is not None
                report.examples.append(example)
    if not report.examples:
        raise TrainingDataError(f"{source} has no usable prompt/completion pair ({len(report.problems)} bad lines)")
    return report


def _parse_line(number: int, raw: bytes) -> tuple[Example | None, str | None]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"line {number}: not UTF-8 ({exc.reason} at byte {exc.start})"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(value, dict):
        return (
            None,
            f"line {number}: a JSON object with 'prompt' and 'completion' is needed, found {type(value).__name__}",
        )
    for key in ("prompt", "completion"):
        if key not in value:
            return None, f"line {number}: missing field {key!r}"
        if not isinstance(value[key], str):
            return None, f"line {number}: field {key!r} must be a string, found {type(value[key]).__name__}"
    if not value["completion"].strip():
        return None, f"line {number}: empty completion"
    return Example(line=number, prompt=value["prompt"], completion=value["completion"]), None


def split_examples(examples: Sequence[Example], eval_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A shuffled train/held-out split; the held-out part has at least one example when the fraction is positive."""
    order = list(examples)
    random.Random(seed).shuffle(order)
    if eval_fraction <= 0 or len(order) < 2:
        return order, []
    held = max(1, int(round(len(order) * eval_fraction)))
    return order[held:], order[:held]


@dataclass(frozen=True)
class EncodedExample:
    """Token ids and labels (-100 on the prompt) of one example."""

    input_ids: list[int]
    labels: list[int]


def encode_example(tokenizer: Any, example: Example, max_length: int, eos_id: int | None) -> EncodedExample | None:
    """Prompt ids then completion ids (+ EOS), cut to ``max_length``; None when no completion token survives."""
    prompt_ids = tokenizer(example.prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(example.completion, add_special_tokens=False)["input_ids"]
    if eos_id is not None:
        completion_ids = completion_ids + [eos_id]
    ids = (prompt_ids + completion_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + completion_ids)[:max_length]
    if all(label == IGNORE_INDEX for label in labels[1:]):
        return None
    return EncodedExample(input_ids=ids, labels=labels)


def collate(batch: Sequence[EncodedExample], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, labels); padding is never a label, and causal models never look right."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(batch):
        ids[row, : len(example.input_ids)] = torch.tensor(example.input_ids)
        labels[row, : len(example.labels)] = torch.tensor(example.labels)
    return ids, labels
