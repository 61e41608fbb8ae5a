"""Which family a checkpoint belongs to, read from its ``config.json``, and the one call that loads it.

A family is one module that reads its config and weights and builds its layer stack from the shared layers
(:mod:`mamba_router.models.layers`), whose numerics are a backend's ops. To add a family, write its module and add
one :class:`ModelFamily` to :data:`FAMILIES`; every Mamba backend then runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mamba_router.backends.reports import MIXERS_DETAIL, CandidateReport
from mamba_router.errors import UnknownModelFamilyError
from mamba_router.models.checkpoint import read_config_json
from mamba_router.models.hybrid import load_hybrid_directory
from mamba_router.models.hybrid_config import hybrid_config_from_json
from mamba_router.models.mamba import load_mamba_directory
from mamba_router.models.mamba_config import config_from_json, is_mamba_ssm_hybrid
from mamba_router.models.ops import SSMOps
from mamba_router.models.stack import LayerStack


@dataclass(frozen=True)
class ModelFamily:
    """A model family: the configs it reads and how it loads a checkpoint directory onto some ops."""

    name: str
    description: str
    model_types: tuple[str, ...]
    mamba_ssm_layer: str | None  # the ``ssm_cfg.layer`` of mamba-ssm's format it reads, if any
    mixers: tuple[str, ...]  # the mixer kinds its layers use; a backend runs it when it runs all of them
    load: Callable[[Path, dict[str, Any], SSMOps], tuple[LayerStack, str]]  # (directory, parsed config.json, ops)
    mamba_ssm_hybrid: bool = False  # reads mamba-ssm's configs with attention layers or MLPs (else those without)

    def reads(self, config: dict[str, Any]) -> bool:
        """True when ``config`` (a parsed ``config.json``) is one of this family's."""
        if "d_model" in config:  # mamba-ssm's format: the layer decides (Mamba-1 when unset)
            ssm_cfg = config.get("ssm_cfg") or {}
            layer = ssm_cfg.get("layer", "Mamba1") if isinstance(ssm_cfg, dict) else None
            hybrid = is_mamba_ssm_hybrid(config)
            return (
                self.mamba_ssm_layer is not None and layer == self.mamba_ssm_layer and hybrid == self.mamba_ssm_hybrid
            )
        return config.get("model_type") in self.model_types


FAMILIES: tuple[ModelFamily, ...] = (
    ModelFamily(
        name="mamba",
        description="Mamba-1 (state-spaces/mamba-*, in mamba-ssm's or transformers' format)",
        model_types=("mamba",),
        mamba_ssm_layer="Mamba1",
        mixers=("mamba1",),
        load=load_mamba_directory,
    ),
    ModelFamily(
        name="mamba2",
        description="Mamba-2 (state-spaces/mamba2-*, mistralai/Mamba-Codestral-7B-v0.1, in either format)",
        model_types=("mamba2",),
        mamba_ssm_layer="Mamba2",
        mixers=("mamba2",),
        load=load_mamba_directory,
    ),
    ModelFamily(
        name="mamba_ssm_hybrid",
        description="mamba-ssm's own hybrid format: Mamba-2 layers, attention at attn_layer_idx, gated MLPs",
        model_types=(),
        mamba_ssm_layer="Mamba2",
        mixers=("mamba2", "attention"),
        load=load_hybrid_directory,
        mamba_ssm_hybrid=True,
    ),
    ModelFamily(
        name="mamba1_ssm_hybrid",
        description="mamba-ssm's own hybrid format with Mamba-1 layers, attention at attn_layer_idx, gated MLPs",
        model_types=(),
        mamba_ssm_layer="Mamba1",
        mixers=("mamba1", "attention"),
        load=load_hybrid_directory,
        mamba_ssm_hybrid=True,
    ),
    ModelFamily(
        name="falcon_mamba",
        description="FalconMamba: Mamba-1 with RMS norms on B, C and dt (tiiuae/falcon-mamba-7b and its instruct model)",
        model_types=("falcon_mamba",),
        mamba_ssm_layer=None,
        mixers=("mamba1",),
        load=load_mamba_directory,
    ),
    ModelFamily(
        name="granitemoehybrid",
        description="Granite-4.0-H: Mamba-2 and attention layers, shared MLP, optional experts (ibm-granite/granite-4.0-h-*)",
        model_types=("granitemoehybrid",),
        mamba_ssm_layer=None,
        mixers=("mamba2", "attention"),
        load=load_hybrid_directory,
    ),
    ModelFamily(
        name="bamba",
        description="Bamba: Mamba-2 and attention layers with gated MLPs (ibm-ai-platform/Bamba-9B*)",
        model_types=("bamba",),
        mamba_ssm_layer=None,
        mixers=("mamba2", "attention"),
        load=load_hybrid_directory,
    ),
    ModelFamily(
        name="nemotron_h",
        description="Nemotron-H: Mamba-2, attention, MLP and expert layers (nvidia/Nemotron-H-*, NVIDIA-Nemotron-Nano-*)",
        model_types=("nemotron_h",),
        mamba_ssm_layer=None,
        mixers=("mamba2", "attention"),
        load=load_hybrid_directory,
    ),
    ModelFamily(
        name="jamba",
        description="Jamba: Mamba-1 and attention layers, gated MLPs and experts (ai21labs/AI21-Jamba-*)",
        model_types=("jamba",),
        mamba_ssm_layer=None,
        mixers=("mamba1", "attention"),
        load=load_hybrid_directory,
    ),
    ModelFamily(
        name="falcon_h1",
        description="Falcon-H1: Mamba-2 and attention side by side in every layer, gated MLPs (tiiuae/Falcon-H1-*)",
        model_types=("falcon_h1",),
        mamba_ssm_layer=None,
        mixers=("mamba2", "attention"),
        load=load_hybrid_directory,
    ),
    ModelFamily(
        name="zamba2",
        description="Zamba2: Mamba-2 layers and shared attention blocks with per-use adapters (Zyphra/Zamba2-*)",
        model_types=("zamba2",),
        mamba_ssm_layer=None,
        mixers=("mamba2", "attention"),
        load=load_hybrid_directory,
    ),
)


def family_of(config: dict[str, Any], where: str) -> ModelFamily:
    """The family that reads ``config``; an error listing the known families when none does."""
    family = next((f for f in FAMILIES if f.reads(config)), None)
    if family is not None:
        return family
    if "d_model" in config:  # mamba-ssm's format with a layer no family reads: its reader names the problem
        config_from_json(config, where)
    known = "; ".join(f"{f.name} (model_type {', '.join(f.model_types)})" for f in FAMILIES)
    raise UnknownModelFamilyError(
        f"{where} is neither a mamba-ssm config (d_model, n_layer, ssm_cfg) nor the config of a known model family "
        f"(model_type {config.get('model_type')!r}; known: {known}); found keys {sorted(config)[:12]}. A Transformer "
        "checkpoint runs on the 'transformer' backend"
    )


def has_mamba_layers(config: dict[str, Any], where: str) -> bool:
    """True when ``config`` (a parsed ``config.json``) is a Mamba family's with at least one Mamba layer; False for a
    Transformer's, and for a hybrid family's config whose layers are all attention (Granite-4.0's dense models)."""
    try:
        family = family_of(config, where)
    except UnknownModelFamilyError:
        return False
    if "attention" not in family.mixers:
        return True
    hybrid = hybrid_config_from_json(config, where)
    return hybrid.mamba.arch in hybrid.mixers


@dataclass(frozen=True)
class FamilySupport:
    """Whether one backend runs a family here: ``runs`` (usable as is, or when forced) and what is missing."""

    backend: str
    runs: Literal["yes", "when forced", "no"]
    needs: str | None


def family_support(family: ModelFamily, candidate: CandidateReport) -> FamilySupport:
    """What ``candidate`` (a Mamba backend as discovery saw it) can do with ``family``'s checkpoints on this machine.

    A backend runs a family when it runs every mixer kind the family uses (its probe lists them under
    ``details["mixers"]``: for real-mamba, the kinds whose kernels are installed). A Mamba-1 family on real-mamba
    without the selective-scan kernel is "no", with the fix; the mixers are known even where the backend cannot run.
    """
    have = {m for m in candidate.details.get(MIXERS_DETAIL, "").split(",") if m}
    missing = [m for m in family.mixers if m not in have]
    if missing and have:
        fix = f" ({candidate.install_command})" if candidate.install_command else ""
        return FamilySupport(candidate.name, "no", f"the {', '.join(missing)} kernels{fix}")
    if not candidate.available and not candidate.forceable:
        fix = f"; {candidate.install_command}" if candidate.install_command else ""
        return FamilySupport(candidate.name, "no", candidate.reason + fix)
    if missing:
        return FamilySupport(candidate.name, "no", f"the {', '.join(missing)} mixers, which this backend lacks")
    return FamilySupport(
        candidate.name,
        "yes" if candidate.available else "when forced",
        None if candidate.available else candidate.reason,
    )


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A model built from a checkpoint directory, its family and the checkpoint's format."""

    model: LayerStack
    family: ModelFamily
    checkpoint_format: str


def load_ssm_checkpoint(directory: Path, ops: SSMOps) -> LoadedCheckpoint:
    """Read ``directory``'s config, pick its family, build the model on ``ops`` and load the weights."""
    config = read_config_json(directory)
    family = family_of(config, str(directory / "config.json"))
    model, fmt = family.load(directory, config, ops)
    return LoadedCheckpoint(model, family, fmt)
