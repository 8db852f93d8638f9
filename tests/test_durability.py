"""What a ``kill -9`` cannot take back: a side effect is in the ledger, handed to the kernel,
before it happens (and with it every record before it, the model answer that asked for it
included); everything else is written within 64 events or 250 ms.

The end-to-end case is a real ``agentkit run`` child process whose scripted agent writes three
files; the test kills it with SIGKILL as soon as the third file is on disk (it waits on the
file's content, not a sleep) and reads what the ledger kept. Before the fix the ledger held 2
records and no trace of the writes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentkit.audit import Ledger, verify_ledger
from agentkit.runtime import Runtime
from agentkit.task import TaskSpec
from agentkit.testing import RecordedRequest, Reply, ScriptedModelServer, call, reply
from agentkit.tools import Tool, ToolArgs, ToolContext, ToolOutput, invoke_tool

FILES = {"a.txt": "alpha\n", "b.txt": "beta\n", "c.txt": "gamma\n"}


def records(path: Path) -> list[dict[str, Any]]:
    """The ledger's complete lines (a torn last line is not a record)."""
    return [json.loads(line) for line in path.read_bytes().split(b"\n")[:-1]]


def wait_until(condition: Callable[[], bool], what: str, limit_s: float = 120.0) -> None:
    """Return as soon as `condition()` holds, checking every 2 ms; the limit only keeps a
    broken build from hanging the test (it is not the figure under test)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.002)


def test_kill_9_after_three_writes_keeps_every_write_in_the_ledger(tmp_path: Path) -> None:
    """Three write_file calls, then the model's fourth answer is held so the run cannot end.
    SIGKILL lands right after c.txt is on disk. The ledger holds all three tool.call records
    (marked side_effects, so written before each write, with the three answers that asked for
    them) and the file.diff of every write that had completed before the next call (a.txt,
    b.txt; c.txt's if it got that far, with the content's sha256); it verifies, after a reopen
    cuts a torn tail if the kill left one."""
    workspace, ledger_dir = tmp_path / "ws", tmp_path / "ledger"
    workspace.mkdir()

    async def never(request: RecordedRequest) -> Reply:
        await asyncio.get_running_loop().create_future()  # held until the server stops
        return reply("too late")

    with ScriptedModelServer("deepseek") as srv:
        srv.script(*[reply(tool_calls=[call("write_file", {"path": name, "content": text})])
                     for name, text in FILES.items()], never)
        task = tmp_path / "task.yaml"
        task.write_text(textwrap.dedent(f"""\
            name: kill-9
            goal: write three files
            mode: agent
            model: m
            models:
              m: {{profile: deepseek, model: deepseek-chat, base_url: "{srv.base_url}",
                  stream: false}}
            tools: [write_file]
            workspace: "{workspace}"
            retry: {{attempts: 1, node_attempts: 1}}
            """))
        proc = subprocess.Popen([sys.executable, "-m", "agentkit", "run", str(task), "--json",
                                 "--ledger-dir", str(ledger_dir)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        third = workspace / "c.txt"
        try:
            wait_until(lambda: proc.poll() is not None or (
                third.is_file() and third.read_text() == FILES["c.txt"]), "the third write")
            assert proc.poll() is None, f"the run ended early: {proc.communicate()[1][-3000:]}"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    (ledger,) = ledger_dir.glob("*.jsonl")
    assert verify_ledger(ledger).state in ("intact", "incomplete")
    kept = records(ledger)
    calls = [r["data"] for r in kept if r["kind"] == "tool.call"]
    assert [c["arguments"]["path"] for c in calls] == list(FILES), kept
    assert all(c["side_effects"] is True for c in calls)
    diffs = {r["data"]["path"]: r["data"] for r in kept if r["kind"] == "file.diff"}
    assert {"a.txt", "b.txt"} <= set(diffs), sorted(diffs)
    for name, diff in diffs.items():
        assert diff["after_sha256"] == hashlib.sha256(FILES[name].encode()).hexdigest()
    answers = [r for r in kept if r["kind"] == "model.response"]
    assert len(answers) == 3  # every answered model call

    with Ledger(ledger) as reopened:  # what the next writer does first: cut a torn tail
        reopened.record("run.started", {"resumed": True}, run_id="again", node_id=None, ts=0.0)
    assert verify_ledger(ledger).ok


class TouchArgs(ToolArgs):
    name: str


class Touch(Tool):
    """Creates a file; before doing so it reads the ledger from disk, as a crash would leave
    it, to see whether its own call is already recorded there."""

    name = "touch"
    description = "create a file"
    args_model = TouchArgs
    side_effects = True

    def __init__(self, ledger: Path) -> None:
        self.ledger, self.seen_before_effect = ledger, False

    async def call(self, args: Any, ctx: ToolContext) -> ToolOutput:
        on_disk = records(self.ledger)
        self.seen_before_effect = any(r["kind"] == "tool.call" and r["data"]["tool"] == "touch"
                                      for r in on_disk)
        (ctx.workspace / args.name).write_text("")
        return ToolOutput("done")


async def test_a_side_effect_is_on_disk_before_the_tool_acts(tmp_path: Path) -> None:
    """A tool declaring ``side_effects = True`` finds its own ``tool.call`` record in the
    ledger file when it starts, although nothing else made the ledger write."""
    task = TaskSpec.model_validate({"name": "t", "goal": "g", "model": "m",
                                    "models": {"m": {"model": "x"}}})
    runtime = Runtime(task, ledger_dir=tmp_path / "ledger", workspace=tmp_path)
    async with runtime:
        assert runtime.ledger_path is not None
        tool = Touch(runtime.ledger_path)
        runtime.emit("tool.log", {"note": "buffered, nothing forces a write"})
        await invoke_tool(tool, {"name": "x"}, runtime.tool_context(node_id="n"))
    assert tool.seen_before_effect


def test_other_events_wait_for_at_most_64_of_them(tmp_path: Path) -> None:
    """Events that are not write-through are buffered until the 64th, then written together
    (no event loop here, and a time bound too long to matter)."""
    path = tmp_path / "run.jsonl"
    ledger = Ledger(path, flush_after_s=3600)
    for i in range(63):
        ledger.record("budget.reserved", {"i": i}, run_id="r", node_id=None, ts=float(i))
    assert path.read_bytes() == b""
    ledger.record("budget.reserved", {"i": 63}, run_id="r", node_id=None, ts=63.0)
    assert len(records(path)) == 64
    ledger.close()


async def test_a_quiet_run_writes_its_buffer_within_the_time_bound(tmp_path: Path) -> None:
    """One buffered event and then silence (the run waits on a slow model): the ledger's timer
    on the event loop writes it out; no further event is needed."""
    path = tmp_path / "run.jsonl"
    ledger = Ledger(path, flush_after_s=0.05)
    ledger.record("budget.reserved", {"i": 0}, run_id="r", node_id=None, ts=0.0)
    assert path.read_bytes() == b""
    await asyncio.to_thread(wait_until, lambda: path.stat().st_size > 0, "the timer's write")
    assert len(records(path)) == 1
    ledger.close()


def test_the_time_bound_holds_for_a_ledger_outliving_its_first_event_loop(tmp_path: Path) -> None:
    """A timer armed on a loop that ended before it fired must not keep a later loop from
    arming its own (a ledger used by two `asyncio.run` calls in a row)."""
    path = tmp_path / "run.jsonl"
    ledger = Ledger(path, flush_after_s=0.05)

    async def first() -> None:
        ledger.record("budget.reserved", {"i": 0}, run_id="r", node_id=None, ts=0.0)

    async def second() -> None:
        ledger.record("budget.reserved", {"i": 1}, run_id="r", node_id=None, ts=1.0)
        await asyncio.to_thread(wait_until, lambda: len(records(path)) == 2, "the timer's write")

    asyncio.run(first())  # ends before its timer fires
    ledger.flush()
    asyncio.run(second())
    ledger.close()
