"""A swarm run, top to bottom: plan -> validated DAG -> scheduler -> synthesizer.

`run_swarm` is called by the run lifecycle (`agentkit.run.execute`), which owns the ledger,
``run.started``/``run.finished``, the wall clock and the `RunResult`; this module only turns a
task into an answer. Node outcomes are kept current in `SwarmContext.nodes`, so a run that
fails or is cancelled half-way still reports every node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from agentkit.errors import PlanError, RunFailed
from agentkit.plan import PlanGraph, validate_plan
from agentkit.swarm.agents import AgentExecutor, Planner, agent_ask, known_tools
from agentkit.swarm.context import SwarmContext
from agentkit.swarm.remote import start_executor
from agentkit.swarm.scheduler import NodeExecutor, NodeStatus, Replanner, ReplanRequest, Scheduler
from agentkit.swarm.spawn import delegate_factory
from agentkit.swarm.synthesize import Ask, Synthesis, synthesize

__all__ = ["PlanSource", "SwarmOutcome", "run_swarm"]


class PlanSource(Protocol):
    """Makes the plan and re-plans failed subtrees (the default is the planner agent)."""

    async def plan(self) -> PlanGraph: ...

    async def replan(self, request: ReplanRequest) -> PlanGraph: ...


@dataclass
class SwarmOutcome:
    """The synthesized answer and which nodes did not succeed (empty: all did)."""

    synthesis: Synthesis
    not_succeeded: dict[str, NodeStatus]


async def run_swarm(ctx: SwarmContext, *, executor: NodeExecutor | None = None,
                    replanner: Replanner | None = None, planner: PlanSource | None = None,
                    synthesizer: Ask | None = None) -> SwarmOutcome:
    """Plan, run every node, synthesize. Raises `RunFailed` if no node succeeded.

    Without an `executor`, the task's ``executor`` decides: in this process, or (``ray``) on
    a cluster whose workers start while the planner plans."""
    task = ctx.runtime.task
    planner = planner or Planner(ctx)
    remote = await start_executor(ctx) if executor is None else None
    graph = await _plan(ctx, planner)
    if executor is None and remote is None:  # the nodes run here, with this runtime's tools
        await _announce(ctx, graph)
    if remote is not None:
        await remote.ready()
    scheduler = Scheduler(
        graph, executor or remote or AgentExecutor(ctx, delegate_factory(ctx)), budget=ctx.budget,
        emit=ctx.runtime.emit, clock=ctx.runtime.clock, limits=ctx.runtime.limits,
        node_attempts=task.retry.node_attempts, replans=task.retry.replans,
        replanner=replanner or planner, known_tools=known_tools(ctx.runtime, 0),
        known_models=tuple(task.models), max_nodes=task.budget.max_nodes,
        restored=ctx.restored)
    ctx.nodes = scheduler.state
    try:
        await scheduler.run()
    finally:
        ctx.nodes = scheduler.results
    done = [n for n in scheduler.graph.order if ctx.nodes[n].status == "succeeded"]
    if not done:
        raise RunFailed("no node of the plan succeeded; see nodes for each error")
    synthesis = await _synthesize(ctx, scheduler, done, synthesizer or agent_ask(ctx))
    # nodes replaced by a re-plan stay in `nodes` (with their error) but do not fail the run
    bad = {k: ctx.nodes[k].status for k in scheduler.graph.order
           if ctx.nodes[k].status != "succeeded"}
    return SwarmOutcome(synthesis=synthesis, not_succeeded=bad)


async def _plan(ctx: SwarmContext, planner: PlanSource) -> PlanGraph:
    task = ctx.runtime.task
    if task.plan is not None:
        try:
            graph = validate_plan(task.plan, known_tools=known_tools(ctx.runtime, 0),
                                  known_models=task.models, max_nodes=task.budget.max_nodes)
        except PlanError as exc:
            raise RunFailed(f"the task's plan is invalid: {exc}") from exc
        source = "task"
    else:
        graph = await planner.plan()
        source = "planner"
    ctx.runtime.emit("plan.created", {"source": source, **graph.summary()})
    return graph


async def _announce(ctx: SwarmContext, graph: PlanGraph) -> None:
    """Tell the tools the plan is known (`Tool.planned`: run_code pre-warms sandboxes), with
    only the nodes still to run on a resumed run."""
    if all(n in ctx.restored for n in graph.order):
        return
    await ctx.runtime.planned(graph.without(ctx.restored) if ctx.restored else graph)


async def _synthesize(ctx: SwarmContext, scheduler: Scheduler, done: list[str],
                      ask: Ask) -> Synthesis:
    task, prompts = ctx.runtime.task, ctx.runtime.prompts
    results = "\n\n".join(f"## {n}: {scheduler.graph.nodes[n].goal}\n{scheduler.outputs[n].output}"
                          for n in done)
    fetched = "\n".join(f"- {u}" + (f" ({i['title']})" if i.get("title") else "")
                        for u, i in ctx.fetched.items()) or "(none)"
    values = {"goal": task.goal, "results": results, "fetched": fetched}
    # grounded = what the user gave and what tools produced; sub-agents' own words are not a
    # source (a worker can invent numbers as easily as the synthesizer)
    corpus = [task.goal, *(s for n in done for s in scheduler.outputs[n].sources)]
    return await synthesize(
        ask=ask, system=prompts.render("synthesizer.system", **values, ungrounded=""),
        user=prompts.render("synthesizer.user", **values, ungrounded=""),
        fix_template=lambda items: prompts.render(
            "synthesizer.fix", **values, ungrounded="\n".join(f"- {i}" for i in items)),
        corpus=corpus, fetched=ctx.fetched, emit=ctx.runtime.emit)
