"""One run, top to bottom: plan -> validated DAG -> scheduler -> synthesizer -> RunResult.

`execute` owns the run's lifecycle: it opens the Runtime (ledger), always emits ``run.started``
and ``run.finished``, and always closes the Runtime — on success, failure and cancellation.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal

from agentkit.errors import AgentkitError, BudgetExceeded, RunCancelled, RunFailed
from agentkit.events import Event
from agentkit.messages import Usage
from agentkit.runtime import Runtime
from agentkit.swarm.budget import Budget
from agentkit.swarm.plan import PlanError, PlanGraph, validate_plan
from agentkit.swarm.prompting import Prompts
from agentkit.swarm.run import RunResult, UsageTotals
from agentkit.swarm.scheduler import NodeExecutor, NodeResult, Replanner, Scheduler
from agentkit.swarm.synthesize import Synthesis, synthesize

__all__ = ["SwarmContext", "execute"]


@dataclass
class SwarmContext:
    """Per-run state shared by planner, executor and synthesizer (never module-global)."""

    runtime: Runtime
    prompts: Prompts
    budget: Budget
    #: url -> {content_hash, title}, from ``url.fetched`` events of this run
    fetched: dict[str, dict[str, Any]] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    nodes: dict[str, NodeResult] = field(default_factory=dict)

    def add(self, usage: Usage, cost_usd: float) -> None:
        self.usage = self.usage + usage
        self.cost_usd += cost_usd

    def on_event(self, event: Event) -> None:
        if event.kind == "url.fetched" and event.data.get("url"):
            self.fetched[event.data["url"]] = {"content_hash": event.data.get("content_hash"),
                                               "title": event.data.get("title")}

    def result(self, status: Literal["succeeded", "failed", "cancelled"], *, answer: str | None = None, error: dict[str, Any] | None = None,
               synthesis: Synthesis | None = None) -> RunResult:
        rt = self.runtime
        return RunResult(
            run_id=rt.run_id, status=status,
            answer=answer, nodes=dict(self.nodes),
            citations=synthesis.citations if synthesis else [],
            ungrounded=synthesis.ungrounded if synthesis else [],
            usage=UsageTotals(input_tokens=self.usage.input_tokens,
                              output_tokens=self.usage.output_tokens,
                              reasoning_tokens=self.usage.reasoning_tokens),
            cost_usd=self.cost_usd, error=error,
            ledger=str(rt.ledger_path) if rt.ledger_path else None)


async def execute(runtime: Runtime, *, executor: NodeExecutor | None = None,
                  replanner: Replanner | None = None, planner: Any = None,
                  synthesizer: Any = None) -> RunResult:
    """Run the task held by `runtime`. Never raises for a failed or cancelled run."""
    task = runtime.task
    async with runtime:
        ctx = SwarmContext(runtime=runtime, prompts=Prompts.for_task(task),
                           budget=Budget.root(task.budget, emit=runtime.emit, clock=runtime.clock))
        runtime.bus.add_sink(ctx.on_event)
        runtime.emit("run.started", {"task": task.name, "mode": task.mode, "goal": task.goal})
        result = ctx.result("failed", error={"type": "RunFailed", "message": "did not finish"})
        try:
            remaining = ctx.budget.remaining_seconds()
            async with asyncio.timeout(remaining):
                if task.mode == "agent":
                    result = await _agent_mode(ctx)
                else:
                    result = await _swarm(ctx, executor, replanner, planner, synthesizer)
        except asyncio.CancelledError:
            result = ctx.result("cancelled", error=RunCancelled("the run was cancelled").to_dict())
        except TimeoutError:
            err = BudgetExceeded("wall_seconds", task.budget.wall_seconds or 0.0)
            runtime.emit("budget.exceeded", {"budget": "wall_seconds",
                                             "limit": task.budget.wall_seconds, "scope": "run"})
            result = ctx.result("failed", error=err.to_dict())
        except AgentkitError as exc:
            result = ctx.result("failed", error=exc.to_dict())
        except Exception as exc:  # a bug: still end the run cleanly and say what happened
            result = ctx.result("failed", error={"type": type(exc).__name__, "message": str(exc),
                                                 "internal": True})
        finally:
            runtime.emit("run.finished", {"status": result.status, "error": result.error,
                                          "usage": result.usage.model_dump(),
                                          "cost_usd": result.cost_usd,
                                          "nodes": {k: v.status for k, v in ctx.nodes.items()}})
    return result


async def _plan(ctx: SwarmContext, planner: Any) -> PlanGraph:
    from agentkit.swarm.agents import known_tools

    task = ctx.runtime.task
    if task.plan is not None:
        try:
            graph = validate_plan(task.plan, known_tools=known_tools(task, 0),
                                  known_models=task.models, max_nodes=task.budget.max_nodes)
        except PlanError as exc:
            raise RunFailed(f"the task's plan is invalid: {exc}") from exc
        source = "task"
    else:
        graph = await planner.plan()
        source = "planner"
    ctx.runtime.emit("plan.created", {"source": source, **graph.summary()})
    return graph


async def _swarm(ctx: SwarmContext, executor: NodeExecutor | None, replanner: Replanner | None,
                 planner: Any, synthesizer: Any) -> RunResult:
    from agentkit.swarm.agents import AgentExecutor, Planner, agent_ask, known_tools

    task = ctx.runtime.task
    planner = planner or Planner(ctx)
    graph = await _plan(ctx, planner)
    scheduler = Scheduler(
        graph, executor or AgentExecutor(ctx), budget=ctx.budget, emit=ctx.runtime.emit,
        clock=ctx.runtime.clock, limits=ctx.runtime.limits,
        node_attempts=task.retry.node_attempts, replans=task.retry.replans,
        replanner=replanner or planner, known_tools=known_tools(task, 0),
        known_models=tuple(task.models), max_nodes=task.budget.max_nodes)
    ctx.nodes = scheduler.results
    try:
        await scheduler.run()
    finally:
        ctx.nodes = dict(scheduler.results)
    for out in scheduler.outputs.values():
        ctx.add(out.usage, out.cost_usd)
    final = ctx.nodes
    done = [n for n in scheduler.graph.order if final[n].status == "succeeded"]
    if not done:
        raise RunFailed("no node of the plan succeeded; see nodes for each error")
    synthesis = await _synthesize(ctx, scheduler, done, synthesizer or agent_ask(ctx))
    # nodes replaced by a re-plan stay in `nodes` (with their error) but do not fail the run
    bad = {k: final[k].status for k in scheduler.graph.order if final[k].status != "succeeded"}
    error = None
    if bad:
        error = {"type": "RunFailed", "message": f"{len(bad)} node(s) did not succeed; the "
                 f"answer uses the others", "nodes": bad}
    return ctx.result("failed" if bad else "succeeded", answer=synthesis.answer, error=error,
                      synthesis=synthesis)


async def _synthesize(ctx: SwarmContext, scheduler: Scheduler, done: list[str],
                      ask: Any) -> Synthesis:
    task, prompts = ctx.runtime.task, ctx.prompts
    results = "\n\n".join(f"## {n}: {scheduler.graph.nodes[n].goal}\n{scheduler.outputs[n].output}"
                          for n in done)
    fetched = "\n".join(f"- {u}" + (f" ({i['title']})" if i.get("title") else "")
                        for u, i in ctx.fetched.items()) or "(none)"
    # grounded = what the user gave and what tools produced; sub-agents' own words are not a
    # source (a worker can invent numbers as easily as the synthesizer)
    corpus = [task.goal, *(s for n in done for s in scheduler.outputs[n].sources)]
    return await synthesize(
        ask=ask, system=prompts.render("synthesizer.system"),
        user=prompts.render("synthesizer.user", goal=task.goal, results=results, fetched=fetched),
        fix_template=lambda items: prompts.render("synthesizer.fix",
                                                  ungrounded="\n".join(f"- {i}" for i in items)),
        corpus=corpus, fetched=ctx.fetched, emit=ctx.runtime.emit)


async def _agent_mode(ctx: SwarmContext) -> RunResult:
    """mode: agent — one agent loop on the task (B2's `run_agent_task`), same RunResult."""
    from agentkit.agent import run_agent_task

    out = await run_agent_task(ctx.runtime)
    ctx.add(out.usage, out.cost_usd)
    return ctx.result("succeeded", answer=out.answer)
