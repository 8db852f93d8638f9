"""A simulated swarm run of any size, for the report's benchmark, browser tests and screenshots.

The whole engine runs for real (planner, scheduler, agent loop, DeepSeek wire adapter and
resilience layer over HTTP, tools, hash-chained ledger); only the model is simulated, by a
`ScriptedModelServer` on 127.0.0.1 answering by the job number in each node's goal. The
planner submits a layered DAG (each node after one or two of the previous layer); nodes list
the workspace `calls` times (five calls a turn), every tenth fetches a page from a local
server, some meet a 503 that the resilience layer retries after a backoff, and with
`fail_job` one node keeps getting a 400: it fails and its dependents are skipped. Replies carry
usage, and the models have prices, so every figure in the report is filled.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from _swarm_sim import PLANNER, ROLES, WORKER, WRITER, PageServer, number_in, role_models, tool_results

from agentkit import RunResult, arun
from agentkit.task import TaskSpec
from agentkit.testing import RecordedRequest, ScriptedModelServer, call, error, reply

__all__ = ["plan_nodes", "simulated_run"]

PER_TURN = 5
PRICE = {"input": 0.27, "output": 1.10}


def plan_nodes(count: int) -> list[dict[str, Any]]:
    """A layered DAG of `count` nodes: about sqrt(count) layers, each node depending on one or
    two nodes of the layer before."""
    width = max(1, math.ceil(math.sqrt(count)))
    nodes: list[dict[str, Any]] = []
    for job in range(count):
        layer, slot = divmod(job, width)
        deps: list[str] = []
        if layer > 0:
            previous = range((layer - 1) * width, min(layer * width, count))
            deps = sorted({f"n{previous[slot % len(previous)]}",
                           f"n{previous[(slot * 7 + 3) % len(previous)]}"})
        nodes.append({"id": f"n{job}", "goal": f"Measure item {job} (job {job}).",
                      "depends_on": deps, "tools": ["list_files", "web_fetch"]})
    return nodes


class _Worker:
    """Answers every node's turns by its job number (the goal this module wrote)."""

    def __init__(self, calls: int, latency: float, pages: PageServer, fail_job: int | None) -> None:
        self.calls, self.latency, self.pages, self.fail_job = calls, latency, pages, fail_job
        self.seen: Counter[int] = Counter()

    def __call__(self, req: RecordedRequest) -> Any:
        job = number_in(req, r"\(job (\d+)\)")
        self.seen[job] += 1
        delay = self.latency * (1 + job % 3)
        if job == self.fail_job:
            return error(400, f"item {job} cannot be measured", delay=delay)
        if job % 13 == 5 and self.seen[job] == 1:
            return error(503, "overloaded, try again", delay=delay)
        done = tool_results(req)
        usage = {"input_tokens": 400 + 60 * done, "output_tokens": 40 + job % 50,
                 "reasoning_tokens": 20 + job % 30}
        if job % 10 == 0 and done == 0:
            return reply(reasoning=f"Item {job} is documented online; fetch it.", usage=usage,
                         delay=delay, tool_calls=[call("web_fetch", {"url": self.pages.url(job)})])
        if job % 10 != 0 and done < self.calls:
            n = min(PER_TURN, self.calls - done)
            return reply(reasoning=f"Check the workspace ({done} checks so far).", usage=usage,
                         delay=delay, tool_calls=[call("list_files", {}) for _ in range(n)])
        source = f" (source {self.pages.url(job)})" if job % 10 == 0 else ""
        return reply(f"Item {job} has the value {1000 + job}{source}.", usage=usage, delay=delay,
                     reasoning=f"Item {job}: the value is {1000 + job}.")


def _answer(count: int, pages: PageServer) -> Any:
    cited = [j for j in range(0, min(count, 30), 10)]
    lines = [f"- item {j}: value {1000 + j} ({pages.url(j)})" for j in cited]
    text = (f"Measured {count} items. The largest value is {999 + count}; the average is "
            f"about {1000 + count // 2 + 0.5}.\n" + "\n".join(lines))
    return reply(text, reasoning="Combine the measurements.",
                 usage={"input_tokens": 3000 + 20 * count, "output_tokens": 300,
                        "reasoning_tokens": 120})


def _task(srv: ScriptedModelServer, count: int, workspace: Path) -> TaskSpec:
    models = role_models(srv.base_url, "SIM_KEY")
    for spec in models.values():
        spec["price"] = PRICE
    return TaskSpec.model_validate({
        "name": f"simulated-{count}", "goal": f"Measure {count} items and report their values.",
        "model": "work", "models": models, "roles": ROLES,
        "tools": ["list_files", "web_fetch"], "workspace": str(workspace),
        "fetch": {"allow_hosts": ["127.0.0.1"], "allow_private": True},
        "budget": {"max_agents": 16, "max_nodes": max(count, 24), "max_steps": 30,
                   "wall_seconds": 3600},
        "retry": {"attempts": 3, "base_delay_s": 0.05, "max_delay_s": 0.2, "node_attempts": 2,
                  "replans": 0}})


async def simulated_run(tmp: Path, *, nodes: int, calls: int = 1, latency: float = 0.0,
                        fail_job: int | None = None) -> RunResult:
    """Run the simulated swarm; its ledger lands in ``tmp/ledger``."""
    workspace = tmp / "ws"
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "items.txt").write_text("item values\n")
    plan = {"nodes": plan_nodes(nodes)}
    async with PageServer(delay=latency) as pages, ScriptedModelServer("deepseek") as srv:
        srv.route(PLANNER, reply(reasoning=f"{nodes} items: one node each, in layers.",
                                 usage={"input_tokens": 900, "output_tokens": 40 * nodes,
                                        "reasoning_tokens": 200},
                                 tool_calls=[call("submit_plan", plan)]),
                  default=reply("Plan submitted."))
        srv.route(WORKER, default=_Worker(calls, latency, pages, fail_job))
        srv.route(WRITER, default=_answer(nodes, pages))
        return await arun(_task(srv, nodes, workspace), ledger_dir=tmp / "ledger",
                          environ={"SIM_KEY": "sk-simulated-key-0001"})
