"""Detection remembered across processes: a second ``route`` process decides from the stored detection without
importing torch, and the stored detection is dropped whenever what it depends on changes.

Cross-process behaviour is tested with real processes (``python -c`` running the CLI or the library), each with its
own cache directory; the fingerprint's parts are tested in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_discovery import install_fake_distribution, plugin_module

from mamba_router.backends import detection_cache
from mamba_router.backends.detection_cache import detection_fingerprint, read_detection, write_detection
from mamba_router.backends.platform import collect_platform_facts
from mamba_router.backends.reports import CandidateReport

# Runs the CLI in this interpreter and says on stderr whether torch was imported by the time it exits.
CLI = (
    "import sys; from mamba_router.cli.main import main; code = main(sys.argv[1:]); "
    "sys.stderr.write('torch imported: %s\\n' % ('torch' in sys.modules)); sys.exit(code)"
)
# The library's own answer: how detection was found, the candidates, and whether torch was imported.
DETECT = (
    "import json, sys; import mamba_router as mr; r = mr.detect(raise_on_error=False); "
    "print(json.dumps({'source': r.source, 'names': [c.name for c in r.candidates], "
    "'torch': 'torch' in sys.modules, 'warnings': list(r.warnings)}))"
)
QUERY = ["--query", "What did the court order?"]


def _env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAMBA_ROUTER", "CUDA_"))}
    env.update(XDG_CACHE_HOME=str(cache), HF_HUB_OFFLINE="1", **extra)
    return env


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", CLI, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done


def _detect(env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", DETECT], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_route_process_decides_from_the_stored_detection_without_importing_torch(
    llama_dir: Path, tmp_path: Path
) -> None:
    env = _env(tmp_path / "cache")
    document = tmp_path / "judgment.txt"
    document.write_text("Page 1 of 3\nThe court orders...\fPage 2 of 3\n\fPage 3 of 3\n", encoding="utf-8")
    args = ["route", *QUERY, "--context-file", str(document), "--transformer-model", str(llama_dir)]

    first = _cli(args, env)
    second = _cli(args, env)

    assert "probed every backend" in first.stdout
    assert "an earlier run's detection" in second.stdout
    assert "torch imported: False" in second.stderr
    route = [line for line in first.stdout.splitlines() if line.startswith(("route", "input", "rule"))]
    assert route and route == [
        line for line in second.stdout.splitlines() if line.startswith(("route", "input", "rule"))
    ]
    assert list((tmp_path / "cache" / "mamba-router").glob("detection-*.json"))


@pytest.mark.parametrize("change", ["environment", "installed distribution"])
def test_the_stored_detection_is_probed_again_when_the_machine_changes(tmp_path: Path, change: str) -> None:
    site = tmp_path / "site"
    site.mkdir()
    env = _env(tmp_path / "cache", PYTHONPATH=str(site))
    assert _detect(env)["source"] == "probed"
    assert _detect(env)["source"] == "disk cache"

    if change == "environment":
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:
        install_fake_distribution(
            site,
            "fake-newcomer",
            {"fake-newcomer": "newcomer_plugin:Plugin"},
            {"newcomer_plugin": plugin_module("fake-newcomer", 'return Availability.usable("ready")')},
        )
    after = _detect(env)
    assert after["source"] == "probed"
    if change == "installed distribution":
        assert "fake-newcomer" in after["names"]
    assert _detect(env)["source"] == "disk cache"


def test_a_detection_with_a_broken_plugin_is_never_stored_and_the_cache_can_be_turned_off(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install_fake_distribution(site, "fake-broken", {"fake-broken": "broken_plugin:Plugin"}, {"broken_plugin": "1/0\n"})
    env = _env(tmp_path / "cache", PYTHONPATH=str(site))
    for _ in range(2):
        seen = _detect(env)
        assert seen["source"] == "probed"
        assert any("ZeroDivisionError" in w for w in seen["warnings"])

    off = _env(tmp_path / "cache-off", MAMBA_ROUTER_DETECTION_CACHE="off")
    assert [_detect(off)["source"] for _ in range(2)] == ["probed", "probed"]
    assert not (tmp_path / "cache-off").exists()


VANISHING = """
import sys
import mamba_router as mr

router = mr.Router(mr.load_config(environ={{}}, overrides={{"transformer.model": {model!r}}}))
result = router.generate("What did the court order?", max_new_tokens=2)
failed = result.attempts[0]
print(router.detection.source, result.model_used, result.fallback_used, failed.backend, failed.error_type)
print(failed.error)
"""


def test_a_stored_plugin_that_no_longer_loads_falls_back_and_drops_the_stored_detection(
    llama_dir: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install_fake_distribution(
        site,
        "fake-vanishing",
        {"fake-vanishing": "vanishing_plugin:Plugin"},
        {"vanishing_plugin": plugin_module("fake-vanishing", 'return Availability.usable("ready")')},
    )
    env = _env(tmp_path / "cache", PYTHONPATH=str(site))
    assert _detect(env)["source"] == "probed"
    (site / "vanishing_plugin.py").unlink()  # the code goes, its metadata stays: the fingerprint cannot see it

    done = subprocess.run(
        [sys.executable, "-c", VANISHING.format(model=str(llama_dir))],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    head, error = done.stdout.strip().splitlines()[-2:]
    assert head == "disk cache transformer True fake-vanishing BackendUnavailableError"
    assert "no longer loads" in error and "vanishing_plugin" in error
    assert not list((tmp_path / "cache" / "mamba-router").glob("detection-*.json"))
    assert _detect(env)["source"] == "probed"


def test_the_fingerprint_follows_gpu_variables_and_distributions_but_not_unrelated_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    base = detection_fingerprint({})
    assert detection_fingerprint({"HOME": "/elsewhere", "PWD": "/tmp", "TERM": "dumb"}) == base
    assert detection_fingerprint({"CUDA_VISIBLE_DEVICES": "1"}) != base
    assert detection_fingerprint({"LD_LIBRARY_PATH": "/opt/cuda/lib64"}) != base
    (tmp_path / "notes.txt").write_text("not a distribution", encoding="utf-8")
    assert detection_fingerprint({}) == base
    install_fake_distribution(tmp_path, "fake-fingerprint", {}, {})
    assert detection_fingerprint({}) != base


def test_a_stored_detection_that_is_old_damaged_or_for_another_machine_is_not_used(tmp_path: Path) -> None:
    platform = collect_platform_facts()
    reports = [CandidateReport(name="transformer", family="transformer", available=True, reason="ready")]
    fingerprint = detection_fingerprint()
    path = write_detection(fingerprint, platform, reports)
    assert path is not None and path.parent == Path(os.environ["XDG_CACHE_HOME"]) / "mamba-router"
    stored = read_detection(fingerprint)
    assert stored is not None and stored[1] == tuple(reports)

    assert read_detection("another machine") is None
    data = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**data, "written_at": time.time() - detection_cache.MAX_AGE_S - 60}), "utf-8")
    assert read_detection(fingerprint) is None
    for damaged in ("{", "[]", json.dumps({**data, "platform": {"system": 3}}), "\x00\xff"):
        path.write_text(damaged, encoding="utf-8", errors="surrogateescape")
        assert read_detection(fingerprint) is None
    path.unlink()
    assert (
        write_detection(fingerprint, platform.model_copy(update={"cuda_error": "RuntimeError: busy"}), reports) is None
    )
    assert not path.exists()
