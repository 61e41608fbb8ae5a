"""Issue 15, item 2: install commands that work from how the library was installed, shown only for what is missing."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from mamba_router.backends.install_hints import distribution_install_command

DISTRIBUTIONS = ("mamba-router-cuda", "mamba-router-mps", "mamba_router_cuda", "mamba_router_mps", "mamba-router[")


def _info() -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "mamba_router", "info", "--json"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def test_every_install_command_info_shows_for_this_project_can_be_run_from_here() -> None:
    """`pip install 'mamba-router[cuda]'` could not work: the distributions are not on an index."""
    info = _info()
    commands = [info["install_command"]] + [c["install_command"] for c in info["candidates"]]
    for command in filter(None, commands):
        for step in command.split("&&"):
            words = shlex.split(step)
            if not any(d in word for word in words for d in DISTRIBUTIONS):
                continue  # torch, mamba-ssm, causal-conv1d: third-party packages for a GPU machine
            assert words[:2] == ["pip", "install"], command
            target = Path(words[-1])
            assert target.exists(), f"{command!r} names {target}, which does not exist here"


def test_a_backend_that_is_installed_shows_no_install_fix_for_a_missing_device() -> None:
    """mamba2 on a machine without MPS said `fix: pip install 'mamba-router[mps]'` although it was installed."""
    for candidate in _info()["candidates"]:
        if candidate["installed"] and candidate["name"] == "mamba2" and not candidate["available"]:
            assert candidate["install_command"] is None


def test_the_command_follows_the_core_s_origin(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "mamba_router_cuda").mkdir(parents=True)
    editable = {"url": checkout.as_uri(), "dir_info": {"editable": True}}
    assert distribution_install_command("mamba-router-cuda", "cuda", editable) == (
        f"pip install -e {shlex.quote(str(checkout / 'mamba_router_cuda'))}"
    )
    dist = tmp_path / "dist"
    dist.mkdir()
    core = dist / "mamba_router-0.1.0-py3-none-any.whl"
    core.write_bytes(b"")
    from_wheel = {"url": core.as_uri(), "archive_info": {}}
    assert "pip wheel --no-deps" in distribution_install_command("mamba-router-mps", "mps", from_wheel)
    plugin = dist / "mamba_router_mps-0.1.0-py3-none-any.whl"
    plugin.write_bytes(b"")
    assert distribution_install_command("mamba-router-mps", "mps", from_wheel) == f"pip install {plugin}"
    assert distribution_install_command("mamba-router-cuda", "cuda", {}) == "pip install 'mamba-router[cuda]'"


def test_the_commands_for_backends_that_are_not_installed_can_be_run_from_here() -> None:
    """What `info` shows for a missing backend distribution (none is missing in this checkout, so asked directly)."""
    from mamba_router.backends.discovery import KNOWN_BACKENDS

    for known in KNOWN_BACKENDS:
        if known.extra is None:
            continue
        words = shlex.split(known.install_command)
        assert words[:2] == ["pip", "install"] and Path(words[-1]).exists(), known.install_command
