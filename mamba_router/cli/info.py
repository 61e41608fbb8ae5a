"""``mamba-router info``: which backend this machine gets, why each other one is out, and how to install it."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.markup import escape

from mamba_router.backends.detection import detect
from mamba_router.backends.reports import DetectionResult
from mamba_router.compat import get_mamba_info

STATUS_STYLE = {
    "usable": "green",
    "forceable": "yellow",
    "unusable": "red",
    "broken": "bold red",
    "not installed": "dim",
}


def run_info(args: argparse.Namespace, out: Console) -> int:
    """Print the detection report (rich, or ``get_mamba_info()`` as JSON); 1 when no backend could be chosen."""
    result = detect(raise_on_error=False, refresh=True)  # the diagnostic probes afresh (and renews the cache)
    if args.json:
        info = get_mamba_info()
        print(json.dumps(info, indent=2))
        return 0 if info["error"] is None else 1
    print_detection(result, out)
    return 0 if result.error is None else 1


def print_detection(result: DetectionResult, out: Console) -> None:
    """The report's lines, coloured by each candidate's status."""
    out.print(f"[bold]platform[/]  {escape(result.platform.summary())}")
    out.print(f"[bold]switches[/]  {escape(result.switches_line())}")
    out.print("[bold]candidates[/]")
    for c in result.candidates:
        marker = "*" if c.name == result.selected and c.error is None else " "
        out.print(
            f" {marker} [bold]{escape(c.name)}[/] ({escape(c.family or '?')}, {escape(c.origin)}): "
            f"[{STATUS_STYLE[c.status]}]{c.status}[/]"
        )
        out.print(f"      why: {escape(c.reason)}")
        if c.install_command and not c.available:
            out.print(f"      fix: [cyan]{escape(c.install_command)}[/]")
        for key, value in c.details.items():
            out.print(f"      {escape(key)}: {escape(value)}", style="dim")
    style = "red" if result.selected is None else "green"
    out.print(f"[bold]chosen[/]    [{style}]{escape(result.choice_line())}[/]")
    out.print(f"[bold]detected[/]  [dim]{escape(result.source_line())}[/]")
    for warning in result.warnings:
        out.print(f"[yellow]warning[/]   {escape(warning)}")
