"""The run_code pool sized and pre-warmed from the plan (issue 19).

`prewarm_size` counts the plan's run_code nodes that can run at once; the `Tool.planned` hook
is called when a plan is accepted (the run's, and each sub-team's); run_code's hook grows the
pool so that those containers start before any node's first call, and a Docker failure there
does not fail the run. The fake sandbox client serves the sizing and pool logic; the last test
runs a plan on the real Docker engine.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sandbox_helpers import containers_of
from test_swarm_e2e import (
    ENV,
    PLANNER,
    Handler,
    Planner,
    Workers,
    answer_with,
    events_of,
    nodes,
    serve,
    serve_delegation,
    task_for,
    tool_results,
)

from agentkit.errors import SandboxError
from agentkit.events import Event
from agentkit.journal import Journal
from agentkit.plan import Plan, PlanGraph, validate_plan
from agentkit.run import arun, start
from agentkit.runtime import Runtime
from agentkit.sandboxes import SandboxPool
from agentkit.task import ModelSpec, SandboxSettings, TaskSpec
from agentkit.testing import FakeSandboxClient, RecordedRequest, Reply, ScriptedModelServer, call, reply
from agentkit.testing.fake_sandbox import FakeSandboxSession
from agentkit.tools import Tool, ToolArgs, ToolContext, ToolOutput
from agentkit.tools.run_code import Prewarm, prewarm_size, sandbox_pool


def _task(**extra: Any) -> TaskSpec:
    return TaskSpec(name="prewarm", goal="g", model="m", models={"m": ModelSpec(model="unused")},
                    tools=["run_code", "list_files"], **extra)


def _graph(*specs: tuple[str, list[str], list[str]]) -> PlanGraph:
    plan = Plan.model_validate({"nodes": [{"id": i, "goal": "g", "depends_on": d, "tools": t}
                                          for i, d, t in specs]})
    return validate_plan(plan, known_tools=["run_code", "list_files"])


CODE = ["run_code"]
FAN_OUT = _graph(("root", [], ["list_files"]), *((f"leaf{i}", ["root"], CODE) for i in range(16)))


def test_prewarm_size_counts_run_code_nodes_that_can_run_at_once() -> None:
    """Proves: a chain needs one container at a time; a fan-out of 16 needs 16, capped by
    budget.max_agents and sandbox.max_pool; a diamond's middle runs two at once; nodes
    without run_code (no tools at all, or other tools) are not counted; consensus multiplies
    by the samples each node runs at once."""
    chain = _graph(*((f"n{i}", [f"n{i - 1}"] if i else [], CODE) for i in range(4)))
    assert prewarm_size(chain, _task()) == Prewarm(nodes=4, width=1, agents=4, warm=1)
    assert prewarm_size(FAN_OUT, _task()) == Prewarm(nodes=16, width=8, agents=16, warm=8)
    wide = _task(budget={"max_agents": 32})
    assert prewarm_size(FAN_OUT, wide) == Prewarm(nodes=16, width=16, agents=16, warm=16)
    small = _task(budget={"max_agents": 32}, sandbox={"max_pool": 10})
    assert prewarm_size(FAN_OUT, small).warm == 10
    diamond = _graph(("a", [], CODE), ("b", ["a"], CODE), ("c", ["a"], CODE), ("d", ["b", "c"], CODE))
    assert prewarm_size(diamond, _task()).width == 2
    mixed = _graph(("a", [], CODE), ("b", [], CODE), ("c", [], []), ("d", [], ["list_files"]),
                   ("e", ["a"], []))
    assert prewarm_size(mixed, _task()) == Prewarm(nodes=2, width=2, agents=2, warm=2)
    voted = _task(consensus={"samples": 3, "agree": 2})
    assert prewarm_size(diamond, voted) == Prewarm(nodes=4, width=2, agents=8, warm=4)


async def test_grow_to_warms_for_the_plans_agents_then_falls_back_to_the_floor() -> None:
    """Proves: `grow_to` starts the extra warming at once (without awaiting it); the plan's
    agents all find a warm container (no cold creation); once they have bound theirs the pool
    refills only to its floor (`pool_size`), not to the plan's width."""
    settings = SandboxSettings(pool_size=1)
    fake = FakeSandboxClient(settings)
    async with SandboxPool(fake, settings) as pool:
        pool.grow_to(4, agents=6)
        assert pool.stats()["warming"] == 4 and pool.stats()["target"] == 4
        await pool.warmed()
        assert fake.created == 4
        for i in range(6):
            async with pool.lease(f"agent-{i}"):
                pass
        await pool.warmed()
        assert (pool.cold, fake.created, pool.stats()["idle"], pool.stats()["target"]) == (0, 7, 1, 1)
    cold = FakeSandboxClient(settings.model_copy(update={"pool_size": 0}))
    async with SandboxPool(cold, cold.settings) as pool:
        async with pool.lease("a"):
            assert pool.cold == 1


class BrokenEngine(FakeSandboxClient):
    """A client whose engine is down: every creation fails."""

    async def create(self, *, persistent: bool | None = None) -> FakeSandboxSession:
        raise SandboxError("engine", "the Docker engine is unavailable")


async def test_a_failed_prewarm_does_not_fail_the_hook_and_the_first_call_reports_it(
        tmp_path: Path) -> None:
    """Proves: run_code's hook returns although every container it warms fails; the failure
    is kept by the pool and raised by the first lease, as a typed sandbox error."""
    events: list[Event] = []
    task = _task(budget={"max_agents": 32})
    async with Runtime(task, sinks=[events.append], workspace=tmp_path) as rt:
        BrokenEngine(task.sandbox).install(rt)
        ctx = rt.tool_context()
        await rt.planned(FAN_OUT)
        pool = await sandbox_pool(ctx)
        await pool.warmed()
        assert isinstance(pool.last_error, SandboxError)
        with pytest.raises(SandboxError, match="unavailable"):
            async with pool.lease("leaf0"):
                pass
    prewarm = [e.data for e in events if e.kind == "sandbox.prewarm"]
    assert prewarm == [{"nodes": 16, "width": 16, "agents": 16, "warm": 16, "pool_size": 2}]


# -- the hook in a run --------------------------------------------------------------------------

WIDE = 16
GOALS = [f"Compute part {i}." for i in range(WIDE)]


def _wide_plan() -> dict[str, Any]:
    """16 run_code nodes at once, beside a node with no tools and one with list_files only."""
    return nodes(*((f"p{i}", g, [], CODE) for i, g in enumerate(GOALS)),
                 ("think", "Think it over.", [], []), ("look", "Look around.", [], ["list_files"]))


@pytest.mark.parametrize("max_pool", [16, 0])
async def test_the_plan_warms_a_container_per_parallel_node_before_any_first_call(
        tmp_path: Path, max_pool: int) -> None:
    """Proves, on the fake client: with the plan known, 16 containers have been created by the
    time any run_code node's model is first asked (so before its first run_code call), the
    ``sandbox.prewarm`` event comes after ``plan.created`` and before the first node starts,
    and the run creates no container beyond those 16 (no node created one cold, nothing refilled
    past the plan). With ``max_pool: 0`` (today's lazy pool, floor 0) none exists by then."""
    fake: list[FakeSandboxClient] = []
    seen_at_first_turn: list[int] = []

    def worker(req: RecordedRequest) -> Reply:
        if not tool_results(req):
            seen_at_first_turn.append(fake[0].created)
            return reply(reasoning="Run it.", tool_calls=[call("run_code", {"code": "print(1)"})])
        return reply("1", reasoning="Done.")

    async with ScriptedModelServer("deepseek") as srv:
        handlers: dict[str, Handler] = {g: worker for g in GOALS}
        handlers.update({"Think it over.": answer_with("ok"), "Look around.": answer_with("ok")})
        serve(srv, Planner(), Workers(handlers), "all done")
        task = task_for(srv, tmp_path, tools=["run_code", "list_files"], plan=_wide_plan(),
                        budget={"max_agents": 32},
                        sandbox={"pool_size": 0, "max_pool": max_pool, "timeout_s": 30})
        run = start(task, ledger_dir=tmp_path / "runs", environ=ENV)
        fake.append(FakeSandboxClient(task.sandbox).install(run.runtime))
        result = await run.result()
    assert result.status == "succeeded", result.error
    assert not srv.requests_for(PLANNER)  # the plan came from the task file
    assert len(seen_at_first_turn) == WIDE
    events = events_of(result)
    kinds = [e["kind"] for e in events]
    prewarm = [e["data"] for e in events if e["kind"] == "sandbox.prewarm"]
    if max_pool:
        assert set(seen_at_first_turn) == {WIDE}
        assert prewarm == [{"nodes": WIDE, "width": WIDE, "agents": WIDE, "warm": WIDE,
                            "pool_size": 0}]
        assert kinds.index("plan.created") < kinds.index("sandbox.prewarm") < kinds.index("node.started")
    else:
        assert set(seen_at_first_turn) == {0} and prewarm == []
    assert fake[0].created == WIDE and fake[0].sessions == {}


class PlanRecorder(Tool):
    """A tool that only records the plans it is told about."""

    name: ClassVar[str] = "plan_recorder"
    description: ClassVar[str] = "Records plans."
    args_model: ClassVar[type[ToolArgs]] = ToolArgs

    def __init__(self) -> None:
        self.plans: list[tuple[str | None, list[str]]] = []

    async def planned(self, plan: PlanGraph, ctx: ToolContext) -> None:
        self.plans.append((ctx.node_id, list(plan.order)))

    async def call(self, args: Any, ctx: ToolContext) -> ToolOutput:
        return ToolOutput("")


async def test_every_tool_hears_of_the_runs_plan_and_of_a_sub_teams_plan(tmp_path: Path) -> None:
    """Proves: `Tool.planned` is called with the run's plan (no node) and, when a node
    delegates, with its sub-team's plan (the delegating node's id, the sub-nodes' ids)."""
    recorder = PlanRecorder()
    async with ScriptedModelServer("deepseek") as srv:
        serve_delegation(srv)
        result = await arun(task_for(srv, tmp_path, budget={"max_depth": 1}), tools=[recorder],
                            ledger_dir=tmp_path, environ=ENV)
    assert result.status == "succeeded", result.error
    assert recorder.plans == [(None, ["top"]), ("top", ["top.sub1.north", "top.sub1.south"])]


async def test_a_strict_replay_tells_no_tool_and_starts_no_container(tmp_path: Path) -> None:
    """Proves: a strict replay (which runs nothing live) skips the hook: no plan reaches a
    tool and run_code makes no pool, so no container starts."""
    recorder = PlanRecorder()
    journal = Journal(path=tmp_path / "old.jsonl", strict=True)
    async with Runtime(_task(), workspace=tmp_path, tools=[recorder], journal=journal) as rt:
        fake = FakeSandboxClient(rt.task.sandbox).install(rt)
        await rt.planned(FAN_OUT)
        assert recorder.plans == [] and fake.created == 0


# -- on the real engine -------------------------------------------------------------------------

@pytest.mark.docker
async def test_a_planned_run_on_docker_starts_its_containers_before_the_first_call(
        tmp_path: Path) -> None:
    """Proves, on Docker: a plan of 4 parallel run_code nodes starts 4 containers with no
    run_code call made (each worker's first model turn waits until they exist), every node's
    call then runs in its own one of them (no other container is created), and none is left."""
    goals = [f"Compute part {i}." for i in range(4)]
    created = asyncio.Event()
    events: list[Event] = []

    def sink(event: Event) -> None:
        events.append(event)
        if sum(e.kind == "sandbox.created" for e in events) == len(goals):
            created.set()

    async def worker(req: RecordedRequest) -> Reply:
        if not tool_results(req):
            async with asyncio.timeout(120):  # a failure guard, not a synchronisation
                await created.wait()
            return reply(reasoning="Run it.", tool_calls=[call("run_code", {"code": "print(6*7)"})])
        return reply("42", reasoning="Done.")

    async with ScriptedModelServer("deepseek") as srv:
        serve(srv, Planner(), Workers({g: worker for g in goals}), "42")
        task = task_for(srv, tmp_path, tools=["run_code"], budget={"max_agents": 4},
                        plan=nodes(*((f"p{i}", g, [], CODE) for i, g in enumerate(goals))),
                        sandbox={"pool_size": 0, "timeout_s": 30})
        result = await arun(task, ledger_dir=tmp_path / "runs", environ=ENV, sinks=[sink])
    assert result.status == "succeeded", result.error
    kinds = [e.kind for e in events]
    assert kinds.count("sandbox.created") == len(goals)
    last_created = len(kinds) - 1 - kinds[::-1].index("sandbox.created")
    assert last_created < kinds.index("tool.call")
    execs = [e.data for e in events if e.kind == "sandbox.exec"]
    assert len({e["container"] for e in execs}) == len(goals) and all(e["exit_code"] == 0 for e in execs)
    assert containers_of(result.run_id) == []
