"""The swarm's agents, all on `agentkit.agent.Agent`: planner/replanner, node worker, writer.

- `Planner` runs the planner model with the task's tools plus `submit_plan`, whose arguments
  are the plan itself. An invalid plan comes back as the tool's error with every problem
  listed, so the model revises (at most ``task.retry.plan_attempts`` submissions). The same
  class re-plans a failed subtree (the scheduler's `Replanner`).
- `AgentExecutor` runs one node: its goal, its dependencies' outputs, its allowed tools, its
  budget — nothing else of the parent's context.
- `agent_ask` is the synthesizer's model call (no tools).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from pydantic import Field

from agentkit.agent import Agent, AgentResult, no_answer_reason
from agentkit.budget import Budget
from agentkit.errors import PlanError, RunFailed, ToolError
from agentkit.messages import ToolResultPart, ToolSpec
from agentkit.models import ModelSettings
from agentkit.plan import Plan, PlanGraph, PlanNode, PlanShape, PlanToolSpec, validate_plan
from agentkit.runtime import Runtime
from agentkit.swarm.consensus import last_program_stdout, vote
from agentkit.swarm.context import SwarmContext
from agentkit.swarm.inputs import describe_inputs
from agentkit.swarm.scheduler import NodeOutput, ReplanRequest
from agentkit.tools import Tool, ToolArgs, ToolContext, ToolOutput, ToolRegistry

#: the tool that lets a node spawn a sub-team (planner + scheduler one level deeper)
DELEGATE = "delegate"
#: tools the planner may use itself: read-only fact finding. Computing and writing are the
#: nodes' work; a small local model offered run_code while planning did the task itself
#: (with failing code) instead of planning it.
PLANNER_TOOLS = frozenset({"web_search", "web_fetch", "read_file", "list_files"})

__all__ = ["DELEGATE", "AgentExecutor", "DelegateFactory", "Planner", "SubmitPlan", "agent_ask",
           "known_tools", "tools_text"]

#: makes the `delegate` tool of a node (see `agentkit.swarm.spawn`)
DelegateFactory = Callable[[PlanNode, Budget], Tool]



#: what a node reads before the outputs it depends on: a small model otherwise takes an
#: upstream node's question for its own (benchmarks/local_model.py --family, weather)
_UPSTREAM_HEADING = ("Results of earlier sub-tasks (use them only where your own sub-task needs "
                    "them; they are not your question):\n\n")

class SubmitPlanArgs(ToolArgs):
    nodes: list[PlanNode] = Field(min_length=1, max_length=1000,
                                  description="the sub-tasks; each lists the ids it depends on")


class SubmitPlan(Tool):
    """The planner's way to hand in a plan; validation errors are its result."""

    name = "submit_plan"
    description = ("Submit the plan: a list of nodes {id, goal, depends_on, tools, "
                   "expected_output?}. Returns the problems if the plan is invalid.")
    args_model = SubmitPlanArgs
    concurrency_class = "planner"
    #: handing in the plan is engine control, not work: the tool_calls budget does not pay
    counts_against_budget = False

    def __init__(self, check: Callable[[list[PlanNode]], PlanGraph], attempts: int,
                 shape: PlanShape | None = None) -> None:
        self.check, self.attempts, self.shape = check, attempts, shape
        self.accepted: PlanGraph | None = None
        self.rejections: list[PlanError] = []

    def spec(self) -> ToolSpec:
        """With a `shape`, a `PlanToolSpec`: a grammar-constrained model writes only plans of
        that shape (hosted models see the same JSON schema either way)."""
        base = super().spec()
        if self.shape is None:
            return base
        return PlanToolSpec(name=base.name, description=base.description,
                            parameters=base.parameters, shape=self.shape)

    async def call(self, args: Any, ctx: ToolContext) -> ToolOutput:
        if self.accepted is not None:
            return ToolOutput("The plan was already accepted; reply with one sentence and stop.")
        if len(self.rejections) >= self.attempts:
            raise ToolError("no_attempts_left", "no more plan submissions are allowed; stop")
        try:
            self.accepted = self.check(args.nodes)
        except PlanError as err:
            self.rejections.append(err)
            ctx.emit("plan.rejected", {"attempt": len(self.rejections), "problems": err.problems,
                                       "attempts_left": self.attempts - len(self.rejections)})
            raise ToolError("invalid_plan", str(err), retry_hint="fix every problem listed and "
                            "call submit_plan again with the whole plan") from None
        return ToolOutput(f"Plan accepted: {len(args.nodes)} nodes.", {"nodes": len(args.nodes)})


def known_tools(runtime: Runtime, depth: int) -> tuple[str, ...]:
    """Tools a plan node at `depth` may list: every tool the run offers (built-in, Python and
    MCP; an MCP server's name stands for all its tools), plus `delegate` while a sub-team may
    still be spawned (depth below ``budget.max_depth``)."""
    extra = (DELEGATE,) if depth < runtime.task.budget.max_depth else ()
    registry = runtime.tools
    return (*registry.names(), *sorted(registry.groups), *extra)


def tools_text(registry: ToolRegistry, names: Iterable[str]) -> str:
    """The tools as the planner reads them: a built-in by its name, any other tool with the
    first sentence of its description, so the planner knows what it is for."""
    parts = []
    for name in names:
        if name not in registry:
            continue
        tool = registry.get(name)
        if not tool.origin:
            parts.append(name)
            continue
        about = " ".join(tool.description.split())
        about = about.split(". ", 1)[0].rstrip(".")
        parts.append(f"{name} ({about[:120]})" if about else name)
    return ", ".join(parts)


class Planner:
    """Plans the task (or, for `delegate`, a sub-goal at a deeper level), and re-plans failed
    subtrees (the scheduler's `Replanner`)."""

    def __init__(self, ctx: SwarmContext, *, goal: str | None = None, depth: int = 0,
                 scope: str = "") -> None:
        self.ctx, self.depth, self.scope = ctx, depth, scope
        self.goal = goal or ctx.runtime.task.goal

    def _validate(self, nodes: list[PlanNode]) -> PlanGraph:
        task = self.ctx.runtime.task
        return validate_plan(Plan(nodes=nodes), known_tools=known_tools(self.ctx.runtime,
                                                                          self.depth),
                             known_models=task.models, max_nodes=task.budget.max_nodes)

    def _tools_text(self) -> str:
        names = known_tools(self.ctx.runtime, self.depth)
        text = tools_text(self.ctx.runtime.tools, names)
        if DELEGATE in names:
            text = f"{text}, {DELEGATE}" if text else DELEGATE
        text = text or "none"
        if DELEGATE in names:
            text += (" (`delegate` hands a big part of a node's work to a sub-team; give it "
                     "only to nodes whose work has several independent parts)")
        return text

    def _shape_tools(self) -> tuple[str, ...]:
        """The tools a grammar-built plan may name: the task's own, not `delegate`. The 1.5B
        model, offered it, gave every node of a two-question CSV task to a sub-team (whose
        planner copied the prompt's example) instead of run_code."""
        return tuple(t for t in known_tools(self.ctx.runtime, self.depth) if t != DELEGATE)

    async def plan(self) -> PlanGraph:
        task = self.ctx.runtime.task
        values = {"goal": self.goal, "tools": self._tools_text(),
                  "max_nodes": task.budget.max_nodes, "files": _files(self.ctx.runtime)}
        shape = PlanShape(max_nodes=task.budget.max_nodes, tools=self._shape_tools())
        return await self._run("planner", values, self._validate, shape,
                               node_id=f"{self.scope}planner")

    async def replan(self, request: ReplanRequest) -> PlanGraph:
        finished = "\n".join(f"- {k}: {v[:500]}" for k, v in request.finished.items()) or "(none)"
        values = {"goal": self.goal, "tools": self._tools_text(),
                  "failed_id": request.failed.id, "failed_goal": request.failed.goal,
                  "error": request.error, "removed": ", ".join(request.removed),
                  "finished": finished}
        kept = [n for n in request.graph.order if n not in request.removed]
        shape = PlanShape.after(kept, max_nodes=self.ctx.runtime.task.budget.max_nodes,
                                tools=self._shape_tools())
        return await self._run("replanner", values, request.accept, shape,
                               node_id=f"{self.scope}replan:{request.failed.id}")

    async def _run(self, prompt: str, values: Mapping[str, Any],
                   check: Callable[[list[PlanNode]], PlanGraph], shape: PlanShape,
                   node_id: str) -> PlanGraph:
        ctx, task = self.ctx, self.ctx.runtime.task
        submit = SubmitPlan(check, task.retry.plan_attempts, shape)
        tools = ToolRegistry([*(ctx.runtime.tools.get(n) for n in ctx.runtime.tools.names()
                                if n in PLANNER_TOOLS), submit])
        budget = ctx.budget.child(node_id)
        try:
            agent = Agent(ctx.runtime, task.model_for("planner"), tools,
                          system_prompt=ctx.runtime.prompts.render(f"{prompt}.system", **values),
                          node_id=node_id, max_steps=task.budget.max_steps + task.retry.plan_attempts,
                          budget=budget, agent_id=node_id,
                          done=lambda: submit.accepted is not None)
            result = await agent.run(ctx.runtime.prompts.render(f"{prompt}.user", **values))
        finally:
            budget.close()
        if submit.accepted is not None:
            return submit.accepted
        if submit.rejections:
            raise PlanError([f"no valid plan after {len(submit.rejections)} submission(s); last "
                             f"problems: {'; '.join(submit.rejections[-1].problems)}"])
        raise PlanError([f"the {prompt} finished without calling submit_plan "
                         f"({result.stop_reason}): {result.answer[:300]!r}"])


class AgentExecutor:
    """Runs a node as one `Agent` on the node's model (or the task's worker model)."""

    def __init__(self, ctx: SwarmContext, delegate: DelegateFactory | None = None) -> None:
        self.ctx, self.delegate = ctx, delegate

    async def run_node(self, node: PlanNode, inputs: Mapping[str, str],
                       budget: Budget) -> NodeOutput:
        ctx, task = self.ctx, self.ctx.runtime.task
        prompts = ctx.runtime.prompts
        tools = ctx.runtime.tools.only(node.tools) if node.tools else ToolRegistry()
        if DELEGATE in node.tools and self.delegate is not None:
            tools.add(self.delegate(node, budget))
        deps = "\n\n".join(f"### Output of `{k}`\n{v}" for k, v in inputs.items())
        values = {"goal": node.goal, "tools": ", ".join(node.tools) or "none",
                  "expected": f"Expected output: {node.expected_output}" if node.expected_output
                  else "", "inputs": _UPSTREAM_HEADING + deps if deps else "",
                  "files": _files(ctx.runtime)}
        system = prompts.render("worker.system", **values)
        user = prompts.render("worker.user", **values)

        async def sample(i: int) -> AgentResult:
            agent = Agent(ctx.runtime, node.model or task.model_for("worker"), tools,
                          system_prompt=system, node_id=node.id, max_steps=task.budget.max_steps,
                          budget=budget, agent_id=node.id if i == 0 else f"{node.id}#{i}",
                          settings=ModelSettings(sample=i))
            return await agent.run(user)

        if task.consensus.samples == 1:
            result = await sample(0)
        else:
            voted = await vote(sample, task.consensus,
                               lambda kind, data: ctx.runtime.emit(kind, data, node_id=node.id))
            chosen = voted.chosen.result
            assert chosen is not None  # vote() raises when no sample produced a result
            result = chosen
        if not result.ok:
            raise RunFailed(f"node {node.id!r} gave no answer: "
                            f"{no_answer_reason(result, task.budget.max_steps)}")
        return NodeOutput(output=with_program_output(result), sources=_tool_texts(result))


def _files(runtime: Runtime) -> str:
    """The ``$files`` placeholder: the sandbox's input files as they look (`describe_inputs`)."""
    return describe_inputs(runtime.workspace, runtime.task.sandbox.inputs)


def with_program_output(result: AgentResult) -> str:
    """The node's answer plus, verbatim, what its last successful program printed.

    Dependents and the synthesizer then read the numbers as the sandbox printed them, not only
    as the worker retold them (small models paraphrase, round or drop lines).
    """
    program = last_program_stdout(result)
    if program is None:
        return result.answer
    rendered, stdout = program
    if stdout.strip() and stdout.strip() in result.answer:
        return result.answer  # already quoted whole: no need to repeat it
    return f"{result.answer}\n\nOutput of the last successful program (verbatim):\n{rendered}"


def _tool_texts(result: AgentResult) -> list[str]:
    """What the node's tools produced: the sources an answer's numbers may come from.

    A failed program does not count: its traceback quotes the model's own code, so numbers a
    model invented inside its code would otherwise look grounded.
    """
    return [p.content for m in result.messages if m.role == "tool" for p in m.parts
            if isinstance(p, ToolResultPart) and not p.is_error
            and (p.metadata or {}).get("exit_code", 0) == 0]


def agent_ask(ctx: SwarmContext) -> Callable[[str, str, str], Awaitable[str]]:
    """The synthesizer's call: one tool-less agent run on the synthesizer model."""

    async def ask(system: str, user: str, node_id: str) -> str:
        budget = ctx.budget.child(node_id)
        try:
            agent = Agent(ctx.runtime, ctx.runtime.task.model_for("synthesizer"), ToolRegistry(),
                          system_prompt=system, node_id=node_id, max_steps=2, budget=budget,
                          agent_id=node_id)
            result = await agent.run(user)
        finally:
            budget.close()
        if not result.ok:
            raise RunFailed(f"the synthesizer gave no answer: {no_answer_reason(result, 2)}")
        return result.answer

    return ask
