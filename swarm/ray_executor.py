"""The Ray executor: each node's sub-agent runs on a worker of a Ray cluster.

    executor: {kind: ray, address: auto}       # in the task, or
    agentkit run task.yaml --executor ray --ray-address 10.0.0.5:6379

What runs where. The driver (this process) keeps the scheduler, the planner, the synthesizer,
the ledger (its only writer), the usage owner, the budgets and the rate limits. On each alive
Ray node it starts ``workers_per_node`` `NodeWorker` actors for the run (see
`agentkit.swarm.ray_worker` for why actors rather than tasks); each builds its own model
clients, tools and sandbox pool on its machine and runs many nodes at once. A node goes to the
least-loaded live worker; ``node.started`` records where (``executor``, ``host``, ``pid``,
``ray_node``). Nodes that may ``delegate`` run in the driver: a sub-team is a scheduler of its
own.

Each node attempt is one call of a streaming actor method: the worker yields its messages in
batches (events, budget and rate-limit requests, the result), the driver serves them in order
(`agentkit.swarm.ray_leases`) and answers requests with a second actor call. So events land in
the one hash-chained ledger in the order the worker emitted them, and every hold is decided in
one place for the whole cluster.

Failures. A worker that dies mid-node (its process or its machine) fails that attempt with an
error naming the host and pid; the scheduler's retry policy runs the node again on another live
worker, and a replacement worker is started on an alive Ray node. Cancelling the run (Ctrl-C,
``run.cancel()``, a budget stop) cancels every remote node with ``ray.cancel``; when the run's
resources close, each worker closes its runtime (its containers, MCP servers, connections),
is killed, and the driver waits until the cluster reports it dead.

Secrets never travel: workers read the API keys from their own environment variables that the
task names, and redact their values from everything they send back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import signal
import threading
from collections.abc import Mapping
from typing import Any

import ray
from ray.exceptions import RayActorError, RayError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from agentkit.budget import Budget
from agentkit.errors import AgentkitError, ConfigError, RunFailed, SetupError
from agentkit.models.context import current_attempt
from agentkit.plan import PlanNode
from agentkit.swarm.agents import DELEGATE, AgentExecutor
from agentkit.swarm.context import SwarmContext
from agentkit.swarm.ray_leases import NodeLeases
from agentkit.swarm.ray_worker import NodeWorker
from agentkit.swarm.scheduler import NodeOutput, local_placement
from agentkit.swarm.spawn import delegate_factory

__all__ = ["RayExecutor", "open_executor"]

#: the namespace of the actors agentkit starts (named ``agentkit:<run id>:<n>``)
NAMESPACE = "agentkit"
#: how long closing waits for workers to close their runtimes, and then to be reported dead
CLOSE_TIMEOUT_S, DEATH_TIMEOUT_S = 60.0, 15.0


async def open_executor(ctx: SwarmContext) -> RayExecutor:
    """Connect to the task's cluster and start the run's workers (they open in the
    background; `RayExecutor.ready` waits for them). Closes with the run's resources."""

    async def make() -> RayExecutor:
        executor = RayExecutor(ctx)
        executor.start()
        return executor

    async def close(executor: RayExecutor) -> None:
        await executor.aclose()

    return await ctx.runtime.resources.get("executor:ray", make, close)


def connect(address: str) -> None:
    """``ray.init`` once per process (an existing connection is used as it is). Ray installs
    its own SIGTERM handler when it connects; the process's own one is put back, so a CLI run
    still stops cleanly on SIGTERM."""
    if ray.is_initialized():
        return
    main = threading.current_thread() is threading.main_thread()
    saved = signal.getsignal(signal.SIGTERM) if main else None
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot connect to the Ray cluster at executor.address={address!r}: "
                          f"{exc}; start one (ray start --head) or give its HEAD:PORT") from None
    finally:
        if main and saved is not None:
            signal.signal(signal.SIGTERM, saved)


class _Worker:
    """One actor of the run, and what the driver knows about it."""

    def __init__(self, actor: Any, name: str, node_id: str, node_ip: str) -> None:
        self.actor, self.name, self.node_id, self.node_ip = actor, name, node_id, node_ip
        self.host: str | None = None
        self.pid: int | None = None
        self.tools: set[str] = set()
        self.load = 0
        self.alive = True
        self.ready = False

    def placement(self) -> dict[str, Any]:
        return {"executor": "ray", "host": self.host, "pid": self.pid, "ray_node": self.node_ip,
                "worker": self.name}


class RayExecutor:
    """A `NodeExecutor` that runs each node on a Ray worker (see the module docstring)."""

    def __init__(self, ctx: SwarmContext) -> None:
        self.ctx, self.runtime = ctx, ctx.runtime
        self.spec = ctx.runtime.task.executor
        self.local = AgentExecutor(ctx, delegate_factory(ctx))
        self.workers: list[_Worker] = []
        self._names = itertools.count()
        self._streams = itertools.count(1)
        self._placed: dict[str, _Worker] = {}
        self._opening: dict[_Worker, asyncio.Task[None]] = {}
        self._cancelled: list[Any] = []
        self._some_ready = asyncio.Event()
        self._closed = False
        #: messages served, by kind, over the run (events, calls, notes)
        self.counts: dict[str, int] = {"event": 0, "call": 0, "note": 0}

    # -- workers ------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect and start `workers_per_node` workers on every alive Ray node."""
        connect(self.spec.address)
        nodes = _alive_nodes()
        if not nodes:
            raise ConfigError(f"the Ray cluster at {self.spec.address!r} has no alive node")
        for node_id, node_ip in nodes.items():
            for _ in range(self.spec.workers_per_node):
                self._spawn(node_id, node_ip)

    def _spawn(self, node_id: str, node_ip: str) -> _Worker:
        name = f"agentkit:{self.runtime.run_id}:{next(self._names)}"
        actor = ray.remote(NodeWorker).options(
            name=name, namespace=NAMESPACE, num_cpus=0, max_restarts=0, max_task_retries=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote()
        worker = _Worker(actor, name, node_id, node_ip)
        self.workers.append(worker)
        self._opening[worker] = asyncio.get_running_loop().create_task(
            self._open(worker), name=f"open:{name}")
        return worker

    async def _open(self, worker: _Worker) -> None:
        runtime = self.runtime
        setup = {"task": runtime.task.model_dump_json(), "run_id": runtime.run_id,
                 "workspace": str(runtime.workspace),
                 "ledger_dir": str(runtime.ledger_dir) if runtime.ledger_dir else None}
        try:
            info = await worker.actor.open.remote(setup)
        except RayTaskError as exc:
            worker.alive = False
            cause = exc.cause if isinstance(exc.cause, AgentkitError) else None
            raise cause or SetupError(f"the Ray worker on {worker.node_ip} could not start: "
                                      f"{_reason(exc)}") from None
        except RayError as exc:
            worker.alive = False
            raise SetupError(f"the Ray worker on {worker.node_ip} could not start: "
                             f"{_reason(exc)}") from None
        worker.host, worker.pid, worker.tools = info["host"], info["pid"], set(info["tools"])
        for kind, node_id, data in _decoded(info["events"]):
            runtime.emit(kind, data, node_id=node_id)
        worker.ready = True
        self._some_ready.set()

    async def ready(self) -> None:
        """Wait until every worker started at the beginning has opened; raise the first
        failure (a worker that cannot start is a setup problem of its machine)."""
        for worker, task in list(self._opening.items()):
            await task
            self._opening.pop(worker, None)

    def _live(self) -> list[_Worker]:
        return [w for w in self.workers if w.alive and w.ready]

    def _pick(self) -> _Worker | None:
        live = self._live()
        return min(live, key=lambda w: w.load) if live else None

    def _lost(self, worker: _Worker) -> None:
        """A worker died: no more nodes go to it; a replacement starts on an alive node."""
        if not worker.alive:
            return
        worker.alive = False
        if self._closed:
            return
        alive = _alive_nodes()
        if not alive:
            return
        node_id = worker.node_id if worker.node_id in alive else min(
            alive, key=lambda n: sum(1 for w in self.workers if w.alive and w.node_id == n))
        replacement = self._spawn(node_id, alive[node_id])
        # a replacement that cannot start leaves the others to carry on; its error is kept
        self._opening[replacement].add_done_callback(_ignore_result)

    # -- nodes --------------------------------------------------------------------------------

    def _runs_here(self, node: PlanNode) -> bool:
        return DELEGATE in node.tools

    def place(self, node: PlanNode) -> dict[str, Any]:
        """Where the node's next attempt runs (recorded in ``node.started``)."""
        if self._runs_here(node):
            return local_placement(node)
        worker = self._pick()
        if worker is None:
            return {"executor": "ray", "host": None, "pid": None, "ray_node": None}
        self._placed[node.id] = worker
        return worker.placement()

    async def run_node(self, node: PlanNode, inputs: Mapping[str, str],
                       budget: Budget) -> NodeOutput:
        if self._runs_here(node):
            return await self.local.run_node(node, inputs, budget)
        worker = self._placed.pop(node.id, None)
        if worker is None or not worker.alive:
            worker = await self._any_worker(node)
        missing = [t for t in node.tools if t not in worker.tools]
        if missing:
            raise RunFailed(f"node {node.id!r}: tool(s) {', '.join(missing)} are not available on "
                            f"the Ray workers (tools given to start(tools=...) live in the driver "
                            f"only): list them in the task's tools as 'package.module:function', "
                            f"importable on every machine")
        stream_id = next(self._streams)
        actor = worker.actor
        leases = NodeLeases(self.runtime, budget, node.id,
                            lambda call_id, ok, value: actor.reply.remote(stream_id, call_id, ok, value))
        payload = {"node": node.model_dump_json(), "inputs": dict(inputs),
                   "attempt": current_attempt(), "limits_models": budget.limits_model_calls(),
                   "limits_tools": budget.limits_tool_calls(),
                   "seconds_left": budget.remaining_seconds()}
        worker.load += 1
        stream = actor.run_node.remote(stream_id, payload)
        try:
            return await self._follow(stream, leases, node, worker)
        except asyncio.CancelledError:
            ray.cancel(stream)
            self._cancelled.append(stream)
            raise
        finally:
            worker.load -= 1
            await leases.aclose()
            for kind, n in leases.counts.items():
                self.counts[kind] += n

    async def _follow(self, stream: Any, leases: NodeLeases, node: PlanNode,
                      worker: _Worker) -> NodeOutput:
        """Serve the worker's messages in order until the node's result (or error)."""
        try:
            async for ref in stream:
                for message in await ref:
                    out = leases.handle(message)
                    if out is not None:
                        return out
        except RayActorError as exc:
            self._lost(worker)
            raise RunFailed(f"node {node.id!r}: its Ray worker died (host {worker.host}, pid "
                            f"{worker.pid}, Ray node {worker.node_ip}): {_reason(exc)}") from None
        except RayError as exc:
            raise RunFailed(f"node {node.id!r}: the Ray worker on {worker.node_ip} failed: "
                            f"{_reason(exc)}") from None
        raise RunFailed(f"node {node.id!r}: the Ray worker on {worker.node_ip} ended the node "
                        f"without a result")

    async def _any_worker(self, node: PlanNode) -> _Worker:
        """A live worker, waiting for one that is still opening (a replacement)."""
        while True:
            worker = self._pick()
            if worker is not None:
                return worker
            pending = [t for w, t in self._opening.items() if w.alive and not t.done()]
            if not pending:
                raise RunFailed(f"node {node.id!r}: no Ray worker is alive to run it")
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)

    # -- closing ------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop everything the run started on the cluster (see the module docstring)."""
        if self._closed:
            return
        self._closed = True
        for task in self._opening.values():
            task.cancel()
        await asyncio.gather(*self._opening.values(), return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DEATH_TIMEOUT_S):
                await asyncio.gather(*(_drain(s) for s in self._cancelled))
        closing = [w.actor.close.remote() for w in self.workers if w.alive]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await asyncio.gather(*closing, return_exceptions=True)
        for worker in self.workers:
            with contextlib.suppress(RayError, ValueError):
                ray.kill(worker.actor, no_restart=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DEATH_TIMEOUT_S):
                await asyncio.gather(*(_until_dead(w.actor) for w in self.workers))


def _alive_nodes() -> dict[str, str]:
    """Ray node id -> its address, for every alive node of the cluster."""
    nodes = ray.nodes()  # type: ignore[no-untyped-call]
    return {str(n["NodeID"]): str(n["NodeManagerAddress"]) for n in nodes if n.get("Alive")}


async def _drain(stream: Any) -> None:
    """Wait for a cancelled node's stream to end (its task has stopped on the worker)."""
    with contextlib.suppress(RayError, asyncio.CancelledError):
        async for ref in stream:
            with contextlib.suppress(RayError):
                await ref


async def _until_dead(actor: Any) -> None:
    """Return once the cluster reports the killed actor dead."""
    while True:
        try:
            await actor.ping.remote()
        except RayError:
            return
        await asyncio.sleep(0.05)


def _ignore_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved


def _reason(exc: BaseException) -> str:
    """The first line of a Ray error (its full text carries the remote traceback)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and not isinstance(cause, RayError):
        return f"{type(cause).__name__}: {cause}"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _decoded(messages: list[Any]) -> list[tuple[Any, str | None, dict[str, Any]]]:
    """Startup events of a worker (``("event", kind, node_id, data_json)``), decoded."""
    return [(m[1], m[2], json.loads(m[3])) for m in messages if m[0] == "event"]
