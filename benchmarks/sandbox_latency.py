"""Sandbox latency: cold `docker run` vs warm pool vs persistent session (real engine).

For each concurrency level (1, 4, 16 by default) it runs N short Python snippets (default
200) four ways and prints p50/p99 per snippet plus the ratio of each p50 to the cold p50
measured in the same invocation:

* cold         create + start + wait + remove of a hardened container running the snippet
               (what a sandbox without a pool pays; all via the docker SDK)
* docker-exec  `exec_create` + `exec_start` in an already running container (reference:
               the usual way to reuse a container)
* warm         lease the agent's container from the warm pool + exec a fresh `python3`
               through the in-container agent (the default `run_code` path)
* persistent   lease + exec in the agent's persistent interpreter (`persistent: true`)

Goals (issue 5): warm p50 <= 50 ms and p99 <= 200 ms; cold <= 1 s.

    python benchmarks/sandbox_latency.py [--n 200] [--parallel 1,4,16] [--skip-cold]

With ``--plan-width W`` it instead measures the plan-sized pool (issue 19) against today's in
one invocation: W agents (the plan's parallel run_code nodes) start together, each first
"thinks" for ``--think`` seconds (a simulated model turn, the same in both arms), then makes
``--calls`` run_code-style calls (the run's pool from `sandbox_pool`, lease of its own key,
exec of a snippet). Timed per call: pool + lease + exec, as `run_code` does it.

* today        the pool made on the first call with ``pool_size`` (2) warm containers
* plan-sized   the same, plus the engine's `Runtime.planned` call when the plan is known:
               run_code's hook grows the pool to the plan's width and starts warming then

Arms alternate for ``--rounds`` rounds (each a fresh run: new client, pool and containers);
p50/p99 of first calls and of all calls per arm, and today's / plan-sized.

    python benchmarks/sandbox_latency.py --plan-width 16 [--think 1.0] [--calls 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agentkit.plan import Plan, PlanGraph, PlanNode, validate_plan
from agentkit.runtime import Runtime
from agentkit.sandboxes.docker import DockerSandboxClient, container_kwargs, owner_label
from agentkit.sandboxes.pool import SandboxPool
from agentkit.task import BudgetSpec, ModelSpec, SandboxSettings, TaskSpec
from agentkit.tools.run_code import sandbox_pool

RUN_ID = "bench-sandbox-latency"


def snippet(i: int) -> str:
    return f"print(sum(range({i})))"


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return statistics.median(ordered) * 1000, p99 * 1000


async def measure(n: int, parallel: int, one: Callable[[int, int], Awaitable[None]]) -> list[float]:
    """Run `one(worker, i)` for i in range(n) with `parallel` workers; per-call seconds."""
    samples: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker(w: int) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            start = time.perf_counter()
            await one(w, i)
            samples.append(time.perf_counter() - start)

    async with asyncio.TaskGroup() as tg:
        for w in range(parallel):
            tg.create_task(worker(w))
    return samples


def cold_run(client: Any, settings: SandboxSettings, image: str, i: int) -> None:
    kwargs = container_kwargs(settings, image=image, run_id=RUN_ID, owner=owner_label(),
                              command=["python3", "-c", snippet(i)])
    kwargs["stdin_open"] = False
    kwargs["auto_remove"] = False  # its output is read after it exits; removed below
    container = client.containers.create(**kwargs)
    try:
        container.start()
        status = container.wait(timeout=30)
        assert status["StatusCode"] == 0, status
        assert container.logs(stdout=True, stderr=False).strip() == str(sum(range(i))).encode()
    finally:
        container.remove(force=True, v=True)


async def bench_level(n: int, parallel: int, skip_cold: bool) -> dict[str, list[float]]:
    settings = SandboxSettings(pool_size=parallel, max_concurrency=parallel, timeout_s=30)
    out: dict[str, list[float]] = {}
    async with DockerSandboxClient(settings, run_id=RUN_ID) as client:
        docker_client, image = client.docker, client.image
        assert image is not None
        if not skip_cold:
            out["cold"] = await measure(n, parallel, lambda w, i: asyncio.to_thread(
                cold_run, docker_client, settings, image, i))
        ref = await client.create()
        ref_container = docker_client.containers.get(ref.id)

        def docker_exec(i: int) -> None:
            code, output = ref_container.exec_run(["python3", "-c", snippet(i)], user="65534:65534")
            assert code == 0 and output.strip() == str(sum(range(i))).encode()

        out["docker-exec"] = await measure(n, parallel, lambda w, i: asyncio.to_thread(docker_exec, i))
        await ref.close()
        for mode, persistent in (("warm", False), ("persistent", True)):
            pool_settings = settings.model_copy(update={"persistent": persistent})
            async with SandboxPool(client, pool_settings, close_client=False) as pool:
                await pool.warmed()

                async def one(w: int, i: int, pool: SandboxPool = pool) -> None:
                    async with pool.lease(f"agent-{w}") as session:
                        result = await session.exec(snippet(i))
                    assert result.exit_code == 0 and result.stdout.strip() == str(sum(range(i)))

                out[mode] = await measure(n, parallel, one)
    return out


# -- the plan-sized pool against today's (--plan-width) ------------------------------------------

ARMS = ("today", "plan-sized")


def fan_out(width: int) -> tuple[TaskSpec, PlanGraph]:
    """A task with run_code and a plan of `width` parallel run_code nodes."""
    task = TaskSpec(name="bench-prewarm", goal="g", model="m", models={"m": ModelSpec(model="unused")},
                    tools=["run_code"], budget=BudgetSpec(max_agents=width),
                    sandbox=SandboxSettings(timeout_s=30, max_pool=width))
    plan = Plan(nodes=[PlanNode(id=f"n{i}", goal="g", tools=["run_code"]) for i in range(width)])
    return task, validate_plan(plan, known_tools=["run_code"])


async def plan_arm(width: int, think_s: float, calls: int,
                   prewarm: bool) -> tuple[list[float], list[float], dict[str, Any]]:
    """One run: (first-call seconds, all-call seconds, the pool's stats at the end)."""
    task, graph = fan_out(width)
    first: list[float] = []
    every: list[float] = []
    async with Runtime(task) as rt:
        await rt.prepare_tools()
        if prewarm:
            await rt.planned(graph)  # what the engine does once the plan is accepted

        async def agent(i: int) -> None:
            await asyncio.sleep(think_s)  # the node's first model turn (simulated)
            ctx = rt.tool_context(node_id=f"n{i}", agent_id=f"n{i}")
            for k in range(calls):
                start = time.perf_counter()
                pool = await sandbox_pool(ctx)  # as run_code: the run's pool, then a lease
                async with pool.lease(f"n{i}") as session:
                    result = await session.exec(snippet(i * calls + k))
                every.append(time.perf_counter() - start)
                if k == 0:
                    first.append(every[-1])
                assert result.exit_code == 0, result.stderr

        async with asyncio.TaskGroup() as tg:
            for i in range(width):
                tg.create_task(agent(i))
        stats = (await sandbox_pool(rt.tool_context())).stats()
    return first, every, stats


async def plan_main(width: int, think_s: float, calls: int, rounds: int) -> None:
    samples: dict[str, tuple[list[float], list[float]]] = {arm: ([], []) for arm in ARMS}
    print(f"{width} agents, think {think_s:.1f} s, {calls} calls each, {rounds} rounds per arm")
    for r in range(rounds):
        for arm in ARMS:
            first, every, stats = await plan_arm(width, think_s, calls, arm == "plan-sized")
            samples[arm][0].extend(first)
            samples[arm][1].extend(every)
            print(f"  round {r + 1} {arm:<11} cold creates {stats['cold']:>3}, first p50 "
                  f"{percentiles(first)[0]:.0f} ms", flush=True)
    print(f"{'arm':<12}{'first n':>8}{'first p50':>11}{'first p99':>11}"
          f"{'all n':>7}{'all p50':>9}{'all p99':>9}   (ms: pool + lease + exec)")
    figures = {}
    for arm in ARMS:
        first, every = samples[arm]
        figures[arm] = (*percentiles(first), *percentiles(every))
        f50, f99, a50, a99 = figures[arm]
        print(f"{arm:<12}{len(first):>8}{f50:>11.1f}{f99:>11.1f}{len(every):>7}{a50:>9.1f}{a99:>9.1f}")
    ratios = [t / p for t, p in zip(figures["today"], figures["plan-sized"], strict=True)]
    print(f"{'today/plan':<12}{'':>8}{ratios[0]:>10.1f}x{ratios[1]:>10.1f}x"
          f"{'':>7}{ratios[2]:>8.1f}x{ratios[3]:>8.1f}x")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="snippets per mode and level")
    parser.add_argument("--parallel", default="1,4,16", help="concurrency levels")
    parser.add_argument("--skip-cold", action="store_true", help="skip the slow cold baseline")
    parser.add_argument("--plan-width", type=int, default=0,
                        help="instead: the plan-sized pool vs today's, with this many agents")
    parser.add_argument("--think", type=float, default=1.0,
                        help="plan mode: simulated model latency before the first call, s")
    parser.add_argument("--calls", type=int, default=3, help="plan mode: calls per agent")
    parser.add_argument("--rounds", type=int, default=2, help="plan mode: runs per arm")
    args = parser.parse_args()
    if args.plan_width:
        await plan_main(args.plan_width, args.think, args.calls, args.rounds)
        return
    print(f"{'mode':<12}{'parallel':>9}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}{'p50 vs cold':>14}")
    for parallel in (int(p) for p in args.parallel.split(",")):
        results = await bench_level(args.n, parallel, args.skip_cold)
        cold_p50 = percentiles(results["cold"])[0] if "cold" in results else None
        for mode, samples in results.items():
            p50, p99 = percentiles(samples)
            ratio = ("baseline" if mode == "cold" else
                     f"{cold_p50 / p50:.1f}x faster" if cold_p50 else "n/a (no cold)")
            print(f"{mode:<12}{parallel:>9}{len(samples):>6}{p50:>10.1f}{p99:>10.1f}{ratio:>14}",
                  flush=True)


if __name__ == "__main__":
    asyncio.run(main())
