"""Swarm vs a sequential ReAct loop on the same workload: speedup.

    python benchmarks/vs_sequential.py                 # ~15 s
    python benchmarks/vs_sequential.py --fanout 8 --latency 0.4 --fetch 0.3

Workload: find a value on each of N pages (N = `--fanout`) and report them all. Every model
turn takes `--latency` s (the `ScriptedModelServer` on 127.0.0.1, DeepSeek wire format, over
real HTTP); every page takes `--fetch` s to serve (a slow local website), fetched by the real
`web_fetch` tool (SSRF guard, trafilatura extraction, url.fetched in the ledger).

- sequential: ``mode: agent`` — one ReAct agent, one tool call per model turn (N fetch turns and
  an answer turn): (N + 1) × latency + N × fetch.
- swarm: the planner submits N parallel nodes (1 turn: planning ends when a plan is
  accepted), each node fetches its page and answers (2 turns + 1 fetch), the synthesizer
  writes the cited answer (1 turn): 4 × latency + fetch. Also shown: the swarm with a
  hand-written plan (planner skipped): 3 × latency + fetch.

Speedup = sequential makespan / swarm makespan, both measured in this run. The workload's own
theoretical maximum is the ratio of the two ideal makespans above (from its latencies alone);
efficiency = measured speedup / that maximum (goal ≥ 0.90 in both modes). Anchors: LLMCompiler
3.74x on an 8-way fan-out; Kimi agent swarm up to 4.5x.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from _swarm_sim import (
    PLANNER,
    ROLES,
    SOLO,
    WORKER,
    WRITER,
    PageServer,
    number_in,
    role_models,
    tool_results,
)

from agentkit import RunResult, arun
from agentkit.task import TaskSpec
from agentkit.testing import RecordedRequest, ScriptedModelServer, call, reply


def serve(srv: ScriptedModelServer, pages: PageServer, n: int, latency: float) -> dict[str, Any]:
    """Script each role's model name on `srv`; the hand-written plan."""
    plan = {"nodes": [{"id": f"item{i}", "goal": f"Read item {i} at {pages.url(i)}.",
                       "tools": ["web_fetch"]} for i in range(n)]}

    def planner(req: RecordedRequest) -> Any:
        if tool_results(req):
            return reply("Plan submitted.", reasoning="ok", delay=latency)
        return reply(reasoning="Independent pages: fan out.", delay=latency,
                     tool_calls=[call("submit_plan", plan)])

    def worker(req: RecordedRequest) -> Any:
        i = number_in(req, r"Read item (\d+) at")
        if not tool_results(req):
            return reply(reasoning="Fetch it.", delay=latency,
                         tool_calls=[call("web_fetch", {"url": pages.url(i)})])
        return reply(f"item {i} = {1000 + i} ({pages.url(i)})", reasoning="Read.", delay=latency)

    def sequential(req: RecordedRequest) -> Any:  # the ReAct agent: one page per turn
        done = tool_results(req)
        if done < n:
            return reply(reasoning=f"Next page ({done} read).", delay=latency,
                         tool_calls=[call("web_fetch", {"url": pages.url(done)})])
        return reply(" ".join(f"item {i} = {1000 + i}." for i in range(n)), reasoning="All read.",
                     delay=latency)

    cites = " ".join(f"item {i} = {1000 + i} [{pages.url(i)}]." for i in range(n))
    srv.route(PLANNER, default=planner).route(WORKER, default=worker).route(SOLO, default=sequential)
    srv.route(WRITER, default=reply(cites, reasoning="Combine.", delay=latency))
    return plan


def task(base_url: str, mode: str, n: int, plan: dict[str, Any] | None) -> TaskSpec:
    spec: dict[str, Any] = {
        "name": "fanout", "goal": f"Report the value of items 0..{n - 1}.", "mode": mode,
        "tools": ["web_fetch"], "fetch": {"allow_hosts": ["127.0.0.1"]},
        "models": role_models(base_url, "SIM_KEY"),
        "budget": {"max_agents": n, "max_steps": n + 4},
    }
    # the swarm's roles each have their model name; the lone agent has its own
    spec.update({"model": "work", "roles": ROLES} if mode == "swarm" else {"model": "solo"})
    if plan is not None:
        spec["plan"] = plan
    return TaskSpec.model_validate(spec)


async def timed(spec: TaskSpec, ledger: Path) -> tuple[RunResult, float]:
    start = time.perf_counter()
    result = await arun(spec, ledger_dir=ledger, environ={"SIM_KEY": "sk-sim"})
    took = time.perf_counter() - start
    assert result.status == "succeeded", result.error
    return result, took


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fanout", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.4, help="seconds per model turn")
    parser.add_argument("--fetch", type=float, default=0.3, help="seconds to serve a page")
    args = parser.parse_args()
    n, lat, fetch = args.fanout, args.latency, args.fetch
    with tempfile.TemporaryDirectory() as tmp:
        async with PageServer(fetch) as pages, ScriptedModelServer("deepseek") as srv:
            plan = serve(srv, pages, n, lat)
            await timed(task(srv.base_url, "swarm", n, plan), Path(tmp))  # warm-up
            _, seq = await timed(task(srv.base_url, "agent", n, None), Path(tmp))
            swarm_res, swarm = await timed(task(srv.base_url, "swarm", n, None), Path(tmp))
            _, fixed = await timed(task(srv.base_url, "swarm", n, plan), Path(tmp))
    ideal_seq = (n + 1) * lat + n * fetch
    print(f"{n} pages, model {lat} s/turn, page {fetch} s; real HTTP, real web_fetch, ledger on")
    print(f"sequential ReAct : {seq:6.2f} s   (ideal {ideal_seq:.2f} s)")
    for name, took, ideal in (("swarm (planner)  ", swarm, 4 * lat + fetch),
                              ("swarm (plan file)", fixed, 3 * lat + fetch)):
        speedup, most = seq / took, ideal_seq / ideal
        print(f"{name}: {took:6.2f} s   (ideal {ideal:.2f} s)   speedup {speedup:.2f}x   "
              f"theoretical max {most:.2f}x   efficiency {speedup / most:.3f} (goal ≥ 0.90)")
    print(f"citations kept: {len(swarm_res.citations)} of {n} (all fetched in the run)")


if __name__ == "__main__":
    asyncio.run(main())
