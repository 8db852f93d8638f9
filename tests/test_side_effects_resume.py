"""Side effects across a crash: what a resumed run does with a call that was in flight.

Each test runs an agent task to the end against the scripted model server, cuts the ledger
where a ``kill -9`` would have left it (`cut_after`, see tests/_durable_helpers.py), puts the
world in the state the test is about, and resumes. The server's request count shows which
model calls were made again (only those after the cut).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from _durable_helpers import ENV, agent_task, cut_after, ledger_in, records

from agentkit import arun, resume, start, tool
from agentkit.approvals import Decision, append_decision, approvals_file
from agentkit.audit import verify_ledger
from agentkit.testing import FakeSandboxClient, ScriptedModelServer, call, reply

WRITE = call("write_file", {"path": "notes.txt", "content": "after\n"})


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def run_and_cut(srv: ScriptedModelServer, tmp_path: Path, tools: list[str],
                      cut: str, extra_tools: tuple[Any, ...] = (), **task: Any) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    spec = agent_task(srv.base_url, ws, tools=tools, **task)
    result = await arun(spec, ledger_dir=tmp_path / "runs", environ=ENV, tools=extra_tools)
    assert result.ok, result.error
    ledger = ledger_in(tmp_path / "runs")
    cut_after(ledger, lambda r: r["kind"] == cut)
    return ledger


async def resumed(ledger: Path, **kwargs: Any) -> Any:
    return await resume(ledger, environ=ENV, **kwargs).result()


def segment_after_resume(ledger: Path) -> list[dict[str, Any]]:
    recs = records(ledger)
    start = max(i for i, r in enumerate(recs) if r["kind"] == "run.resumed")
    return recs[start:]


@pytest.mark.parametrize("state", ["after", "before", "other"])
async def test_write_in_flight_at_crash_follows_the_intent_hashes(tmp_path: Path,
                                                                  state: str) -> None:
    """The intent says notes.txt goes from sha("before") to sha("after"). At the after-hash
    it is not rewritten (no file.diff); at the before-hash it is written; with any other
    content the model reads a ``conflict`` error and the file is left alone."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text("before\n")
    with ScriptedModelServer("deepseek") as srv:
        srv.script(reply(tool_calls=[WRITE]), reply("Written."),
                   reply("Resumed answer."))
        ledger = await run_and_cut(srv, tmp_path, ["write_file"], "tool.intent")
        intent = [r for r in records(ledger) if r["kind"] == "tool.intent"][-1]["data"]
        assert (intent["before_sha256"], intent["after_sha256"]) == (sha("before\n"),
                                                                     sha("after\n"))
        content = {"after": "after\n", "before": "before\n", "other": "edited by hand\n"}[state]
        (ws / "notes.txt").write_text(content)
        sent = len(srv.requests)
        result = await resumed(ledger)
    assert result.ok, result.error
    seg = segment_after_resume(ledger)
    action = [r["data"]["action"] for r in seg if r["kind"] == "tool.in_flight"]
    diffs = [r for r in seg if r["kind"] == "file.diff"]
    tool_result = [r["data"] for r in seg if r["kind"] == "tool.result"][0]
    expected = {"after": ("already_written", "after\n", 0, True),
                "before": ("rerun", "after\n", 1, True),
                "other": ("conflict", "edited by hand\n", 0, False)}[state]
    assert (action[0], (ws / "notes.txt").read_text(), len(diffs), tool_result["ok"]) == expected
    if state == "other":
        assert tool_result["error"]["code"] == "conflict"
        # the model read the conflict in its next request
        assert "[conflict]" in str(srv.requests[-1].body["messages"][-1])
    assert len(srv.requests) == sent + 1  # only the turn after the tool call was made again
    assert verify_ledger(ledger).ok


@tool(side_effects=True)
def send_invoice(customer: str) -> str:
    """Send an invoice (a side effect that must not happen twice)."""
    SENT.append(customer)
    return f"invoice sent to {customer}"


@tool(side_effects=True, idempotent=True)
def set_flag(name: str) -> str:
    """Set a flag (setting it twice is the same as once)."""
    SENT.append(name)
    return f"flag {name} set"


SENT: list[str] = []


@pytest.mark.parametrize("fn,expected", [(send_invoice, "refused"), (set_flag, "rerun")])
async def test_in_flight_side_effect_reruns_only_if_idempotent(tmp_path: Path, fn: Any,
                                                               expected: str) -> None:
    """A side-effecting Python tool recorded as called, without a result: not idempotent,
    the model reads ``in_flight_at_crash`` and the function is not called again; idempotent,
    it runs again."""
    SENT.clear()
    with ScriptedModelServer("deepseek") as srv:
        srv.script(reply(tool_calls=[call(fn.name, {"customer": "acme"} if fn is send_invoice
                                          else {"name": "acme"})]),
                   reply("Done."), reply("Done after resume."))
        ledger = await run_and_cut(srv, tmp_path, [], "tool.call", extra_tools=(fn,))
        assert SENT == ["acme"]
        result = await resumed(ledger, tools=[fn])
    assert result.ok, result.error
    seg = segment_after_resume(ledger)
    tool_result = [r["data"] for r in seg if r["kind"] == "tool.result"][0]
    if expected == "refused":
        assert SENT == ["acme"]
        assert tool_result["error"]["code"] == "in_flight_at_crash"
        assert [r["data"]["action"] for r in seg if r["kind"] == "tool.in_flight"] == ["refused"]
    else:
        assert SENT == ["acme", "acme"]
        assert tool_result["ok"] is True


@pytest.mark.parametrize("approved", [True, False])
async def test_in_flight_side_effect_asks_a_person_when_the_task_has_approvals(
        tmp_path: Path, approved: bool) -> None:
    """With ``approval:`` in the task, a non-idempotent call in flight at the crash becomes an
    approval request (with the reason) instead of a failure. The decision here was made while
    the run was down (written beside the ledger, as `agentkit approve` does): a yes runs the
    call again, a no is the error the model reads, and the function is not called."""
    SENT.clear()
    with ScriptedModelServer("deepseek") as srv:
        srv.script(reply(tool_calls=[call("send_invoice", {"customer": "acme"})]),
                   reply("Done."), reply("Done after resume."))
        ledger = await run_and_cut(srv, tmp_path, [], "tool.call", extra_tools=(send_invoice,),
                                   extra={"approval": {"tools": []}})
        key = [r["data"]["call_key"] for r in records(ledger) if r["kind"] == "tool.call"][-1]
        append_decision(approvals_file(ledger), Decision(key=key, approved=approved,
                                                         reason=None if approved else "paid",
                                                         via="file"))
        result = await resumed(ledger, tools=[send_invoice])
    assert result.ok, result.error
    seg = segment_after_resume(ledger)
    requested = [r["data"] for r in seg if r["kind"] == "approval.requested"]
    assert [(r["key"], "in flight" in r["reason"]) for r in requested] == [(key, True)]
    tool_result = [r["data"] for r in seg if r["kind"] == "tool.result"][0]
    if approved:
        assert (SENT, tool_result["ok"]) == (["acme", "acme"], True)
    else:
        assert (SENT, tool_result["error"]["code"]) == (["acme"], "denied")
        assert "denied by a person: paid" in str(srv.requests[-1].body["messages"][-1])
    assert verify_ledger(ledger).ok


async def test_sandbox_session_is_rebuilt_from_its_recorded_cells(tmp_path: Path) -> None:
    """Two run_code calls of one agent share a session: the first writes a file, the second
    reads it. Cut after the first call's result: on resume the first call is answered from
    the ledger, so before the second (live) call its cell is re-run in the fresh sandbox and
    the second call still finds the file."""
    first = call("run_code", {"language": "bash", "code": "echo kept > state.txt"})
    second = call("run_code", {"language": "bash", "code": "cat state.txt"})
    with ScriptedModelServer("deepseek") as srv:
        srv.script(reply(tool_calls=[first]), reply(tool_calls=[second]), reply("Done."),
                   reply(tool_calls=[second]), reply("Done again."))
        ws = tmp_path / "ws"
        ws.mkdir()
        spec = agent_task(srv.base_url, ws, tools=["run_code"])
        handle = _start_with_fake_sandbox(spec, tmp_path)
        assert (await handle.result()).ok
        ledger = ledger_in(tmp_path / "runs")
        cut_after(ledger, lambda r: r["kind"] == "tool.result")
        again = resume(ledger, environ=ENV)
        FakeSandboxClient(spec.sandbox).install(again.runtime)
        result = await again.result()
    assert result.ok, result.error
    seg = segment_after_resume(ledger)
    assert [r["data"]["cells"] for r in seg if r["kind"] == "sandbox.rebuilt"] == [1]
    out = [r["data"] for r in seg if r["kind"] == "tool.result"][0]
    assert out["ok"] and out["data"]["stdout"].strip() == "kept"


def _start_with_fake_sandbox(spec: Any, tmp_path: Path) -> Any:
    handle = start(spec, ledger_dir=tmp_path / "runs", environ=ENV)
    FakeSandboxClient(spec.sandbox).install(handle.runtime)
    return handle



def test_mcp_tools_are_idempotent_only_when_the_server_says_so() -> None:
    """An MCP tool's ``idempotentHint`` is its `idempotent` declaration (what decides whether
    a call in flight at a crash may run again); no hint means not idempotent."""
    types = pytest.importorskip("mcp_types")
    from agentkit.tools.mcp import _idempotent

    def made(hint: bool | None) -> Any:
        return types.Tool(name="t", input_schema={"type": "object"},
                          annotations=types.ToolAnnotations(idempotent_hint=hint))

    assert [_idempotent(made(True)), _idempotent(made(False)), _idempotent(made(None)),
            _idempotent(types.Tool(name="t", input_schema={"type": "object"}))] == \
        [True, False, False, False]


@pytest.mark.docker
async def test_a_persistent_sandbox_session_is_rebuilt_in_a_real_container(tmp_path: Path) -> None:
    """Real Docker, ``persistent: true``: the first cell sets a Python variable, the second
    prints it. Cut after the first cell's result: on resume the first cell is answered from
    the ledger and re-run in the fresh container before the second (live) cell, which still
    sees the variable. No container of the run is left afterwards."""
    from sandbox_helpers import containers_of

    first = call("run_code", {"code": "x = 41"})
    second = call("run_code", {"code": "print(x + 1)"})
    with ScriptedModelServer("deepseek") as srv:
        srv.script(reply(tool_calls=[first]), reply(tool_calls=[second]), reply("Done."),
                   reply(tool_calls=[second]), reply("Done again."))
        ledger = await run_and_cut(srv, tmp_path, ["run_code"], "tool.result",
                                   extra={"sandbox": {"persistent": True}})
        result = await resumed(ledger)
    assert result.ok, result.error
    seg = segment_after_resume(ledger)
    assert [r["data"]["cells"] for r in seg if r["kind"] == "sandbox.rebuilt"] == [1]
    out = [r["data"] for r in seg if r["kind"] == "tool.result"][0]
    assert out["ok"] and out["data"]["stdout"].strip() == "42"
    assert containers_of(result.run_id) == []
