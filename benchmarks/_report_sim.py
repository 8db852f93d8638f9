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
from agentkit.task import TaskSpec, load_task
from agentkit.testing import RecordedRequest, ScriptedModelServer, call, error, reply

__all__ = ["plan_nodes", "quickstart_run", "simulated_run"]

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


# ---------------------------------------------------------------------------------------------
# The quickstart, with a scripted model: the real task file, the real Docker sandbox

#: the quickstart's three questions, each answered by a program the scripted model "writes"
PROGRAMS = {
    "region": ("Compute the total revenue of each region from sales.csv.",
               "import csv\nfrom collections import defaultdict\ntotal = defaultdict(float)\n"
               "for r in csv.DictReader(open('sales.csv')):\n"
               "    total[r['region']] += int(r['units']) * float(r['unit_price'])\n"
               "for region in sorted(total):\n    print(f'{region}: {total[region]:.2f}')\n"),
    "month": ("Find the month (YYYY-MM) with the highest total revenue in sales.csv.",
              "import csv\nfrom collections import defaultdict\ntotal = defaultdict(float)\n"
              "for r in csv.DictReader(open('sales.csv')):\n"
              "    total[r['date'][:7]] += int(r['units']) * float(r['unit_price'])\n"
              "best = max(total, key=total.get)\nprint(f'best month: {best} ({total[best]:.2f})')\n"),
    "product": ("Find the product with the most units sold in sales.csv, and how many.",
                "import csv\nfrom collections import Counter\nunits = Counter()\n"
                "for r in csv.DictReader(open('sales.csv')):\n    units[r['product']] += int(r['units'])\n"
                "name, n = units.most_common(1)[0]\nprint(f'most units: {name} ({n})')\n"),
}


def _quickstart_worker(req: RecordedRequest) -> Any:
    text = "\n".join(str(m.get("content") or "") for m in req.messages if m.get("role") == "user")
    key = next(k for k, (goal, _) in PROGRAMS.items() if goal in text)
    results = [str(m.get("content") or "") for m in req.messages if m.get("role") == "tool"]
    if not results:
        return reply(reasoning=f"Sum the rows of sales.csv per group for: {PROGRAMS[key][0]}",
                     usage={"input_tokens": 620, "output_tokens": 130, "reasoning_tokens": 60},
                     tool_calls=[call("run_code", {"code": PROGRAMS[key][1]})])
    printed = [line for line in results[-1].splitlines() if ": " in line and line[:1].isalpha()]
    return reply("\n".join(printed), reasoning="The program printed the answer; copy it.",
                 usage={"input_tokens": 900, "output_tokens": 60, "reasoning_tokens": 25})


def _quickstart_writer(req: RecordedRequest) -> Any:
    text = "\n".join(str(m.get("content") or "") for m in req.messages if m.get("role") == "user")
    lines = [line for line in text.splitlines() if ": " in line and line[:1].isalpha()
             and any(ch.isdigit() for ch in line) and not line.startswith("Task:")]
    return reply("Answers from the programs' output:\n" + "\n".join(f"- {x}" for x in lines),
                 reasoning="Quote every printed line.",
                 usage={"input_tokens": 1500, "output_tokens": 120, "reasoning_tokens": 40})


async def quickstart_run(tmp: Path, task_file: Path) -> RunResult:
    """examples/quickstart.yaml as it is (goal, prompts, run_code in the Docker sandbox, three
    samples per node voted), with its model replaced by a scripted one that writes correct
    programs: a quickstart-shaped ledger in about a minute instead of the local model's
    several."""
    plan = {"nodes": [{"id": f"{k}_revenue" if k == "region" else f"top_{k}", "goal": goal,
                       "depends_on": [], "tools": ["run_code"]}
                      for k, (goal, _) in PROGRAMS.items()]}
    async with ScriptedModelServer("deepseek") as srv:
        srv.route("quickstart-model", reply(
            reasoning="Three independent questions: one node each.",
            usage={"input_tokens": 1200, "output_tokens": 180, "reasoning_tokens": 90},
            tool_calls=[call("submit_plan", plan)]), default=reply("Plan submitted."))
        srv.route("quickstart-worker", default=_quickstart_worker)
        srv.route("quickstart-writer", default=_quickstart_writer)
        spec = load_task(task_file).model_dump(mode="json", exclude_none=True)
        models = {name: {"profile": "deepseek", "model": name, "base_url": srv.base_url,
                         "api_key_env": "SIM_KEY", "max_tokens": 400, "stream": False,
                         "price": PRICE}
                  for name in ("quickstart-model", "quickstart-worker", "quickstart-writer")}
        spec.update(model="quickstart-worker", models=models, roles={
            "planner": "quickstart-model", "worker": "quickstart-worker",
            "synthesizer": "quickstart-writer"},
            workspace=str((task_file.parent / "data").resolve()))
        return await arun(TaskSpec.model_validate(spec), ledger_dir=tmp / "ledger",
                          environ={"SIM_KEY": "sk-simulated-key-0001"})
