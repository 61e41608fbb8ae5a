"""The real ``mamba-router serve`` process for tests: offline tiny models written by ``mamba-router init``, a free
port on 127.0.0.1, started and stopped (SIGTERM, the graceful path) like an operator would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

READY_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_models(directory: Path) -> Path:
    """Tiny offline Mamba and Transformer models and their config, written by the CLI's own ``init``."""
    subprocess.run(
        [sys.executable, "-m", "mamba_router", "init", str(directory)], check=True, capture_output=True, timeout=300
    )
    return directory / "mamba-router.toml"


def write_config(models_config: Path, path: Path, extra: str) -> Path:
    """``models_config`` plus ``extra`` TOML sections (serve, limits, log)."""
    path.write_text(models_config.read_text(encoding="utf-8") + "\n" + extra, encoding="utf-8")
    return path


class ServerProcess:
    """A running server; ``url`` is its base address."""

    def __init__(
        self,
        config: Path,
        *,
        env: dict[str, str] | None = None,
        profile: Path | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        """``profile``: run the server under cProfile (its main thread: the event loop) and write the stats there
        when it stops (stopped with SIGINT then: uvicorn ends a SIGTERM by re-raising it, which gives cProfile no
        chance to write); ``args``: more command-line arguments of ``mamba-router serve``."""
        self.profiled = profile is not None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = config.with_suffix(".server.log")
        environment = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", **(env or {})}
        environment.pop("MAMBA_ROUTER_CONFIG", None)
        self._out = self.log.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                *(["-m", "cProfile", "-o", str(profile)] if profile is not None else []),
                "-m",
                "mamba_router",
                "serve",
                "--config",
                str(config),
                "--port",
                str(self.port),
                *args,
            ],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=environment,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server was not ready in {READY_TIMEOUT_S} s:\n{self.output()}")

    def output(self) -> str:
        if not self._out.closed:
            self._out.flush()
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (graceful shutdown; SIGINT when profiled), then wait; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT if self.profiled else signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._out.close()
        return int(self.process.returncode)
