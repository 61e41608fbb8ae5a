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
    if getattr(args, "ray", False):
        return _run_ray(args)
    run_server(
        args.config,
        host=args.host,
        port=args.port,
        preload=not args.no_preload,
        model_process=getattr(args, "model_process", None),
    )
    return 0


def _run_ray(args: argparse.Namespace) -> int:
    """The Ray Serve application of the config, on ``--host``/``--port`` (``[serve]`` defaults)."""
    try:
        from mamba_router.serve.ray_app import run_ray_server
    except ImportError as exc:
        raise ConfigurationError(
            f"serving on Ray needs the ray extra ({exc.name} is missing): pip install 'mamba-router[ray]'"
        ) from None
    from mamba_router.settings.schema import load_config

    config = load_config(args.config).config
    host = args.host or config.serve.host
    port = config.serve.port if args.port is None else args.port
    run_ray_server(config, host=host, port=port)
    return 0
