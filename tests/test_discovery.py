"""Discovery against real installed metadata: throwaway ``*.dist-info`` folders put on ``sys.path``."""

from __future__ import annotations

import itertools
import textwrap
import time
from pathlib import Path

import pytest

import mamba_router as mr
from mamba_router.backends.discovery import discover_backends
from mamba_router.backends.platform import collect_platform_facts
from mamba_router.backends.selection import preferred_mamba_backend

_counter = itertools.count()

BACKEND_TEMPLATE = """
from mamba_router.backends.reports import Availability

class Plugin:
    name = {name!r}
    family = {family!r}
    priority = 5
    default_model = "fake/model"
    install_command = "pip install fake"

    def probe(self, platform):
        {probe_body}

    def load(self, model, *, device=None, dtype=None):
        raise RuntimeError("fake backends do not load")

    def write_offline_model(self, directory):
        raise RuntimeError("fake backends write nothing")
"""


def install_fake_distribution(root: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """Write a minimal installed distribution: METADATA, entry_points.txt and its modules."""
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n", encoding="utf-8")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[mamba_router.backends]\n{lines}", encoding="utf-8")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")


def plugin_module(name: str, probe_body: str, family: str = "mamba") -> str:
    return BACKEND_TEMPLATE.format(name=name, family=family, probe_body=probe_body)


@pytest.fixture()
def plugin_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.fixture()
def zoo(plugin_root: Path) -> dict[str, str]:
    """Install one good plugin and one of each kind of broken plugin; return the entry-point names."""
    tag = next(_counter)
    names = {
        "good": "fake-good",
        "import": "fake-import-error",
        "probe": "fake-probe-raises",
        "garbage": "fake-garbage",
        "not_backend": "fake-not-a-backend",
        "slow": "fake-slow",
    }
    modules = {
        f"zoo_good_{tag}": plugin_module("fake-good", 'return Availability.usable("always ready")'),
        f"zoo_good_twin_{tag}": plugin_module("fake-good", 'return Availability.usable("the twin")'),
        f"zoo_import_{tag}": "raise ImportError('libfoo.so: cannot open shared object file')\n",
        f"zoo_probe_{tag}": plugin_module("fake-probe-raises", 'raise RuntimeError("driver exploded")'),
        f"zoo_garbage_{tag}": plugin_module("fake-garbage", "return 42"),
        f"zoo_not_backend_{tag}": "NOT_A_BACKEND = 'just a string'\n",
        f"zoo_slow_{tag}": plugin_module(
            "fake-slow", 'import time; time.sleep(30); return Availability.usable("late")'
        ),
    }
    install_fake_distribution(
        plugin_root,
        f"fake-zoo-a{tag}",
        {
            names["good"]: f"zoo_good_{tag}:Plugin",
            names["import"]: f"zoo_import_{tag}:Plugin",
            names["probe"]: f"zoo_probe_{tag}:Plugin",
            names["garbage"]: f"zoo_garbage_{tag}:Plugin",
            names["not_backend"]: f"zoo_not_backend_{tag}:NOT_A_BACKEND",
            names["slow"]: f"zoo_slow_{tag}:Plugin",
        },
        modules,
    )
    install_fake_distribution(plugin_root, f"fake-zoo-b{tag}", {names["good"]: f"zoo_good_twin_{tag}:Plugin"}, {})
    names["tag"] = str(tag)
    return names


def by_name(found, name):
    return [d for d in found if d.report.name == name]


def test_every_broken_plugin_is_reported_and_detection_survives(zoo: dict[str, str]) -> None:
    started = time.monotonic()
    found = discover_backends(collect_platform_facts(), timeout_s=1.0)
    elapsed = time.monotonic() - started
    assert elapsed < 15, "a hanging probe must not hold discovery past its deadline"

    (imp,) = by_name(found, zoo["import"])
    assert not imp.report.available and imp.backend is None
    assert "import failed" in imp.report.error and "libfoo.so" in imp.report.error
    assert imp.report.install_command == f"pip install --force-reinstall fake-zoo-a{zoo['tag']}"

    (probe,) = by_name(found, zoo["probe"])
    assert "probing failed" in probe.report.error and "driver exploded" in probe.report.error

    (garbage,) = by_name(found, zoo["garbage"])
    assert "probe returned int" in garbage.report.error and "Availability" in garbage.report.error

    (not_backend,) = by_name(found, zoo["not_backend"])
    assert not_backend.report.error.startswith("not a backend")

    (slow,) = by_name(found, zoo["slow"])
    assert "did not finish within 1 s" in slow.report.error

    # the project's own three backends are still there, from their own distributions
    dists = {d.report.name: d.report.distribution for d in found}
    assert dists["transformer"] == "mamba-router"
    assert dists["real-mamba"] == "mamba-router-cuda"
    assert dists["mamba2"] == "mamba-router-mps"


def test_duplicate_names_are_reported_not_shadowed(zoo: dict[str, str]) -> None:
    found = discover_backends(collect_platform_facts(), timeout_s=1.0)
    twins = by_name(found, "fake-good")
    assert len(twins) == 2
    used = [d for d in twins if d.backend is not None]
    shadowed = [d for d in twins if d.backend is None]
    assert len(used) == 1 and len(shadowed) == 1
    assert used[0].report.distribution == f"fake-zoo-a{zoo['tag']}"
    assert not shadowed[0].report.available
    assert "duplicate backend name 'fake-good'" in shadowed[0].report.error
    assert f"fake-zoo-a{zoo['tag']}" in shadowed[0].report.error


def test_detect_picks_a_usable_third_party_mamba_backend_and_honours_the_switches(
    zoo: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAMBA_ROUTER_PROBE_TIMEOUT", "1")
    result = mr.detect(environ={})
    preferred = preferred_mamba_backend(result.platform)
    preferred_report = result.candidate(preferred) if preferred else None
    # the platform's own Mamba backend wins where it can run (the GPU machine); elsewhere the usable plugin does
    expected = preferred if preferred_report is not None and preferred_report.available else "fake-good"
    assert result.selected == expected
    assert any("duplicate" in w for w in result.warnings)
    assert any("import failed" in w for w in result.warnings)

    off = mr.detect(environ={"ENABLE_MAMBA": "Off"})
    assert off.selected == "transformer"

    with pytest.raises(mr.BackendUnavailableError, match="driver exploded"):
        mr.detect(environ={"MAMBA_ROUTER_BACKEND": zoo["probe"]})


def test_entry_point_name_must_match_backend_name(plugin_root: Path) -> None:
    tag = next(_counter)
    install_fake_distribution(
        plugin_root,
        f"fake-mismatch{tag}",
        {f"alias-{tag}": f"mismatch_{tag}:Plugin"},
        {f"mismatch_{tag}": plugin_module("other-name", 'return Availability.usable("ok")')},
    )
    (found,) = by_name(discover_backends(collect_platform_facts(), timeout_s=5.0), f"alias-{tag}")
    assert "returns a backend named 'other-name'" in found.report.error
