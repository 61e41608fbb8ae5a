"""``mamba-router init DIR``: the offline tiny models and a config that uses them, and the next commands to run."""

from __future__ import annotations

import argparse
import json
import shlex

from rich.console import Console
from rich.markup import escape

from mamba_router.demo import write_starter_models
from mamba_router.settings.schema import CONFIG_ENV


def run_init(args: argparse.Namespace, out: Console) -> int:
    """Write the models and the config file; print where they are and how to use them."""
    written = write_starter_models(args.directory)
    config = str(written.config_file)
    if args.json:
        paths = {"transformer": str(written.transformer), "mamba": str(written.mamba) if written.mamba else None}
        print(json.dumps({**paths, "mamba_backend": written.mamba_backend, "config_file": config}, indent=2))
        return 0
    out.print(f"[bold]transformer[/]  {escape(str(written.transformer))}")
    if written.mamba is not None:
        out.print(f"[bold]mamba[/]        {escape(str(written.mamba))} ({written.mamba_backend}'s format)")
    else:
        out.print("[yellow]mamba[/]        none: no installed Mamba backend wrote a model (mamba-router info says why)")
    out.print(f"[bold]config[/]       {escape(config)}")
    out.print("[yellow]note[/]         random weights: answers are meaningless; the models are for trying it offline")
    out.print("[bold]next[/]")
    out.print(f"  export {CONFIG_ENV}={escape(shlex.quote(config))}")
    out.print('  mamba-router generate --query "What did the court order?" --max-new-tokens 16')
    out.print("  (or point the settings in that file at your own model directories)")
    return 0
