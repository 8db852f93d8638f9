"""The workspace tools never reach a ledger or blob folder, whatever the path.

With the README's default layout (``workspace: .``, ``output: runs``) the ledger folder is
inside the workspace. A scripted agent (real HTTP to a `ScriptedModelServer`, the real agent
loop, the real tools and ledger) tries to overwrite an earlier run's ledger, truncate its own,
plant a blob, read and list the folder, and reach it through a symbolic link and through
``..``. Each attempt must come back to the model as a tool error, and both ledgers must
verify afterwards.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agentkit.audit import verify_ledger
from agentkit.errors import ToolError
from agentkit.run import RunResult, arun
from agentkit.runtime import Runtime
from agentkit.task import load_task, load_task_text
from agentkit.testing import ScriptedModelServer, call, reply
from agentkit.tools import invoke_tool

ENV = {"PROTECT_KEY": "sk-protect-0123456789"}


def readme_layout(tmp_path: Path, base_url: str) -> Path:
    """A task file with the README's layout: workspace is the task's folder, output `runs`."""
    path = tmp_path / "task.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: protect
        goal: tidy up the project folder
        mode: agent
        model: m
        models:
          m: {{profile: deepseek, model: deepseek-chat, base_url: {base_url},
               api_key_env: PROTECT_KEY, stream: false, max_tokens: 256}}
        tools: [read_file, write_file, list_files]
        retry: {{attempts: 1, base_delay_s: 0.0}}
        workspace: .
        output: runs
        """))
    return path


def records(ledger: str | None) -> list[dict[str, Any]]:
    assert ledger is not None
    return [json.loads(line) for line in Path(ledger).read_text().splitlines()]


def ledger_bytes(result: RunResult) -> bytes:
    return Path(result.ledger or "").read_bytes()


async def run(path: Path, run_id: str) -> RunResult:
    task = load_task(path)
    assert task.output is not None and task.workspace == str(path.parent)
    return await arun(task, ledger_dir=task.output, run_id=run_id, environ=ENV)


async def test_a_scripted_agent_cannot_forge_or_truncate_any_ledger(tmp_path: Path) -> None:
    """Proves: 8 attempts on the ledger folder (overwrite an earlier run's ledger, truncate
    its own, plant a blob, read, list, via a link, via '..', via './') are 8 tool errors the
    model reads; the earlier ledger is byte-for-byte unchanged and both ledgers verify."""
    (tmp_path / "alias").symlink_to("runs")  # a link the user made inside the workspace
    attempts = [
        call("write_file", {"path": "runs/first.jsonl", "content": '{"seq": 0, "forged": true}\n'}),
        call("write_file", {"path": "runs/second.jsonl", "content": ""}),
        call("write_file", {"path": "runs/first.jsonl.blobs/0000", "content": "planted"}),
        call("read_file", {"path": "runs/first.jsonl"}),
        call("list_files", {"path": "runs"}),
        call("write_file", {"path": "alias/first.jsonl", "content": "forged via a link"}),
        call("write_file", {"path": "alias/../runs/second.jsonl", "content": ""}),
        call("write_file", {"path": "./runs//second.jsonl", "content": ""}),
    ]
    async with ScriptedModelServer("deepseek") as srv:
        path = readme_layout(tmp_path, srv.base_url)
        srv.script(reply("Nothing to tidy."))
        first = await run(path, "first")
        before = ledger_bytes(first)
        srv.script(reply(reasoning="Rewrite history.", tool_calls=attempts), reply("Done."))
        second = await run(path, "second")
        told = [m["content"] for m in srv.requests[-1].messages if m["role"] == "tool"]
    assert first.ok and second.ok, (first.error, second.error)
    results = [r["data"] for r in records(second.ledger) if r["kind"] == "tool.result"]
    codes = [r["error"]["code"] for r in results if not r["ok"]]
    assert len(results) == len(attempts) == len(codes), results
    assert sorted(codes) == ["blocked"] + ["protected"] * 7, codes  # '..' is refused as such
    assert all(t.startswith("ERROR [") for t in told) and len(told) == len(attempts)
    assert ledger_bytes(first) == before
    assert verify_ledger(first.ledger or "").ok and verify_ledger(second.ledger or "").ok
    assert not (tmp_path / "runs" / "first.jsonl.blobs").exists()
    # each run's ledger and its head sidecar, nothing an agent added
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "first.jsonl", "first.jsonl.head", "second.jsonl", "second.jsonl.head"]


async def test_the_listing_shows_a_protected_folder_without_its_content(tmp_path: Path) -> None:
    """Proves: a recursive listing of the workspace names the ledger folder as protected and
    lists none of its files; the workspace's other files are listed."""
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "abc.jsonl").write_text("{}\n")
    (tmp_path / "notes.txt").write_text("hi")
    task = load_task_text("name: t\ngoal: g\nmodel: m\nmodels: {m: {model: x}}\n"
                          "tools: [list_files]\n")
    async with Runtime(task, workspace=tmp_path, ledger_dir=tmp_path / "runs") as rt:
        out = await invoke_tool(rt.tools.get("list_files"), {"recursive": True},
                                rt.tool_context(call_id="c"))
    assert out.content.splitlines() == ["notes.txt (2 bytes)", "runs/ (protected: not listed)"]


@pytest.mark.parametrize("ledger_dir", ["link_chain", "workspace"])
async def test_protection_is_by_identity_not_by_name(tmp_path: Path, ledger_dir: str) -> None:
    """Proves: the ledger folder is refused when reached under another name (a bind-like
    second path: a hard-to-spot link chain) and when it is the workspace itself."""
    ws = tmp_path / "ws"
    ws.mkdir()
    task = load_task_text("name: t\ngoal: g\nmodel: m\nmodels: {m: {model: x}}\n"
                          "tools: [write_file]\n")
    if ledger_dir == "workspace":
        led, path = ws, "x.txt"
    else:
        led = ws / "Runs"
        led.mkdir()
        os.symlink("b", ws / "a")
        os.symlink("Runs/.", ws / "b")
        path = "a/forged.jsonl"
    async with Runtime(task, workspace=ws, ledger_dir=led) as rt:
        with pytest.raises(ToolError) as info:
            await invoke_tool(rt.tools.get("write_file"), {"path": path, "content": "x"},
                              rt.tool_context(call_id="c"))
    assert info.value.code == "protected"
    assert [p.name for p in led.iterdir() if not p.name.endswith(".jsonl")] == []
    assert not (led / "forged.jsonl").exists() and not (ws / "x.txt").exists()
