"""Run ids name ledger files, so they are validated and used once.

- Two processes start a run with the same ``run_id`` at the same moment: exactly one runs, the
  other fails with a ConfigError naming the existing ledger, and the ledger holds one run's
  records only (before: the two interleaved in one file).
- A run id that is a path (``../../x``), empty, too long or odd is refused before anything is
  written: the whole folder tree is byte-for-byte what it was.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agentkit.audit import verify_ledger
from agentkit.errors import ConfigError
from agentkit.run import arun, start
from agentkit.task import TaskSpec
from agentkit.testing import ScriptedModelServer, reply

CHILD = textwrap.dedent("""\
    import asyncio, json, sys
    from agentkit.errors import AgentkitError
    from agentkit.run import arun
    from agentkit.task import TaskSpec

    async def main() -> None:
        task = TaskSpec.model_validate_json(sys.argv[1])
        try:
            result = await arun(task, run_id="same-id", ledger_dir=sys.argv[2], environ={})
            print(json.dumps({"status": result.status}))
        except AgentkitError as exc:
            print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))

    asyncio.run(main())
    """)


def _task(base_url: str, workspace: Path) -> TaskSpec:
    return TaskSpec.model_validate({
        "name": "ids", "goal": "say hi", "mode": "agent", "model": "m",
        "models": {"m": {"profile": "deepseek", "model": "deepseek-chat", "base_url": base_url,
                         "stream": False}},
        "workspace": str(workspace), "retry": {"attempts": 1, "node_attempts": 1}})


def test_two_processes_with_one_run_id_get_one_ledger_and_a_clear_error(tmp_path: Path) -> None:
    ledger_dir = tmp_path / "ledger"
    with ScriptedModelServer("deepseek", default=reply("hi")) as srv:
        task = _task(srv.base_url, tmp_path).model_dump_json()
        procs = [subprocess.Popen([sys.executable, "-c", CHILD, task, str(ledger_dir)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        outcomes = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)  # a bound against hanging only
            assert proc.returncode == 0, err
            outcomes.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(o.get("status", o.get("error")) for o in outcomes) == ["ConfigError",
                                                                         "succeeded"]
    refused = next(o for o in outcomes if "error" in o)
    assert "'same-id' already has a ledger" in refused["message"]
    ledger = ledger_dir / "same-id.jsonl"
    # the first run's ledger and its head sidecar, nothing of the refused run
    assert sorted(ledger_dir.iterdir()) == [ledger, ledger.with_name("same-id.jsonl.head")]
    kinds = [json.loads(line)["kind"] for line in ledger.read_text().splitlines()]
    assert kinds.count("run.started") == 1 and kinds.count("run.finished") == 1
    assert verify_ledger(ledger).ok


async def test_a_second_run_with_a_used_id_leaves_the_first_ledger_untouched(tmp_path: Path) -> None:
    ledger_dir = tmp_path / "ledger"
    async with ScriptedModelServer("deepseek", default=reply("hi")) as srv:
        task = _task(srv.base_url, tmp_path)
        first = await arun(task, run_id="kept", ledger_dir=ledger_dir, environ={})
        assert first.ok and first.ledger is not None
        before = tree(ledger_dir)
        with pytest.raises(ConfigError, match="'kept' already has a ledger .* a run id is used once"):
            await arun(task, run_id="kept", ledger_dir=ledger_dir, environ={})
        assert srv.stats.requests == 1  # the second run called no model
    assert tree(ledger_dir) == before  # not one byte of the first run's ledger changed
    assert verify_ledger(first.ledger, expected_head=first.ledger_head).ok


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its content (None for folders)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("run_id", ["../../x", "../x", "a/b", "/tmp/x", "..", ".hidden", "",
                                    "x" * 129, "a\x00b", "line\nbreak", "dot..dot"])
async def test_a_bad_run_id_is_refused_before_anything_is_written(tmp_path: Path,
                                                                  run_id: str) -> None:
    """`run_id="../../x"` would have put the ledger two folders above the ledger folder."""
    ledger_dir = tmp_path / "a" / "b" / "ledger"
    ledger_dir.mkdir(parents=True)
    task = _task("http://127.0.0.1:9/v1", tmp_path)
    before = tree(tmp_path)
    with pytest.raises(ConfigError, match="run id .* is not allowed"):
        start(task, run_id=run_id, ledger_dir=ledger_dir, environ={})
    assert tree(tmp_path) == before
