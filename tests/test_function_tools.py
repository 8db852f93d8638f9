"""Python functions as tools (`agentkit.tool`): schema and descriptions from the signature and
the docstring, validation, sync functions off the event loop, the run's context, results and
exceptions as values, limits; and tools in every entry point (start, run_sync, YAML import
references, the planner's list and a node's allow-list)."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from _mcp_helpers import KEY_ENV, agent_task
from pydantic import BaseModel, Field

from agentkit import arun, load_task, run_sync, start, tool
from agentkit.errors import ConfigError, ToolError
from agentkit.runtime import Runtime
from agentkit.task import TaskSpec
from agentkit.testing import RecordedRequest, Reply, ScriptedModelServer, call, reply
from agentkit.tools import ToolContext, ToolOutput, invoke_tool


@tool
def lookup(city: str, units: Literal["C", "F"] = "C",
           days: Annotated[int, Field(ge=1, le=7, description="How many days ahead.")] = 1
           ) -> dict[str, Any]:
    """Current weather for a city.

    Args:
        city: The city, e.g. "Oslo".
        units: Celsius or Fahrenheit.
        days: overridden by the Field's own description.
    """
    return {"city": city, "temp": 12.5 if units == "C" else 54.5, "days": days}


class Point(BaseModel):
    x: int
    y: int


def runtime(tmp_path: Path, **task: Any) -> Runtime:
    spec = TaskSpec.model_validate({"name": "t", "goal": "g", "model": "m",
                                    "models": {"m": {"model": "x"}}, **task})
    return Runtime(spec, workspace=tmp_path)


async def invoke(rt: Runtime, fn: Any, args: dict[str, Any]) -> ToolOutput:
    return await invoke_tool(fn, args, rt.tool_context(node_id="n1", call_id="c1"))


def test_schema_and_descriptions_come_from_signature_and_docstring() -> None:
    spec = lookup.spec()
    props = spec.parameters["properties"]
    assert spec.name == "lookup" and spec.description == "Current weather for a city."
    assert props["city"]["description"] == 'The city, e.g. "Oslo".'
    assert props["units"]["enum"] == ["C", "F"] and props["units"]["default"] == "C"
    assert props["days"] == {"default": 1, "description": "How many days ahead.", "maximum": 7,
                             "minimum": 1, "title": "Days", "type": "integer"}
    assert spec.parameters["required"] == ["city"]
    assert lookup("Oslo") == {"city": "Oslo", "temp": 12.5, "days": 1}  # still the function

    @tool(name="add-points", description="Add two points.")
    def add(p: Point, q: Point, ctx: ToolContext) -> Point:
        """
        :param p: the first point
        :param q: the second point
        """
        return Point(x=p.x + q.x, y=p.y + q.y)

    params = add.spec().parameters
    assert add.name == "add-points" and set(params["properties"]) == {"p", "q"}  # no ctx
    assert params["properties"]["q"]["description"] == "the second point"


def test_bad_definitions_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not allowed"):
        tool(name="has space")(lambda: "x")

    def many(*args: int) -> int:
        return sum(args)

    with pytest.raises(ConfigError, match=r"\*args"):
        tool(many)


async def test_sync_runs_off_the_loop_and_gets_the_context(tmp_path: Path) -> None:
    """A sync tool runs in another thread (the loop stays free); a parameter typed ToolContext
    receives the run's context and is not an argument."""
    seen: dict[str, Any] = {}

    @tool
    def where(note: str, ctx: ToolContext) -> str:
        """Report where it runs."""
        seen.update(thread=threading.get_ident(), node=ctx.node_id, ws=ctx.workspace)
        ctx.emit("tool.log", {"note": note})
        return "ok"

    async with runtime(tmp_path) as rt:
        out = await invoke(rt, where, {"note": "hi"})
    assert out.content == "ok" and seen["thread"] != threading.get_ident()
    assert seen["node"] == "n1" and seen["ws"] == rt.workspace


async def test_results_of_every_kind(tmp_path: Path) -> None:
    """str as is; JSON values, pydantic models and dataclass-like values as JSON (the value
    itself in data["result"]); ToolOutput untouched; something not serialisable is a
    `bad_result` error."""

    @tool
    async def point() -> Point:
        """A point."""
        return Point(x=1, y=2)

    @tool
    def structured() -> ToolOutput:
        """Text and data."""
        return ToolOutput("two rows", {"rows": [1, 2]})

    @tool
    def opaque() -> object:
        """Not JSON."""
        return object()

    async with runtime(tmp_path) as rt:
        weather = await invoke(rt, lookup, {"city": "Oslo", "units": "F"})
        pt = await invoke(rt, point, {})
        out = await invoke(rt, structured, {})
        with pytest.raises(ToolError) as bad:
            await invoke(rt, opaque, {})
    assert json.loads(weather.content) == {"city": "Oslo", "temp": 54.5, "days": 1}
    assert weather.data == {"result": {"city": "Oslo", "temp": 54.5, "days": 1}}
    assert pt.content == '{"x": 1, "y": 2}' and pt.data == {"result": {"x": 1, "y": 2}}
    assert out == ToolOutput("two rows", {"rows": [1, 2]})
    assert bad.value.code == "bad_result" and "object" in bad.value.message


async def test_failures_are_tool_errors_the_model_can_read(tmp_path: Path) -> None:
    """Bad arguments (before the call), an exception (type and message; where it was raised
    goes to details), a ToolError (its own code), a hang past the timeout, and a result over
    the size limit."""
    calls: list[str] = []

    @tool
    def divide(a: int, b: int) -> float:
        """Divide."""
        calls.append("divide")
        return a / b

    @tool
    def picky() -> str:
        """Refuse."""
        raise ToolError("not_found", "no such record", retry_hint="try another id")

    @tool(timeout=0.2)
    async def stuck() -> str:
        """Wait for ever."""
        await asyncio.Event().wait()
        return "never"

    @tool(max_result_chars=1000)
    def huge() -> str:
        """Too much."""
        return "x" * 50_000_000

    async with runtime(tmp_path) as rt:
        failures: dict[str, ToolError] = {}
        cases: list[tuple[Any, dict[str, Any]]] = [
            (divide, {"a": "one", "b": 2}), (divide, {"a": 1, "b": 0}), (picky, {}), (stuck, {}),
            (huge, {})]
        for fn, args in cases:
            with pytest.raises(ToolError) as err:
                await invoke(rt, fn, args)
            failures[f"{fn.name}{len(failures)}"] = err.value
    assert failures["divide0"].code == "invalid_arguments" and "a:" in failures["divide0"].message
    assert calls == ["divide"]  # the bad call never reached the function
    exc = failures["divide1"]
    assert exc.code == "exception" and exc.message == "ZeroDivisionError: division by zero"
    assert exc.details["exception"] == "ZeroDivisionError" and "in divide" in exc.details["where"][-1]
    assert failures["picky2"].code == "not_found" and failures["picky2"].tool == "picky"
    assert failures["stuck3"].code == "timeout"
    assert failures["huge4"].code == "too_large" and failures["huge4"].details["chars"] == 50_000_000


async def test_concurrency_limit_per_tool(tmp_path: Path) -> None:
    """concurrency=1: three calls never overlap; without a limit the same three do."""
    state = {"running": 0, "peak": 0}

    async def body() -> str:
        state["running"] += 1
        state["peak"] = max(state["peak"], state["running"])
        for _ in range(5):
            await asyncio.sleep(0)  # yield: any other admitted call runs now
        state["running"] -= 1
        return "done"

    one = tool(name="one", concurrency=1)(body)
    free = tool(name="free")(body)
    async with runtime(tmp_path) as rt:
        rt.resolve_tools()
        for fn, peak in ((one, 1), (free, 3)):
            state["peak"] = 0
            rt._apply_limits(type(rt.tools)([fn]))
            await asyncio.gather(*(invoke(rt, fn, {}) for _ in range(3)))
            assert state["peak"] == peak


async def test_start_with_tools_in_agent_mode(tmp_path: Path) -> None:
    """start(task, tools=[...]): the model sees the tool's schema and its call runs."""
    async with ScriptedModelServer("deepseek") as srv:
        srv.script(reply(tool_calls=[call("lookup", {"city": "Bergen"})]), reply("12.5 C"))
        run = start(agent_task(srv, tmp_path), tools=[lookup], environ=KEY_ENV)
        result = await run.result()
    assert result.status == "succeeded" and result.answer == "12.5 C"
    offered = srv.requests[0].body["tools"]
    assert [t["function"]["name"] for t in offered] == ["lookup"]
    assert offered[0]["function"]["parameters"]["properties"]["city"]["type"] == "string"
    tool_msg = next(m for m in srv.requests[1].messages if m["role"] == "tool")
    assert json.loads(tool_msg["content"])["city"] == "Bergen"


def test_run_sync_with_a_plain_function_and_the_name_rules(tmp_path: Path) -> None:
    """run_sync(..., tools=[plain function]) wraps it; a tool named like a built-in the task
    uses, or like the engine's own `delegate`, is refused before anything runs."""

    def shout(text: str) -> str:
        """Upper-case the text."""
        return text.upper()

    with ScriptedModelServer("deepseek") as srv:
        srv.script(reply(tool_calls=[call("shout", {"text": "hey"})]), reply("HEY"))
        result = run_sync(agent_task(srv, tmp_path), tools=[shout], environ=KEY_ENV)
    assert result.status == "succeeded"
    assert next(m for m in srv.requests[1].messages if m["role"] == "tool")["content"] == "HEY"

    def bare(tools: list[str]) -> TaskSpec:
        return TaskSpec.model_validate({"name": "t", "goal": "g", "model": "m",
                                        "models": {"m": {"model": "x"}}, "tools": tools})

    fetch_like = tool(name="web_fetch")(shout)
    with pytest.raises(ConfigError, match="two tools are named 'web_fetch'"):
        run_sync(bare(["web_fetch"]), tools=[fetch_like])
    with pytest.raises(ConfigError, match="reserved"):
        run_sync(bare([]), tools=[tool(name="delegate")(shout)])


MODULE = '''
from agentkit import tool


@tool
def tide(port: str) -> str:
    """High water at a port."""
    return f"high water at {port}: 06:12"
'''


def test_yaml_import_reference_next_to_the_task_file(tmp_path: Path) -> None:
    """tools: ["tides_fn_test_mod:tide"] finds the module in the task file's folder; the ledger
    records the call with its source and reference."""
    (tmp_path / "tides_fn_test_mod.py").write_text(MODULE)
    with ScriptedModelServer("deepseek") as srv:
        (tmp_path / "task.yaml").write_text(
            f"name: tides\ngoal: When is high water in Bergen?\nmode: agent\nmodel: m\n"
            f"models:\n  m: {{profile: deepseek, model: deepseek-chat, base_url: "
            f"'{srv.base_url}', api_key_env: MCP_TEST_KEY, stream: false}}\n"
            f"tools: [list_files, 'tides_fn_test_mod:tide']\n")
        task = load_task(tmp_path / "task.yaml")
        srv.script(reply(tool_calls=[call("tide", {"port": "Bergen"})]), reply("06:12"))
        result = run_sync(task, environ=KEY_ENV, ledger_dir=tmp_path / "runs")
    assert task.tools_path == str(tmp_path.resolve())
    assert result.status == "succeeded"
    names = sorted(t["function"]["name"] for t in srv.requests[0].body["tools"])
    assert names == ["list_files", "tide"]
    assert result.ledger is not None
    events = [json.loads(x) for x in Path(result.ledger).read_text().splitlines()]
    called = next(e["data"] for e in events if e["kind"] == "tool.call")
    assert called["source"] == "python" and called["ref"] == "tides_fn_test_mod:tide"

    bad = task.model_copy(update={"tools": ["tides_fn_test_mod:nope"]})
    with pytest.raises(ConfigError, match="has no 'nope'"):
        run_sync(bad)
    missing = task.model_copy(update={"tools": ["no_such_pkg.mod:fn"]})
    with pytest.raises(ConfigError, match="cannot import 'no_such_pkg.mod'"):
        run_sync(missing)


async def test_the_planner_sees_own_tools_and_hands_them_to_a_node(tmp_path: Path) -> None:
    """Swarm mode: the planner's prompt lists the Python tool with what it is for; a node
    given the tool gets its schema and calls it; a node not given it does not see it."""
    def model(name: str) -> dict[str, Any]:
        return {"profile": "deepseek", "model": name, "base_url": srv.base_url,
                "api_key_env": "MCP_TEST_KEY", "stream": False, "max_tokens": 256}

    async with ScriptedModelServer("deepseek") as srv:
        plan = {"nodes": [{"id": "weather", "goal": "Weather in Oslo", "tools": ["lookup"]},
                          {"id": "files", "goal": "List files", "tools": ["list_files"]}]}
        srv.route("planner", reply(tool_calls=[call("submit_plan", plan)]))


        def worker(request: RecordedRequest) -> Reply:  # nodes told apart by their goals
            if "Weather in Oslo" not in json.dumps(request.messages):
                return reply("no files")
            if any(m["role"] == "tool" for m in request.messages):
                return reply("12.5")
            return reply(tool_calls=[call("lookup", {"city": "Oslo"})])

        srv.route("worker", default=worker)
        srv.route("writer", reply("Oslo is 12.5 C."))
        spec = TaskSpec.model_validate({
            "name": "swarm", "goal": "Weather in Oslo?", "model": "work",
            "models": {"plan": model("planner"), "work": model("worker"), "write": model("writer")},
            "roles": {"planner": "plan", "synthesizer": "write"}, "tools": ["list_files"],
            "retry": {"attempts": 1, "node_attempts": 1}, "workspace": str(tmp_path)})
        result = await arun(spec, tools=[lookup], environ=KEY_ENV)
    assert result.status == "succeeded", result.error
    planner = next(r for r in srv.requests if r.body["model"] == "planner")
    prompt = json.dumps(planner.messages)
    assert "lookup (Current weather for a city)" in prompt and "list_files" in prompt
    workers = [r for r in srv.requests if r.body["model"] == "worker"]
    offered = [sorted(t["function"]["name"] for t in r.body.get("tools", [])) for r in workers]
    assert ["lookup"] in offered and ["list_files"] in offered
