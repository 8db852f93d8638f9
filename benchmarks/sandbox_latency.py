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
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agentkit.sandboxes.docker import DockerSandboxClient, container_kwargs, owner_label
from agentkit.sandboxes.pool import SandboxPool
from agentkit.task import SandboxSettings

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
                await wait_warm(pool, parallel)

                async def one(w: int, i: int, pool: SandboxPool = pool) -> None:
                    async with pool.lease(f"agent-{w}") as session:
                        result = await session.exec(snippet(i))
                    assert result.exit_code == 0 and result.stdout.strip() == str(sum(range(i)))

                out[mode] = await measure(n, parallel, one)
    return out


async def wait_warm(pool: SandboxPool, size: int) -> None:
    for _ in range(600):
        if pool.stats()["idle"] >= size:
            return
        await asyncio.sleep(0.05)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="snippets per mode and level")
    parser.add_argument("--parallel", default="1,4,16", help="concurrency levels")
    parser.add_argument("--skip-cold", action="store_true", help="skip the slow cold baseline")
    args = parser.parse_args()
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
