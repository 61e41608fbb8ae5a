"""LoRA training settings, read from a YAML or TOML file (the seed's ``configs/lora_*.yaml`` keys are accepted).

::

    base_model: state-spaces/mamba-130m    # hub id or directory; `mamba-router lora --model PATH` overrides it
    backend: auto                          # real-mamba, mamba2, transformer; `--backend NAME` overrides it
    target_modules: [in_proj, out_proj]    # omit to take them from the model (see mamba_router.lora.targets)
    data: train.jsonl                      # {"prompt": ..., "completion": ...} per line
    output_dir: adapters/judgments
    r: 8
    alpha: 16
    dropout: 0.0
    learning_rate: 2.0e-4
    epochs: 1                              # or max_steps: 500
    batch_size: 4
    gradient_accumulation_steps: 4
    max_length: 1024
    eval_fraction: 0.1
    eval_every: 50
    save_every: 100
    on_bad_line: skip                      # or error
    seed: 0

Seed-era spellings map onto these: ``lora_r``, ``lora_alpha``, ``lora_dropout``, ``lr``, ``num_epochs``,
``num_train_epochs``, ``micro_batch_size``, ``per_device_train_batch_size``, ``max_seq_length``, ``cutoff_len``,
``dataset``, ``data_path``, ``train_file``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from mamba_router.config_files import read_settings_file
from mamba_router.errors import ConfigurationError
from mamba_router.routing.config import split_comma_list
from mamba_router.selection import normalize_backend_name


class LoraTrainingConfig(BaseModel):
    """Everything a LoRA run needs; see the module docstring."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    base_model: str | None = None
    backend: str | None = None
    target_modules: tuple[str, ...] | None = None
    data: Path | None = Field(default=None, validation_alias=AliasChoices("data", "dataset", "data_path", "train_file"))
    output_dir: Path = Path("lora-adapter")
    r: int = Field(default=8, ge=1, le=1024, validation_alias=AliasChoices("r", "lora_r", "rank"))
    alpha: float = Field(default=16.0, gt=0, validation_alias=AliasChoices("alpha", "lora_alpha"))
    dropout: float = Field(default=0.0, ge=0, lt=1, validation_alias=AliasChoices("dropout", "lora_dropout"))
    learning_rate: float = Field(default=2e-4, gt=0, le=1, validation_alias=AliasChoices("learning_rate", "lr"))
    epochs: int = Field(
        default=1, ge=1, le=10_000, validation_alias=AliasChoices("epochs", "num_epochs", "num_train_epochs")
    )
    max_steps: int | None = Field(default=None, ge=1)
    batch_size: int = Field(
        default=4,
        ge=1,
        le=4096,
        validation_alias=AliasChoices("batch_size", "micro_batch_size", "per_device_train_batch_size"),
    )
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=4096)
    max_length: int = Field(
        default=1024, ge=8, validation_alias=AliasChoices("max_length", "max_seq_length", "cutoff_len")
    )
    eval_fraction: float = Field(default=0.1, ge=0, lt=1)
    eval_every: int = Field(default=50, ge=1)
    save_every: int = Field(default=100, ge=1)
    max_grad_norm: float = Field(default=1.0, gt=0)
    on_bad_line: Literal["skip", "error"] = "skip"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"

    @field_validator("backend", mode="before")
    @classmethod
    def _backend(cls, value: Any) -> Any:
        return normalize_backend_name(value) if isinstance(value, str) else value

    @field_validator("target_modules", mode="before")
    @classmethod
    def _targets(cls, value: Any) -> Any:
        value = split_comma_list(value)
        if value is not None and not value:
            raise ValueError("give at least one module name, or leave target_modules out to take them from the model")
        return value


def load_lora_config(path: str | Path | None, **overrides: Any) -> LoraTrainingConfig:
    """Read the file (YAML or TOML) and apply non-None ``overrides``; errors name the key and the allowed values."""
    data: dict[str, Any] = {}
    if path is not None:
        data = _read(Path(path).expanduser())
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return LoraTrainingConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(p) for p in error["loc"])
            if error["type"] == "extra_forbidden":
                allowed = ", ".join(LoraTrainingConfig.model_fields)
                problems.append(f"unknown key {key!r}; allowed keys: {allowed}")
            else:
                problems.append(f"{key} = {error.get('input')!r}: {error['msg']}")
        raise ConfigurationError(f"invalid LoRA config {path or '(arguments)'}: " + "; ".join(problems)) from None


def _read(path: Path) -> dict[str, Any]:
    data = read_settings_file(path, "LoRA config")
    for key in ("data", "dataset", "data_path", "train_file"):
        if isinstance(data.get(key), str) and not Path(data[key]).expanduser().is_absolute():
            data[key] = str(path.parent / data[key])  # a relative data path is relative to the config file
    return data
