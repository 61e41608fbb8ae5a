"""Which family a checkpoint belongs to, read from its ``config.json``, and the one call that loads it.

A family is one module that reads its config and weights and builds its layer stack from the shared layers
(:mod:`mamba_router.models.layers`), whose numerics are a backend's ops. To add a family, write its module and add
one :class:`ModelFamily` to :data:`FAMILIES`; every Mamba backend then runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mamba_router.errors import UnknownModelFamilyError
from mamba_router.models.checkpoint import read_config_json
from mamba_router.models.mamba import MambaLM, load_mamba_directory
from mamba_router.models.ops import SSMOps


@dataclass(frozen=True)
class ModelFamily:
    """A model family: the configs it reads and how it loads a checkpoint directory onto some ops."""

    name: str
    description: str
    model_types: tuple[str, ...]
    mamba_ssm_format: bool
    load: Callable[[Path, SSMOps], tuple[MambaLM, str]]

    def reads(self, config: dict[str, Any]) -> bool:
        """True when ``config`` (a parsed ``config.json``) is one of this family's."""
        if self.mamba_ssm_format and "d_model" in config:
            return True
        return config.get("model_type") in self.model_types


FAMILIES: tuple[ModelFamily, ...] = (
    ModelFamily(
        name="mamba",
        description="Mamba-1 and Mamba-2 language models (mamba-ssm's format and transformers' Mamba/Mamba2)",
        model_types=("mamba", "mamba2"),
        mamba_ssm_format=True,
        load=load_mamba_directory,
    ),
    ModelFamily(
        name="falcon_mamba",
        description="FalconMamba: Mamba-1 with RMS norms on B, C and dt (tiiuae/falcon-mamba-7b and its instruct model)",
        model_types=("falcon_mamba",),
        mamba_ssm_format=False,
        load=load_mamba_directory,
    ),
)


def family_of(config: dict[str, Any], where: str) -> ModelFamily:
    """The family that reads ``config``; an error listing the known families when none does."""
    family = next((f for f in FAMILIES if f.reads(config)), None)
    if family is not None:
        return family
    known = "; ".join(f"{f.name} (model_type {', '.join(f.model_types)})" for f in FAMILIES)
    raise UnknownModelFamilyError(
        f"{where} is neither a mamba-ssm config (d_model, n_layer, ssm_cfg) nor the config of a known model family "
        f"(model_type {config.get('model_type')!r}; known: {known}); found keys {sorted(config)[:12]}. A Transformer "
        "checkpoint runs on the 'transformer' backend"
    )


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A model built from a checkpoint directory, its family and the checkpoint's format."""

    model: MambaLM
    family: ModelFamily
    checkpoint_format: str


def load_ssm_checkpoint(directory: Path, ops: SSMOps) -> LoadedCheckpoint:
    """Read ``directory``'s config, pick its family, build the model on ``ops`` and load the weights."""
    family = family_of(read_config_json(directory), str(directory / "config.json"))
    model, fmt = family.load(directory, ops)
    return LoadedCheckpoint(model, family, fmt)
