"""Install commands that work from how this library was installed.

The backend distributions (``mamba-router-cuda``, ``mamba-router-mps``) sit beside the core: in a checkout as
directories next to it, after ``pip wheel`` as wheels next to the core's wheel, or on a package index as the
core's extras. The command shown for a missing one follows the core's own origin (``direct_url.json``, PEP 610).
"""

from __future__ import annotations

import functools
import json
import shlex
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

CORE_DISTRIBUTION = "mamba-router"


@functools.cache  # how the core was installed does not change while it runs
def core_origin() -> dict[str, Any] | None:
    """The core's ``direct_url.json`` (where pip installed it from), or None when it came from an index."""
    for distribution in metadata.distributions(name=CORE_DISTRIBUTION):  # a stray egg-info in the cwd comes first
        text = distribution.read_text("direct_url.json")
        if not text:
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return None
        return data if isinstance(data, dict) else None
    return None


def distribution_install_command(distribution: str, extra: str, origin: dict[str, Any] | None = None) -> str:
    """The command that installs ``distribution`` (the core's extra ``extra``) the way the core was installed:
    ``pip install -e CHECKOUT/mamba_router_cuda`` from a checkout, ``pip install DIR/mamba_router_cuda-*.whl`` from
    built wheels, ``pip install 'mamba-router[cuda]'`` from an index. ``origin``: the core's ``direct_url.json``
    (read from the installed core when None)."""
    origin = core_origin() if origin is None else origin
    directory = distribution.replace("-", "_")
    location = _local_path(origin)
    if location is not None and location.is_dir() and (location / directory).is_dir():  # a checkout
        return f"pip install -e {shlex.quote(str(location / directory))}"
    if location is not None and location.suffix == ".whl":
        wheels = sorted(location.parent.glob(f"{directory}-*.whl"))
        if wheels:
            return f"pip install {shlex.quote(str(wheels[-1]))}"
        return (
            f"build its wheel beside {location.name} (pip wheel --no-deps -w {shlex.quote(str(location.parent))} "
            f"./{directory} in the source tree), then pip install it"
        )
    return f"pip install '{CORE_DISTRIBUTION}[{extra}]'"


def _local_path(origin: dict[str, Any] | None) -> Path | None:
    url = (origin or {}).get("url")
    if not isinstance(url, str) or not url.startswith("file://"):
        return None
    return Path(unquote(urlparse(url).path))
