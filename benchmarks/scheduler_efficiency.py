"""Scheduler efficiency on seeded simulated-latency DAGs, side by side with LangGraph `Send`.

    python benchmarks/scheduler_efficiency.py            # ~2-3 minutes on 2 cores
    python benchmarks/scheduler_efficiency.py --quick    # fewer DAGs

Definitions: every node sleeps a fixed, seeded
latency d_v (a simulated model), so the physical limit with unbounded concurrency is the
critical path CP; η = CP / makespan, overhead per node = (makespan − CP) / |V|. Families:
chain, wide fan-out, layered heterogeneous (latencies 0.05–2 s), layered with stragglers
(one node per layer 10× slower), chains of diamonds; 10–1,000 nodes. To keep the run to a few
minutes each DAG's latencies are scaled so that its CP is about `--cp` seconds (default 1.0),
but never below a 10 ms mean node latency (the OS timer's granularity); the scale is printed.
Engine overhead alone is measured on zero-latency 1,000-node chains and
fan-outs. Runners, all on the same DAGs in this process:

- agentkit: `agentkit.swarm.Scheduler` with no event sink (engine only);
- agentkit+ledger: the same with the buffered, hash-chained audit ledger as a sink;
- bare asyncio: a 15-line event-driven executor (the floor);
- LangGraph: a dispatcher node `Send`s every ready node to a worker node; it runs in supersteps,
  so a wave waits for its slowest member. Install it only for this benchmark:
  ``pip install langgraph`` (skipped with a message if absent).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import operator
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Annotated, Any, TypedDict

from agentkit.budget import Budget
from agentkit.clock import SystemClock
from agentkit.events import EventBus
from agentkit.plan import Plan, PlanGraph, PlanNode, validate_plan
from agentkit.swarm.scheduler import NodeOutput, Scheduler
from agentkit.task import BudgetSpec

Dag = dict[str, tuple[list[str], float]]  # id -> (deps, latency)


# -- DAG families ------------------------------------------------------------------------------

def chain(rng: random.Random, n: int) -> Dag:
    return {f"n{i}": ([f"n{i - 1}"] if i else [], rng.uniform(0.05, 2.0)) for i in range(n)}


def wide(rng: random.Random, n: int) -> Dag:
    """Fan-out: a root, then n-1 parallel nodes (the synthesizer is the join; a plan node may
    list at most 100 dependencies)."""
    dag: Dag = {"root": ([], rng.uniform(0.05, 2.0))}
    for i in range(n - 1):
        dag[f"w{i}"] = (["root"], rng.uniform(0.05, 2.0))
    return dag


def layered(rng: random.Random, n: int, layers: int = 5, straggler: bool = False,
            hi: float = 2.0) -> Dag:
    """`layers` layers; each node depends on 1-3 nodes of earlier layers (at least one from the
    layer just before), latencies uniform in 0.05-`hi` s; with `straggler`, one node per layer
    is 10x slower."""
    dag: Dag = {}
    per = [n // layers + (1 if i < n % layers else 0) for i in range(layers)]
    prev: list[str] = []
    earlier: list[str] = []
    for li, count in enumerate(per):
        cur = [f"l{li}_{j}" for j in range(count)]
        slow = rng.randrange(count) if straggler else -1
        for j, node in enumerate(cur):
            deps: list[str] = []
            if prev:
                deps = [rng.choice(prev)]
                extra = rng.sample(earlier, min(len(earlier), rng.randint(0, 2)))
                deps += [d for d in extra if d not in deps]
            dag[node] = (deps, rng.uniform(0.05, hi) * (10 if j == slow else 1))
        earlier += cur
        prev = cur
    return dag


def diamonds(rng: random.Random, count: int) -> Dag:
    dag: Dag = {"d0": ([], rng.uniform(0.05, 2.0))}
    top = "d0"
    for i in range(count):
        left, right, bottom = f"L{i}", f"R{i}", f"B{i}"
        dag[left] = ([top], rng.uniform(0.05, 2.0))
        dag[right] = ([top], rng.uniform(0.05, 2.0))
        dag[bottom] = ([left, right], rng.uniform(0.05, 2.0))
        top = bottom
    return dag


def critical_path(dag: Dag) -> float:
    finish: dict[str, float] = {}
    for node in _topo(dag):
        deps, lat = dag[node]
        finish[node] = max((finish[d] for d in deps), default=0.0) + lat
    return max(finish.values())


def _topo(dag: Dag) -> list[str]:
    graph = validate_plan(_plan(dag), known_tools=[])
    return list(graph.order)


def scaled(dag: Dag, factor: float) -> Dag:
    return {k: (deps, lat * factor) for k, (deps, lat) in dag.items()}


def _plan(dag: Dag) -> Plan:
    return Plan(nodes=[PlanNode(id=k, goal="x", depends_on=deps) for k, (deps, _) in dag.items()])


# -- runners -----------------------------------------------------------------------------------

class SleepExecutor:
    def __init__(self, dag: Dag) -> None:
        self.latency = {k: lat for k, (_, lat) in dag.items()}

    async def run_node(self, node: PlanNode, inputs: Mapping[str, str], budget: Budget) -> NodeOutput:
        await asyncio.sleep(self.latency[node.id])
        return NodeOutput(output="ok")


async def run_agentkit(dag: Dag, graph: PlanGraph, ledger_dir: Path | None) -> float:
    clock = SystemClock()
    sinks: list[Callable[..., Any]] = []
    ledger = None
    if ledger_dir is not None:
        from agentkit.audit import Ledger

        ledger = Ledger(ledger_dir / f"{time.monotonic_ns()}.jsonl", fsync="close")
        sinks.append(ledger.append)
    bus = EventBus("bench", clock=clock, sinks=sinks)
    sched = Scheduler(graph, SleepExecutor(dag), emit=bus.emit, clock=clock,
                      budget=Budget.root(BudgetSpec(), emit=bus.emit, clock=clock))
    start = time.perf_counter()
    await sched.run()
    took = time.perf_counter() - start
    if ledger is not None:
        ledger.close()
    return took


async def run_bare(dag: Dag) -> float:
    """The floor: event-driven dispatch with nothing else."""
    children: dict[str, list[str]] = {k: [] for k in dag}
    for k, (deps, _) in dag.items():
        for d in deps:
            children[d].append(k)
    left = {k: len(deps) for k, (deps, _) in dag.items()}

    async def node(tg: asyncio.TaskGroup, k: str) -> None:
        await asyncio.sleep(dag[k][1])
        for c in children[k]:
            left[c] -= 1
            if left[c] == 0:
                tg.create_task(node(tg, c))

    start = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for k, n in left.items():
            if n == 0:
                tg.create_task(node(tg, k))
    return time.perf_counter() - start


class State(TypedDict):
    """LangGraph state: the ids finished and dispatched so far (lists merged by +)."""

    done: Annotated[list[str], operator.add]
    started: Annotated[list[str], operator.add]


def langgraph_runner() -> Callable[[Dag], Any] | None:
    try:
        from langgraph.graph import END, START, StateGraph
        from langgraph.types import Send
    except ImportError:
        return None

    async def run(dag: Dag) -> float:
        def dispatch(state: State) -> dict[str, Any]:
            return {}

        def route(state: State) -> Any:
            done, started = set(state["done"]), set(state["started"])
            ready = [k for k, (deps, _) in dag.items()
                     if k not in started and all(d in done for d in deps)]
            if not ready:
                return END
            return [Send("work", {"id": k}) for k in ready]

        async def work(arg: dict[str, str]) -> dict[str, Any]:
            await asyncio.sleep(dag[arg["id"]][1])
            return {"done": [arg["id"]], "started": [arg["id"]]}

        builder = StateGraph(State)
        builder.add_node("dispatch", dispatch)
        builder.add_node("work", work)
        builder.add_edge(START, "dispatch")
        builder.add_conditional_edges("dispatch", route, ["work", END])
        builder.add_edge("work", "dispatch")
        graph = builder.compile()
        start = time.perf_counter()
        await graph.ainvoke({"done": [], "started": []},
                            {"recursion_limit": 10 * len(dag) + 100})
        return time.perf_counter() - start

    return run


# -- the suite ---------------------------------------------------------------------------------

def workloads(quick: bool) -> list[tuple[str, Dag]]:
    seeds = range(6 if quick else 20)
    out: list[tuple[str, Dag]] = []
    # the reference workload: 30 nodes, 5 layers, 0.05-1.5 s
    out += [("layered-30", layered(random.Random(s), 30, hi=1.5)) for s in seeds]
    out += [("straggler-50", layered(random.Random(100 + s), 50, straggler=True))
            for s in range(2 if quick else 5)]
    out += [("diamonds-31", diamonds(random.Random(200 + s), 10)) for s in range(2 if quick else 5)]
    out += [("wide-100", wide(random.Random(300), 100)), ("wide-1000", wide(random.Random(301), 1000))]
    out += [("chain-10", chain(random.Random(400), 10)), ("chain-100", chain(random.Random(401), 100))]
    if not quick:
        out += [("layered-200", layered(random.Random(500), 200, layers=10)),
                ("chain-1000", chain(random.Random(402), 1000))]
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


async def efficiency(args: argparse.Namespace, lg: Callable[[Dag], Any] | None,
                     ledger_dir: Path) -> None:
    rows: dict[str, dict[str, list[float]]] = {}
    print(f"{'dag':<14}{'nodes':>6}{'scale':>7}{'CP s':>7}  {'η agentkit':>10}{'η +ledger':>10}"
          f"{'η bare':>8}{'η LangGraph':>12}{'LG/ak':>7}")
    for family, raw in workloads(args.quick):
        # scale to CP ≈ args.cp, but keep the mean node latency ≥ 10 ms: below that the OS
        # timer (epoll waits in whole ms) dominates and every runner, even bare asyncio, loses
        mean = sum(lat for _, lat in raw.values()) / len(raw)
        dag = scaled(raw, min(1.0, max(args.cp / critical_path(raw), 0.010 / mean)))
        cp = critical_path(dag)
        graph = validate_plan(_plan(dag), known_tools=[])
        # collect garbage before each timed run, so no runner pays for another's leftovers
        ak = await timed_fresh(partial(run_agentkit, dag, graph, None))
        akl = await timed_fresh(partial(run_agentkit, dag, graph, ledger_dir))
        bare = await timed_fresh(partial(run_bare, dag))
        lgt = await timed_fresh(partial(lg, dag)) if lg else float("nan")
        keys = ("ak", "akl", "bare", "lg", "ratio", "ovh", "ovhl", "vsbare")
        r = rows.setdefault(family.split("-")[0], {k: [] for k in keys})
        r["vsbare"].append(bare / ak)
        r["ak"].append(cp / ak)
        r["akl"].append(cp / akl)
        r["bare"].append(cp / bare)
        r["lg"].append(cp / lgt)
        r["ratio"].append(lgt / ak)
        r["ovh"].append((ak - cp) / len(dag))
        r["ovhl"].append((akl - cp) / len(dag))
        print(f"{family:<14}{len(dag):>6}{dag_scale(raw, dag):>7.3f}{cp:>7.2f}  {cp / ak:>10.4f}"
              f"{cp / akl:>10.4f}{cp / bare:>8.4f}{cp / lgt:>12.4f}{lgt / ak:>7.2f}")
    print("\nsummary by family (η p50 / p99-worst; LangGraph makespan ÷ agentkit makespan, p50)")
    all_ak = [v for r in rows.values() for v in r["ak"]]
    all_vs = [v for r in rows.values() for v in r["vsbare"]]
    all_akl = [v for r in rows.values() for v in r["akl"]]
    for fam, r in rows.items():
        print(f"  {fam:<10} agentkit η {pct(r['ak'], .5):.4f}/{pct(r['ak'], .01):.4f}  "
              f"+ledger {pct(r['akl'], .5):.4f}/{pct(r['akl'], .01):.4f}  "
              f"LangGraph η {pct(r['lg'], .5):.4f}/{pct(r['lg'], .01):.4f}  "
              f"ratio LG/ak {pct(r['ratio'], .5):.2f}  overhead/node "
              f"{1e6 * statistics.median(r['ovh']):.0f} µs (+ledger "
              f"{1e6 * statistics.median(r['ovhl']):.0f} µs)")
    print(f"  ALL        agentkit η p50 {pct(all_ak, .5):.4f}  p99 {pct(all_ak, .01):.4f}   "
          f"+ledger p50 {pct(all_akl, .5):.4f}  p99 {pct(all_akl, .01):.4f}")
    print(f"  ALL        agentkit makespan vs bare asyncio on the same DAG (bare/agentkit): p50 "
          f"{pct(all_vs, .5):.4f}  p99 {pct(all_vs, .01):.4f}  (1.0 = no framework loss; the rest "
          f"of 1-η is timer slack every runner pays)")
    if "layered" in rows:
        print(f"  layered heterogeneous: agentkit makespan = "
              f"{1 / pct(rows['layered']['ratio'], .5):.2f}× LangGraph's (goal ≤ 0.78)")


async def timed_fresh(fn: Callable[[], Any]) -> float:
    gc.collect()
    return float(await fn())


def dag_scale(raw: Dag, dag: Dag) -> float:
    k = next(iter(raw))
    return dag[k][1] / raw[k][1]


async def overhead(lg: Callable[[Dag], Any] | None, ledger_dir: Path) -> None:
    print("\nengine overhead on zero-latency DAGs (µs per node; median of 3)")
    for name, raw in (("chain-1000", chain(random.Random(1), 1000)),
                      ("wide-1000", wide(random.Random(2), 1000)),
                      ("chain-200", chain(random.Random(3), 200))):
        dag = scaled(raw, 0.0)
        graph = validate_plan(_plan(dag), known_tools=[])
        res: dict[str, float] = {}
        await run_agentkit(dag, graph, None)  # warm-up
        runners: list[tuple[str, Callable[[], Any]]] = [
            ("agentkit", partial(run_agentkit, dag, graph, None)),
            ("agentkit+ledger", partial(run_agentkit, dag, graph, ledger_dir)),
            ("bare asyncio", partial(run_bare, dag))]
        if lg is not None:
            runners.append(("LangGraph", partial(lg, dag)))
        for label, fn in runners:
            res[label] = statistics.median([await timed_fresh(fn) for _ in range(3)]) / len(dag) * 1e6
        line = "  ".join(f"{k} {v:.1f}" for k, v in res.items())
        ratio = (f"  (LangGraph/agentkit {res['LangGraph'] / res['agentkit']:.1f}×)"
                 if "LangGraph" in res else "")
        print(f"  {name:<11} {line}{ratio}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer DAGs (about a minute)")
    parser.add_argument("--cp", type=float, default=1.0,
                        help="scale each DAG's latencies so its critical path is about this (s)")
    args = parser.parse_args()
    lg = langgraph_runner()
    if lg is None:
        print("LangGraph is not installed: comparison skipped (pip install langgraph)",
              file=sys.stderr)
    print(f"python {sys.version.split()[0]}; latencies scaled to CP ≈ {args.cp} s per DAG")
    with tempfile.TemporaryDirectory() as tmp:
        await overhead(lg, Path(tmp))
        print()
        await efficiency(args, lg, Path(tmp))


if __name__ == "__main__":
    asyncio.run(main())
