"""The event-driven scheduler: a node starts the moment its last dependency finishes.

There is no level or superstep barrier and no central polling loop: when a node finishes, its
own task decrements its dependents' counters and starts each one that reaches zero, inside the
same `asyncio.TaskGroup`. Cancelling the run cancels the group, which cancels every sub-agent
(and through them HTTP streams and sandbox sessions).

The work of a node is done by a `NodeExecutor` (the default runs an `Agent`; benchmarks and
tests use simulated ones), so nodes get only plain values: their `PlanNode`, their
dependencies' outputs and their `Budget`. Failure handling, in order: retry
the node (``task.retry.node_attempts``), then ask the `Replanner` for a new subtree
(``task.retry.replans``) keeping every finished node's result, else skip the dependents with a
recorded reason (``node.skipped``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import socket
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

from agentkit.budget import Budget
from agentkit.clock import Clock
from agentkit.errors import AgentkitError, BudgetExceeded, PlanError
from agentkit.events import Emitter
from agentkit.limits import ResourceLimits
from agentkit.messages import Usage
from agentkit.models.context import attempt_scope
from agentkit.plan import Plan, PlanGraph, PlanNode, validate_plan

__all__ = ["NodeExecutor", "NodeOutput", "NodeResult", "PlacingExecutor", "ReplanRequest",
           "Replanner", "Scheduler", "local_placement"]

NodeStatus = Literal["waiting", "running", "succeeded", "failed", "skipped", "cancelled"]


@dataclass
class NodeOutput:
    """What a node hands on: text for dependents and the synthesizer, and what grounds it."""

    output: str
    #: raw tool outputs the node saw (used by the synthesizer's grounding check)
    sources: list[str] = field(default_factory=list)


@dataclass
class NodeResult:
    """One node's outcome, as reported in `RunResult.nodes` (and the scheduler's own record:
    plain attributes, cheap to update). `usage`/`cost_usd` are filled from the run's usage
    owner when the run's result is assembled: every attempt's calls are in them."""

    status: NodeStatus = "waiting"
    output: str | None = None
    error: dict[str, Any] | None = None
    started: float | None = None
    finished: float | None = None
    attempts: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0


class NodeExecutor(Protocol):
    async def run_node(self, node: PlanNode, inputs: Mapping[str, str],
                       budget: Budget) -> NodeOutput:
        """Do the node's work. Raise to fail it (the scheduler decides on retries)."""
        ...


@runtime_checkable
class PlacingExecutor(Protocol):
    """An executor that runs nodes elsewhere (another process or machine) says where, before
    `run_node`: ``node.started`` records it (``executor``, ``host``, ``pid``, ...)."""

    def place(self, node: PlanNode) -> dict[str, Any]: ...


_HOST = socket.gethostname()


def local_placement(node: PlanNode | None = None) -> dict[str, Any]:
    """Where a node run in this process runs."""
    return {"executor": "local", "host": _HOST, "pid": os.getpid()}


@dataclass
class ReplanRequest:
    """What a replanner gets: the failure, what finished, and a way to check a new subtree."""

    failed: PlanNode
    error: str
    removed: list[str]
    finished: dict[str, str]
    graph: PlanGraph
    accept: Callable[[list[PlanNode]], PlanGraph]


class Replanner(Protocol):
    async def replan(self, request: ReplanRequest) -> PlanGraph:
        """Return the merged graph (built by `request.accept`) or raise to give up."""
        ...


class Scheduler:
    """Runs one `PlanGraph` to completion; `results` holds every node's outcome."""

    def __init__(self, graph: PlanGraph, executor: NodeExecutor, *, budget: Budget,
                 emit: Emitter, clock: Clock, limits: ResourceLimits | None = None,
                 node_attempts: int = 1, replans: int = 0, replanner: Replanner | None = None,
                 known_tools: tuple[str, ...] = (), known_models: tuple[str, ...] = (),
                 max_nodes: int | None = None,
                 restored: Mapping[str, NodeOutput] | None = None) -> None:
        self.graph, self.executor, self.budget = graph, executor, budget
        #: nodes a resumed run finished before (from its ledger): they are not run again
        self.restored = dict(restored or {})
        self._emit, self.clock, self.limits = emit, clock, limits or ResourceLimits()
        self.node_attempts, self.replans_left, self.replanner = node_attempts, replans, replanner
        self._validate_args = (known_tools, known_models, max_nodes)
        self.state: dict[str, NodeResult] = {n: NodeResult() for n in graph.order}
        #: global cap on concurrent sub-agents (task.budget.max_agents); None: unbounded
        self._cap = self.limits.limit("agents")
        self._running = 0
        self._ready: list[tuple[int, int, str]] = []  # heap: (-rank, arrival, node id)
        self._arrivals = itertools.count()
        self._rank = _ranks(graph)
        self.outputs: dict[str, NodeOutput] = {}
        self._waiting: dict[str, int] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._place = executor.place if isinstance(executor, PlacingExecutor) else local_placement

    async def run(self) -> dict[str, NodeResult]:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            self._arm(self.graph.order)
        self._tg = None
        return self.results

    @property
    def results(self) -> dict[str, NodeResult]:
        """Every node's outcome so far (a snapshot)."""
        return {k: replace(v) for k, v in self.state.items()}

    # -- dispatch -----------------------------------------------------------------------------

    def _arm(self, node_ids: tuple[str, ...] | list[str]) -> None:
        """Count unfinished dependencies of `node_ids`; start those with none left."""
        for node_id in node_ids:
            deps = self.graph.nodes[node_id].depends_on
            left = sum(1 for d in deps if self.state[d].status != "succeeded")
            self._waiting[node_id] = left
            if left == 0:
                self._start(node_id)
        if self._cap is not None:
            self._admit()

    def _start(self, node_id: str) -> None:
        """Dispatch a ready node now, or (with a `max_agents` cap) queue it; the caller then
        calls `_admit`, so a batch of ready nodes is admitted by priority, not arrival."""
        if self._cap is None:
            self._launch(node_id, self._node_attempts(node_id))
            return
        heapq.heappush(self._ready, (-self._rank.get(node_id, 0), next(self._arrivals), node_id))

    def _admit(self) -> None:
        """Fill free slots, longest remaining chain first (list scheduling: the node that
        holds up the most downstream work goes first, which keeps makespan near Graham's
        bound when there are fewer slots than ready nodes)."""
        assert self._cap is not None
        while self._ready and self._running < self._cap:
            _, _, node_id = heapq.heappop(self._ready)
            self._running += 1
            self._launch(node_id, self._slotted(node_id))

    def _launch(self, node_id: str, coro: Coroutine[Any, Any, None]) -> None:
        assert self._tg is not None
        self.state[node_id].status = "running"
        self._tg.create_task(coro, name=f"node:{node_id}")

    def _finished(self, node_id: str) -> None:
        for dep in self.graph.dependents(node_id):
            self._waiting[dep] -= 1
            if self._waiting[dep] == 0 and self.state[dep].status == "waiting":
                self._start(dep)
        if self._cap is not None:
            self._admit()

    # -- one node -----------------------------------------------------------------------------

    async def _slotted(self, node_id: str) -> None:
        """Run a node that holds one of the `max_agents` slots; hand the slot on after."""
        try:
            await self._node_attempts(node_id)
        finally:
            self._running -= 1
            task = asyncio.current_task()
            if task is None or not task.cancelling():
                self._admit()

    async def _node_attempts(self, node_id: str) -> None:
        node = self.graph.nodes[node_id]
        result = self.state[node_id]
        if node_id in self.restored:  # finished before the resume: keep its output
            self.outputs[node_id] = self.restored[node_id]
            result.status, result.output = "succeeded", self.restored[node_id].output
            result.attempts = 1
            self._finished(node_id)
            return
        error: BaseException | None = None
        for attempt in range(1, self.node_attempts + 1):
            result.attempts += 1
            try:
                out = await self._attempt(node, result, attempt)
            except asyncio.CancelledError:
                result.status, result.finished = "cancelled", self.clock.time()
                raise
            except Exception as exc:
                error = exc
                final = attempt == self.node_attempts or isinstance(exc, BudgetExceeded)
                self._emit("node.failed", {"attempt": attempt, "error": _err(exc),
                                           "will_retry": not final}, node_id=node_id)
                if final:
                    break
                continue
            self.outputs[node_id] = out
            result.status, result.output, result.error = "succeeded", out.output, None
            result.finished = self.clock.time()
            # the output itself is recorded: a resumed run takes it from the ledger
            self._emit("node.finished", {"attempt": attempt, "output": out.output,
                                         "sources": out.sources,
                                         "output_chars": len(out.output),
                                         "duration_s": result.finished - (result.started or 0)},
                       node_id=node_id)
            self._finished(node_id)
            return
        assert error is not None
        await self._fail(node, error)

    async def _attempt(self, node: PlanNode, result: NodeResult, attempt: int) -> NodeOutput:
        result.started = self.clock.time()
        inputs = {d: self.outputs[d].output for d in node.depends_on}
        self._emit("node.started", {"attempt": attempt, "depends_on": node.depends_on,
                                    **self._place(node)}, node_id=node.id)
        budget = self.budget.child(node.id, node.budget)
        try:
            with attempt_scope(attempt):  # the node's calls carry the attempt in their keys
                async with asyncio.timeout(budget.remaining_seconds()):
                    return await self.executor.run_node(node, inputs, budget)
        finally:
            budget.close()

    # -- failure: re-plan the subtree or skip it ----------------------------------------------

    async def _fail(self, node: PlanNode, error: BaseException) -> None:
        result = self.state[node.id]
        result.status, result.error, result.finished = "failed", _err(error), self.clock.time()
        if self.replans_left > 0 and self.replanner is not None:
            self.replans_left -= 1
            if await self._replan(node, error):
                return
        for dep in sorted(self.graph.descendants(node.id)):
            if self.state[dep].status == "waiting":
                self.state[dep].status = "skipped"
                reason = f"depends on {node.id!r}, which failed: {error}"
                self.state[dep].error = {"type": "Skipped", "message": reason}
                self._emit("node.skipped", {"reason": reason, "failed": node.id}, node_id=dep)

    async def _replan(self, node: PlanNode, error: BaseException) -> bool:
        removed = [node.id, *sorted(self.graph.descendants(node.id))]
        finished = {k: o.output for k, o in self.outputs.items()}
        request = ReplanRequest(failed=node, error=str(error), removed=removed, finished=finished,
                                graph=self.graph, accept=lambda new: self._merge(removed, new))
        assert self.replanner is not None
        try:
            new_graph = await self.replanner.replan(request)
        except (AgentkitError, PlanError) as exc:
            self._emit("plan.rejected", {"replan_of": node.id, "error": _err(exc)}, node_id=node.id)
            return False
        self.state[node.id].error = {**_err(error), "replaced_by_replan": True}
        old = set(self.graph.nodes)
        added = [n for n in new_graph.order if n not in old or n in removed]
        for node_id in removed[1:]:
            if node_id not in new_graph.nodes:
                reason = f"replaced by the re-plan of {node.id!r}"
                self.state[node_id].status = "skipped"
                self.state[node_id].error = {"type": "Skipped", "message": reason}
                self._emit("node.skipped", {"reason": reason, "failed": node.id}, node_id=node_id)
        self.graph = new_graph
        self._rank = _ranks(new_graph)
        for node_id in added:
            self.state[node_id] = NodeResult()
        self._emit("plan.replanned", {"failed": node.id, "removed": removed, "added": added,
                                      **new_graph.summary()}, node_id=node.id)
        self._arm(added)
        return True

    def _merge(self, removed: list[str], new_nodes: list[PlanNode]) -> PlanGraph:
        """The current plan minus the failed subtree plus `new_nodes`, validated."""
        clash = [n.id for n in new_nodes if n.id in self.graph.nodes and n.id not in removed]
        if clash:
            raise PlanError([f"node id {c!r} already belongs to a node that is kept (finished "
                             f"or running); give the new node another id" for c in clash])
        kept = [n for n in self.graph.plan.nodes if n.id not in removed]
        tools, models, max_nodes = self._validate_args
        return validate_plan(Plan(nodes=[*kept, *new_nodes]), known_tools=tools,
                             known_models=models, max_nodes=max_nodes)


def _ranks(graph: PlanGraph) -> dict[str, int]:
    """Nodes on the longest chain from each node to a sink (the node itself included)."""
    rank: dict[str, int] = {}
    for node_id in reversed(graph.order):
        rank[node_id] = 1 + max((rank[d] for d in graph.dependents(node_id)), default=0)
    return rank


def _err(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, AgentkitError):
        return exc.to_dict()
    if isinstance(exc, TimeoutError):
        return {"type": "Timeout", "message": "the node ran past its wall-time budget"}
    return {"type": type(exc).__name__, "message": str(exc)}
