"""Issue 14, item 2: a full disk never tears a routing-log record, the failure reaches the caller, and appends
resume cleanly once space is back. Two disks: a real 64 KiB tmpfs (mounted in a user namespace, where the machine
allows it) and an injected ENOSPC (a byte budget for the log's directory, on every Linux machine)."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from mamba_router.routing.router import Router
from mamba_router.routing.routing_log import RoutingLog, RoutingLogError
from mamba_router.settings.schema import load_config
from mamba_router.transformer import TransformerBackend

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and Linux mounts")


class SmallDisk:
    """``os.write`` to files in ``directory`` fails like a disk with ``capacity`` bytes: short, then ENOSPC."""

    def __init__(self, directory: Path, capacity: int) -> None:
        self.directory = directory.resolve()
        self.capacity = capacity
        self.real_write = os.write

    def used(self) -> int:
        return sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())

    def write(self, fd: int, data: Any) -> int:
        try:
            target = Path(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            target = None
        if target is None or target.parent != self.directory:
            return self.real_write(fd, data)
        room = self.capacity - self.used()
        if room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.real_write(fd, bytes(data[:room]))


@pytest.fixture()
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SmallDisk:
    directory = tmp_path / "disk"
    directory.mkdir()
    disk = SmallDisk(directory, capacity=4096)
    monkeypatch.setattr(os, "write", disk.write)
    return disk


def _record(index: int) -> dict[str, Any]:
    return {"kind": "route", "i": index, "padding": "x" * (37 * (index % 7))}


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


def test_a_full_disk_rolls_a_record_back_and_appends_resume_when_space_is_back(small_disk: SmallDisk) -> None:
    log = RoutingLog(small_disk.directory / "routing.jsonl", max_bytes=1 << 20)
    written, failures = [], 0
    for index in range(200):
        try:
            log.append(_record(index))
        except RoutingLogError as exc:
            failures += 1
            assert "No space left" in str(exc) or "stopped short" in str(exc)
            continue
        written.append(index)
    assert failures > 50 and written  # the disk filled, and every later append was refused
    raw = log.path.read_bytes()
    assert raw.endswith(b"\n")  # no half-written record at the end
    assert [json.loads(line)["i"] for line in raw.splitlines()] == written
    small_disk.capacity = 1 << 20  # space is back
    for index in range(200, 210):
        log.append(_record(index))
        written.append(index)
    readout = log.read()
    assert readout.malformed_lines == 0 and [r["i"] for r in readout.records] == written


def test_a_line_torn_by_someone_else_does_not_swallow_the_next_record(tmp_path: Path) -> None:
    log = RoutingLog(tmp_path / "routing.jsonl")
    log.append(_record(1))
    with open(log.path, "ab") as handle:
        handle.write(b'{"kind":"route","i":2,"pad')  # a crash mid-write in an older version or another program
    log.append(_record(3))
    readout = log.read()
    assert [r["i"] for r in readout.records] == [1, 3] and readout.malformed_lines == 1


def test_the_salt_is_written_whole_or_not_at_all(small_disk: SmallDisk) -> None:
    small_disk.capacity = 10  # room for a third of the 32 hex digits
    log = RoutingLog(small_disk.directory / "routing.jsonl")
    with pytest.raises(RoutingLogError, match="hash salt"):
        log.salted_hash("a question")
    assert not (small_disk.directory / "routing.jsonl.salt").exists()
    assert not list(small_disk.directory.glob("*.partial"))
    small_disk.capacity = 1 << 20
    assert len(log.salted_hash("a question")) == 32
    (small_disk.directory / "routing.jsonl.salt").write_text("0123")  # damaged by hand
    with pytest.raises(RoutingLogError, match="damaged"):
        RoutingLog(small_disk.directory / "routing.jsonl").salted_hash("a question")


def _router(log_path: Path, llama_dir: Path, **overrides: Any) -> Router:
    settings = {"transformer.model": str(llama_dir), "log.path": str(log_path), **overrides}
    return Router(load_config(environ={}, overrides=settings), backends=[TransformerBackend()])


def test_an_answer_is_kept_when_the_log_cannot_be_written(small_disk: SmallDisk, llama_dir: Path, caplog) -> None:
    router = _router(small_disk.directory / "routing.jsonl", llama_dir)
    router.route("warm up the salt")
    small_disk.capacity = small_disk.used()  # the disk is now full
    with caplog.at_level(logging.WARNING, logger="mamba_router.routing.router"):
        answer = router.generate("Was the appeal allowed?", max_new_tokens=4)
        decision = router.route("Was the appeal allowed?")
    assert answer.generation.completion_tokens > 0 and "No space left" in (answer.log_error or "")
    assert "No space left" in (decision.log_error or "")
    assert "log" in answer.to_text() and "not recorded" in answer.to_text()
    assert sum("did not record" in r.getMessage() for r in caplog.records) == 2
    small_disk.capacity = 1 << 20
    assert router.route("Was the appeal allowed?").log_error is None
    assert [r["kind"] for r in router.read_log(None)] == ["route", "route"]


def test_with_log_required_an_unrecorded_answer_is_an_error(small_disk: SmallDisk, llama_dir: Path) -> None:
    router = _router(small_disk.directory / "routing.jsonl", llama_dir, **{"log.required": True})
    small_disk.capacity = 0
    with pytest.raises(RoutingLogError, match="salt|routing log"):
        router.route("Was the appeal allowed?")


REAL_DISK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from mamba_router.routing.router import Router
    from mamba_router.settings.schema import load_config
    from mamba_router.transformer import TransformerBackend

    disk, model = Path(sys.argv[1]), sys.argv[2]
    filler = disk / "filler"
    filler.write_bytes(b"\\0" * (64 * 1024 - 12 * 1024))  # leaves about 12 KiB for the log and its salt
    config = load_config(environ={}, overrides={"transformer.model": model, "log.path": str(disk / "routing.jsonl")})
    router = Router(config, backends=[TransformerBackend()])
    recorded, refused = 0, 0
    for i in range(120):
        decision = router.route("Was the appeal allowed? " + "x" * (i % 9) * 20)
        if decision.log_error is None:
            recorded += 1
        else:
            refused += 1
    torn = (disk / "routing.jsonl").read_bytes()
    before = len([json.loads(line) for line in torn.splitlines()])
    filler.unlink()
    for i in range(5):
        assert router.route("Was the appeal allowed?").log_error is None
    readout = router.log.read()
    print(json.dumps({"recorded": recorded, "refused": refused, "lines_when_full": before,
                      "ends_with_newline": torn.endswith(b"\\n"), "records": len(readout.records),
                      "malformed": readout.malformed_lines}))
    """
)


def test_a_real_full_tmpfs(tmp_path: Path, llama_dir: Path) -> None:
    """The reproduction as filed: 64 KiB tmpfs, route() until the disk is full, then free space and go on."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {mount}"],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {probe.stderr.decode(errors='replace')[:200]}")
    command = f'mount -t tmpfs -o size=64k tmpfs {mount} && exec {sys.executable} -c "$0" {mount} {llama_dir}'
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", command, REAL_DISK_SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["refused"] > 0 and report["recorded"] > 0, report
    assert report["lines_when_full"] == report["recorded"] and report["ends_with_newline"], report
    assert report["records"] == report["recorded"] + 5 and report["malformed"] == 0, report
