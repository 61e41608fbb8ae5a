"""``import mamba_router`` is light: the public names load on first use, and torch only with a model."""

from __future__ import annotations

import subprocess
import sys

import pytest

import mamba_router as mr


def test_every_public_name_resolves_and_is_listed() -> None:
    for name in mr.__all__:
        assert getattr(mr, name) is not None, name
    assert set(mr.__all__) <= set(dir(mr))
    assert mr.Router.__module__ == "mamba_router.routing.router"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        mr.no_such_thing  # noqa: B018


def test_importing_the_package_and_its_routing_names_does_not_import_torch() -> None:
    code = (
        "import sys, mamba_router as mr; mr.Router; mr.load_config; mr.RouteDecision; mr.detect; "
        "mr.MambaRouterError; print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"
