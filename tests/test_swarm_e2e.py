"""End to end: planner -> DAG -> parallel sub-agents -> synthesizer, over real HTTP.

Every model call goes through the real adapter and resilience layer to a `ScriptedModelServer`
on 127.0.0.1 speaking the DeepSeek wire format (reasoning_content replay enforced); `web_fetch`
fetches real pages from a local HTTP server; the ledger is the real hash-chained file. The
server's answers are chosen by a router that reads each request (which agent is asking, what
it already got), because parallel agents reach the server in no fixed order.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _fetch_server import FetchTestServer, static

from agentkit.audit import verify_ledger
from agentkit.run import RunResult, arun, start
from agentkit.task import TaskSpec
from agentkit.testing import RecordedRequest, Reply, ScriptedModelServer, call, error, reply

ARTICLE = (b"<html><head><title>Fjord facts</title></head><body><article><h1>Fjord facts</h1>"
           + b"<p>The Sognefjord is 205 kilometres long and reaches a depth of 1308 metres. "
           + b"It is the longest fjord in Norway and one of the deepest in the world.</p>" * 3
           + b"</article></body></html>")


def _text(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def who(req: RecordedRequest) -> str:
    system = _text(req.messages[0]) if req.messages else ""
    if "Part of your plan failed" in system:
        return "replanner"
    if "You are the planner" in system:
        return "planner"
    if "You write the final answer" in system:
        return "synthesizer"
    return "worker"


def goal_of(req: RecordedRequest) -> str:
    for m in req.messages:
        if m.get("role") == "user" and "Your sub-task:" in _text(m):
            return _text(m).split("Your sub-task:", 1)[1].strip().splitlines()[0]
    return ""


def tool_results(req: RecordedRequest) -> list[str]:
    return [_text(m) for m in req.messages if m.get("role") == "tool"]


def nodes(*specs: tuple[str, str, list[str], list[str]]) -> dict[str, Any]:
    return {"nodes": [{"id": i, "goal": g, "depends_on": d, "tools": t} for i, g, d, t in specs]}


class Router:
    """Answers by role; `workers` maps a node goal to a function of the request."""

    def __init__(self, plans: list[dict[str, Any]], workers: dict[str, Callable[[RecordedRequest], Any]],
                 answer: str, replan: dict[str, Any] | None = None) -> None:
        self.plans, self.workers, self.answer, self.replan = plans, workers, answer, replan
        self.calls: Counter[str] = Counter()

    def __call__(self, req: RecordedRequest) -> Any:
        role = who(req)
        self.calls[role] += 1
        if role in ("planner", "replanner"):
            done = tool_results(req)
            if done and "Plan accepted" in done[-1]:
                return reply("Plan submitted.", reasoning="Done planning.")
            plan = self.replan if role == "replanner" else self.plans[min(len(done), len(self.plans) - 1)]
            return reply(reasoning="Split the task.", tool_calls=[call("submit_plan", plan)])
        if role == "synthesizer":
            return reply(self.answer, reasoning="Combine the results.")
        goal = goal_of(req)
        self.calls[goal] += 1
        return self.workers[goal](req)


def answer_with(text: str, delay: float = 0.0) -> Callable[[RecordedRequest], Reply]:
    return lambda req: reply(text, reasoning="I know this.", delay=delay)


def fetch_then_answer(url: str, text: str) -> Callable[[RecordedRequest], Reply]:
    def respond(req: RecordedRequest) -> Reply:
        if not tool_results(req):
            return reply(reasoning="Fetch the page.", tool_calls=[call("web_fetch", {"url": url})])
        return reply(text, reasoning="Read it.")
    return respond


def task_for(srv: ScriptedModelServer, tmp_path: Path, **extra: Any) -> TaskSpec:
    spec: dict[str, Any] = {
        "name": "e2e", "goal": "How long and how deep is the Sognefjord?", "model": "ds",
        "models": {"ds": {"profile": "deepseek", "model": "deepseek-chat", "base_url": srv.base_url,
                          "api_key_env": "E2E_KEY", "max_tokens": 512, "stream": False}},
        "tools": ["web_fetch", "list_files"], "fetch": {"allow_hosts": ["127.0.0.1"]},
        "retry": {"attempts": 1, "base_delay_s": 0.0, "node_attempts": 1},
        "workspace": str(tmp_path),
    }
    for key, value in extra.items():
        spec[key] = {**spec[key], **value} if isinstance(spec.get(key), dict) else value
    return TaskSpec.model_validate(spec)


ENV = {"E2E_KEY": "sk-e2e-0123456789"}


def events_of(result: RunResult) -> list[dict[str, Any]]:
    assert result.ledger is not None
    return [json.loads(line) for line in Path(result.ledger).read_text().splitlines()]


async def test_planned_six_node_dag_runs_branches_in_parallel_to_a_cited_answer(tmp_path: Path) -> None:
    async with FetchTestServer(routes={"/fjord": static(ARTICLE)}) as pages, \
            ScriptedModelServer("deepseek") as srv:
        url = pages.url("/fjord")
        plan = nodes(("a", "find the source", [], []),
                     ("b", "read the article slowly", ["a"], ["web_fetch"]),
                     ("c", "check length", ["b"], []),
                     ("d", "recall depth", [], []), ("e", "check depth", ["d"], []),
                     ("f", "compare", ["c", "e"], []))
        router = Router([plan], {
            "find the source": answer_with(f"Use {url}"),
            "read the article slowly": fetch_then_answer(url, f"205 km long, 1308 m deep ({url})"),
            "check length": answer_with("Length 205 km confirmed."),
            "recall depth": answer_with("Depth 1308 m."),
            "check depth": answer_with("Depth 1308 m confirmed."),
            "compare": answer_with("205 km long, 1308 m deep."),
        }, answer=f"The Sognefjord is 205 km long [{url}] and 1308 m deep "
                  f"[https://never-fetched.example/fjords].")
        # b is slow: its sibling branch d -> e must not wait for it
        slow = router.workers["read the article slowly"]
        router.workers["read the article slowly"] = lambda req: _delayed(slow(req), 0.6)
        srv.default = router
        result = await arun(task_for(srv, tmp_path), ledger_dir=tmp_path / "ledger", environ=ENV)

    assert result.status == "succeeded", result.error
    assert set(result.nodes) == set("abcdef") and all(n.status == "succeeded" for n in result.nodes.values())
    n = result.nodes
    assert n["e"].started - n["d"].finished < 0.05
    assert n["e"].finished < n["b"].finished  # no barrier
    assert n["f"].started - max(n["c"].finished, n["e"].finished) < 0.05
    # citations: the fetched page is kept with its hash; the never-fetched URL is dropped
    assert [c.url for c in result.citations] == [url] and result.citations[0].content_hash
    assert "never-fetched" not in (result.answer or "")
    cited = [e["data"] for e in events_of(result) if e["kind"] == "url.cited"]
    assert {(c["url"], c["ok"]) for c in cited} == {(url, True),
                                                    ("https://never-fetched.example/fjords", False)}
    assert result.usage.input_tokens > 0 and verify_ledger(result.ledger).ok
    # each sub-agent saw only its goal and its dependencies' outputs
    compare = next(r for r in srv.requests if goal_of(r) == "compare")
    prompt = _text(compare.messages[1])
    assert "Output of `c`" in prompt and "Output of `e`" in prompt and "Output of `a`" not in prompt


def tcp_states(port: int) -> Counter[str]:
    """States of the server side of the TCP connections on `port`, from the kernel's table
    (CLOSE_WAIT: the client closed its end)."""
    names = {"01": "ESTABLISHED", "08": "CLOSE_WAIT", "06": "TIME_WAIT", "0A": "LISTEN"}
    states: Counter[str] = Counter()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            states[names.get(fields[3], fields[3])] += 1
    return states


def _delayed(r: Reply, seconds: float) -> Reply:
    from dataclasses import replace

    return replace(r, delay=seconds)


async def test_cycle_is_returned_to_the_planner_and_fixed(tmp_path: Path) -> None:
    bad = nodes(("x", "one", ["y"], []), ("y", "two", ["x"], []))
    good = nodes(("x", "one", [], []), ("y", "two", ["x"], []))
    async with ScriptedModelServer("deepseek") as srv:
        router = Router([bad, good], {"one": answer_with("1"), "two": answer_with("2")},
                        answer="Done.")
        srv.default = router
        result = await arun(task_for(srv, tmp_path), ledger_dir=tmp_path, environ=ENV)
    assert result.status == "succeeded", result.error
    planner_requests = [r for r in srv.requests if who(r) == "planner"]
    assert len(planner_requests) == 2  # submit (cycle) -> submit (fixed): accepted ends it
    assert "dependency cycle x -> y -> x" in tool_results(planner_requests[1])[-1]
    kinds = [e["kind"] for e in events_of(result)]
    assert kinds.count("plan.rejected") == 1 and kinds.count("plan.created") == 1


async def test_failing_node_triggers_subtree_replan_and_finished_nodes_are_not_rerun(tmp_path: Path) -> None:
    plan = nodes(("ok1", "stable one", [], []), ("ok2", "stable two", [], []),
                 ("bad", "fragile", ["ok1"], []), ("after", "use fragile", ["bad", "ok2"], []))
    replacement = nodes(("fix", "sturdy", ["ok1"], []), ("after2", "use sturdy", ["fix", "ok2"], []))
    async with ScriptedModelServer("deepseek") as srv:
        router = Router([plan], {
            "stable one": answer_with("one"), "stable two": answer_with("two"),
            "fragile": lambda req: error(400, "this request is invalid"),
            "sturdy": answer_with("sturdy result"), "use sturdy": answer_with("final part"),
        }, answer="All done.", replan=replacement)
        srv.default = router
        result = await arun(task_for(srv, tmp_path, retry={"replans": 1}),
                            ledger_dir=tmp_path, environ=ENV)
    assert result.status == "succeeded", result.error
    assert router.calls["stable one"] == 1 and router.calls["stable two"] == 1  # not re-run
    assert router.calls["fragile"] == 1 and router.calls["replanner"] == 1  # accepted: done
    assert result.nodes["fix"].status == result.nodes["after2"].status == "succeeded"
    assert result.nodes["after"].status == "skipped"
    replan_prompt = _text(next(r for r in srv.requests if who(r) == "replanner").messages[1])
    assert "Failed node `bad`" in replan_prompt and "this request is invalid" in replan_prompt
    assert "- ok1: one" in replan_prompt  # bad's finished dependency is offered to build on


async def test_tool_call_budget_never_exceeded_under_20_way_fan_out(tmp_path: Path) -> None:
    limit = 13
    plan = nodes(*((f"n{i}", f"list files {i}", [], ["list_files"]) for i in range(20)))

    def lister(req: RecordedRequest) -> Reply:
        if not tool_results(req):  # two calls at once, like a real model fanning out
            return reply(reasoning="Look.", tool_calls=[call("list_files", {}), call("list_files", {})])
        return reply("listed", reasoning="Enough.")

    async with ScriptedModelServer("deepseek") as srv:
        srv.default = Router([plan], {f"list files {i}": lister for i in range(20)}, answer="ok")
        result = await arun(task_for(srv, tmp_path, budget={"tool_calls": limit, "max_agents": 20}),
                            ledger_dir=tmp_path / "ledger", environ=ENV)
    assert result.status == "succeeded", result.error
    events = events_of(result)
    results = [e for e in events if e["kind"] == "tool.result" and e["node_id"] != "planner"]
    executed = [e for e in results if e["data"]["ok"]]
    refused = [e for e in results if not e["data"]["ok"]]
    assert len(executed) == limit and len(refused) == 40 - limit
    assert all(e["data"]["error"]["code"] == "budget_exceeded" for e in refused)
    assert len([e for e in events if e["kind"] == "budget.reserved"
                and e["data"]["budget"] == "tool_calls"]) == limit


async def test_cancel_mid_run_stops_every_sub_agent_and_leaves_a_verifiable_ledger(tmp_path: Path) -> None:
    plan = nodes(*((f"s{i}", f"slow {i}", [], []) for i in range(6)))
    async with ScriptedModelServer("deepseek") as srv:
        srv.default = Router([plan], {f"slow {i}": answer_with("late", delay=30) for i in range(6)},
                             answer="never")
        run = start(task_for(srv, tmp_path), ledger_dir=tmp_path, environ=ENV)
        requested: set[str] = set()
        async for event in run.events():
            if event.kind == "model.request" and (event.node_id or "").startswith("s"):
                requested.add(event.node_id)
                if len(requested) == 6:
                    await asyncio.sleep(0.1)  # the six requests are on the wire
                    run.cancel()
        result = await asyncio.wait_for(run.result(), 5)
        await asyncio.sleep(0.1)
        # the server still holds the six scripted (30 s) answers, but every client socket is
        # closed: the HTTP requests were aborted, not left hanging
        states = tcp_states(srv.port)
        reached = sum(who(r) == "worker" for r in srv.requests)
    assert result.status == "cancelled"
    assert reached == 6  # all six sub-agents were waiting on the wire when cancelled ...
    assert states.get("ESTABLISHED", 0) == 0 and states.get("CLOSE_WAIT", 0) >= 1, states  # ... and hung up
    assert {n.status for n in result.nodes.values()} == {"cancelled"} and len(result.nodes) == 6
    events = events_of(result)
    assert events[-1]["kind"] == "run.finished" and events[-1]["data"]["status"] == "cancelled"
    assert not [e for e in events if e["kind"] == "model.response" and e["node_id"].startswith("s")]
    check = verify_ledger(result.ledger)
    assert check.ok and check.count == len(events)


async def test_agent_mode_runs_one_agent_through_the_same_api(tmp_path: Path) -> None:
    async with ScriptedModelServer("deepseek") as srv:
        srv.script(reply("It is 205 km long.", reasoning="Known."))
        result = await arun(task_for(srv, tmp_path, mode="agent"), environ=ENV)
    assert result.status == "succeeded" and result.answer == "It is 205 km long."
    assert result.nodes == {} and result.usage.input_tokens > 0


@pytest.mark.parametrize("n_runs", [4])
async def test_concurrent_runs_over_http_do_not_interfere(tmp_path: Path, n_runs: int) -> None:
    async with ScriptedModelServer("deepseek") as srv:
        plans = [nodes((f"r{k}", f"job {k}", [], [])) for k in range(n_runs)]
        workers = {f"job {k}": answer_with(f"result {k}") for k in range(n_runs)}

        def route(req: RecordedRequest) -> Any:
            if who(req) == "planner":
                goal = _text(req.messages[1])
                k = int(goal.rsplit(" ", 1)[1])
                done = tool_results(req)
                if done:
                    return reply("ok", reasoning="ok")
                return reply(reasoning="plan", tool_calls=[call("submit_plan", plans[k])])
            if who(req) == "synthesizer":
                return reply(_text(req.messages[1]).split("\n")[0].replace("Task: ", "answer to "),
                             reasoning="ok")
            return workers[goal_of(req)](req)

        srv.default = route
        tasks = [task_for(srv, tmp_path, goal=f"run number {k}") for k in range(n_runs)]
        results = await asyncio.gather(*(arun(t, environ=ENV) for t in tasks))
    for k, res in enumerate(results):
        assert res.status == "succeeded", res.error
        assert res.answer == f"answer to run number {k}" and set(res.nodes) == {f"r{k}"}


async def test_a_sub_agent_delegates_to_a_sub_team_one_level_deeper(tmp_path: Path) -> None:
    top = nodes(("top", "survey both regions", [], ["delegate"]))
    sub = nodes(("north", "survey north", [], []), ("south", "survey south", [], []))

    def route(req: RecordedRequest) -> Any:
        role, done = who(req), tool_results(req)
        if role == "planner":
            nested = "Task: cover north and south" in _text(req.messages[1])
            if done:
                return reply("Plan submitted.", reasoning="ok")
            return reply(reasoning="split", tool_calls=[call("submit_plan", sub if nested else top)])
        if role == "synthesizer":
            return reply("North 12, south 34.", reasoning="ok")
        goal = goal_of(req)
        if goal == "survey both regions":
            if not done:
                return reply(reasoning="Two parts: delegate.",
                             tool_calls=[call("delegate", {"goal": "cover north and south"})])
            return reply("North 12, south 34.", reasoning="Got both.")
        return reply({"survey north": "north: 12", "survey south": "south: 34"}[goal], reasoning="ok")

    async with ScriptedModelServer("deepseek") as srv:
        srv.default = route
        result = await arun(task_for(srv, tmp_path, budget={"max_depth": 1}),
                            ledger_dir=tmp_path, environ=ENV)
    assert result.status == "succeeded", result.error
    events = events_of(result)
    started = {e["node_id"] for e in events if e["kind"] == "node.started"}
    assert started == {"top", "top.sub1.north", "top.sub1.south"}
    delegated = next(e["data"] for e in events if e["kind"] == "plan.created"
                     and e["data"]["source"] == "delegate")
    assert delegated["depth"] == 1 and delegated["parent"] == "top"
    # the delegate result carried both sub-answers back to the top agent
    top_final = [r for r in srv.requests if goal_of(r) == "survey both regions"][-1]
    assert "north: 12" in tool_results(top_final)[0] and "south: 34" in tool_results(top_final)[0]
    # at depth 1 == max_depth the nested planner is not offered delegate any more
    nested_planner = next(r for r in srv.requests if who(r) == "planner"
                          and "cover north and south" in _text(r.messages[1]))
    assert "delegate" not in _text(nested_planner.messages[0])


async def test_delegate_is_not_a_known_tool_when_max_depth_is_zero(tmp_path: Path) -> None:
    async with ScriptedModelServer("deepseek") as srv:
        result = await arun(task_for(srv, tmp_path, budget={"max_depth": 0},
                                     plan=nodes(("a", "x", [], ["delegate"]))), environ=ENV)
    assert result.status == "failed" and "unknown tool(s) delegate" in result.error.message
    assert srv.requests == []


@pytest.mark.docker
async def test_cancel_mid_run_removes_every_sandbox_container(tmp_path: Path) -> None:
    import docker

    plan = nodes(*((f"c{i}", f"compute {i}", [], ["run_code"]) for i in range(3)))

    def coder(req: RecordedRequest) -> Reply:
        return reply(reasoning="Run it.", tool_calls=[call("run_code", {
            "code": "import time\nprint('start', flush=True)\ntime.sleep(120)"})])

    client = docker.from_env()
    try:
        async with ScriptedModelServer("deepseek") as srv:
            srv.default = Router([plan], {f"compute {i}": coder for i in range(3)}, answer="never")
            task = task_for(srv, tmp_path, tools=["run_code"],
                            sandbox={"pool_size": 0, "max_concurrency": 3, "timeout_s": 300})
            run = start(task, ledger_dir=tmp_path, environ=ENV)
            label = {"label": f"agentkit.run={run.run_id}"}
            running: list[Any] = []
            async for event in run.events():
                if event.kind == "tool.call" and not running:
                    for _ in range(100):  # wait until the three programs run in containers
                        running = await asyncio.to_thread(client.containers.list, filters=label)
                        if len(running) == 3:
                            break
                        await asyncio.sleep(0.2)
                    run.cancel()
            result = await asyncio.wait_for(run.result(), 60)
        left = await asyncio.to_thread(client.containers.list, all=True, filters=label)
    finally:
        client.close()
    assert len(running) == 3 and result.status == "cancelled"
    assert left == []  # every container of the run is gone, not just stopped
    assert verify_ledger(result.ledger).ok
