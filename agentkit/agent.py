"""The agent loop: model turn -> all tool calls of the turn in parallel -> results -> next turn.

It stops at a final answer (a turn with no tool calls), at the step limit, or when a budget
says so. The assistant `Message` is appended to the history exactly as the adapter returned it
(reasoning, signatures and opaque payloads included); the adapter's profile decides what of it
is replayed on the wire. Tool failures of every kind (a `ToolError`, an unknown tool, arguments
that are not valid JSON or do not fit the schema, a crashing tool) come back to the model as an
error result it can act on; they never end the run. A turn cut off by the token limit, or an
empty reply, is not an answer: the loop asks once more, then gives up with that reason.

The loop does no accounting of its own: each model call is reserved from `budget` and counted
(once, for `node_id`) by the model layer, and each tool call takes one unit of the budget's
``tool_calls`` here, before it is made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Literal

from pydantic import BaseModel

from agentkit.budget import Budget
from agentkit.errors import BudgetExceeded, RunFailed, ToolError
from agentkit.journal import tool_call_key
from agentkit.messages import Message, ToolCallPart, ToolResultPart, Turn
from agentkit.models import ChatModel, DeltaCallback, ModelSettings, call_scope
from agentkit.models.context import current_attempt
from agentkit.runtime import Runtime
from agentkit.tools import Tool, ToolContext, ToolRegistry, invoke_tool
from agentkit.tools.base import RESERVED_TOOL_NAMES, parse_args, unsure_after_crash

__all__ = ["Agent", "AgentResult", "StopReason", "run_agent_task"]

StopReason = Literal["answer", "max_steps", "truncated", "empty"]


class AgentResult(BaseModel):
    """What an agent run produced. `stop_reason` says whether `answer` is a real answer.

    Usage and cost are not here: the run's usage owner (`Runtime.usage`) counts every call,
    including those of agent runs that failed.
    """

    answer: str
    messages: list[Message]
    steps: int
    tool_calls: int
    stop_reason: StopReason = "answer"

    @property
    def ok(self) -> bool:
        return self.stop_reason == "answer"


class Agent:
    """One sub-agent: a model, the tools it may call, a system prompt, limits, a budget."""

    def __init__(self, runtime: Runtime, model_name: str, tools: ToolRegistry | None = None,
                 system_prompt: str | None = None, node_id: str | None = None,
                 max_steps: int | None = None, *, budget: Budget | None = None,
                 agent_id: str | None = None, settings: ModelSettings | None = None,
                 on_delta: DeltaCallback | None = None,
                 done: Callable[[], bool] | None = None) -> None:
        self.runtime, self.model_name, self.on_delta = runtime, model_name, on_delta
        #: checked after each round of tool calls: True ends the run with the last tool result
        #: as the answer (the planner stops once its plan is accepted, without another turn)
        self.done = done
        self.tools = tools if tools is not None else ToolRegistry()
        self.system_prompt = (system_prompt if system_prompt is not None
                              else runtime.prompts.render("agent.system", goal=""))
        self.node_id, self.agent_id = node_id, agent_id
        self.max_steps = max_steps or runtime.task.budget.max_steps
        self.budget, self.settings = budget, settings or ModelSettings()
        self._tool_calls = 0
        self._round = 1
        self._turn_key = ""

    async def run(self, user_prompt: str, *, history: Sequence[Message] = ()) -> AgentResult:
        """Loop until an answer, the step limit or a budget (`BudgetExceeded` propagates)."""
        model: ChatModel = await self.runtime.model(self.model_name)
        self._tool_calls = 0
        self._round = self.runtime.next_round(self.node_id, current_attempt(), self.agent_id)
        messages = ([Message.system(self.system_prompt)] if self.system_prompt else [])
        messages += [*history, Message.user(user_prompt)]
        asked_again = False
        for step in range(1, self.max_steps + 1):
            turn = await self._model_turn(model, messages, step)
            messages.append(turn.message)
            calls = turn.message.tool_calls
            if calls:
                results = await self._run_tools(calls)
                messages.append(Message(role="tool", parts=tuple(results)))
                if self.done is not None and self.done():
                    return self._result(results[-1].content, messages, step, "answer")
                continue
            problem = self._not_an_answer(turn)
            if problem is None:
                return self._result(turn.message.text, messages, step, "answer")
            if asked_again:
                return self._result(turn.message.text, messages, step, problem)
            asked_again = True
            messages.append(Message.user(self.runtime.prompts.render(
                "agent.brief" if problem == "truncated" else "agent.empty", goal="")))
        return self._result("", messages, self.max_steps, "max_steps")

    def _not_an_answer(self, turn: Turn) -> Literal["truncated", "empty"] | None:
        """Why a turn without tool calls is no answer (cut off, or nothing in it), if so."""
        if turn.truncated:
            return "truncated"
        if not turn.message.text.strip():
            self.runtime.emit("answer.empty", {"agent_id": self.agent_id,
                                               "finish_reason": turn.finish_reason,
                                               "reasoning_chars": len(turn.message.reasoning)},
                              node_id=self.node_id)
            return "empty"
        return None

    async def _model_turn(self, model: ChatModel, messages: list[Message], step: int) -> Turn:
        with call_scope(self.node_id, agent_id=self.agent_id, step=step, budget=self.budget,
                        round=self._round, run_id=self.runtime.run_id) as call:
            self._turn_key = call.call_key()  # its tool calls' keys derive from it
            return await model.turn(messages, self.tools.specs(), self.settings,
                                    on_delta=self.on_delta)

    async def _run_tools(self, calls: list[ToolCallPart]) -> list[ToolResultPart]:
        """Run every call of one turn at once; results keep the order of the calls."""
        results: list[ToolResultPart | None] = [None] * len(calls)

        async def one(i: int, call: ToolCallPart) -> None:
            results[i] = await self._run_tool(call, tool_call_key(self._turn_key, i))

        async with asyncio.TaskGroup() as group:
            for i, call in enumerate(calls):
                group.create_task(one(i, call))
        return [r for r in results if r is not None]

    async def _run_tool(self, call: ToolCallPart, key: str) -> ToolResultPart:
        ctx = self.runtime.tool_context(node_id=self.node_id, agent_id=self.agent_id,
                                        call_id=call.id, call_key=key)
        self._tool_calls += 1
        recorded = self._recorded(call, key)
        if recorded is not None:
            if call.name in self.tools:
                await self.tools.get(call.name).replayed(call.arguments, ctx)
            return recorded
        try:
            tool = await self._prepare(call)
            ctx = await self._approved(tool, call, key, ctx)
        except ToolError as err:
            return self._error_result(call, ctx, err, record=("tool.call", "tool.result"))
        try:
            output = await invoke_tool(tool, call.arguments, ctx)
        except ToolError as err:  # invoke_tool recorded call and failure
            return self._error_result(call, ctx, err, record=())
        except Exception as err:  # a bug in a tool: report it, keep the run alive
            wrapped = ToolError("internal_error", f"{type(err).__name__}: {err}", tool=call.name)
            return self._error_result(call, ctx, wrapped, record=("tool.result",))
        return ToolResultPart(call_id=call.id, name=call.name, content=output.content,
                              metadata=output.data or None)

    def _recorded(self, call: ToolCallPart, key: str) -> ToolResultPart | None:
        """On a resumed or replayed run, the result recorded for this call (no tool runs, no
        budget is taken: it was spent before). The engine's own control tools (the planner's
        `submit_plan`, `delegate`) always run again: they keep state of their own, and their
        model calls are answered from the ledger in turn."""
        journal = self.runtime.journal
        if journal is None or call.name in RESERVED_TOOL_NAMES:
            return None
        data = journal.tool_result(key)
        if data is None:
            journal.tool_miss(key, call.name)
            return None
        ok = bool(data.get("ok"))
        metadata = (data.get("data") or None) if ok else {"error": data.get("error")}
        return ToolResultPart(call_id=call.id, name=call.name, content=str(data["content"]),
                              is_error=not ok, metadata=metadata)

    async def _prepare(self, call: ToolCallPart) -> Tool:
        """The tool to call, or a ToolError: over budget, unknown tool, unparsable arguments."""
        tool = self.tools.get(call.name)
        # control tools of the engine itself (the planner's submit_plan) are not "tool calls"
        if self.budget is not None and tool.counts_against_budget:
            try:
                await self.budget.acquire_tool()
            except BudgetExceeded as err:
                raise ToolError("budget_exceeded", f"{err}; no more tool calls are allowed: "
                                f"answer with what you have", tool=call.name) from None
        if call.parse_error is not None:
            raise ToolError("invalid_arguments", f"the arguments are not valid JSON "
                            f"({call.parse_error}); received {(call.raw_arguments or '')[:500]!r}. "
                            f"Call {call.name} again with one JSON object.", tool=call.name)
        return tool

    async def _approved(self, tool: Tool, call: ToolCallPart, key: str,
                        ctx: ToolContext) -> ToolContext:
        """Wait for a person's yes if the task's ``approval`` names the tool, or (when the task
        has ``approval`` at all) if this side-effecting call was in flight at a crash, so that
        whether it took effect is unknown: a yes re-runs it. A no (or no decision in time) is a
        ToolError the model reads. Arguments that do not fit the schema are refused first:
        nobody is asked about a call that cannot run. The context the call runs with."""
        approvals = self.runtime.approvals
        in_flight = approvals.spec is not None and unsure_after_crash(tool, ctx)
        if not (in_flight or approvals.needs(tool)):
            return ctx
        parse_args(tool, call.arguments)
        reason = ("it was in flight when the run stopped: whether it took effect is unknown"
                  if in_flight else None)
        decision = await approvals.request(key, tool.name, call.arguments, node_id=self.node_id,
                                           reason=reason)
        if decision.approved:
            return replace(ctx, in_flight=None) if in_flight else ctx
        why = decision.reason or "no reason given"
        raise ToolError("denied", f"denied: {why}" if decision.via == "timeout"
                        else f"denied by a person: {why}", tool=call.name,
                        retry_hint="do not repeat this call; carry on without it or answer "
                                   "with what you have",
                        details={"approval_key": key, "via": decision.via})

    def _error_result(self, call: ToolCallPart, ctx: ToolContext, err: ToolError,
                      record: tuple[str, ...]) -> ToolResultPart:
        """The error as the model sees it; `record` lists events invoke_tool did not emit."""
        if "tool.call" in record:
            ctx.emit("tool.call", {"tool": call.name, "call_id": call.id, "call_key": ctx.call_key,
                                   "arguments": call.arguments, "raw_arguments": call.raw_arguments})
        if "tool.result" in record:
            ctx.emit("tool.result", {"tool": call.name, "call_id": call.id,
                                     "call_key": ctx.call_key, "ok": False,
                                     "error": err.to_dict(), "content": err.model_text(),
                                     "duration_s": 0.0})
        return ToolResultPart(call_id=call.id, name=call.name, is_error=True,
                              content=err.model_text(), metadata={"error": err.to_dict()})

    def _result(self, answer: str, messages: list[Message], steps: int,
                reason: StopReason) -> AgentResult:
        return AgentResult(answer=answer, messages=messages, steps=steps,
                           tool_calls=self._tool_calls, stop_reason=reason)


_NO_ANSWER = {
    "max_steps": "no final answer within {max_steps} steps (raise budget.max_steps or simplify "
                 "the goal)",
    "truncated": "the answer was cut off at the token limit twice (raise the model's max_tokens)",
    "empty": "the model replied with an empty answer twice (see the answer.empty events: check "
             "the model's profile, which decides where its text is read from)",
}


def no_answer_reason(result: AgentResult, max_steps: int) -> str:
    """Why an agent run has no answer, in words a user can act on."""
    return _NO_ANSWER.get(result.stop_reason, result.stop_reason).format(max_steps=max_steps)


async def run_agent_task(runtime: Runtime, budget: Budget) -> AgentResult:
    """Run a ``mode: agent`` task: one agent on the task's model with the task's tools."""
    task = runtime.task
    agent = Agent(runtime, task.model_for("worker"), runtime.tools,
                  system_prompt=runtime.prompts.render("agent.system", goal=task.goal),
                  node_id="agent", agent_id="agent", max_steps=task.budget.max_steps,
                  budget=budget)
    result = await agent.run(task.goal)
    if not result.ok:
        raise RunFailed(f"agent run ended without an answer: "
                        f"{no_answer_reason(result, task.budget.max_steps)}")
    return result
