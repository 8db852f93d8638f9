"""The agent loop: model turn -> all tool calls of the turn in parallel -> results -> next turn.

It stops at a final answer (a turn with no tool calls), at the step limit, or when a budget
says so. The assistant `Message` is appended to the history exactly as the adapter returned it
(reasoning, signatures and opaque payloads included); the adapter's profile decides what of it
is replayed on the wire. Tool failures of every kind (a `ToolError`, an unknown tool, arguments
that are not valid JSON or do not fit the schema, a crashing tool) come back to the model as an
error result it can act on; they never end the run. A turn cut off by the token limit is not
an answer: the loop asks once for a brief reply, then gives up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel

from agentkit.clock import Clock
from agentkit.errors import BudgetExceeded, RunFailed, ToolError
from agentkit.messages import Message, ToolCallPart, ToolResultPart, Turn, Usage
from agentkit.models.base import ChatModel, DeltaCallback, ModelSettings
from agentkit.models.context import call_scope
from agentkit.task import BudgetSpec
from agentkit.tools.base import Tool, ToolContext, ToolRegistry, invoke_tool

if TYPE_CHECKING:
    from agentkit.runtime import Runtime

__all__ = ["Agent", "AgentBudget", "AgentResult", "TaskBudget", "run_agent_task"]

DEFAULT_SYSTEM_PROMPT = (
    "You are a careful assistant. Use the tools when they help; you may call several tools "
    "at once when the calls do not depend on each other. When a tool returns an error, read "
    "it and adjust. When you have the answer, reply with it and call no tool.")
BRIEF_PROMPT = ("Your last reply was cut off at the output token limit. Reply again, briefly: "
                "give the final answer in a few sentences.")


class AgentResult(BaseModel):
    """What an agent run produced. `stop_reason` says whether `answer` is a real answer."""

    answer: str
    messages: list[Message]
    usage: Usage
    cost_usd: float
    steps: int
    tool_calls: int
    stop_reason: Literal["answer", "max_steps", "truncated"] = "answer"

    @property
    def ok(self) -> bool:
        return self.stop_reason == "answer"


class AgentBudget(Protocol):
    """Checked before each model and tool call; raises `BudgetExceeded` to refuse."""

    def reserve_model(self, max_tokens: int) -> None: ...

    def commit_model(self, usage: Usage, cost_usd: float) -> None: ...

    def reserve_tool(self) -> None: ...

    def release_model(self) -> None:
        """The model call failed: give back what `reserve_model` held."""
        ...


class TaskBudget:
    """The default budget for ``mode: agent``: the task's tokens, cost, wall time, tool calls.

    A model call is allowed while the spend is under the limit, so one agent can overshoot by
    at most one call (the swarm's hierarchical budget reserves ``max_tokens`` up front instead).
    """

    def __init__(self, spec: BudgetSpec, clock: Clock,
                 emit: Callable[[str, dict[str, Any]], Any] | None = None) -> None:
        self.spec, self.clock, self.emit = spec, clock, emit
        self.tokens, self.cost_usd, self.tool_calls = 0, 0.0, 0
        self._started: float | None = None

    def reserve_model(self, max_tokens: int) -> None:
        now = self.clock.monotonic()
        self._started = now if self._started is None else self._started
        if self.spec.wall_seconds is not None and now - self._started >= self.spec.wall_seconds:
            self._refuse("wall_seconds", self.spec.wall_seconds, now - self._started)
        if self.spec.tokens is not None and self.tokens >= self.spec.tokens:
            self._refuse("tokens", self.spec.tokens, self.tokens + max_tokens)
        if self.spec.cost_usd is not None and self.cost_usd >= self.spec.cost_usd:
            self._refuse("cost_usd", self.spec.cost_usd, self.cost_usd)

    def release_model(self) -> None:
        pass  # nothing is held: spend is counted when the call commits

    def commit_model(self, usage: Usage, cost_usd: float) -> None:
        self.tokens += usage.total_tokens
        self.cost_usd += cost_usd

    def reserve_tool(self) -> None:
        if self.spec.tool_calls is not None and self.tool_calls >= self.spec.tool_calls:
            self._refuse("tool_calls", self.spec.tool_calls, self.tool_calls + 1)
        self.tool_calls += 1

    def _refuse(self, budget: str, limit: float, requested: float) -> None:
        err = BudgetExceeded(budget, limit, requested)
        if self.emit is not None:
            self.emit("budget.exceeded", err.to_dict())
        raise err


class Agent:
    """One sub-agent: a model, the tools it may call, a system prompt, limits."""

    def __init__(self, runtime: Runtime, model_name: str, tools: ToolRegistry | None = None,
                 system_prompt: str = DEFAULT_SYSTEM_PROMPT, node_id: str | None = None,
                 max_steps: int | None = None, *, budget: AgentBudget | None = None,
                 agent_id: str | None = None, settings: ModelSettings | None = None,
                 on_delta: DeltaCallback | None = None,
                 done: Callable[[], bool] | None = None) -> None:
        self.runtime, self.model_name, self.on_delta = runtime, model_name, on_delta
        #: checked after each round of tool calls: True ends the run with the last tool result
        #: as the answer (the planner stops once its plan is accepted, without another turn)
        self.done = done
        self.tools = tools if tools is not None else ToolRegistry()
        self.system_prompt, self.node_id, self.agent_id = system_prompt, node_id, agent_id
        self.max_steps = max_steps or runtime.task.budget.max_steps
        self.budget, self.settings = budget, settings or ModelSettings()
        self._tool_calls = 0

    async def run(self, user_prompt: str, *, history: Sequence[Message] = ()) -> AgentResult:
        """Loop until an answer, the step limit or a budget (`BudgetExceeded` propagates)."""
        model: ChatModel = await self.runtime.model(self.model_name)
        self._tool_calls = 0
        messages = ([Message.system(self.system_prompt)] if self.system_prompt else [])
        messages += [*history, Message.user(user_prompt)]
        usage, cost, asked_brief = Usage(), 0.0, False
        for step in range(1, self.max_steps + 1):
            turn = await self._model_turn(model, messages, step)
            usage, cost = usage + turn.usage, cost + getattr(turn, "cost_usd", 0.0)
            messages.append(turn.message)
            calls = turn.message.tool_calls
            if calls:
                results = await self._run_tools(calls, step)
                messages.append(Message(role="tool", parts=tuple(results)))
                if self.done is not None and self.done():
                    return self._result(results[-1].content, messages, usage, cost, step, "answer")
            elif not turn.truncated:
                return self._result(turn.message.text, messages, usage, cost, step, "answer")
            elif not asked_brief:
                asked_brief = True
                messages.append(Message.user(BRIEF_PROMPT))
            else:
                return self._result(turn.message.text, messages, usage, cost, step, "truncated")
        return self._result("", messages, usage, cost, self.max_steps, "max_steps")

    async def _model_turn(self, model: ChatModel, messages: list[Message], step: int) -> Turn:
        max_tokens = self.settings.max_tokens or self._spec_max_tokens()
        with call_scope(self.node_id, agent_id=self.agent_id, step=step):
            if self.budget is None:
                return await model.turn(messages, self.tools.specs(), self.settings,
                                        on_delta=self.on_delta)
            self.budget.reserve_model(max_tokens)
            try:
                turn = await model.turn(messages, self.tools.specs(), self.settings,
                                        on_delta=self.on_delta)
            except BaseException:
                self.budget.release_model()
                raise
        self.budget.commit_model(turn.usage, getattr(turn, "cost_usd", 0.0))
        return turn

    async def _run_tools(self, calls: list[ToolCallPart], step: int) -> list[ToolResultPart]:
        """Run every call of one turn at once; results keep the order of the calls."""
        results: list[ToolResultPart | None] = [None] * len(calls)

        async def one(i: int, call: ToolCallPart) -> None:
            results[i] = await self._run_tool(call, step)

        async with asyncio.TaskGroup() as group:
            for i, call in enumerate(calls):
                group.create_task(one(i, call))
        return [r for r in results if r is not None]

    async def _run_tool(self, call: ToolCallPart, step: int) -> ToolResultPart:
        ctx = ToolContext(self.runtime, node_id=self.node_id, agent_id=self.agent_id,
                          call_id=call.id)
        self._tool_calls += 1
        try:
            tool = self._prepare(call)
        except ToolError as err:
            return self._error_result(call, ctx, err, record=("tool.call", "tool.result"))
        try:
            output = await invoke_tool(tool, call.arguments, ctx)
        except ToolError as err:  # invoke_tool recorded call and failure
            return self._error_result(call, ctx, err, record=())
        except Exception as err:  # a bug in a tool: report it, keep the run alive
            wrapped = ToolError("internal_error", f"{type(err).__name__}: {err}", tool=call.name)
            return self._error_result(call, ctx, wrapped, record=("tool.result",))
        return ToolResultPart(call_id=call.id, name=call.name, content=output.content)

    def _prepare(self, call: ToolCallPart) -> Tool:
        """The tool to call, or a ToolError: over budget, unknown tool, unparsable arguments."""
        tool = self.tools.get(call.name)
        # control tools of the engine itself (the planner's submit_plan) are not "tool calls"
        if self.budget is not None and getattr(tool, "counts_against_budget", True):
            try:
                self.budget.reserve_tool()
            except BudgetExceeded as err:
                raise ToolError("budget_exceeded", f"{err}; no more tool calls are allowed: "
                                f"answer with what you have", tool=call.name) from None
        if call.parse_error is not None:
            raise ToolError("invalid_arguments", f"the arguments are not valid JSON "
                            f"({call.parse_error}); received {(call.raw_arguments or '')[:500]!r}. "
                            f"Call {call.name} again with one JSON object.", tool=call.name)
        return tool

    def _error_result(self, call: ToolCallPart, ctx: ToolContext, err: ToolError,
                      record: tuple[str, ...]) -> ToolResultPart:
        """The error as the model sees it; `record` lists events invoke_tool did not emit."""
        if "tool.call" in record:
            ctx.emit("tool.call", {"tool": call.name, "call_id": call.id,
                                   "arguments": call.arguments, "raw_arguments": call.raw_arguments})
        if "tool.result" in record:
            ctx.emit("tool.result", {"tool": call.name, "call_id": call.id, "ok": False,
                                     "error": err.to_dict(), "duration_s": 0.0})
        hint = f" ({err.retry_hint})" if err.retry_hint else ""
        return ToolResultPart(call_id=call.id, name=call.name, is_error=True,
                              content=f"ERROR [{err.code}] {err.message}{hint}")

    def _spec_max_tokens(self) -> int:
        spec = self.runtime.task.models.get(self.model_name)
        return (spec.max_tokens if spec and spec.max_tokens else None) or 4096

    def _result(self, answer: str, messages: list[Message], usage: Usage, cost: float,
                steps: int, reason: Literal["answer", "max_steps", "truncated"]) -> AgentResult:
        return AgentResult(answer=answer, messages=messages, usage=usage, cost_usd=cost,
                           steps=steps, tool_calls=self._tool_calls, stop_reason=reason)


async def run_agent_task(runtime: Runtime) -> AgentResult:
    """Run a ``mode: agent`` task: one agent on the task's model with the task's tools."""
    task = runtime.task
    agent = Agent(runtime, task.model_for("worker"), runtime.tools,
                  system_prompt=task.prompts.get("agent", DEFAULT_SYSTEM_PROMPT),
                  node_id="agent", max_steps=task.budget.max_steps,
                  budget=TaskBudget(task.budget, runtime.clock,
                                    emit=lambda k, d: runtime.emit(k, d, node_id="agent")))
    result = await agent.run(task.goal)
    if not result.ok:
        reason = {"max_steps": f"no final answer within {task.budget.max_steps} steps "
                               f"(raise budget.max_steps or simplify the goal)",
                  "truncated": "the answer was cut off at the token limit twice (raise the "
                               "model's max_tokens)"}[result.stop_reason]
        raise RunFailed(f"agent run ended without an answer: {reason}")
    return result
