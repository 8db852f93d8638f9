"""`delegate`: a sub-agent spawns a sub-team — the planner again, on its own sub-goal.

A node may list ``delegate`` in its tools while its depth is below ``budget.max_depth``. The
call plans the sub-goal (planner model, `submit_plan`, validation as at the top), runs the
sub-plan with its own `Scheduler` inside the calling agent's tool call (so cancelling the node
cancels the sub-team), and returns the sub-nodes' outputs as the tool result. Budgets nest: the
sub-team's budget is a child of the node's one level deeper, so depth, tokens, cost and tool
calls stay bounded by everything above. Sub-node ids are prefixed with the parent's id
(``research.sub.a``) so events and the ledger say where each came from.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from agentkit.budget import Budget
from agentkit.errors import AgentkitError, BudgetExceeded, ToolError
from agentkit.plan import Plan, PlanGraph, PlanNode, validate_plan
from agentkit.swarm.agents import DELEGATE, AgentExecutor, DelegateFactory, Planner, known_tools
from agentkit.swarm.context import SwarmContext
from agentkit.swarm.scheduler import Scheduler
from agentkit.tools import Tool, ToolArgs, ToolContext, ToolOutput

__all__ = ["Delegate", "delegate_factory"]


def delegate_factory(ctx: SwarmContext) -> DelegateFactory:
    """What `AgentExecutor` calls to give a node the `delegate` tool (nodes of a sub-team may
    delegate again, while the depth budget allows)."""

    def make(node: PlanNode, budget: Budget) -> Tool:
        return Delegate(ctx, node, budget)

    return make


class DelegateArgs(ToolArgs):
    goal: str = Field(min_length=1, max_length=20_000,
                      description="the sub-task for the sub-team, self-contained")


class Delegate(Tool):
    name: ClassVar[str] = DELEGATE
    description: ClassVar[str] = (
        "Hand a large part of your sub-task to a sub-team: a planner splits the goal you give "
        "into parallel parts for other agents, and you get their results back. Use it only "
        "for work with several independent parts.")
    args_model: ClassVar[type[ToolArgs]] = DelegateArgs
    timeout_s: ClassVar[float] = 3600.0

    def __init__(self, ctx: SwarmContext, parent: PlanNode, budget: Budget) -> None:
        self.ctx, self.parent, self.budget = ctx, parent, budget
        self.calls = 0

    async def call(self, args: Any, ctx: ToolContext) -> ToolOutput:
        self.calls += 1
        scope = f"{self.parent.id}.sub{self.calls}."
        try:
            budget = self.budget.child(scope.rstrip("."), spawn=True)
        except BudgetExceeded as err:
            raise ToolError("depth_exceeded", f"{err}; do this part yourself") from None
        try:
            graph = await self._plan(args.goal, scope, budget.depth)
            self.ctx.runtime.emit("plan.created", {"source": "delegate", "parent": self.parent.id,
                                                   "depth": budget.depth, **graph.summary()},
                                  node_id=self.parent.id)
            await self.ctx.runtime.planned(graph, node_id=self.parent.id)
            sched = Scheduler(graph, AgentExecutor(self.ctx, delegate_factory(self.ctx)),
                              budget=budget,
                              emit=self.ctx.runtime.emit, clock=self.ctx.runtime.clock,
                              limits=None, node_attempts=self.ctx.runtime.task.retry.node_attempts)
            results = await sched.run()
        except AgentkitError as err:
            raise ToolError("delegate_failed", str(err)) from None
        finally:
            budget.close()
        parts = [f"## {k}: {graph.nodes[k].goal}\n{sched.outputs[k].output}"
                 for k in graph.order if k in sched.outputs]
        failed = [f"- {k}: {r.status} ({(r.error or {}).get('message', '')})"
                  for k, r in results.items() if r.status != "succeeded"]
        text = "\n\n".join(parts) + ("\n\nNot done:\n" + "\n".join(failed) if failed else "")
        return ToolOutput(text, {"nodes": {k: r.status for k, r in results.items()},
                                 "depth": budget.depth})

    async def _plan(self, goal: str, scope: str, depth: int) -> PlanGraph:
        """Plan the sub-goal, then prefix every id with `scope` (unique across the run)."""
        planned = await Planner(self.ctx, goal=goal, depth=depth, scope=scope).plan()
        renamed = [n.model_copy(update={"id": scope + n.id,
                                        "depends_on": [scope + d for d in n.depends_on]})
                   for n in planned.plan.nodes]
        task = self.ctx.runtime.task
        return validate_plan(Plan(nodes=renamed), known_tools=known_tools(self.ctx.runtime, depth),
                             known_models=task.models)
