"""The layers hold: the import contracts in pyproject.toml pass on this tree, and an import that breaks a layer
(a model module importing the router) makes them fail, naming the contract and the import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {
    "mamba_router": REPO / "mamba_router",
    "mamba_router_cuda": REPO / "mamba_router_cuda" / "mamba_router_cuda",
    "mamba_router_mps": REPO / "mamba_router_mps" / "mamba_router_mps",
}


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` run in ``root`` (its pyproject.toml), with the packages under ``root`` imported first."""
    pytest.importorskip("importlinter")
    env = {**os.environ, "PYTHONPATH": str(root)}
    command = [
        sys.executable,
        "-c",
        "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
        "--no-cache",
    ]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=120)


def copy_tree(target: Path) -> Path:
    for name, source in PACKAGES.items():
        shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", target / "pyproject.toml")
    return target


def test_the_import_contracts_hold(tmp_path: Path) -> None:
    result = lint_imports(copy_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_import_that_breaks_a_layer_fails_the_contract(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    module = root / "mamba_router" / "models" / "checkpoint.py"
    module.write_text(module.read_text(encoding="utf-8") + "\nfrom mamba_router.routing import router  # noqa\n")
    result = lint_imports(root)
    assert result.returncode != 0
    assert "Layers of mamba_router" in result.stdout and "BROKEN" in result.stdout
    assert "mamba_router.models is not allowed to import mamba_router.routing" in result.stdout


def test_the_core_may_not_import_a_backend_distribution(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    module = root / "mamba_router" / "generation" / "loading.py"
    module.write_text(module.read_text(encoding="utf-8") + "\nimport mamba_router_cuda.backend  # noqa\n")
    result = lint_imports(root)
    assert result.returncode != 0 and "The core never imports a backend distribution BROKEN" in result.stdout
