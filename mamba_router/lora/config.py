"""LoRA training settings, read from a YAML or TOML file (the seed's ``configs/lora_*.yaml`` keys are accepted).

The keys are the ``[lora]`` section of the one configuration schema (:mod:`mamba_router.settings.schema`); here
they come from a file of their own, flat, then ``MAMBA_ROUTER__LORA__KEY`` variables, then the CLI's arguments.

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

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mamba_router.paths import user_path
from mamba_router.settings.files import read_settings_file
from mamba_router.settings.loader import load_settings
from mamba_router.settings.schema import LoraSection, RouterConfig

LoraTrainingConfig = LoraSection
DATA_KEYS = ("data", "dataset", "data_path", "train_file")


def load_lora_config(
    path: str | Path | None, *, environ: Mapping[str, str] | None = None, **overrides: Any
) -> LoraSection:
    """Read the file (YAML or TOML) and apply non-None ``overrides``; errors name the key and the allowed values."""
    file = user_path(path, "LoRA config") if path is not None else None
    data = {"lora": _read(file)} if file is not None else None
    loaded = load_settings(
        RouterConfig,
        file_data=data,
        file=file,
        environ=os.environ if environ is None else environ,
        overrides={f"lora.{k}": v for k, v in overrides.items() if v is not None},
        what="LoRA config",
    )
    return loaded.config.lora


def _read(path: Path) -> dict[str, Any]:
    data = read_settings_file(path, "LoRA config")
    for key in DATA_KEYS:
        if isinstance(data.get(key), str) and not user_path(data[key], key).is_absolute():
            data[key] = str(path.parent / data[key])  # a relative data path is relative to the config file
    return data
