"""Approvals that wait: a tool call the task's ``approval`` names waits for a person's yes.

Every run here is a real run: the real agent loop and model adapter talk HTTP to a
`ScriptedModelServer` (DeepSeek dialect, replay rules enforced), `write_file` writes into a
temporary workspace, the ledger is the real hash-chained file. Decisions come through the
Python API, `agentkit approve` in another process, the sidecar file written before the run
starts, and the terminal prompt of `agentkit run` on a real pseudo-terminal. Nothing waits on
wall-clock time: tests react to events, and the timeout runs on a `FakeClock`.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agentkit import RunResult, start
from agentkit.approvals import (
    Approvals,
    Decision,
    append_decision,
    approvals_file,
    needs_approval,
    unmatched_entries,
)
from agentkit.audit import verify_ledger
from agentkit.cli import app
from agentkit.errors import ConfigError
from agentkit.events import Event
from agentkit.swarm.agents import SubmitPlan
from agentkit.task import ApprovalSpec, TaskSpec
from agentkit.testing import FakeClock, RecordedRequest, Reply, ScriptedModelServer, call, reply
from agentkit.tools import Tool, build_registry
from agentkit.tools.base import ToolArgs

WORKER, WRITER = "worker-model", "writer-model"
ENV = {"APPROVAL_KEY": "sk-approval-0123456789"}
#: the key of the first tool call of an agent-mode run's first turn
FIRST_CALL = "agent#1/agent#1/1/t0"
#: the key of node w's first tool call in the swarm test
KEY_OF_W = "w#1/w#1/1/t0"



def tool_results(req: RecordedRequest) -> list[str]:
    return req.texts("tool")


def writes_then_reports(path: str = "report.txt") -> Callable[[RecordedRequest], Reply]:
    """A worker that writes a file, then answers with what the tool told it."""
    def respond(req: RecordedRequest) -> Reply:
        results = tool_results(req)
        if not results:
            return reply(reasoning="Write it.",
                         tool_calls=[call("write_file", {"path": path, "content": "42\n"})])
        return reply(f"tool said: {results[-1]}", reasoning="Report.")
    return respond


def task_spec(srv: ScriptedModelServer, tmp_path: Path, **extra: Any) -> TaskSpec:
    def model(wire: str) -> dict[str, Any]:
        return {"profile": "deepseek", "model": wire, "base_url": srv.base_url,
                "api_key_env": "APPROVAL_KEY", "max_tokens": 256, "stream": False}

    spec: dict[str, Any] = {
        "name": "approvals", "goal": "Write the report.", "mode": "agent", "model": "work",
        "models": {"work": model(WORKER), "write": model(WRITER)},
        "roles": {"worker": "work", "synthesizer": "write"},
        "tools": ["write_file", "list_files"], "workspace": str(tmp_path / "ws"),
        "retry": {"attempts": 1, "base_delay_s": 0.0, "node_attempts": 1, "replans": 0},
        "approval": {"tools": ["write_file"]},
    }
    spec.update(extra)
    (tmp_path / "ws").mkdir(exist_ok=True)
    return TaskSpec.model_validate(spec)


def ledger_events(result: RunResult) -> list[dict[str, Any]]:
    assert result.ledger is not None
    assert verify_ledger(result.ledger).ok
    return [json.loads(line) for line in Path(result.ledger).read_text().splitlines()]


def of_kind(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == kind]


async def test_approved_through_the_api_the_call_runs_after_the_yes(tmp_path: Path) -> None:
    """The call waits (the file is not there when the request is seen), `run.approve` lets it
    through, and the ledger reads request -> decision (api) -> the tool call."""
    async with ScriptedModelServer("deepseek") as srv:
        srv.route(WORKER, default=writes_then_reports())
        run = start(task_spec(srv, tmp_path), ledger_dir=tmp_path / "runs", environ=ENV)
        async for event in run.events():
            if event.kind == "approval.requested":
                assert not (tmp_path / "ws" / "report.txt").exists()
                assert event.data["tool"] == "write_file"
                assert event.data["arguments"] == {"path": "report.txt", "content": "42\n"}
                assert run.approve(event.data["key"], who="tester")
                assert not run.approve(event.data["key"])  # the first decision stands
        result = await run.result()
    assert result.ok, result.error
    assert (tmp_path / "ws" / "report.txt").read_text() == "42\n"
    events = ledger_events(result)
    kinds = [e["kind"] for e in events]
    assert kinds.index("approval.requested") < kinds.index("approval.decided") \
        < kinds.index("tool.call")
    decided = of_kind(events, "approval.decided")[0]["data"]
    assert decided | {"reason": None} == {"key": FIRST_CALL, "tool": "write_file",
                                          "approved": True, "reason": None, "via": "api",
                                          "who": "tester"}
    assert of_kind(events, "tool.result")[0]["data"]["ok"] is True
    # the API's decision is in the sidecar too: a resumed run would honour it
    assert json.loads(approvals_file(result.ledger or "").read_text())["key"] == FIRST_CALL


async def test_denied_call_is_an_error_the_model_reads_and_other_nodes_go_on(tmp_path: Path) -> None:
    """Swarm: node `w` wants to write, node `r` only answers (its model replies once `w` is
    waiting). `r` finishes while `w` waits (node.finished for r comes between w's request and
    its decision), then `w` is denied; its model reads the reason, the run goes on to a
    synthesized answer."""
    plan = {"nodes": [{"id": "w", "goal": "Write the file.", "tools": ["write_file"]},
                      {"id": "r", "goal": "Recall the number.", "tools": []}]}

    w_waits = asyncio.Event()

    async def workers(req: RecordedRequest) -> Reply:
        text = "\n".join(req.texts("user"))
        if "Recall the number." in text:
            await w_waits.wait()  # r answers only once w is waiting for its decision
            return reply("The number is 42.", reasoning="Known.")
        return writes_then_reports()(req)

    async with ScriptedModelServer("deepseek") as srv:
        srv.route(WORKER, default=workers)
        srv.route(WRITER, default=lambda req: reply("Final: 42.", reasoning="Combine."))
        task = task_spec(srv, tmp_path, mode="swarm", plan=plan)
        run = start(task, ledger_dir=tmp_path / "runs", environ=ENV)
        seen: list[Event] = []
        key, denied = None, False
        async for event in run.events():
            seen.append(event)
            if event.kind == "approval.requested":
                key = event.data["key"]
                w_waits.set()
            r_done = any(e.kind == "node.finished" and e.node_id == "r" for e in seen)
            if key is not None and r_done and not denied:
                denied = run.deny(key, "not in production")
        result = await run.result()
    assert result.ok and not (tmp_path / "ws" / "report.txt").exists(), result.error
    kinds = [(e.kind, e.node_id) for e in seen]
    assert kinds.index(("approval.requested", "w")) < kinds.index(("node.finished", "r")) \
        < kinds.index(("approval.decided", "w")) < kinds.index(("node.finished", "w"))
    assert key == KEY_OF_W
    refused = next(e.data for e in seen if e.kind == "tool.result" and e.node_id == "w")
    assert (refused["ok"], refused["error"]["code"]) == (False, "denied")
    told = [r for r in srv.requests_for(WORKER) if "Write the file." in json.dumps(r.messages)]
    assert "denied by a person: not in production" in tool_results(told[-1])[-1] \
        and "denied by a person: not in production" in (result.nodes["w"].output or "")


async def test_no_decision_in_time_denies_on_the_runtime_clock(tmp_path: Path) -> None:
    """Nobody decides: after timeout_s on the run's (fake) clock the call is denied, the model
    reads why, and the run still ends with an answer."""
    clock = FakeClock()
    async with ScriptedModelServer("deepseek") as srv:
        srv.route(WORKER, default=writes_then_reports())
        task = task_spec(srv, tmp_path, approval={"tools": ["write_file"], "timeout_s": 600})
        run = start(task, ledger_dir=tmp_path / "runs", environ=ENV, clock=clock)
        result = await run.result()
    assert result.ok, result.error
    assert clock.monotonic() >= 600
    decided = of_kind(ledger_events(result), "approval.decided")[0]["data"]
    assert (decided["approved"], decided["via"]) == (False, "timeout")
    assert "denied: no person decided within 600 s" in (result.answer or "")
    assert not (tmp_path / "ws" / "report.txt").exists()


async def _agentkit(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentkit", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_agentkit_approve_from_another_process_decides_a_waiting_call(tmp_path: Path) -> None:
    """While the run waits, `agentkit approve LEDGER` lists the call, `agentkit approve LEDGER
    KEY --deny REASON` decides it from another process; the run picks that up from the
    sidecar. A second decision is refused (exit 1), an unknown key is bad input (exit 2)."""
    async with ScriptedModelServer("deepseek") as srv:
        srv.route(WORKER, default=writes_then_reports())
        run = start(task_spec(srv, tmp_path), ledger_dir=tmp_path / "runs", environ=ENV)
        ledger = str(tmp_path / "runs" / f"{run.run_id}.jsonl")
        async for event in run.events():
            if event.kind != "approval.requested":
                continue
            code, listed, _ = await _agentkit("approve", ledger, "--json")
            assert code == 0
            assert json.loads(listed)["pending"] == [
                {"key": FIRST_CALL, "node_id": "agent", "tool": "write_file",
                 "arguments": {"path": "report.txt", "content": "42\n"}}]
            code, _, err = await _agentkit("approve", ledger, "agent#1/nope/1/t9")
            assert code == 2 and "was never requested" in err
            code, said, _ = await _agentkit("approve", ledger, FIRST_CALL, "--deny",
                                            "use the staging folder", "--who", "ops")
            assert code == 0 and "denied" in said
        result = await run.result()
    assert result.ok, result.error
    decided = of_kind(ledger_events(result), "approval.decided")[0]["data"]
    assert (decided["via"], decided["who"], decided["reason"]) == \
        ("file", "ops", "use the staging folder")
    assert "denied by a person: use the staging folder" in (result.answer or "")
    code, said, _ = await _agentkit("approve", ledger, FIRST_CALL)
    assert code == 1 and "already decided" in said
    code, said, _ = await _agentkit("approve", ledger)
    assert code == 0 and "no tool call is waiting" in said


async def test_a_decision_already_in_the_sidecar_is_honoured_at_start(tmp_path: Path) -> None:
    """A decision written beside the ledger before the run opens it (as one made while the
    run was down is, before it resumes) counts at once: no waiting, no timeout (the fake
    clock never moves)."""
    clock = FakeClock()
    runs = tmp_path / "runs"
    runs.mkdir()
    append_decision(approvals_file(runs / "early.jsonl"),
                    Decision(key=FIRST_CALL, approved=True, via="file", who="ops"))
    async with ScriptedModelServer("deepseek") as srv:
        srv.route(WORKER, default=writes_then_reports())
        result = await start(task_spec(srv, tmp_path), ledger_dir=runs, environ=ENV,
                             clock=clock, run_id="early").result()
    assert result.ok, result.error
    assert (tmp_path / "ws" / "report.txt").read_text() == "42\n"
    assert clock.monotonic() == 0.0
    decided = of_kind(ledger_events(result), "approval.decided")[0]["data"]
    assert (decided["approved"], decided["via"], decided["who"]) == (True, "file", "ops")


async def test_side_effects_true_asks_only_for_side_effecting_tools(tmp_path: Path) -> None:
    """`side_effects: true` gates write_file (declares side effects) but not list_files; the
    key names the call's index within its turn."""
    def worker(req: RecordedRequest) -> Reply:
        if not tool_results(req):
            return reply(reasoning="Both.", tool_calls=[
                call("list_files", {}), call("write_file", {"path": "a.txt", "content": "x"})])
        return reply("done", reasoning="ok")

    async with ScriptedModelServer("deepseek") as srv:
        srv.route(WORKER, default=worker)
        run = start(task_spec(srv, tmp_path, approval={"side_effects": True}),
                    ledger_dir=tmp_path / "runs", environ=ENV)
        requested = []
        async for event in run.events():
            if event.kind == "approval.requested":
                requested.append((event.data["key"], event.data["tool"]))
                run.approve(event.data["key"])
        result = await run.result()
    assert result.ok, result.error
    assert requested == [("agent#1/agent#1/1/t1", "write_file")]


async def test_an_approval_entry_that_matches_no_tool_stops_the_run(tmp_path: Path) -> None:
    """A misspelt tool in approval.tools would let every call through unasked: refused."""
    async with ScriptedModelServer("deepseek") as srv:
        result = await start(task_spec(srv, tmp_path, approval={"tools": ["write_fiel"]}),
                             ledger_dir=tmp_path / "runs", environ=ENV).result()
    assert not result.ok and result.error is not None
    assert result.error.type == "ConfigError" and "'write_fiel' matches no tool" in \
        result.error.message
    assert srv.requests == []
    with pytest.raises(ConfigError, match="executor kind local"):
        start(task_spec(srv, tmp_path, mode="swarm", executor={"kind": "ray"}), ledger_dir=None,
              environ=ENV)


# ---------------------------------------------------------------------------------------------
# The terminal prompt of `agentkit run`, on a real pseudo-terminal


def _read_until(fd: int, marker: bytes, limit_s: float = 60.0) -> bytes:
    """What the terminal showed up to `marker` (the limit is a safety net, not a timing)."""
    seen = b""
    while marker not in seen:
        ready, _, _ = select.select([fd], [], [], limit_s)
        assert ready, f"no {marker!r} on the terminal; it showed: {seen[-2000:]!r}"
        try:
            seen += os.read(fd, 4096)
        except OSError:  # the terminal closed (the program ended)
            break
    return seen


@pytest.mark.parametrize(("typed", "approved", "reason"), [
    ("y", True, None), ("keep it read-only", False, "keep it read-only")])
def test_agentkit_run_on_a_terminal_asks_before_the_call(tmp_path: Path, typed: str,
                                                         approved: bool, reason: str | None) -> None:
    """`agentkit run` with standard input and error on a pseudo-terminal (the live table is on)
    shows the tool and its arguments and reads the answer; the decision is recorded as made
    at the terminal, and the model reads a denial's reason."""
    with ScriptedModelServer("deepseek") as srv:
        srv.route(WORKER, default=writes_then_reports())
        task = task_spec(srv, tmp_path).model_dump(mode="json", exclude_defaults=True)
        path = tmp_path / "task.yaml"
        path.write_text(json.dumps(task))  # JSON is YAML
        master, slave = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "agentkit", "run", str(path),
                                 "--ledger-dir", str(tmp_path / "runs")],
                                stdin=slave, stderr=slave, stdout=subprocess.PIPE,
                                env={**os.environ, **ENV, "TERM": "xterm", "COLUMNS": "120"})
        os.close(slave)
        try:
            shown = _read_until(master, b"[y/N")
            os.write(master, typed.encode() + b"\n")
            stdout, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
            os.close(master)
    assert b"awaiting approval: write_file" in shown  # the live table, paused for the question
    assert b'"path": "report.txt"' in shown and FIRST_CALL.encode() in shown
    assert proc.returncode == 0
    ledger = next((tmp_path / "runs").glob("*.jsonl"))
    events = [json.loads(line) for line in ledger.read_text().splitlines()]
    decided = of_kind(events, "approval.decided")[0]["data"]
    assert (decided["approved"], decided["via"], decided["reason"]) == (approved, "terminal", reason)
    assert (tmp_path / "ws" / "report.txt").exists() == approved
    if reason:
        assert f"denied by a person: {reason}" in stdout.decode()


def test_a_waiting_approval_outlives_a_killed_run(tmp_path: Path) -> None:
    """`kill -9` while a call waits: the request is already in the ledger (flushed before the
    node waits), so `agentkit approve` lists it and records a decision for the resumed run."""
    with ScriptedModelServer("deepseek") as srv:
        srv.route(WORKER, default=writes_then_reports())
        path = tmp_path / "task.yaml"
        path.write_text(json.dumps(task_spec(srv, tmp_path).model_dump(mode="json",
                                                                        exclude_defaults=True)))
        proc = subprocess.Popen([sys.executable, "-m", "agentkit", "run", str(path), "--json",
                                 "--ledger-dir", str(tmp_path / "runs")],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env={**os.environ, **ENV})
        assert proc.stderr is not None
        for line in proc.stderr:  # the plain progress lines of a run whose stderr is a pipe
            if b"approval.requested" in line:
                break
        proc.kill()
        proc.wait()
    (ledger,) = (tmp_path / "runs").glob("*.jsonl")
    runner = CliRunner()
    listed = runner.invoke(app, ["approve", str(ledger), "--json"])
    assert listed.exit_code == 0, listed.output
    assert [p["key"] for p in json.loads(listed.output)["pending"]] == [FIRST_CALL]
    decided = runner.invoke(app, ["approve", str(ledger), FIRST_CALL, "--who", "ops"])
    assert decided.exit_code == 0, decided.output
    (record,) = approvals_file(ledger).read_text().splitlines()
    assert json.loads(record) == {"key": FIRST_CALL, "approved": True, "reason": None,
                                "via": "file", "who": "ops"}
    assert runner.invoke(app, ["approve", str(ledger), "--json"]).output.strip() == \
        '{"pending": []}'


async def test_the_broker_without_a_ledger_times_out_on_its_clock_and_takes_early_decisions() -> None:
    """No ledger (no sidecar to poll): the wait is one sleep on the runtime's clock, and a
    decision given before the call is asked for (keys are deterministic) is taken at once."""
    clock, emitted = FakeClock(), []

    def emit(kind: Any, data: dict[str, Any] | None = None, *, node_id: str | None = None) -> Any:
        emitted.append((kind, node_id, dict(data or {})))

    broker = Approvals(ApprovalSpec(tools=["write_file"], timeout_s=30), clock=clock, emit=emit)
    assert broker.deny("n#1/n#1/2/t1", "read-only today", who="ops")
    early = await broker.request("n#1/n#1/2/t1", "write_file", {"path": "a"}, node_id="n")
    assert (early.approved, early.reason, clock.monotonic()) == (False, "read-only today", 0.0)
    late = await broker.request("n#1/n#1/3/t0", "write_file", {"path": "b"}, node_id="n")
    assert (late.approved, late.via, clock.sleeps) == (False, "timeout", [30.0])
    assert not broker.approve("n#1/n#1/3/t0")  # the timeout decided it
    assert [(k, n) for k, n, _ in emitted] == [("approval.requested", "n"),
                                                ("approval.decided", "n")] * 2


def test_patterns_match_names_servers_and_server_tools_but_never_the_engines_control_tools() -> None:
    """`*` gates every tool of the run, not the planner's submit_plan (engine control); an MCP
    tool is matched by its model name, its server, or "server.tool"."""
    files = build_registry(["write_file", "list_files"])
    everything = ApprovalSpec(tools=["*"])
    assert all(needs_approval(everything, t) for t in files)
    assert not needs_approval(everything, SubmitPlan(lambda nodes: None, attempts=1))  # type: ignore[arg-type, return-value]

    class Push(Tool):  # what agentkit.tools.mcp makes for the tool "push" of server "git"
        name, description, args_model = "git_push", "Push.", ToolArgs
        side_effects = True

        @property
        def origin(self) -> dict[str, Any]:
            return {"source": "mcp", "server": "git", "remote_tool": "push"}

    for entry in ("git_push", "git", "git.push", "git.*", "git_*"):
        assert needs_approval(ApprovalSpec(tools=[entry]), Push()), entry
    assert not needs_approval(ApprovalSpec(tools=["git.pull", "github"]), Push())
    assert needs_approval(ApprovalSpec(side_effects=True), Push())
    assert unmatched_entries(ApprovalSpec(tools=["git", "wirte_file"]), [Push(), *files]) == \
        ["wirte_file"]
