"""Running the app with uvicorn: ``mamba-router serve``. SIGINT/SIGTERM stop taking connections, let running
requests finish for ``serve.shutdown_grace_s`` seconds, then close the router (every answered request is in the
routing log before the process exits)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from mamba_router.routing.router import Router
from mamba_router.settings.schema import load_config

logger = logging.getLogger(__name__)


def run_server(
    config: str | Path | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    preload: bool = True,
    log_level: str = "info",
    model_process: bool | None = None,
) -> None:
    """Serve the router of ``config`` (file + environment) on ``host``:``port`` (``[serve]`` defaults) until stopped.
    ``model_process``: the models run in a process of their own (default: ``serve.model_process``)."""
    import uvicorn

    from mamba_router.serve.app import create_app
    from mamba_router.serve.served_router import ServedRouter

    loaded = load_config(config)
    use_switch_interval(loaded.config.serve.switch_interval_ms)
    if model_process is None:
        model_process = loaded.config.serve.model_process
    router: ServedRouter
    if model_process:  # the model process reads the config (and the environment) itself
        from mamba_router.serve.model_process import ModelProcessRouter

        router = ModelProcessRouter(config, log_level=log_level)
        logger.info("models run in process %s", router.pid)
    else:
        router = Router(loaded)
    settings = router.config.serve
    app = create_app(router, preload=preload)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host or settings.host,
            port=settings.port if port is None else port,
            log_level=log_level,
            timeout_graceful_shutdown=int(settings.shutdown_grace_s) or None,
            access_log=False,  # paths only, but the routing log is the record of requests
        )
    )
    server.run()


def use_switch_interval(milliseconds: float) -> None:
    """Set this process's GIL switch interval (``serve.switch_interval_ms``): a process of the server's own, so the
    interpreter-wide setting is ours to choose."""
    sys.setswitchinterval(milliseconds / 1000.0)
