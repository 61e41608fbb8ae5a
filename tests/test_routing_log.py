"""The routing log: exact record counts under threads and processes, rotation by size, privacy, read-back."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mamba_router.errors import ConfigurationError
from mamba_router.routing.routing_log import RoutingLog

WRITER = textwrap.dedent(
    """
    import sys, threading
    from mamba_router.routing.routing_log import RoutingLog
    path, writer, threads, per_thread, max_bytes, backups = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
    log = RoutingLog(path, max_bytes=max_bytes, backups=backups)
    def run(t):
        for i in range(per_thread):
            log.append({"writer": writer, "thread": t, "i": i, "padding": "x" * (i % 50)})
    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    [w.start() for w in workers]
    [w.join() for w in workers]
    """
)


def _all_lines(log: RoutingLog) -> list[str]:
    return [line for path in log.files() for line in path.read_text(encoding="utf-8").splitlines()]


def _write_concurrently(
    path: Path, *, processes: int, threads: int, per_thread: int, max_bytes: int, backups: int
) -> None:
    args = [str(threads), str(per_thread), str(max_bytes), str(backups)]
    children = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"p{n}", *args]) for n in range(processes)]
    in_process = RoutingLog(path, max_bytes=max_bytes, backups=backups)

    def run(t: int) -> None:
        for i in range(per_thread):
            in_process.append({"writer": "main", "thread": t, "i": i, "padding": "x" * (i % 50)})

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for child in children:
        assert child.wait(timeout=300) == 0


def test_threads_and_processes_lose_and_tear_no_record(tmp_path: Path) -> None:
    path = tmp_path / "routing.jsonl"
    _write_concurrently(path, processes=3, threads=4, per_thread=150, max_bytes=50 * 1024 * 1024, backups=1)
    log = RoutingLog(path)
    lines = _all_lines(log)
    records = [json.loads(line) for line in lines]  # every line is valid JSON
    assert len(records) == 4 * 4 * 150
    seen = {(r["writer"], r["thread"], r["i"]) for r in records}
    assert len(seen) == len(records)  # no duplicates, so nothing lost either
    readout = log.read(limit=None)
    assert readout.malformed_lines == 0 and len(readout.records) == len(records)


def test_rotation_bounds_every_file_and_keeps_every_record_when_backups_suffice(tmp_path: Path) -> None:
    path = tmp_path / "routing.jsonl"
    max_bytes = 16 * 1024
    _write_concurrently(path, processes=2, threads=3, per_thread=100, max_bytes=max_bytes, backups=200)
    log = RoutingLog(path, max_bytes=max_bytes, backups=200)
    files = log.files()
    assert len(files) > 3
    assert all(p.stat().st_size <= max_bytes for p in files)
    records = [json.loads(line) for line in _all_lines(log)]
    assert len(records) == 3 * 3 * 100
    assert len({(r["writer"], r["thread"], r["i"]) for r in records}) == len(records)


def test_rotation_drops_the_oldest_file_beyond_the_backups(tmp_path: Path) -> None:
    log = RoutingLog(tmp_path / "r.jsonl", max_bytes=2048, backups=2)
    for i in range(500):
        log.append({"i": i, "pad": "y" * 40})
    assert [p.name for p in log.files()] == ["r.jsonl.2", "r.jsonl.1", "r.jsonl"]
    total = sum(p.stat().st_size for p in log.files())
    assert total <= 3 * 2048
    last = log.read(limit=5).records
    assert [r["i"] for r in last] == [495, 496, 497, 498, 499]


def test_read_counts_malformed_lines_and_reads_across_rotated_files(tmp_path: Path) -> None:
    log = RoutingLog(tmp_path / "r.jsonl", max_bytes=1024, backups=5)
    for i in range(60):
        log.append({"i": i})
    with open(log.path, "a", encoding="utf-8") as handle:
        handle.write('{"torn": \n[1, 2]\n')
    readout = log.read(limit=40)
    assert [r["i"] for r in readout.records] == list(range(20, 60))
    assert readout.malformed_lines == 2
    with pytest.raises(ConfigurationError, match="limit"):
        log.read(limit=-1)


@settings(max_examples=30)
@given(text=st.text(min_size=1, max_size=50), other=st.text(min_size=1, max_size=50))
def test_salted_hashes_match_for_equal_texts_only(tmp_path_factory, text, other) -> None:
    log = RoutingLog(tmp_path_factory.mktemp("salt") / "r.jsonl")
    assert log.salted_hash(text) == log.salted_hash(text)
    if text != other:
        assert log.salted_hash(text) != log.salted_hash(other)
    another_install = RoutingLog(tmp_path_factory.mktemp("salt2") / "r.jsonl")
    assert another_install.salted_hash(text) != log.salted_hash(text)


def test_log_files_are_private_to_the_user(tmp_path: Path) -> None:
    log = RoutingLog(tmp_path / "r.jsonl")
    log.append({"a": 1})
    log.salted_hash("x")
    if sys.platform != "win32":
        assert log.path.stat().st_mode & 0o077 == 0
        assert (tmp_path / "r.jsonl.salt").stat().st_mode & 0o077 == 0


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "rules",
                    "time",
                    "kind",
                    "model_used",
                    "backend",
                    "token_count",
                    "pages",
                    "fallback_used",
                    "outcome",
                    "error",
                    "name",
                    "fired",
                    "x",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=12,
)


@given(lines=st.lists(JSON_VALUES, min_size=1, max_size=6))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_log_command_reads_any_json_lines_without_crashing(tmp_path_factory, lines, capsys, monkeypatch) -> None:
    """Issue 14, item 10: valid JSON of another shape ({"rules": "x"}) crashed `mamba-router log`."""
    from mamba_router.cli import main

    path = tmp_path_factory.mktemp("log") / "routing.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    readout = RoutingLog(path).read()
    assert len(readout.records) + readout.malformed_lines == len(lines)
    monkeypatch.setenv("MAMBA_ROUTER__LOG__PATH", str(path))
    for args in (["log"], ["log", "--json"]):
        assert main([*args, "--limit", "10"]) == 0
    capsys.readouterr()
