"""The Hugging Face Hub as a source of models: what is already on this machine, and whether the hub can be reached.

A hub id whose files are in the local cache is read from there, without a network request. One that is not, when the
hub cannot be reached (offline mode, no DNS, no route), fails at once instead of after huggingface_hub's retries (about
50 s): reachability is probed once per process, the name lookup and the connection each limited to about a second.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 1.0
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = {"1", "on", "yes", "true"}


def offline_mode() -> str | None:
    """The variable that turns the hub off (``HF_HUB_OFFLINE=1``...), or None."""
    for name in OFFLINE_VARIABLES:
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return name
    return None


def maybe_in_hub_cache(repo: str) -> bool:
    """False when hub repository ``repo`` is surely not in the local cache (its ``models--org--name`` folder is
    absent from the cache directory huggingface_hub uses: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
    ``~/.cache/huggingface/hub``); a cheap test before importing huggingface_hub to look inside."""
    env = os.environ
    cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if not cache:
        home = env.get("HF_HOME") or os.path.join(
            env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface"
        )
        cache = os.path.join(home, "hub")
    try:
        folder = Path(os.path.expandvars(cache)).expanduser() / ("models--" + repo.replace("/", "--"))
        return folder.is_dir()
    except (OSError, RuntimeError, ValueError):  # no home directory, a name the file system refuses: let hub decide
        return True


def cached_snapshot(repo: str) -> Path | None:
    """The local snapshot directory of hub repository ``repo`` when it holds a config and weights, else None."""
    from huggingface_hub import snapshot_download

    try:
        directory = Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError), or a cache it cannot read: not usable offline
        return None
    has_weights = any(directory.glob("*.safetensors")) or any(directory.glob("*.bin"))
    return directory if (directory / "config.json").is_file() and has_weights else None


def hub_unreachable_reason() -> str | None:
    """Why the hub cannot be reached now (offline mode, a name that does not resolve, a connection refused or timed
    out), or None when a connection opens. Probed once per process (offline mode is read each time)."""
    variable = offline_mode()
    if variable is not None:
        return f"offline mode is on ({variable}={os.environ[variable]})"
    return _probe(_hub_address())


def _hub_address() -> tuple[str, int]:
    """Where a connection to the hub goes first: the HTTPS proxy when one is set, else the endpoint."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme in ("https", "") else 80)


@functools.lru_cache(maxsize=4)
def _probe(address: tuple[str, int]) -> str | None:
    host, port = address
    found: list[object] = []

    def resolve() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            found.append(exc)

    lookup = threading.Thread(target=resolve, daemon=True)  # getaddrinfo has no timeout of its own
    lookup.start()
    lookup.join(PROBE_TIMEOUT_S)
    if not found:
        return f"the name {host} did not resolve within {PROBE_TIMEOUT_S:.0f} s"
    if isinstance(found[0], OSError):
        return f"the name {host} does not resolve ({found[0]})"
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        return f"no connection to {host}:{port} ({exc})"
    return None
