"""A disk that fills up, on a real tmpfs mounted for the test (the tests run as root).

- A ledger write cut short by ENOSPC leaves a torn last line: `verify_ledger` calls it
  ``incomplete`` (``agentkit audit verify``: exit 3, ``INCOMPLETE (torn last line at seq N)``),
  never TAMPERED, and reopening the ledger cuts it and records a ``recovered`` line.
- A blob that does not fit leaves no partial temporary file behind.
- A run whose disk fills up fails cleanly (a `RunResult` with the disk's error, not a crash),
  with a ledger that is intact or incomplete, never tampered.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentkit.audit import Ledger, verify_ledger
from agentkit.cli import app
from agentkit.errors import RunFailed
from agentkit.run import arun
from agentkit.task import TaskSpec
from agentkit.testing import RecordedRequest, Reply, ScriptedModelServer, reply

runner = CliRunner()
PAGE = 4096


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted after the test."""
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs",
                           str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"these tests mount a tmpfs and must run as root: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(folder: Path) -> int:
    """Write a filler file until the file system refuses (ENOSPC); returns bytes written."""
    written = 0
    with (folder / "filler").open("wb", buffering=0) as fh:
        for size in (65536, 4096, 1):
            try:
                while True:
                    written += fh.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return written


def files_in(folder: str | Path) -> list[str]:
    """What a folder holds (nothing if it does not exist)."""
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_enospc_mid_write_is_a_torn_tail_not_tampering(tmpfs: Path) -> None:
    """Records are written, the disk is filled, and a 10 KB record no longer fits: the write
    stops mid-line. Verify says incomplete at that seq (CLI exit 3), the records before it
    intact; after space is freed, reopening recovers and the ledger verifies."""
    path = tmpfs / "run.jsonl"
    ledger = Ledger(path)
    for i in range(5):
        ledger.record("tool.call", {"i": i}, run_id="r", node_id=None, ts=float(i))
    ledger.flush()
    while path.stat().st_size % PAGE == 0:  # leave room in the file's last page, so the
        ledger.record("tick", {}, run_id="r", node_id=None, ts=9.0)  # write starts, then stops
        ledger.flush()
    written_before = ledger.count
    fill(tmpfs)
    ledger.record("budget.reserved", {"data": "x" * 10_000}, run_id="r", node_id=None, ts=10.0)
    with pytest.raises(RunFailed, match="No space left on device"):
        ledger.flush()
    ledger.close()

    result = verify_ledger(path)
    assert result.state == "incomplete" and result.count == written_before, result
    assert result.first_bad_seq == written_before
    cli = runner.invoke(app, ["audit", "verify", str(path)])
    assert cli.exit_code == 3, cli.stdout
    assert f"INCOMPLETE (torn last line at seq {written_before})" in cli.stdout
    assert "TAMPERED" not in cli.stdout

    (tmpfs / "filler").unlink()
    with Ledger(path) as reopened:
        reopened.record("run.started", {}, run_id="r2", node_id=None, ts=11.0)
    kinds = [json.loads(line)["kind"] for line in path.read_text().splitlines()]
    assert kinds[written_before] == "recovered" and verify_ledger(path).ok


def test_a_blob_that_does_not_fit_leaves_no_partial_file(tmpfs: Path) -> None:
    """A 2 MB string (stored as a blob) on a 1 MiB file system: the write fails, the run is
    told (RunFailed naming the disk), and the blob folder holds no partial temporary file."""
    path = tmpfs / "run.jsonl"
    ledger = Ledger(path)
    ledger.record("run.started", {}, run_id="r", node_id=None, ts=1.0)
    with pytest.raises(RunFailed, match="cannot write audit blob .*No space left"):
        ledger.record("url.fetched", {"text": "y" * 2_000_000}, run_id="r", node_id=None,
                      ts=2.0)
    ledger.close()
    assert files_in(tmpfs / "run.jsonl.blobs") == []
    assert verify_ledger(path).ok  # the record that failed was never chained


def _task(srv: ScriptedModelServer, tmp_path: Path) -> TaskSpec:
    return TaskSpec.model_validate({
        "name": "full", "goal": "say something long", "mode": "agent", "model": "m",
        "models": {"m": {"profile": "deepseek", "model": "deepseek-chat",
                         "base_url": srv.base_url, "stream": False}},
        "tools": ["list_files"], "workspace": str(tmp_path),
        "retry": {"attempts": 1, "node_attempts": 1}})


async def test_a_run_whose_disk_fills_up_fails_cleanly_with_a_verifiable_ledger(
        tmpfs: Path, tmp_path: Path) -> None:
    """The ledger folder is on the tmpfs; while the model is answering, the disk fills up.
    The run ends with status failed and the disk's error (no exception escapes `arun`), and
    the ledger is intact or incomplete (a torn last line), never tampered; reopening
    recovers it. Before the fix `audit verify` said TAMPERED."""
    ledger_dir = tmpfs / "runs"

    def fill_then_answer(request: RecordedRequest) -> Reply:
        fill(tmpfs)
        return reply("tide pools " * 1000)  # an 11 KB answer: more than a page

    async with ScriptedModelServer("deepseek") as srv:
        srv.script(fill_then_answer)
        result = await arun(_task(srv, tmp_path), ledger_dir=ledger_dir, environ={})
    assert result.status == "failed" and result.error is not None
    assert result.error.type == "RunFailed" and "No space left" in result.error.message
    ledger = Path(str(result.ledger))
    verdict = verify_ledger(ledger)
    assert verdict.state in ("intact", "incomplete"), verdict
    (tmpfs / "filler").unlink()
    with Ledger(ledger) as reopened:
        reopened.record("run.started", {}, run_id="again", node_id=None, ts=1.0)
    assert verify_ledger(ledger).ok


async def test_a_run_whose_answer_cannot_be_stored_leaves_no_partial_blob(
        tmpfs: Path, tmp_path: Path) -> None:
    """A 1.5 MB answer must go to a blob, which cannot fit on the 1 MiB disk: the run fails
    naming the disk, no temporary blob is left, and the ledger verifies."""
    async with ScriptedModelServer("deepseek") as srv:
        srv.script(reply("z" * 1_500_000))
        result = await arun(_task(srv, tmp_path), ledger_dir=tmpfs / "runs", environ={})
    assert result.status == "failed" and result.error is not None
    assert "cannot write audit blob" in result.error.message
    assert files_in(f"{result.ledger}.blobs") == []
    assert verify_ledger(str(result.ledger)).ok
