"""End to end: planner -> DAG -> parallel sub-agents -> synthesizer, over real HTTP.

Every model call goes through the real adapter and resilience layer to a `ScriptedModelServer`
on 127.0.0.1 speaking the DeepSeek wire format (reasoning_content replay enforced); `web_fetch`
fetches real pages from a local HTTP server; the ledger is the real hash-chained file.

Who is asking is known from the request's model name: the task gives the planner, the workers
and the synthesizer differently named models on the same server (`roles:`), and the server
routes each name to its own handler. Parallel workers, which reach the server in no fixed
order, are told apart by their node's goal, which this file wrote; nothing here depends on the
wording of agentkit's prompts.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from _fetch_server import FetchTestServer, static

from agentkit import RunResult, arun, start
from agentkit.audit import verify_ledger
from agentkit.events import Event
from agentkit.task import TaskSpec
from agentkit.testing import (
    RecordedRequest,
    Reply,
    ScriptedModelServer,
    call,
    error,
    message_text,
    reply,
)

ARTICLE = (b"<html><head><title>Fjord facts</title></head><body><article><h1>Fjord facts</h1>"
           + b"<p>The Sognefjord is 205 kilometres long and reaches a depth of 1308 metres. "
           + b"It is the longest fjord in Norway and one of the deepest in the world.</p>" * 3
           + b"</article></body></html>")

#: the wire model names of the three roles (all served by the one scripted server)
PLANNER, WORKER, WRITER = "planner-model", "worker-model", "writer-model"

#: answers a request: a reply or error, or an awaitable of one (an async handler may wait)
Handler = Callable[[RecordedRequest], Any]



def user_text(req: RecordedRequest) -> str:
    """What the request carries as user messages (the task or node goal, inputs)."""
    return "\n".join(req.texts("user"))


def tool_results(req: RecordedRequest) -> list[str]:
    return req.texts("tool")


def offered_tools(req: RecordedRequest) -> list[str]:
    return [t["function"]["name"] for t in (req.body or {}).get("tools") or []]


def node_of(req: RecordedRequest, goals: Iterable[str]) -> str:
    """The one goal (text this test wrote) that a worker's request carries."""
    text = user_text(req)
    found = [g for g in goals if g in text]
    assert len(found) == 1, f"expected one known goal in the request, found {found}: {text[:300]!r}"
    return found[0]


def nodes(*specs: tuple[str, str, list[str], list[str]]) -> dict[str, Any]:
    return {"nodes": [{"id": i, "goal": g, "depends_on": d, "tools": t} for i, g, d, t in specs]}


class Planner:
    """The planner model: each turn submits the next of `plans` (a rejected plan's error comes
    back as a tool result, so the following turn submits the next one). A request that names
    `failed_goal` (the replanner is told which node failed) submits `replan` instead."""

    def __init__(self, *plans: dict[str, Any], failed_goal: str | None = None,
                 replan: dict[str, Any] | None = None) -> None:
        self.plans, self.failed_goal, self.replan = plans, failed_goal, replan

    def __call__(self, req: RecordedRequest) -> Reply:
        plans: tuple[dict[str, Any], ...] = self.plans
        if self.failed_goal is not None and self.replan and self.failed_goal in user_text(req):
            plans = (self.replan,)
        done = len(tool_results(req))
        if done >= len(plans):
            return reply("Plan submitted.", reasoning="Done planning.")
        return reply(reasoning="Split the task.", tool_calls=[call("submit_plan", plans[done])])


class Workers:
    """The worker model: `handlers` maps a node goal to the function that answers it."""

    def __init__(self, handlers: dict[str, Handler]) -> None:
        self.handlers = handlers
        self.calls: Counter[str] = Counter()

    def __call__(self, req: RecordedRequest) -> Any:
        goal = node_of(req, self.handlers)
        self.calls[goal] += 1
        return self.handlers[goal](req)


def serve(srv: ScriptedModelServer, planner: Handler, workers: Handler,
          answer: str | Handler) -> None:
    """Route each role's model name to its handler."""
    writer = answer if callable(answer) else (lambda req: reply(answer, reasoning="Combine."))
    srv.route(PLANNER, default=planner).route(WORKER, default=workers).route(WRITER, default=writer)


def answer_with(text: str) -> Callable[[RecordedRequest], Reply]:
    return lambda req: reply(text, reasoning="I know this.")


def fetch_then_answer(url: str, text: str) -> Callable[[RecordedRequest], Reply]:
    def respond(req: RecordedRequest) -> Reply:
        if not tool_results(req):
            return reply(reasoning="Fetch the page.", tool_calls=[call("web_fetch", {"url": url})])
        return reply(text, reasoning="Read it.")
    return respond


def task_for(srv: ScriptedModelServer, tmp_path: Path, **extra: Any) -> TaskSpec:
    def model(wire_name: str) -> dict[str, Any]:
        return {"profile": "deepseek", "model": wire_name, "base_url": srv.base_url,
                "api_key_env": "E2E_KEY", "max_tokens": 512, "stream": False}

    spec: dict[str, Any] = {
        "name": "e2e", "goal": "How long and how deep is the Sognefjord?", "model": "work",
        "models": {"plan": model(PLANNER), "work": model(WORKER), "write": model(WRITER)},
        "roles": {"planner": "plan", "worker": "work", "synthesizer": "write"},
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


def position(events: list[dict[str, Any]], kind: str, node: str) -> int:
    return next(i for i, e in enumerate(events) if e["kind"] == kind and e["node_id"] == node)


async def test_planned_six_node_dag_runs_branches_in_parallel_to_a_cited_answer(tmp_path: Path) -> None:
    """Six nodes on two branches: the short branch runs to its end while the long one is still
    working (b's answer is held until e has finished; with a barrier e would never start and
    b would give up), each node sees only its dependencies' outputs, and only the fetched page
    is kept as a citation."""
    e_finished = asyncio.Event()

    def watch(event: Event) -> None:
        if event.kind == "node.finished" and event.node_id == "e":
            e_finished.set()

    async with FetchTestServer(routes={"/fjord": static(ARTICLE)}) as pages, \
            ScriptedModelServer("deepseek") as srv:
        url = pages.url("/fjord")
        fetch_b = fetch_then_answer(url, f"205 km long, 1308 m deep ({url})")

        async def read_slowly(req: RecordedRequest) -> Reply:
            if tool_results(req):  # the fetch is done: answer only once e has finished
                async with asyncio.timeout(30):  # a hang guard: b then fails the run
                    await e_finished.wait()
            return fetch_b(req)

        plan = nodes(("a", "Find the source.", [], []),
                     ("b", "Read the article slowly.", ["a"], ["web_fetch"]),
                     ("c", "Check the length.", ["b"], []),
                     ("d", "Recall the depth.", [], []), ("e", "Check the depth.", ["d"], []),
                     ("f", "Compare length and depth.", ["c", "e"], []))
        serve(srv, Planner(plan), Workers({
            "Find the source.": answer_with(f"Use {url}"),
            "Read the article slowly.": read_slowly,
            "Check the length.": answer_with("Length 205 km confirmed."),
            "Recall the depth.": answer_with("Depth 1308 m."),
            "Check the depth.": answer_with("Depth 1308 m confirmed."),
            "Compare length and depth.": answer_with("205 km long, 1308 m deep."),
        }), answer=f"The Sognefjord is 205 km long [{url}] and 1308 m deep "
                   f"[https://never-fetched.example/fjords].")
        result = await arun(task_for(srv, tmp_path), ledger_dir=tmp_path / "ledger", environ=ENV,
                            sinks=[watch])

    assert result.status == "succeeded", result.error
    assert set(result.nodes) == set("abcdef") and all(n.status == "succeeded" for n in result.nodes.values())
    events = events_of(result)
    assert position(events, "node.started", "e") > position(events, "node.finished", "d")
    assert position(events, "node.finished", "e") < position(events, "node.finished", "b")  # no barrier
    assert position(events, "node.started", "f") > max(position(events, "node.finished", "c"),
                                                       position(events, "node.finished", "e"))
    # citations: the fetched page is kept with its hash; the never-fetched URL is dropped
    assert [c.url for c in result.citations] == [url] and result.citations[0].content_hash
    assert "never-fetched" not in (result.answer or "")
    cited = [e["data"] for e in events if e["kind"] == "url.cited"]
    assert {(c["url"], c["ok"]) for c in cited} == {(url, True),
                                                    ("https://never-fetched.example/fjords", False)}
    assert result.usage.input_tokens > 0 and verify_ledger(result.ledger or '').ok
    # each sub-agent saw only its goal and its dependencies' outputs
    compare = user_text(next(r for r in srv.requests_for(WORKER)
                             if "Compare length and depth." in user_text(r)))
    assert "Length 205 km confirmed." in compare and "Depth 1308 m confirmed." in compare
    assert f"Use {url}" not in compare and "205 km long, 1308 m deep (" not in compare


async def test_cycle_is_returned_to_the_planner_and_fixed(tmp_path: Path) -> None:
    bad = nodes(("x", "Step one.", ["y"], []), ("y", "Step two.", ["x"], []))
    good = nodes(("x", "Step one.", [], []), ("y", "Step two.", ["x"], []))
    async with ScriptedModelServer("deepseek") as srv:
        serve(srv, Planner(bad, good),
              Workers({"Step one.": answer_with("1"), "Step two.": answer_with("2")}), "Done.")
        result = await arun(task_for(srv, tmp_path), ledger_dir=tmp_path, environ=ENV)
    assert result.status == "succeeded", result.error
    planner_requests = srv.requests_for(PLANNER)
    assert len(planner_requests) == 2  # submit (cycle) -> submit (fixed): accepted ends it
    assert "dependency cycle x -> y -> x" in tool_results(planner_requests[1])[-1]
    kinds = [e["kind"] for e in events_of(result)]
    assert kinds.count("plan.rejected") == 1 and kinds.count("plan.created") == 1


async def test_failing_node_triggers_subtree_replan_and_finished_nodes_are_not_rerun(tmp_path: Path) -> None:
    plan = nodes(("ok1", "Stable part one.", [], []), ("ok2", "Stable part two.", [], []),
                 ("bad", "Fragile part.", ["ok1"], []),
                 ("after", "Build on the fragile part.", ["bad", "ok2"], []))
    replacement = nodes(("fix", "Sturdy replacement.", ["ok1"], []),
                        ("after2", "Build on the replacement.", ["fix", "ok2"], []))
    workers = Workers({
        "Stable part one.": answer_with("Result of part one."),
        "Stable part two.": answer_with("Result of part two."),
        "Fragile part.": lambda req: error(400, "this request is invalid"),
        "Sturdy replacement.": answer_with("sturdy result"),
        "Build on the replacement.": answer_with("final part"),
    })
    async with ScriptedModelServer("deepseek") as srv:
        serve(srv, Planner(plan, failed_goal="Fragile part.", replan=replacement), workers,
              "All done.")
        result = await arun(task_for(srv, tmp_path, retry={"replans": 1}),
                            ledger_dir=tmp_path, environ=ENV)
    assert result.status == "succeeded", result.error
    assert workers.calls["Stable part one."] == 1 and workers.calls["Stable part two."] == 1  # not re-run
    assert workers.calls["Fragile part."] == 1
    replans = [r for r in srv.requests_for(PLANNER) if "Fragile part." in user_text(r)]
    assert len(replans) == 1  # the replacement was accepted at once
    assert result.nodes["fix"].status == result.nodes["after2"].status == "succeeded"
    assert result.nodes["after"].status == "skipped"
    told = user_text(replans[0])  # the replanner is told what failed, why, and what it keeps
    assert "this request is invalid" in told and "Result of part one." in told


async def test_tool_call_budget_never_exceeded_under_20_way_fan_out(tmp_path: Path) -> None:
    limit = 13
    goals = [f"List the files, batch {i:02d}." for i in range(20)]
    plan = nodes(*((f"n{i}", goal, [], ["list_files"]) for i, goal in enumerate(goals)))

    def lister(req: RecordedRequest) -> Reply:
        if not tool_results(req):  # two calls at once, like a real model fanning out
            return reply(reasoning="Look.", tool_calls=[call("list_files", {}), call("list_files", {})])
        return reply("listed", reasoning="Enough.")

    async with ScriptedModelServer("deepseek") as srv:
        serve(srv, Planner(plan), Workers(dict.fromkeys(goals, lister)), "ok")
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
    """Six sub-agents wait on the wire for answers the server never gives; cancelling the run
    makes every one of them hang up (the server sees each connection close while it still
    holds the answer) and leaves a complete, verifiable ledger."""
    goals = [f"Wait for slow answer {i}." for i in range(6)]
    plan = nodes(*((f"s{i}", goal, [], []) for i, goal in enumerate(goals)))

    async def never_answer(req: RecordedRequest) -> Reply:
        await asyncio.Event().wait()  # cancelled by the server when the client hangs up
        raise AssertionError("unreachable")

    async with ScriptedModelServer("deepseek") as srv:
        serve(srv, Planner(plan), Workers(dict.fromkeys(goals, never_answer)), "never")
        run = start(task_for(srv, tmp_path), ledger_dir=tmp_path, environ=ENV)
        await srv.wait_until(lambda: len(srv.requests_for(WORKER)) == 6)  # all six on the wire
        run.cancel()
        async with asyncio.timeout(60):  # a hang guard
            result = await run.result()
        await srv.wait_until(lambda: srv.stats.hangups == 6)  # ... and every one hung up
    assert result.status == "cancelled"
    assert [r.status for r in srv.requests_for(WORKER)] == [499] * 6  # none was answered
    assert {n.status for n in result.nodes.values()} == {"cancelled"} and len(result.nodes) == 6
    events = events_of(result)
    assert events[-1]["kind"] == "run.finished" and events[-1]["data"]["status"] == "cancelled"
    assert not [e for e in events if e["kind"] == "model.response" and e["node_id"].startswith("s")]
    check = verify_ledger(result.ledger or '')
    assert check.ok and check.count == len(events)


async def test_agent_mode_runs_one_agent_through_the_same_api(tmp_path: Path) -> None:
    async with ScriptedModelServer("deepseek") as srv:
        srv.route(WORKER, reply("It is 205 km long.", reasoning="Known."))
        result = await arun(task_for(srv, tmp_path, mode="agent"), environ=ENV)
    assert result.status == "succeeded" and result.answer == "It is 205 km long."
    assert result.nodes == {} and result.usage.input_tokens > 0
    assert [r.body["model"] for r in srv.requests] == [WORKER]  # agent mode uses the worker role


@pytest.mark.parametrize("n_runs", [4])
async def test_concurrent_runs_over_http_do_not_interfere(tmp_path: Path, n_runs: int) -> None:
    """Four runs share one server; each run's planner, workers and synthesizer see only that
    run's goal, so each answer names its own run."""

    def run_number(req: RecordedRequest) -> int:
        found = re.search(r"run number (\d+)", user_text(req))
        assert found, user_text(req)[:300]
        return int(found[1])

    def planner(req: RecordedRequest) -> Reply:
        k = run_number(req)
        if tool_results(req):
            return reply("ok", reasoning="ok")
        return reply(reasoning="plan", tool_calls=[call("submit_plan", nodes(
            (f"r{k}", f"Do job {k}.", [], [])))])

    async with ScriptedModelServer("deepseek") as srv:
        serve(srv, planner, Workers({f"Do job {k}.": answer_with(f"result {k}") for k in range(n_runs)}),
              lambda req: reply(f"answer to run number {run_number(req)}", reasoning="ok"))
        tasks = [task_for(srv, tmp_path, goal=f"Please do run number {k}.") for k in range(n_runs)]
        results = await asyncio.gather(*(arun(t, environ=ENV) for t in tasks))
    for k, res in enumerate(results):
        assert res.status == "succeeded", res.error
        assert res.answer == f"answer to run number {k}" and set(res.nodes) == {f"r{k}"}


def serve_delegation(srv: ScriptedModelServer) -> None:
    """One node ("top") whose agent delegates "cover north and south"; the nested planner
    splits it into two sub-nodes, each answering with its figure."""
    top = nodes(("top", "Survey both regions.", [], ["delegate"]))
    sub = nodes(("north", "Survey the north.", [], []), ("south", "Survey the south.", [], []))

    def planner(req: RecordedRequest) -> Reply:
        if tool_results(req):
            return reply("Plan submitted.", reasoning="ok")
        nested = "cover north and south" in user_text(req)  # the goal the top agent delegated
        return reply(reasoning="split", tool_calls=[call("submit_plan", sub if nested else top)])

    def surveyor(req: RecordedRequest) -> Reply:
        if not tool_results(req):
            return reply(reasoning="Two parts: delegate.",
                         tool_calls=[call("delegate", {"goal": "cover north and south"})])
        return reply("North 12, south 34.", reasoning="Got both.")

    serve(srv, planner, Workers({"Survey both regions.": surveyor,
                                 "Survey the north.": answer_with("north: 12"),
                                 "Survey the south.": answer_with("south: 34")}),
          "North 12, south 34.")


async def test_a_sub_agent_delegates_to_a_sub_team_one_level_deeper(tmp_path: Path) -> None:
    async with ScriptedModelServer("deepseek") as srv:
        serve_delegation(srv)
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
    top_final = [r for r in srv.requests_for(WORKER) if "Survey both regions." in user_text(r)][-1]
    assert "north: 12" in tool_results(top_final)[0] and "south: 34" in tool_results(top_final)[0]
    # the top worker may delegate; at depth 1 == max_depth the nested planner is no longer
    # offered `delegate` for its nodes (the top planner was)
    assert "delegate" in offered_tools(srv.requests_for(WORKER)[0])
    top_planner, nested_planner = (
        next(r for r in srv.requests_for(PLANNER) if nested == ("cover north and south" in user_text(r)))
        for nested in (False, True))
    assert "delegate" in message_text(top_planner.messages[0])
    assert "delegate" not in message_text(nested_planner.messages[0])


async def test_delegate_is_not_a_known_tool_when_max_depth_is_zero(tmp_path: Path) -> None:
    async with ScriptedModelServer("deepseek") as srv:
        result = await arun(task_for(srv, tmp_path, budget={"max_depth": 0},
                                     plan=nodes(("a", "x", [], ["delegate"]))), environ=ENV)
    assert result.status == "failed" and result.error
    assert "unknown tool(s) delegate" in result.error.message
    assert srv.requests == []


@pytest.mark.docker
async def test_cancel_mid_run_removes_every_sandbox_container(tmp_path: Path) -> None:
    import docker

    goals = [f"Compute part {i}." for i in range(3)]
    plan = nodes(*((f"c{i}", goal, [], ["run_code"]) for i, goal in enumerate(goals)))

    def coder(req: RecordedRequest) -> Reply:
        return reply(reasoning="Run it.", tool_calls=[call("run_code", {
            "code": "import time\nprint('start', flush=True)\ntime.sleep(120)"})])

    client = docker.from_env()
    try:
        async with ScriptedModelServer("deepseek") as srv:
            serve(srv, Planner(plan), Workers(dict.fromkeys(goals, coder)), "never")
            task = task_for(srv, tmp_path, tools=["run_code"],
                            sandbox={"pool_size": 0, "max_concurrency": 3, "timeout_s": 300})
            run = start(task, ledger_dir=tmp_path, environ=ENV)
            label = {"label": f"agentkit.run={run.run_id}"}
            created, running = 0, list[str]()
            async for event in run.events():  # cancel once all three sandboxes are up
                created += event.kind == "sandbox.created"
                if created == 3 and not running:
                    running = await asyncio.to_thread(client.containers.list, filters=label)
                    run.cancel()
            async with asyncio.timeout(60):  # a hang guard
                result = await run.result()
        left = await asyncio.to_thread(client.containers.list, all=True, filters=label)
    finally:
        client.close()
    assert len(running) == 3 and result.status == "cancelled"
    assert left == []  # every container of the run is gone, not just stopped
    assert verify_ledger(result.ledger or '').ok
