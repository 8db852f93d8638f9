"""Scheduler, budgets and the run API with simulated node executors (no model, no network).

What is simulated is only the *work* of a node (a sleep, on a `FakeClock` where the test reads
times); the scheduler, budgets, events, ledger and Run handle are the real ones.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from agentkit.audit import verify_ledger
from agentkit.budget import Budget
from agentkit.clock import Clock, SystemClock
from agentkit.errors import BudgetExceeded, ConfigError
from agentkit.events import EventBus
from agentkit.limits import ResourceLimits
from agentkit.plan import Plan, PlanGraph, PlanNode, validate_plan
from agentkit.run import arun, run_sync, start
from agentkit.swarm.scheduler import NodeOutput, ReplanRequest, Scheduler
from agentkit.task import BudgetSpec, TaskSpec
from agentkit.testing import EventCapture, FakeClock


class Sleeper:
    """Each node sleeps for the seconds in its goal (on `clock`, else real time); counts calls
    per node."""

    def __init__(self, fail: Mapping[str, int] | None = None, clock: Clock | None = None) -> None:
        self.sleep = clock.sleep if clock is not None else asyncio.sleep
        self.calls: Counter[str] = Counter()
        self.fail = dict(fail or {})
        self.running = 0
        self.peak = 0
        self.cancelled: list[str] = []

    async def run_node(self, node: PlanNode, inputs: Mapping[str, str],
                       budget: Budget) -> NodeOutput:
        self.calls[node.id] += 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.sleep(float(node.goal))
        except asyncio.CancelledError:
            self.cancelled.append(node.id)
            raise
        finally:
            self.running -= 1
        if self.fail.get(node.id, 0) > 0:
            self.fail[node.id] -= 1
            raise RuntimeError(f"{node.id} broke")
        return NodeOutput(output=f"{node.id}({','.join(sorted(inputs))})")


def _graph(*nodes: dict[str, Any]) -> PlanGraph:
    return validate_plan(Plan.model_validate({"nodes": list(nodes)}), known_tools=[])


def _scheduler(graph: PlanGraph, executor: Sleeper, capture: EventCapture, *,
               spec: BudgetSpec | None = None, clock: Clock | None = None,
               **kw: Any) -> Scheduler:
    clock = clock or SystemClock()
    bus = EventBus("r", clock=clock, sinks=[capture])
    budget = Budget.root(spec or BudgetSpec(), emit=bus.emit, clock=clock)
    return Scheduler(graph, executor, budget=budget, emit=bus.emit, clock=clock, **kw)


async def test_dependent_starts_when_its_last_dependency_finishes_not_at_a_barrier() -> None:
    """On virtual time every start and finish is exact: a node starts at the instant its last
    dependency finishes, and a short branch runs to its end while a long sibling still runs."""
    # two branches: a -> slow (1 s)   and   c -> d -> e ; join at z
    graph = _graph({"id": "a", "goal": "0.02"}, {"id": "slow", "goal": "1.0", "depends_on": ["a"]},
                   {"id": "c", "goal": "0.05"}, {"id": "d", "goal": "0.05", "depends_on": ["c"]},
                   {"id": "e", "goal": "0.05", "depends_on": ["d"]},
                   {"id": "z", "goal": "0.01", "depends_on": ["slow", "e"]})
    clock = FakeClock()
    cap, ex = EventCapture(), Sleeper(clock=clock)
    results = await _scheduler(graph, ex, cap, clock=clock).run()
    assert all(r.status == "succeeded" for r in results.values())
    t0 = clock.time() - clock.monotonic()
    spans = {n: (round((r.started or 0) - t0, 6), round((r.finished or 0) - t0, 6))
             for n, r in results.items()}
    assert spans == {"a": (0.0, 0.02), "slow": (0.02, 1.02), "c": (0.0, 0.05),
                     "d": (0.05, 0.1), "e": (0.1, 0.15), "z": (1.02, 1.03)}
    # the same in event order: d and e ran entirely while `slow` (a sibling branch) was running
    order = [(e.kind, e.node_id) for e in cap.events if e.kind in ("node.started", "node.finished")]
    assert order.index(("node.finished", "e")) < order.index(("node.finished", "slow"))
    assert order.index(("node.started", "z")) > order.index(("node.finished", "slow"))
    assert ex.calls == Counter({n: 1 for n in results})
    assert results["z"].output == "z(e,slow)"  # a node sees only its own dependencies' outputs


async def test_retry_then_skip_dependents_with_reason() -> None:
    graph = _graph({"id": "ok", "goal": "0.01"}, {"id": "bad", "goal": "0.01"},
                   {"id": "child", "goal": "0.01", "depends_on": ["bad"]},
                   {"id": "grand", "goal": "0.01", "depends_on": ["child", "ok"]})
    cap, ex = EventCapture(), Sleeper(fail={"bad": 5})
    results = await _scheduler(graph, ex, cap, node_attempts=3).run()
    assert ex.calls["bad"] == 3 and results["bad"].attempts == 3
    assert results["bad"].status == "failed" and "bad broke" in (results["bad"].error or {})["message"]
    assert {results["child"].status, results["grand"].status} == {"skipped"}
    skipped = {e.node_id: e.data["reason"] for e in cap.of("node.skipped")}
    assert set(skipped) == {"child", "grand"} and "'bad', which failed" in skipped["grand"]
    assert [e.data["will_retry"] for e in cap.of("node.failed")] == [True, True, False]


class SubtreeReplanner:
    def __init__(self) -> None:
        self.requests: list[ReplanRequest] = []

    async def replan(self, request: ReplanRequest) -> PlanGraph:
        self.requests.append(request)
        new = [PlanNode(id="fix", goal="0.01", depends_on=["a"]),
               PlanNode(id="after", goal="0.01", depends_on=["fix", "b"])]
        return request.accept(new)


async def test_failed_subtree_is_replanned_and_finished_nodes_are_not_rerun() -> None:
    graph = _graph({"id": "a", "goal": "0.01"}, {"id": "b", "goal": "0.01"},
                   {"id": "bad", "goal": "0.01", "depends_on": ["a"]},
                   {"id": "after_bad", "goal": "0.01", "depends_on": ["bad", "b"]})
    cap, ex, rp = EventCapture(), Sleeper(fail={"bad": 9}), SubtreeReplanner()
    sched = _scheduler(graph, ex, cap, node_attempts=2, replans=1, replanner=rp)
    results = await sched.run()
    assert ex.calls == Counter({"a": 1, "b": 1, "bad": 2, "fix": 1, "after": 1})
    assert rp.requests[0].removed == ["bad", "after_bad"]
    assert set(rp.requests[0].finished) == {"a", "b"}
    assert results["fix"].status == results["after"].status == "succeeded"
    assert results["after"].output == "after(b,fix)"
    assert results["after_bad"].status == "skipped"
    replanned = cap.first("plan.replanned").data
    assert replanned["added"] == ["fix", "after"] or set(replanned["added"]) == {"fix", "after"}


async def test_replan_cannot_reuse_a_kept_id() -> None:
    graph = _graph({"id": "a", "goal": "0.01"}, {"id": "bad", "goal": "0.01"})
    seen: list[str] = []

    class Clashing:
        async def replan(self, request: ReplanRequest) -> PlanGraph:
            try:
                return request.accept([PlanNode(id="a", goal="0.01")])
            except Exception as exc:
                seen.append(str(exc))
                raise

    cap = EventCapture()
    results = await _scheduler(graph, Sleeper(fail={"bad": 9}), cap, replans=1,
                               replanner=Clashing()).run()
    assert "'a' already belongs to a node that is kept" in seen[0]
    assert results["bad"].status == "failed" and cap.of("plan.rejected")


async def test_tool_call_budget_holds_under_20_way_fan_out() -> None:
    limit = 23

    class ToolHungry(Sleeper):
        async def run_node(self, node: PlanNode, inputs: Mapping[str, str],
                           budget: Budget) -> NodeOutput:
            made = 0
            for _ in range(3):  # like an agent: refused calls become errors it reads
                await asyncio.sleep(0)
                try:
                    budget.reserve_tool()
                    made += 1
                except BudgetExceeded:
                    pass
            return NodeOutput(output=str(made))

    graph = _graph(*({"id": f"n{i}", "goal": "0"} for i in range(20)))
    cap = EventCapture()
    results = await _scheduler(graph, ToolHungry(), cap,
                               spec=BudgetSpec(tool_calls=limit)).run()
    made = sum(int(r.output or 0) for r in results.values())
    assert made == limit  # all of it used, never more
    reserved = [e for e in cap.of("budget.reserved") if e.data["budget"] == "tool_calls"]
    assert len(reserved) == limit
    assert len(cap.of("budget.exceeded")) == 60 - limit


def test_budget_shares_are_reserved_up_front_and_unused_part_returned() -> None:
    capture = EventCapture()
    bus = EventBus("r", sinks=[capture])
    root = Budget.root(BudgetSpec(tokens=1000, max_depth=1), emit=bus.emit, clock=SystemClock())
    from agentkit.plan import NodeBudget

    child = root.child("n1", NodeBudget(tokens=600))
    with pytest.raises(BudgetExceeded):
        root.child("n2", NodeBudget(tokens=600))  # only 400 left for others
    hold = child.reserve_model(500, 0.0)
    with pytest.raises(BudgetExceeded):
        child.reserve_model(200, 0.0)  # the 500 in flight count in full until settled
    from agentkit.messages import Usage

    child.settle_model(hold, Usage(input_tokens=100, output_tokens=50), 0.0)
    child.close()
    assert root.pools["tokens"].used == 150 and root.pools["tokens"].held == 0
    assert root.child("n3", NodeBudget(tokens=850)) is not None
    sub = root.child("planner", spawn=True)
    with pytest.raises(BudgetExceeded, match="max_depth"):
        sub.child("deeper", spawn=True)
    assert any(e.data["returned"] == 450 for e in capture.of("budget.released"))


def _task(plan_nodes: list[dict[str, Any]], **extra: object) -> TaskSpec:
    return TaskSpec.model_validate({"name": "t", "goal": "count to 42", "model": "m",
                                    "models": {"m": {"model": "x", "base_url": "http://127.0.0.1:9/v1"}},
                                    "plan": {"nodes": plan_nodes},
                                    **extra})


async def _answer(system: str, user: str, node_id: str) -> str:
    return "done: 42"


async def test_max_agents_limits_concurrent_nodes() -> None:
    ex = Sleeper()
    task = _task([{"id": f"n{i}", "goal": "0.02"} for i in range(12)], budget={"max_agents": 3})
    result = await arun(task, executor=ex, synthesizer=_answer)
    assert result.status == "succeeded" and ex.peak == 3


async def test_cancel_mid_run_stops_every_node_and_leaves_a_verifiable_ledger(tmp_path: Path) -> None:
    ex = Sleeper()
    task = _task([{"id": "fast", "goal": "0.01"},
                  *({"id": f"w{i}", "goal": "30", "depends_on": ["fast"]} for i in range(5))])
    run = start(task, executor=ex, synthesizer=_answer, ledger_dir=tmp_path)
    kinds: list[str] = []
    async for event in run.events():
        kinds.append(event.kind)
        if kinds.count("node.started") == 6:
            run.cancel()
    result = await run.result()
    assert result.status == "cancelled" and result.error and result.error.type == "RunCancelled"
    assert sorted(ex.cancelled) == [f"w{i}" for i in range(5)] and ex.running == 0
    assert {result.nodes[f"w{i}"].status for i in range(5)} == {"cancelled"}
    assert result.nodes["fast"].status == "succeeded"
    assert kinds[0] == "run.started" and kinds[-1] == "run.finished"
    assert result.ledger is not None
    check = verify_ledger(result.ledger)
    assert check.ok and check.count == len(kinds)
    assert run.runtime.closed


async def test_concurrent_runs_do_not_interfere() -> None:
    tasks = [_task([{"id": f"r{k}n{i}", "goal": "0.02"} for i in range(4)]) for k in range(5)]
    captures = [EventCapture() for _ in tasks]
    results = await asyncio.gather(*(arun(t, executor=Sleeper(), synthesizer=_answer, sinks=[c])
                                     for t, c in zip(tasks, captures, strict=True)))
    for k, (res, cap) in enumerate(zip(results, captures, strict=True)):
        assert res.status == "succeeded" and set(res.nodes) == {f"r{k}n{i}" for i in range(4)}
        assert {e.run_id for e in cap.events} == {res.run_id}
        assert [e.seq for e in cap.events] == list(range(len(cap.events)))
    assert len({r.run_id for r in results}) == 5


async def test_run_sync_refuses_inside_an_event_loop() -> None:
    with pytest.raises(ConfigError, match="await agentkit.arun"):
        run_sync(_task([{"id": "a", "goal": "0"}]))


def test_run_sync_outside_a_loop() -> None:
    result = run_sync(_task([{"id": "a", "goal": "0"}]), executor=Sleeper(), synthesizer=_answer)
    assert result.status == "succeeded" and result.answer == "done: 42"


async def test_invalid_hand_written_plan_fails_the_run_clearly() -> None:
    result = await arun(_task([{"id": "a", "goal": "0", "depends_on": ["nope"]}]),
                        executor=Sleeper(), synthesizer=_answer)
    assert result.status == "failed" and result.error
    assert "depends on 'nope'" in result.error.message


async def test_unknown_prompt_override_is_refused_before_the_run_starts() -> None:
    task = _task([{"id": "a", "goal": "0"}], prompts={"plannr": "typo"})
    with pytest.raises(ConfigError, match="unknown prompt 'plannr'"):
        start(task, executor=Sleeper(), synthesizer=_answer)


async def test_with_few_slots_the_longest_chain_is_dispatched_first() -> None:
    # one slot; three short independent nodes are listed before a 3-node chain. FIFO would
    # start s0 first; longest-remaining-chain-first starts c0, and c1 before any s node.
    graph = _graph(*({"id": f"s{i}", "goal": "0.01"} for i in range(3)),
                   {"id": "c0", "goal": "0.01"}, {"id": "c1", "goal": "0.01", "depends_on": ["c0"]},
                   {"id": "c2", "goal": "0.01", "depends_on": ["c1"]})
    cap, ex = EventCapture(), Sleeper()
    await _scheduler(graph, ex, cap, limits=ResourceLimits({"agents": 1})).run()
    order = [e.node_id for e in cap.of("node.started")]
    assert order[0] == "c0" and ex.peak == 1
    assert order.index("c1") < order.index("s0")  # c1 (rank 2) beats every rank-1 node


def test_cost_budget_refuses_the_next_model_call_once_spent() -> None:
    from agentkit.messages import Usage

    root = Budget.root(BudgetSpec(cost_usd=0.01), emit=EventBus("r").emit, clock=SystemClock())
    node = root.child("n")
    hold = node.reserve_model(100, 0.004)
    with pytest.raises(BudgetExceeded, match="cost_usd"):
        node.reserve_model(100, 0.007)  # 0.004 held + 0.007 > 0.01: not made
    node.settle_model(hold, Usage(input_tokens=10, output_tokens=10), 0.01)
    with pytest.raises(BudgetExceeded, match="cost_usd"):
        node.reserve_model(100, 0.0)  # spent: even a call of unknown price is refused
    node.close()
    assert root.pools["cost_usd"].used == pytest.approx(0.01) and root.pools["tokens"].held == 0
