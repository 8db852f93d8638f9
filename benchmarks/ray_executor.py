"""The Ray executor against the local one, on this machine: a 200-node DAG and swarm_scale.

    python benchmarks/ray_executor.py              # ~1-2 minutes on 2 cores
    python benchmarks/ray_executor.py --quick      # a 60-node DAG, 30 agents

A real Ray cluster of two raylet nodes on loopback (127.0.0.2 and 127.0.0.3, started and
stopped by this script), the whole stack on both executors: the real agent loop, the DeepSeek
wire adapter over HTTP to a `ScriptedModelServer` in a child process (the simulated model), the
hash-chained ledger in the driver.

1. DAG: the same seeded layered DAG of `--nodes` nodes (1-3 dependencies each, latencies
   uniform 0.05-2 s scaled so the critical path CP is `--cp` s). Every node makes one model
   call, answered after its latency. Figures per executor: wall time of the run (for Ray
   including the start of its workers), the makespan from the first ``node.started`` to the
   last ``node.finished``, η = CP / that makespan, each node's overhead = its duration minus
   its latency (median and p95), and the dispatch time = ``node.started`` to the node's first
   ``model.request`` in the ledger (on Ray: the actor call, the worker's setup of the node and
   the event's way back). The ratio Ray / local of the makespans.
2. swarm_scale: 100 agents x 15 tool calls (5 per turn, `list_files`), 0.5 s per model turn,
   on Ray and locally: makespan, η against T_phys, ledger events per second.

Driver CPU is this process's CPU time during the run (the workers and raylets are other
processes); it is what grows with the number of messages the driver serves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import multiprocessing
import random
import re
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import ray
from _swarm_sim import ROLES, WORKER, WRITER, role_models, user_text
from scheduler_efficiency import Dag, critical_path, layered, scaled
from swarm_scale import PER_TURN
from swarm_scale import task as scale_task
from swarm_scale import worker as scale_worker

from agentkit import RunResult, arun
from agentkit.task import TaskSpec
from agentkit.testing import RecordedRequest, Reply, ScriptedModelServer, reply
from agentkit.testing.ray_cluster import LocalRayCluster

KEY_ENV = "SIM_KEY"
STEP = re.compile(r"Simulated step (\d+)\.")


def make_dag(nodes: int, cp: float, seed: int) -> tuple[Dag, float]:
    dag = layered(random.Random(seed), nodes, layers=8)
    dag = scaled(dag, cp / critical_path(dag))
    return dag, critical_path(dag)


def dag_task(base_url: str, dag: Dag, workspace: Path, executor: dict[str, Any], *,
             limits: bool = False) -> TaskSpec:
    """The DAG as a task. With `limits`, a token budget and RPM/TPM limits that never bind
    but must be asked: on Ray every model call is then two round trips to the driver."""
    index = {node: i for i, node in enumerate(dag)}
    nodes = [{"id": node, "goal": f"Simulated step {index[node]}.", "depends_on": deps,
              "tools": []} for node, (deps, _) in dag.items()]
    models = role_models(base_url, KEY_ENV)
    budget: dict[str, Any] = {"max_agents": len(dag), "max_nodes": len(dag), "max_steps": 4,
                              "wall_seconds": 3600}
    if limits:
        models["work"] = {**models["work"], "rpm": 1_000_000, "tpm": 1_000_000_000}
        budget["tokens"] = 1_000_000_000
    return TaskSpec.model_validate({
        "name": "ray-dag", "goal": "Run the simulated DAG.", "model": "work",
        "models": models, "roles": ROLES, "workspace": str(workspace), "budget": budget,
        "plan": {"nodes": nodes}, "executor": executor})


def serve(latencies: list[float], scale_latency: float, calls: int, conn: Connection) -> None:
    """The simulated model in its own process: DAG steps answer after their latency, the
    swarm_scale agents as in swarm_scale, the writer at once."""
    scaled_worker = scale_worker(scale_latency, calls)

    def work(req: RecordedRequest) -> Reply:
        found = STEP.search(user_text(req))
        if found is None:
            answer: Reply = scaled_worker(req)
            return answer
        return reply("This step is done.", reasoning="Simulated.", delay=latencies[int(found[1])])

    async def run() -> None:
        async with ScriptedModelServer("deepseek") as srv:
            srv.route(WORKER, default=work)
            srv.route(WRITER, default=reply("All agents finished.", reasoning="Summarise."))
            conn.send(srv.base_url)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)

    asyncio.run(run())


async def timed(spec: TaskSpec, ledger: Path) -> tuple[RunResult, float, float]:
    """The run's result, its wall time and the driver's CPU seconds."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = await arun(spec, ledger_dir=ledger, environ={KEY_ENV: "sk-sim"})
    return result, time.perf_counter() - wall, time.process_time() - cpu


def ledger_events(result: RunResult) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(result.ledger or "").read_text().splitlines()]


def dag_figures(result: RunResult, dag: Dag, cp: float) -> dict[str, float]:
    events = ledger_events(result)
    started = {e["node_id"]: e["ts"] for e in events if e["kind"] == "node.started"}
    finished = {e["node_id"]: e["ts"] for e in events if e["kind"] == "node.finished"}
    first_call: dict[str, float] = {}
    for e in events:
        if e["kind"] == "model.request" and e["node_id"] in dag:
            first_call.setdefault(e["node_id"], e["ts"])
    makespan = max(finished.values()) - min(started.values())
    over = sorted(finished[n] - started[n] - dag[n][1] for n in dag)
    dispatch = sorted(first_call[n] - started[n] for n in dag)
    return {"makespan": makespan, "eta": cp / makespan,
            "before_nodes": min(started.values()) - events[0]["ts"],
            "over_p50": statistics.median(over), "over_p95": over[int(0.95 * (len(over) - 1))],
            "dispatch_p50": statistics.median(dispatch),
            "dispatch_p95": dispatch[int(0.95 * (len(dispatch) - 1))],
            "events": len(events)}


def show_dag(name: str, wall: float, cpu: float, f: dict[str, float]) -> None:
    print(f"  {name:<12} wall {wall:6.2f} s (first node after {f['before_nodes']:.2f} s)  "
          f"makespan {f['makespan']:6.2f} s  η {f['eta']:.3f}  node overhead p50 "
          f"{f['over_p50'] * 1e3:6.1f} ms p95 {f['over_p95'] * 1e3:6.1f} ms  dispatch p50 "
          f"{f['dispatch_p50'] * 1e3:6.1f} ms p95 {f['dispatch_p95'] * 1e3:6.1f} ms  "
          f"driver CPU {cpu:5.2f} s  {f['events']:.0f} events")


async def bench(url: str, args: argparse.Namespace, cluster: LocalRayCluster, tmp: Path,
                dag: Dag, cp: float) -> None:
    on_ray = {"kind": "ray", "address": cluster.address}
    local = {"kind": "local"}
    await timed(dag_task(url, dict(list(dag.items())[:20]), tmp, local), tmp / "warm")  # imports
    print(f"DAG: {len(dag)} nodes, critical path {cp:.2f} s, latencies "
          f"{min(d for _, d in dag.values()):.3f}-{max(d for _, d in dag.values()):.3f} s")
    figures = {}
    for name, executor, limits in (("local", local, False), ("ray", on_ray, False),
                                   ("local+limits", local, True), ("ray+limits", on_ray, True)):
        spec = dag_task(url, dag, tmp, executor, limits=limits)
        result, wall, cpu = await timed(spec, tmp / f"dag-{name}")
        assert result.status == "succeeded", result.error
        figures[name] = dag_figures(result, dag, cp)
        show_dag(name, wall, cpu, figures[name])
    for suffix in ("", "+limits"):
        ray_f, local_f = figures[f"ray{suffix}"], figures[f"local{suffix}"]
        print(f"  ray{suffix} / local{suffix}: makespan {ray_f['makespan'] / local_f['makespan']:.3f}, "
              f"node overhead added by Ray (p50) {(ray_f['over_p50'] - local_f['over_p50']) * 1e3:.1f} ms")
    trips = (figures["ray+limits"]["over_p50"] - figures["ray"]["over_p50"]) / 2
    print(f"  a budget or rate-limit round trip to the driver, from the p50 node overhead with "
          f"and without limits (2 per model call): {trips * 1e3:.1f} ms")
    turns = math.ceil(args.calls / PER_TURN) + 1
    t_phys = (turns + 1) * args.latency
    print(f"swarm_scale: {args.agents} agents x {args.calls} tool calls, {args.latency} s per "
          f"model turn, T_phys {t_phys:.2f} s")
    for name, executor in (("local", local), ("ray", on_ray)):
        spec = scale_task(url, args.agents, tmp)
        spec = spec.model_copy(update={"executor": TaskSpec.model_validate(
            {"name": "x", "goal": "x", "executor": executor}).executor})
        result, wall, cpu = await timed(spec, tmp / f"scale-{name}")
        assert result.status == "succeeded", result.error
        events = ledger_events(result)
        start = min(e["ts"] for e in events if e["kind"] == "node.started")
        makespan = events[-1]["ts"] - start
        tools = sum(1 for e in events if e["kind"] == "tool.result")
        print(f"  {name:<5} wall {wall:6.2f} s  makespan (first node to end) {makespan:6.2f} s  "
              f"η {t_phys / makespan:.3f}  {tools} tool calls  {len(events)} events "
              f"({len(events) / makespan:.0f}/s)  driver CPU {cpu:5.2f} s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--cp", type=float, default=4.0, help="critical path, seconds")
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--calls", type=int, default=15)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.nodes, args.agents = 60, 30
    dag, cp = make_dag(args.nodes, args.cp, args.seed)
    latencies = [lat for _, lat in dag.values()]
    started = time.perf_counter()
    with LocalRayCluster(2, cpus=2, env={KEY_ENV: "sk-sim"}) as cluster, \
            tempfile.TemporaryDirectory() as name:
        print(f"cluster: 2 raylets on {', '.join(cluster.ips)} up in "
              f"{time.perf_counter() - started:.1f} s")
        ray.init(address=cluster.address, logging_level=logging.WARNING, log_to_driver=False)
        tmp = Path(name)
        (tmp / "data.txt").write_text("x\n")
        ctx = multiprocessing.get_context("spawn")
        mine, theirs = ctx.Pipe()
        server = ctx.Process(target=serve, args=(latencies, args.latency, args.calls, theirs),
                             daemon=True)
        server.start()
        try:
            url = await asyncio.to_thread(mine.recv)
            await bench(url, args, cluster, tmp, dag, cp)
        finally:
            mine.send("stop")
            server.join(10)
            ray.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
