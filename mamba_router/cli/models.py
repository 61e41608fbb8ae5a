"""``mamba-router models``: every model family the library knows, which backends run it here, and what each needs."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.markup import escape

from mamba_router.backends.detection import detect
from mamba_router.models.registry import FAMILIES, family_support

RUNS_STYLE = {"yes": "green", "when forced": "yellow", "no": "red"}


def families_report() -> list[dict[str, Any]]:
    """One entry per family: its model types and mixers, and every Mamba backend's support for it here."""
    candidates = [c for c in detect(raise_on_error=False).candidates if c.family == "mamba"]
    report = []
    for family in FAMILIES:
        support = [family_support(family, c) for c in candidates]
        report.append(
            {
                "family": family.name,
                "description": family.description,
                "model_types": list(family.model_types),
                "mamba_ssm_layer": family.mamba_ssm_layer,
                "mixers": list(family.mixers),
                "backends": [{"backend": s.backend, "runs": s.runs, "needs": s.needs} for s in support],
            }
        )
    return report


def run_models(args: argparse.Namespace, out: Console) -> int:
    """Print the families (or JSON); a checkpoint of any other family is refused with the list of these."""
    report = families_report()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for entry in report:
        reads = ", ".join(f"model_type {t}" for t in entry["model_types"])
        if entry["mamba_ssm_layer"]:
            reads += f", mamba-ssm layer {entry['mamba_ssm_layer']}"
        out.print(f"[bold]{escape(entry['family'])}[/]  {escape(entry['description'])}")
        out.print(f"  reads: {escape(reads)}; mixers: {escape(', '.join(entry['mixers']))}", style="dim")
        for backend in entry["backends"]:
            style = RUNS_STYLE[backend["runs"]]
            needs = f" - {escape(backend['needs'])}" if backend["needs"] else ""
            out.print(f"  {escape(backend['backend'])}: [{style}]{backend['runs']}[/]{needs}")
    return 0
