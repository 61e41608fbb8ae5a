"""``mamba-router info``: which backend this machine gets, why each other one is out, and how to install it; and
whether each configured remote endpoint (``[remote]``) answers and serves its model."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.markup import escape

from mamba_router.backends.detection import detect
from mamba_router.backends.reports import DetectionResult
from mamba_router.compat import get_mamba_info
from mamba_router.errors import MambaRouterError
from mamba_router.settings.schema import load_config

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
    endpoints, problem = remote_endpoint_checks(getattr(args, "config", None))
    if args.json:
        info = get_mamba_info()
        if endpoints or problem:
            info["remote_endpoints"] = {"checks": endpoints, "problem": problem}
        print(json.dumps(info, indent=2))
        return 0 if info["error"] is None else 1
    print_detection(result, out)
    print_endpoints(endpoints, problem, out)
    return 0 if result.error is None else 1


def remote_endpoint_checks(config: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """Each ``[remote]`` endpoint of the config checked now, and what kept them from being checked (if anything)."""
    try:
        settings = load_config(config).config.remote
    except MambaRouterError as exc:
        return [], f"the config could not be read: {exc}"
    if not settings.mamba and not settings.transformer:
        return [], None
    try:
        from mamba_router.remote.checks import check_endpoints
    except ImportError:
        return [], "remote endpoints are configured but httpx is not installed: pip install 'mamba-router[remote]'"
    return [check.model_dump() for check in check_endpoints(settings)], None


def print_endpoints(checks: list[dict[str, Any]], problem: str | None, out: Console) -> None:
    """One line per remote endpoint: reachable and serving its model, or why not."""
    if not checks and not problem:
        return
    out.print("[bold]remote[/]")
    for check in checks:
        style = "green" if check["ok"] else "red"
        out.print(
            f"   [bold]{escape(check['label'])}[/] ({escape(check['family'])}, {escape(check['model'])}): "
            f"[{style}]{escape(check['detail'])}[/] [dim]{check['elapsed_ms']} ms[/]"
        )
    if problem:
        out.print(f"[yellow]warning[/]   {escape(problem)}")


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
