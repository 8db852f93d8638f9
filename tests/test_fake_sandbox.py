"""The in-process fake sandbox (`agentkit.testing.FakeSandboxClient`) and the protocol seam:
the pool and `run_code` work against any `SandboxClient`, so run_code, consensus and the
quickstart's whole flow are testable without Docker. Nothing here needs a Docker engine.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_swarm_e2e import (
    ENV,
    PLANNER,
    WORKER,
    Planner,
    Workers,
    events_of,
    nodes,
    serve,
    task_for,
    tool_results,
)

from agentkit.audit import verify_ledger
from agentkit.errors import SandboxError, ToolError
from agentkit.events import Event
from agentkit.run import start
from agentkit.runtime import Runtime
from agentkit.sandboxes import DockerSandboxClient, SandboxClient, SandboxPool, SandboxSession
from agentkit.sandboxes.base import classify
from agentkit.task import ModelSpec, SandboxSettings, TaskSpec
from agentkit.testing import FakeSandboxClient, RecordedRequest, Reply, ScriptedModelServer, call, reply
from agentkit.tools import invoke_tool


async def test_both_backends_satisfy_the_protocols_the_pool_uses() -> None:
    """Proves: the Docker client and the fake are `SandboxClient`s, their sessions
    `SandboxSession`s (checked structurally at run time), and the pool runs on the fake."""
    settings = SandboxSettings(pool_size=1)
    assert isinstance(DockerSandboxClient(settings, run_id="no-io"), SandboxClient)
    fake = FakeSandboxClient(settings)
    assert isinstance(fake, SandboxClient)
    async with SandboxPool(fake, settings) as pool:
        async with pool.lease("a") as session:
            assert isinstance(session, SandboxSession)
            assert (await session.exec("print(6*7)")).stdout == "42\n"
    assert fake.sessions == {} and fake.created == fake.destroyed >= 1


async def test_exec_files_and_manifests() -> None:
    """Proves: python and bash run in the session's folder with their exit codes, files go in
    and out, the result lists the folder's files before and after, and a link is refused on
    the way out as the Docker backend refuses it."""
    async with FakeSandboxClient() as fake:
        session = await fake.create()
        await session.write_files({"in/data.txt": b"b a c"})
        result = await session.exec("import sys\nwords = open('in/data.txt').read().split()\n"
                                    "open('out.txt', 'w').write(' '.join(sorted(words)))\n"
                                    "print('sorted'); sys.exit(4)")
        assert (result.exit_code, result.stdout) == (4, "sorted\n")
        assert list(result.files_before) == ["in/data.txt"]
        assert sorted(result.files_after) == ["in/data.txt", "out.txt"]
        assert result.files_after["out.txt"][0] == 5
        assert await session.read_files(["out.txt"]) == {"out.txt": b"a b c"}
        bash = await session.exec("echo $((6*7)) >&2; ln -s /etc/passwd link", language="bash")
        assert (bash.exit_code, bash.stderr) == (0, "42\n")
        with pytest.raises(SandboxError) as info:
            await session.read_files(["link"])
        assert info.value.code == "unsafe_archive"
        with pytest.raises(SandboxError) as info:
            await session.write_files({"../escape.txt": b"x"})
        assert info.value.code == "unsafe_path"


async def test_deadline_and_output_cap_are_enforced() -> None:
    """Proves: a loop past the deadline is killed and classified as ``timeout``; 1 MB of output
    is cut at the 1,024-byte cap with the marker, and the process is stopped."""
    settings = SandboxSettings(timeout_s=1, output_bytes=1024)
    async with FakeSandboxClient(settings) as fake:
        session = await fake.create()
        looped = await session.exec("while True:\n    pass", timeout_s=0.5)
        error = classify(looped, timeout_s=0.5, memory_mb=512, pids=128)
        assert looped.timed_out and error is not None and error.code == "timeout"
        flood = await session.exec("import sys\nsys.stdout.write('x' * (1 << 20))\nprint('never')")
        assert flood.stdout_truncated and flood.stdout.startswith("x" * 1024)
        assert "truncated at 1024 bytes" in flood.stdout and "never" not in flood.stdout
    with pytest.raises(SandboxError) as info:
        await FakeSandboxClient(SandboxSettings(persistent=True)).create()
    assert info.value.code == "unsupported"


def runtime_with(tmp_path: Path, events: list[Event], **sandbox: Any) -> Runtime:
    task = TaskSpec(name="fake", goal="g", model="m", models={"m": ModelSpec(model="unused")},
                    tools=["run_code"], sandbox=SandboxSettings(pool_size=0, **sandbox))
    return Runtime(task, sinks=[events.append], workspace=tmp_path,
                   ledger_dir=tmp_path / "runs")


async def test_run_code_on_the_fake_records_execs_diffs_and_inputs(tmp_path: Path) -> None:
    """Proves: the real run_code tool, on the fake, copies `sandbox.inputs` from the workspace,
    returns structured results, and records ``sandbox.exec`` and ``file.diff`` events."""
    (tmp_path / "numbers.txt").write_text("3\n4\n")
    events: list[Event] = []
    async with runtime_with(tmp_path, events, inputs=["numbers.txt"]) as rt:
        fake = FakeSandboxClient(rt.task.sandbox).install(rt)
        code = ("total = sum(int(x) for x in open('numbers.txt'))\n"
                "open('total.txt', 'w').write(f'{total}\\n')\nprint(total)")
        out = await invoke_tool(rt.tools.get("run_code"), {"code": code},
                                rt.tool_context(node_id="n", agent_id="a", call_id="c"))
        assert out.data["exit_code"] == 0 and out.data["stdout"] == "7\n"
        assert [(f["path"], f["status"]) for f in out.data["files"]] == [("total.txt", "created")]
    assert fake.sessions == {}  # the run's end removed its sandbox
    execs = [e.data for e in events if e.kind == "sandbox.exec"]
    diffs = [e.data for e in events if e.kind == "file.diff"]
    assert len(execs) == 1 and execs[0]["exit_code"] == 0 and execs[0]["error"] is None
    assert diffs[0]["path"] == "/workspace/total.txt" and "+7" in diffs[0]["diff"]


async def test_sandbox_inputs_never_come_from_the_ledger_folder(tmp_path: Path) -> None:
    """Proves: `sandbox.inputs` naming a file in the ledger folder (here inside the workspace)
    is a ``protected`` tool error and nothing reaches the sandbox."""
    events: list[Event] = []
    async with runtime_with(tmp_path, events, inputs=["runs/old.jsonl"]) as rt:
        (tmp_path / "runs" / "old.jsonl").write_text('{"seq": 0}\n')
        fake = FakeSandboxClient(rt.task.sandbox).install(rt)
        with pytest.raises(ToolError) as info:
            await invoke_tool(rt.tools.get("run_code"), {"code": "print(open('runs/old.jsonl').read())"},
                              rt.tool_context(node_id="n", agent_id="a", call_id="c"))
        assert info.value.code == "protected"
        assert all(s.workdir.exists() and not any(s.workdir.iterdir()) for s in fake.sessions.values())
    assert not [e for e in events if e.kind == "sandbox.exec"]


# -- the quickstart's flow, without Docker ------------------------------------------------------

SALES = """date,region,product,units,unit_price
2024-01-05,North,Widget,10,2.50
2024-01-20,South,Gizmo,4,10.00
2024-02-11,North,Gizmo,7,10.00
2024-02-14,East,Widget,20,2.50
2024-03-02,South,Widget,3,2.50
2024-03-09,East,Gizmo,1,10.00
"""
READ = "import csv\nrows = list(csv.DictReader(open('sales.csv')))\n"
#: per question: (the correct program, a wrong one a small model might write)
PROGRAMS = {
    "Total revenue of each region in sales.csv.": (
        READ + "tot = {}\nfor r in rows:\n    tot[r['region']] = tot.get(r['region'], 0) + "
        "int(r['units']) * float(r['unit_price'])\nfor k, v in tot.items():\n    print(f'{k}: {v:.2f}')",
        READ + "tot = {}\nfor r in rows:\n    tot[r['region']] = int(r['units'])\n"
        "for k, v in tot.items():\n    print(f'{k}: {v:.2f}')"),
    "Month of sales.csv with the highest total revenue.": (
        READ + "tot = {}\nfor r in rows:\n    m = r['date'][:7]\n    tot[m] = tot.get(m, 0) + "
        "int(r['units']) * float(r['unit_price'])\nbest = max(tot, key=tot.get)\n"
        "print(f'{best}: {tot[best]:.2f}')",
        READ + "r = max(rows, key=lambda r: float(r['unit_price']))\nprint(r['date'][:7])"),
    "Product of sales.csv with the most units sold.": (
        READ + "tot = {}\nfor r in rows:\n    tot[r['product']] = tot.get(r['product'], 0) + "
        "int(r['units'])\nbest = max(tot, key=tot.get)\nprint(f'{best}: {tot[best]}')",
        READ + "print(rows[0]['product'], rows[0]['units'])"),
}
EXPECTED = {"regions": ["North: 95.00", "South: 47.50", "East: 60.00"],
            "month": ["2024-02: 120.00"], "product": ["Widget: 33"]}


def sampler(goal: str) -> Callable[[RecordedRequest], Reply]:
    """A worker that writes the wrong program on its first draw and the right one after; each
    sample then answers by copying what its program printed."""
    draws = itertools.count()
    good, bad = PROGRAMS[goal]

    def respond(req: RecordedRequest) -> Reply:
        results = tool_results(req)
        if not results:
            code = bad if next(draws) == 0 else good
            return reply(reasoning="Compute it.", tool_calls=[call("run_code", {"code": code})])
        return reply(results[-1].split("--- stdout ---\n", 1)[-1], reasoning="Copy it.")
    return respond


async def test_the_quickstart_flow_runs_on_the_fake_sandbox(tmp_path: Path) -> None:
    """Proves, without Docker: planner -> 3 parallel run_code nodes -> consensus -> answer.
    Every node's first sample runs a wrong program; the vote (on what the programs printed)
    keeps the two agreeing right ones: 9 execs, 3 votes of 2 with program evidence, the
    answer's numbers all grounded in program output, and a ledger that verifies."""
    (tmp_path / "sales.csv").write_text(SALES)
    ids = {"Total revenue": "regions", "Month of": "month", "Product of": "product"}
    plan = nodes(*((next(v for k, v in ids.items() if goal.startswith(k)), goal, [], ["run_code"])
                   for goal in PROGRAMS))
    answer = "\n".join(line for lines in EXPECTED.values() for line in lines)
    async with ScriptedModelServer("deepseek") as srv:
        serve(srv, Planner(plan), Workers({g: sampler(g) for g in PROGRAMS}), answer)
        task = task_for(srv, tmp_path, tools=["run_code"], consensus={"samples": 3, "agree": 2},
                        sandbox={"inputs": ["sales.csv"], "pool_size": 1, "timeout_s": 30})
        run = start(task, ledger_dir=tmp_path / "runs", environ=ENV)
        fake = FakeSandboxClient(task.sandbox).install(run.runtime)
        result = await run.result()
    assert result.status == "succeeded", result.error
    for node, lines in EXPECTED.items():
        assert all(line in (result.nodes[node].output or "") for line in lines), result.nodes[node]
    events = events_of(result)
    execs = [e for e in events if e["kind"] == "sandbox.exec"]
    votes = {e["node_id"]: e["data"] for e in events if e["kind"] == "node.consensus"}
    assert len(execs) == 9 and all(e["data"]["exit_code"] == 0 for e in execs)
    assert sorted(votes) == sorted(EXPECTED)
    assert all((v["samples"], v["votes"], v["evidence"]) == (3, 2, "program") for v in votes.values())
    assert "answer.checked" in [e["kind"] for e in events] and result.ungrounded == []
    assert verify_ledger(result.ledger or "").ok
    assert fake.sessions == {} and fake.created >= 9
    # the default prompts show the planner and every worker the input file as it is ($files)
    header = f"- sales.csv: CSV, {len(SALES.splitlines()) - 1} data rows; header: {SALES.splitlines()[0]}"
    for model in (PLANNER, WORKER):
        firsts = [r for r in srv.requests_for(model) if len(r.messages) == 2]
        assert firsts and all(header in r.messages[1]["content"] for r in firsts), model
