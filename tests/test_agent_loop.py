"""The agent loop against the scripted DeepSeek server over real HTTP: the tool calls of a turn
run in parallel, reasoning is replayed (the server answers 400 like DeepSeek if it is not),
every kind of tool failure goes back to the model as an error it can act on, truncated turns
are not answers, and the step limit and budgets stop the loop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agentkit.agent import Agent, run_agent_task
from agentkit.budget import Budget
from agentkit.errors import BudgetExceeded, RunFailed, ToolError
from agentkit.events import Event
from agentkit.runtime import Runtime
from agentkit.task import BudgetSpec, ModelSpec, TaskSpec
from agentkit.testing import FakeClock, ScriptedModelServer, call, reply
from agentkit.tools import Tool, ToolArgs, ToolContext, ToolOutput, ToolRegistry


class MeetArgs(ToolArgs):
    i: int


class Meet(Tool):
    """Returns only once `parties` calls are running at the same time: proves overlap."""

    name = "meet"
    description = "rendezvous"
    args_model = MeetArgs
    timeout_s = 5.0

    def __init__(self, parties: int) -> None:
        self.parties, self.arrived, self.peak, self.running = parties, 0, 0, 0
        self.all_here = asyncio.Event()

    async def call(self, args: Any, ctx: ToolContext) -> ToolOutput:
        self.arrived += 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        if self.arrived == self.parties:
            self.all_here.set()
        await asyncio.wait_for(self.all_here.wait(), 3.0)  # sequential calls would time out
        self.running -= 1
        return ToolOutput(f"met {args.i}")


class Fails(Tool):
    name = "fails"
    description = "always fails"
    args_model = ToolArgs

    async def call(self, args: Any, ctx: ToolContext) -> ToolOutput:
        raise ToolError("not_found", "no such page", retry_hint="try another URL")


class Crashes(Tool):
    name = "crashes"
    description = "has a bug"
    args_model = ToolArgs

    async def call(self, args: Any, ctx: ToolContext) -> ToolOutput:
        raise ZeroDivisionError("division by zero")


def make_runtime(srv: ScriptedModelServer, events: list[Event], tmp_path: Path | None = None,
                 **task: Any) -> Runtime:
    spec = ModelSpec(model="deepseek-chat", profile="deepseek", base_url=srv.base_url,
                     stream=False, max_tokens=256)
    t = TaskSpec(name="t", goal="What is the weather in Oslo?", model="m", models={"m": spec},
                 **task)
    return Runtime(t, clock=FakeClock(), sinks=[events.append], workspace=tmp_path)


def tool_messages(srv: ScriptedModelServer, request: int) -> list[dict[str, Any]]:
    return [m for m in srv.requests[request].messages if m["role"] == "tool"]


async def test_parallel_tool_calls_and_reasoning_replay() -> None:
    events: list[Event] = []
    meet = Meet(parties=3)
    async with ScriptedModelServer("deepseek") as srv:
        srv.script(reply(reasoning="Ask three at once.",
                         tool_calls=[call("meet", {"i": i}) for i in range(3)]),
                   reply("all met", reasoning="Done."))
        async with make_runtime(srv, events) as rt:
            agent = Agent(rt, "m", ToolRegistry([meet]), node_id="n1")
            result = await agent.run("meet")
            used = rt.usage.node("n1").usage
    assert result.ok and result.answer == "all met"
    assert meet.peak == 3  # all three calls were running at the same moment
    assert result.steps == 2 and result.tool_calls == 3
    assert [m["content"] for m in tool_messages(srv, 1)] == ["met 0", "met 1", "met 2"]
    # DeepSeek thinking mode needs reasoning_content replayed on the tool-call turn (else 400)
    assistant = next(m for m in srv.requests[1].messages if m["role"] == "assistant")
    assert assistant["reasoning_content"] == "Ask three at once."
    assert result.messages[2].reasoning == "Ask three at once."  # kept as returned
    assert {e.node_id for e in events if e.kind.startswith(("model.", "tool."))} == {"n1"}
    assert used.input_tokens == 80  # two turns of the scripted default usage, counted once


async def test_tool_failures_are_reported_to_the_model() -> None:
    events: list[Event] = []
    async with ScriptedModelServer("deepseek") as srv:
        srv.script(reply(reasoning="Try things.", tool_calls=[
            call("nope", {}), call("meet", {"i": "not a number"}), call("meet", '{i: one two'),
            call("fails", {}), call("crashes", {})]),
            reply("I could not find it."))
        async with make_runtime(srv, events) as rt:
            tools = ToolRegistry([Meet(parties=1), Fails(), Crashes()])
            result = await Agent(rt, "m", tools, node_id="n").run("go")
    assert result.ok and result.answer == "I could not find it."
    contents = [m["content"] for m in tool_messages(srv, 1)]
    assert len(contents) == 5 and all(c.startswith("ERROR [") for c in contents)
    assert "[unknown_tool]" in contents[0] and "meet" in contents[0]  # lists what exists
    assert "[invalid_arguments]" in contents[1] and "i:" in contents[1]
    assert "[invalid_arguments]" in contents[2] and "not valid JSON" in contents[2]
    assert "[not_found] no such page (try another URL)" == contents[3].removeprefix("ERROR ")
    assert "[internal_error] ZeroDivisionError" in contents[4]
    failed = [e.data for e in events if e.kind == "tool.result"]
    assert len(failed) == 5 and not any(f["ok"] for f in failed)


async def test_step_limit_stops_the_loop() -> None:
    events: list[Event] = []
    async with ScriptedModelServer("deepseek", default=reply(
            reasoning="Again.", tool_calls=[call("meet", {"i": 0})])) as srv:
        async with make_runtime(srv, events, tools=[]) as rt:
            result = await Agent(rt, "m", ToolRegistry([Meet(parties=1)]), max_steps=3).run("x")
    assert result.stop_reason == "max_steps" and not result.ok and result.answer == ""
    assert srv.stats.requests == 3 and result.steps == 3


async def test_truncated_turn_asks_once_then_fails() -> None:
    async with ScriptedModelServer("deepseek") as srv:
        srv.script(reply("The answer is", finish_reason="length"), reply("Sunny."))
        async with make_runtime(srv, []) as rt:
            result = await Agent(rt, "m").run("weather?")
            brief = rt.prompts.render("agent.brief", goal="")
        assert result.ok and result.answer == "Sunny."
        assert srv.requests[1].messages[-1] == {"role": "user", "content": brief}
        srv.script(reply("cut", finish_reason="length"), reply("cut again", finish_reason="length"))
        async with make_runtime(srv, []) as rt:
            result = await Agent(rt, "m").run("weather?")
        assert result.stop_reason == "truncated" and not result.ok


async def test_budgets_stop_model_calls_and_refuse_tool_calls() -> None:
    """A model call holds its prompt estimate plus max_tokens (256): with 700 tokens, two calls
    fit (each settles at the 70 it used) and the third hold does not, so it is never sent."""
    events: list[Event] = []
    async with ScriptedModelServer("deepseek") as srv:
        srv.script(reply(reasoning="Two.", tool_calls=[call("meet", {"i": 0}), call("meet", {"i": 1})]),
                   reply(reasoning="More.", tool_calls=[call("meet", {"i": 2})]))
        async with make_runtime(srv, events) as rt:
            budget = Budget.root(BudgetSpec(tool_calls=1, tokens=700), emit=rt.emit, clock=rt.clock)
            agent = Agent(rt, "m", ToolRegistry([Meet(parties=1)]), budget=budget)
            with pytest.raises(BudgetExceeded) as info:
                await agent.run("x")
    assert info.value.budget == "tokens"
    contents = [m["content"] for m in tool_messages(srv, 1)]
    assert contents[0] == "met 0" and contents[1].startswith("ERROR [budget_exceeded]")
    refused = [e.data for e in events if e.kind == "budget.exceeded"]
    assert [r["budget"] for r in refused] == ["tool_calls", "tool_calls", "tokens"]
    assert refused[-1]["requested"] > 700 - 140  # the third hold did not fit next to 140 used
    assert srv.stats.requests == 2 and budget.pools["tokens"].used == 140


async def test_agent_mode_task_writes_a_file_and_answers(tmp_path: Path) -> None:
    events: list[Event] = []
    async with ScriptedModelServer("deepseek") as srv:
        srv.script(reply(reasoning="Save it.", tool_calls=[
            call("write_file", {"path": "out/answer.md", "content": "Sunny\n"})]),
            reply("Saved the forecast to out/answer.md."))
        async with make_runtime(srv, events, tmp_path, mode="agent",
                                tools=["write_file", "read_file"]) as rt:
            result = await run_agent_task(rt, Budget.root(rt.task.budget, emit=rt.emit,
                                                          clock=rt.clock))
    assert result.answer == "Saved the forecast to out/answer.md."
    assert (tmp_path / "out/answer.md").read_text() == "Sunny\n"
    (diff,) = [e for e in events if e.kind == "file.diff"]
    assert diff.node_id == "agent" and "+Sunny" in diff.data["diff"]
    sent_tools = {t["function"]["name"] for t in srv.requests[0].body["tools"]}
    assert sent_tools == {"write_file", "read_file"}


async def test_agent_mode_without_answer_is_a_run_failure() -> None:
    async with ScriptedModelServer("deepseek", default=reply(
            reasoning="Loop.", tool_calls=[call("list_files", {})])) as srv:
        async with make_runtime(srv, [], tools=["list_files"], mode="agent",
                                budget=BudgetSpec(max_steps=2)) as rt:
            with pytest.raises(RunFailed, match="within 2 steps"):
                await run_agent_task(rt, Budget.root(rt.task.budget, emit=rt.emit, clock=rt.clock))
