"""``mamba-router serve``: the HTTP server (see :mod:`mamba_router.serve`)."""

from __future__ import annotations

import argparse
import logging

from rich.console import Console

from mamba_router.errors import ConfigurationError


def run_serve(args: argparse.Namespace, out: Console) -> int:
    """Serve until interrupted; 0 after a clean shutdown."""
    try:
        from mamba_router.serve.server import run_server
    except ImportError as exc:  # fastapi/uvicorn/prometheus-client come with the serve extra
        raise ConfigurationError(
            f"the server needs the serve extra ({exc.name} is missing): pip install 'mamba-router[serve]'"
        ) from None
    if not logging.getLogger().isEnabledFor(logging.INFO):
        logging.getLogger("mamba_router").setLevel(logging.INFO)  # say which models load, and when
    run_server(args.config, host=args.host, port=args.port, preload=not args.no_preload)
    return 0
