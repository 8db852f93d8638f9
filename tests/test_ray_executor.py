"""The Ray executor on a real two-raylet Ray cluster on this machine's loopback.

One cluster (two ``ray start`` nodes, 127.0.0.2 and 127.0.0.3) serves every test of this
module. The models are `ScriptedModelServer` routes over real HTTP; the workers read their API
key from the raylets' environment, which holds a different value than the driver's, so the
tests can tell which process used (or leaked) which key.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import ray
from _ray_helpers import (
    DAG,
    KEY_ENV,
    WORKER,
    WRITER,
    node_of,
    task,
    tool_results,
    worker_answer,
    writer_answer,
)

from agentkit import start
from agentkit.audit import verify_ledger
from agentkit.models import RateLimits
from agentkit.task import TaskSpec
from agentkit.testing import EventCapture, RecordedRequest, Reply, ScriptedModelServer, reply
from agentkit.testing.ray_cluster import LocalRayCluster

DRIVER_KEY, WORKER_KEY = "drv-plain-key-1234", "wrk-plain-key-5678"
ENVIRON = {KEY_ENV: DRIVER_KEY}


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRayCluster]:
    with LocalRayCluster(2, cpus=2, env={KEY_ENV: WORKER_KEY}) as running:
        ray.init(address=running.address, logging_level=logging.WARNING, log_to_driver=False)
        try:
            yield running
        finally:
            ray.shutdown()


def ray_executor(cluster: LocalRayCluster) -> dict[str, Any]:
    return {"kind": "ray", "address": cluster.address}


def ledger_text(ledger: str | None) -> str:
    return Path(ledger or "").read_text()


def events_of(ledger: str | None) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ledger_text(ledger).splitlines()]


def shape(events: list[dict[str, Any]]) -> tuple[list[str], dict[str, list[str]]]:
    """The run's own event kinds in order, and each node's event kinds in order."""
    run = [e["kind"] for e in events if e["node_id"] is None]
    nodes: dict[str, list[str]] = {}
    for e in events:
        if e["node_id"] is not None:
            nodes.setdefault(e["node_id"], []).append(e["kind"])
    return run, nodes


def started(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**e["data"], "node": e["node_id"]} for e in events if e["kind"] == "node.started"]


async def exited(pids: set[int]) -> None:
    """Return once every process of `pids` has exited: a pidfd becomes readable when its
    process ends, so the kernel wakes the wait (no polling)."""
    loop = asyncio.get_running_loop()
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        done = asyncio.Event()
        loop.add_reader(fd, done.set)
        try:
            await done.wait()
        finally:
            loop.remove_reader(fd)
            os.close(fd)


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


async def test_twelve_node_dag_runs_on_both_ray_nodes_like_a_local_run(
        cluster: LocalRayCluster, tmp_path: Path) -> None:
    """The same 12-node DAG, locally and on Ray: nodes ran on both Ray nodes, in processes
    other than the driver; same answer, same usage, the same event kinds run-wide and per node
    (budget holds and tool calls included); both ledgers verify."""
    (tmp_path / "notes.txt").write_text("hello\n")
    async with ScriptedModelServer("deepseek") as srv:
        srv.route(WORKER, default=lambda r: worker_answer(r, echo_key=None))
        srv.route(WRITER, default=writer_answer)
        runs = {}
        for kind in ("local", "ray"):
            spec = task(srv.base_url, tmp_path, executor=None if kind == "local"
                        else ray_executor(cluster))
            runs[kind] = await start(spec, ledger_dir=tmp_path / kind, environ=ENVIRON).result()
    local, remote = runs["local"], runs["ray"]
    assert local.status == remote.status == "succeeded", (local.error, remote.error)
    assert remote.answer == local.answer and remote.answer is not None
    assert all(f"{n}," in remote.answer or f"{n} reported" in remote.answer for n in DAG)
    assert remote.usage == local.usage and remote.usage.input_tokens > 0
    assert {k: v.usage for k, v in remote.nodes.items()} == {k: v.usage for k, v in local.nodes.items()}
    here, there = events_of(local.ledger), events_of(remote.ledger)
    assert shape(there) == shape(here)
    assert "budget.reserved" in shape(there)[1]["lima"] and "tool.result" in shape(there)[1]["lima"]
    placed = started(there)
    assert {p["executor"] for p in placed} == {"ray"}
    assert {p["ray_node"] for p in placed} == set(cluster.ips)
    assert all(p["pid"] != os.getpid() for p in placed)
    assert {p["executor"] for p in started(here)} == {"local"}
    assert {p["pid"] for p in started(here)} == {os.getpid()}
    assert verify_ledger(local.ledger or "").ok and verify_ledger(remote.ledger or "").ok


async def test_worker_key_stays_on_the_worker(cluster: LocalRayCluster, tmp_path: Path) -> None:
    """Workers call the model with the key from their own environment (the server saw it),
    and redact it from what they send back: a node output quoting it reaches neither the
    ledger nor the result, although the driver does not know that value."""
    async with ScriptedModelServer("deepseek") as srv:
        srv.route(WORKER, default=worker_answer)  # node alpha quotes the key it was sent
        srv.route(WRITER, default=writer_answer)
        spec = task(srv.base_url, tmp_path, executor=ray_executor(cluster))
        result = await start(spec, ledger_dir=tmp_path, environ=ENVIRON).result()
        seen = {str(r.headers.get("authorization")) for r in srv.requests_for(WORKER)}
    assert result.status == "succeeded", result.error
    assert seen == {f"Bearer {WORKER_KEY}"}
    text = ledger_text(result.ledger)
    assert WORKER_KEY not in text and WORKER_KEY not in result.model_dump_json()
    finished = [e for e in events_of(result.ledger) if e["kind"] == "node.finished"
                and e["node_id"] == "alpha"]
    assert "The key I was given is [REDACTED]." in finished[0]["data"]["output"]


async def test_worker_killed_mid_node_is_retried_elsewhere(cluster: LocalRayCluster,
                                                           tmp_path: Path) -> None:
    """Node echo's first request is held while the worker process running it is killed
    (SIGKILL): that attempt fails naming the dead worker, the node runs again in another
    process, and the run succeeds with a verified ledger."""
    release = asyncio.Event()
    held: list[RecordedRequest] = []

    async def answer(req: RecordedRequest) -> Reply:
        if node_of(req) == "echo" and not held:
            held.append(req)
            await release.wait()
        return worker_answer(req, echo_key=None)

    async with ScriptedModelServer("deepseek") as srv:
        srv.route(WORKER, default=answer)
        srv.route(WRITER, default=writer_answer)
        capture = EventCapture()
        run = start(task(srv.base_url, tmp_path, executor=ray_executor(cluster)),
                    ledger_dir=tmp_path, environ=ENVIRON, sinks=[capture])
        await srv.wait_until(lambda: bool(held), timeout=120)
        first = [e for e in capture.of("node.started") if e.node_id == "echo"]
        victim = int(first[0].data["pid"])
        os.kill(victim, signal.SIGKILL)
        result = await run.result()
        release.set()
    assert result.status == "succeeded", result.error
    events = events_of(result.ledger)
    echo = [p for p in started(events) if p["node"] == "echo"]
    assert [p["attempt"] for p in echo] == [1, 2] and result.nodes["echo"].attempts == 2
    assert echo[0]["pid"] == victim and echo[1]["pid"] != victim
    failed = [e["data"] for e in events if e["kind"] == "node.failed" and e["node_id"] == "echo"]
    assert failed[0]["will_retry"] and "Ray worker died" in failed[0]["error"]["message"]
    assert str(victim) in failed[0]["error"]["message"]
    assert verify_ledger(result.ledger or "").ok


def run_actors(run_id: str) -> list[str]:
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if str(a["name"]).startswith(f"agentkit:{run_id}:")]


@pytest.mark.docker
async def test_cancel_mid_run_stops_remote_nodes_and_their_containers(
        cluster: LocalRayCluster, tmp_path: Path) -> None:
    """Four nodes have run a program in their worker's Docker sandbox and wait for their next
    model turn when the run is cancelled: the result says cancelled, no actor of the run is
    left in the cluster, its worker processes are gone, and no container of the run is left."""
    never = asyncio.Event()

    async def answer(req: RecordedRequest) -> Reply:
        if tool_results(req):
            await never.wait()  # the node waits here until it is cancelled
        return worker_answer(req, tool="run_code",
                             arguments={"language": "python", "code": "print('up')"})

    async with ScriptedModelServer("deepseek") as srv:
        srv.route(WORKER, default=answer)
        srv.route(WRITER, default=writer_answer)
        spec = task(srv.base_url, tmp_path, executor=ray_executor(cluster), tools=["run_code"],
                    sandbox={"pool_size": 1})
        run = start(spec, ledger_dir=tmp_path, environ=ENVIRON)
        await srv.wait_until(lambda: sum(1 for r in srv.requests_for(WORKER)
                                         if tool_results(r)) >= 4, timeout=180)
        client = docker.from_env()
        label = {"label": f"agentkit.run={run.run_id}"}
        assert client.api.containers(all=True, filters=label), "the nodes made no container"
        assert len(run_actors(run.run_id)) == 2
        run.cancel()
        result = await run.result()
        never.set()
    assert result.status == "cancelled"
    assert run_actors(run.run_id) == []
    pids = {int(p["pid"]) for p in started(events_of(result.ledger))}
    assert pids
    # Ray reports a killed actor dead while its process may still be exiting: wait for the
    # kernel to say each has exited (the bound only keeps a broken run from hanging the test)
    async with asyncio.timeout(60):
        await exited(pids)
    assert not any(running(pid) for pid in pids)
    assert client.api.containers(all=True, filters=label) == []
    client.close()


class ManualClock:
    """Time that moves only when the test says so (`jump`), and tells when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._count = itertools.count()
        self.sleeping = asyncio.Event()

    def time(self) -> float:
        return 1_700_000_000.0 + self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._count), future))
        self.sleeping.set()
        await future

    def jump(self) -> None:
        """Move to the earliest sleeper's deadline and wake everyone due."""
        self._sleepers = [s for s in self._sleepers if not s[2].done()]
        heapq.heapify(self._sleepers)
        self.now = max(self.now, self._sleepers[0][0])
        while self._sleepers and self._sleepers[0][0] <= self.now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
        self.sleeping.clear()


async def test_rpm_limit_holds_across_both_workers(cluster: LocalRayCluster,
                                                   tmp_path: Path) -> None:
    """Twelve independent nodes, spread over two workers, each make one call to a model
    limited to 5 requests a minute. Time moves only when the driver's limiter sleeps: the
    server sees 5, 5 and 2 requests in three windows (per-worker limits would let 10 through
    at once), and never answers 429."""
    clock = ManualClock()
    arrivals: list[tuple[float, str]] = []

    def answer(req: RecordedRequest) -> Reply:
        arrivals.append((clock.monotonic(), node_of(req)))
        return reply(f"Node {node_of(req)} is ready.", reasoning="Done.")

    flat = {"nodes": [{"id": n, "goal": f"Report on node {n}.", "tools": []} for n in DAG]}
    async with ScriptedModelServer("deepseek", rpm=5, window_s=60.0, clock=clock) as srv:
        srv.route(WORKER, default=answer)
        srv.route(WRITER, default=writer_answer)
        base = task(srv.base_url, tmp_path, executor=ray_executor(cluster), worker_rpm=5,
                    budget={"max_agents": 12})
        spec = TaskSpec.model_validate({**base.model_dump(exclude={"plan"}), "plan": flat})
        run = start(spec, ledger_dir=tmp_path, environ=ENVIRON,
                    rate_limits=RateLimits(clock, window_s=60.0))
        async with asyncio.timeout(180):
            for expected in (5, 10):
                def arrived(n: int = expected) -> bool:
                    return len(arrivals) >= n
                await srv.wait_until(arrived, timeout=180)
                await clock.sleeping.wait()  # the next request waits for the window
                assert len(arrivals) == expected  # none got through early
                clock.jump()
            result = await run.result()
    assert result.status == "succeeded", result.error
    assert srv.stats.rate_limited == 0
    times = sorted({t for t, _ in arrivals})
    assert [sum(1 for t, _ in arrivals if t == w) for w in times] == [5, 5, 2]
    assert all(b - a >= 60.0 for a, b in itertools.pairwise(times))
    placed = {p["node"]: p["ray_node"] for p in started(events_of(result.ledger))}
    assert {placed[n] for _, n in arrivals} == set(cluster.ips)


def test_cli_runs_a_task_on_ray(cluster: LocalRayCluster, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """``agentkit run TASK --executor ray --ray-address ADDR`` runs the task file's nodes on
    the cluster (exit 0; the ledger's node.started say ray)."""
    from typer.testing import CliRunner

    from agentkit.cli import app

    with ScriptedModelServer("deepseek") as srv:
        srv.route(WORKER, default=lambda r: worker_answer(r, echo_key=None))
        srv.route(WRITER, default=writer_answer)
        spec = task(srv.base_url, tmp_path)
        path = tmp_path / "task.yaml"
        path.write_text(json.dumps(spec.model_dump(mode="json", exclude_defaults=True)))
        monkeypatch.setenv(KEY_ENV, DRIVER_KEY)
        out = CliRunner().invoke(app, ["run", str(path), "--json", "--executor", "ray",
                                       "--ray-address", cluster.address,
                                       "--ledger-dir", str(tmp_path / "runs")])
    assert out.exit_code == 0, out.output
    payload = json.loads(out.stdout.strip().splitlines()[-1])
    assert payload["status"] == "succeeded"
    assert {p["executor"] for p in started(events_of(payload["ledger"]))} == {"ray"}
