"""An MCP server's life is the run's: a stdio server (and what it started) is gone after the
run succeeds, fails or is cancelled, and after a ``kill -9`` of the run's process; and an
agent-mode run calls an MCP tool and a Python @tool in one turn, at the same time, with both
calls and results in the ledger."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _mcp_helpers import KEY_ENV, agent_task, alive, hostile, wait_gone

from agentkit import arun, start, tool, verify_ledger
from agentkit.events import Event
from agentkit.testing import ErrorReply, Reply, ScriptedModelServer, call, error, reply

RUN_AND_WAIT = Path(__file__).parent / "data" / "mcp" / "run_and_wait.py"


def ledger_events(path: str | None) -> list[dict[str, Any]]:
    assert path is not None
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_kill_9_of_the_run_leaves_no_server_process(tmp_path: Path) -> None:
    """The run's process is killed with SIGKILL (no clean-up code runs in it): the launcher's
    parent-death signal kills the server and the child the server started."""
    spec = {"name": "t", "goal": "g", "model": "m", "models": {"m": {"model": "x"}},
            "mcp_servers": {"h": hostile()}, "tools": ["h"], "workspace": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, str(RUN_AND_WAIT), json.dumps(spec)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        server, child = json.loads(proc.stdout.readline())
        assert alive(server) and alive(child)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert wait_gone(server), f"MCP server {server} outlived its run"
        assert wait_gone(child), f"the server's child {child} outlived the run"
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("outcome", ["succeeded", "failed", "cancelled"])
async def test_server_is_gone_after_the_run_whatever_its_end(tmp_path: Path, outcome: str) -> None:
    """Success, failure (the model errs after the server started) and cancellation (while a
    call hangs): the run closes the session and the server process is gone."""
    hanging = asyncio.Event()

    def sink(event: Event) -> None:
        if event.kind == "tool.call" and event.data["tool"] == "h_hang":
            hanging.set()

    async with ScriptedModelServer("deepseek") as srv:
        endings: dict[str, Reply | ErrorReply] = {
            "succeeded": reply("done"), "failed": error(400, "bad request"),
            "cancelled": reply(tool_calls=[call("h_hang", {})])}
        last = endings[outcome]
        srv.script(reply(tool_calls=[call("h_pid", {})]), last)
        task = agent_task(srv, tmp_path, mcp_servers={"h": hostile()}, tools=["h"])
        run = start(task, environ=KEY_ENV, ledger_dir=tmp_path / "runs", sinks=[sink])
        if outcome == "cancelled":
            await hanging.wait()
            run.cancel()
        result = await run.result()
    assert result.status == outcome
    pid = next(e["data"]["data"]["structured"]["result"] for e in ledger_events(result.ledger)
               if e["kind"] == "tool.result" and e["data"]["tool"] == "h_pid")
    assert wait_gone(pid)
    kinds = [e["kind"] for e in ledger_events(result.ledger)]
    # the run's resources close after run.finished, before the ledger does
    assert kinds.count("mcp.started") == 1 and kinds[-1] == "mcp.stopped"
    assert result.ledger is not None and verify_ledger(result.ledger).ok


async def test_agent_calls_an_mcp_tool_and_a_python_tool_in_parallel(tmp_path: Path) -> None:
    """One model turn asks for both; the MCP tool blocks until the Python tool writes to a
    named pipe, and the Python tool blocks until a reader opens it, so the turn succeeds only
    if both run at the same time. The ledger holds both calls (each with its source) and
    both results."""
    fifo = tmp_path / "meet"
    os.mkfifo(fifo)

    @tool(timeout=20)
    def knock(path: str) -> str:
        """Write a line to the named pipe at `path`."""
        with open(path, "w", encoding="utf-8") as pipe:
            pipe.write("knock knock\n")
        return "knocked"

    try:
        async with ScriptedModelServer("deepseek") as srv:
            srv.script(reply(reasoning="both at once", tool_calls=[
                call("h_fifo", {"path": str(fifo)}), call("knock", {"path": str(fifo)})]),
                reply("The pipe said knock knock."))
            task = agent_task(srv, tmp_path, tools=["h.fifo"],
                              mcp_servers={"h": hostile(timeout_s=20)})
            result = await arun(task, tools=[knock], environ=KEY_ENV, ledger_dir=tmp_path)
        tool_msgs = [m["content"] for m in srv.requests[1].messages if m["role"] == "tool"]
    finally:  # a failed run could leave a blocked open() behind: release it
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        os.close(fd)
    assert result.status == "succeeded" and result.answer == "The pipe said knock knock."
    assert "knock knock" in tool_msgs[0] and tool_msgs[1] == "knocked"
    events = ledger_events(result.ledger)
    calls = {e["data"]["tool"]: e["data"] for e in events if e["kind"] == "tool.call"}
    results = {e["data"]["tool"]: e["data"] for e in events if e["kind"] == "tool.result"}
    assert calls["h_fifo"]["source"] == "mcp" and calls["h_fifo"]["server"] == "h"
    assert calls["knock"]["source"] == "python" and calls["knock"]["ref"].endswith(".knock")
    assert results["h_fifo"]["ok"] and results["h_fifo"]["data"]["text"] == "knock knock"
    assert results["knock"]["ok"] and results["knock"]["data"] == {"result": "knocked"}
