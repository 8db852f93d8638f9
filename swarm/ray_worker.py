"""The worker side of the Ray executor: one process runs many nodes of one run.

The driver starts one `NodeWorker` actor per Ray node (``executor.workers_per_node``) for the
run and keeps it until the run ends. An actor rather than a Ray task per node, because a node's
sub-agent needs run-scoped things that are costly to make and worth keeping warm: model
clients with open connections, the tools (MCP sessions included) and the sandbox pool, whose
containers are created once per machine rather than once per node. The actor is async, so it
runs many nodes at once on one event loop, as the local executor does.

The worker's `Runtime` is built from plain values only (the task as JSON, the run id, the
workspace path). API keys are read here, from this machine's environment variables that the
task names; they never travel. What the node's agent does is the local `AgentExecutor`, with
three parts replaced by stand-ins that talk to the driver over the node's `_Stream`:

- events: a bus sink forwards each event (its data as JSON, this machine's secret values
  redacted) to the driver, which gives it its place in the one ledger;
- the budget: `RemoteBudget` holds model calls and tool calls in the driver's budget tree;
- rate limits: `RemoteRateLimits` reserves each request's RPM/TPM/concurrency from the
  driver's limiter, so N workers never multiply a provider's limit by N.

This module does not import Ray (the driver wraps `NodeWorker` with ``ray.remote``), so it
runs and type-checks without the extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentkit._canonical import dumps
from agentkit.budget import Budget, ModelHold, Reservation
from agentkit.clock import Clock, SystemClock
from agentkit.errors import ConfigError
from agentkit.events import Event
from agentkit.messages import Usage
from agentkit.models import RateLimiter, RateLimits, ratelimit
from agentkit.models.context import attempt_scope
from agentkit.plan import NodeBudget, PlanNode
from agentkit.runtime import Runtime
from agentkit.secrets import redact_values
from agentkit.swarm.agents import AgentExecutor
from agentkit.swarm.context import SwarmContext
from agentkit.swarm.remote import error_dict, error_from_dict
from agentkit.task import TaskSpec

__all__ = ["NodeWorker", "RemoteBudget", "RemoteRateLimits"]

#: one message to the driver (see `agentkit.swarm.remote`)
Message = tuple[Any, ...]
#: the node attempt whose work runs in this asyncio task (its events and requests go there)
_STREAM: ContextVar[_Stream | None] = ContextVar("agentkit_ray_stream", default=None)


class _Stream:
    """One node attempt's messages to the driver, in order, and the driver's answers."""

    def __init__(self) -> None:
        self.queue: list[Message] = []
        self.closed = False
        self._wake = asyncio.Event()
        self._calls: dict[int, asyncio.Future[tuple[bool, Any]]] = {}
        self._ids = itertools.count(1)

    def put(self, message: Message) -> None:
        self.queue.append(message)
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def call(self, op: str, args: dict[str, Any]) -> Any:
        """Ask the driver; its error comes back as the same exception (`BudgetExceeded`)."""
        call_id = next(self._ids)
        future: asyncio.Future[tuple[bool, Any]] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = future
        self.put(("call", call_id, op, args))
        try:
            ok, value = await future
        finally:
            self._calls.pop(call_id, None)
        if not ok:
            raise error_from_dict(value)
        return value

    def note(self, op: str, args: dict[str, Any]) -> None:
        self.put(("note", op, args))

    def answer(self, call_id: int, ok: bool, value: Any) -> None:
        future = self._calls.get(call_id)
        if future is not None and not future.done():
            future.set_result((ok, value))

    async def batches(self) -> AsyncIterator[list[Message]]:
        """Everything queued since the last batch; ends after the node's last message."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self.queue = self.queue, []
            if batch:
                yield batch
            if self.closed and not self.queue:
                return


def _stream() -> _Stream:
    stream = _STREAM.get()
    if stream is None:
        raise ConfigError("a model call on a Ray worker outside any node: only nodes run there")
    return stream


# ---------------------------------------------------------------------------------------------
# The budget and the rate limits, held in the driver


@dataclass
class _RemoteHold(ModelHold):
    remote_id: int = 0


class RemoteBudget(Budget):
    """A node's budget whose pools live in the driver: each hold is a round trip there
    (``budget.model``, ``budget.tool``; refused there as `BudgetExceeded`), each settle a note.
    With no limit in the chain nothing is asked (as a local budget decides nothing then)."""

    def __init__(self, stream: _Stream, *, scope: str, clock: Clock, limits_models: bool,
                 limits_tools: bool, deadline: float | None) -> None:
        super().__init__(scope=scope, emit=_no_emit, clock=clock, deadline=deadline)
        self.stream, self._models, self._tools = stream, limits_models, limits_tools

    def limits_model_calls(self) -> bool:
        return self._models

    async def acquire_model(self, tokens: int, cost_usd: float) -> ModelHold:
        remote_id = await self.stream.call("budget.model", {"tokens": tokens, "cost_usd": cost_usd})
        return _RemoteHold(self, Reservation("tokens", float(tokens), "model call"), None,
                           remote_id=int(remote_id))

    def settle_model(self, hold: ModelHold, usage: Usage, cost_usd: float) -> None:
        self.stream.note("budget.settle", {"id": _remote_id(hold), "usage": usage.model_dump(),
                                           "cost_usd": cost_usd})

    def release_model(self, hold: ModelHold) -> None:
        self.stream.note("budget.release", {"id": _remote_id(hold)})

    async def acquire_tool(self) -> None:
        if self._tools:
            await self.stream.call("budget.tool", {})
        else:  # nothing to decide: the driver only counts it
            self.stream.note("budget.tool", {})

    def reserve_model(self, tokens: int, cost_usd: float) -> ModelHold:
        raise RuntimeError("a remote budget holds through acquire_model (a round trip)")

    def reserve_tool(self) -> None:
        raise RuntimeError("a remote budget holds through acquire_tool (a round trip)")

    def child(self, scope: str, share: NodeBudget | None = None, *, spawn: bool = False) -> Budget:
        raise ConfigError("a node on a Ray worker cannot open a sub-budget; nodes that "
                          "delegate run in the driver")

    def close(self) -> None:
        self.closed = True  # the driver closes the real one


def _remote_id(hold: ModelHold) -> int:
    assert isinstance(hold, _RemoteHold)
    return hold.remote_id


def _no_emit(*args: Any, **kwargs: Any) -> Event:
    raise RuntimeError("a remote budget emits nothing: the driver's budget does")


@dataclass
class _RemoteReservation(ratelimit.Reservation):
    stream: _Stream | None = None
    remote_id: int = 0

    def settle(self, used_tokens: int) -> None:
        if self.settled or self.stream is None:
            return
        self.settled = True
        self.stream.note("rate.settle", {"id": self.remote_id, "used": used_tokens})


class _RemoteLimiter(RateLimiter):
    """One model's limiter, kept in the driver: `reserve` holds the driver's concurrency slot
    and RPM/TPM window for the request's duration, as a local limiter would."""

    def __init__(self, name: str, clock: Clock) -> None:
        super().__init__(clock=clock)
        self.name = name

    @asynccontextmanager
    async def reserve(self, tokens: int) -> AsyncIterator[ratelimit.Reservation]:
        stream = _stream()
        remote_id = int(await stream.call("rate.reserve", {"model": self.name, "tokens": tokens}))
        try:
            yield _RemoteReservation(tokens, stream=stream, remote_id=remote_id)
        finally:
            stream.note("rate.release", {"id": remote_id})

    def refused(self, reservation: ratelimit.Reservation, retry_after: float | None) -> None:
        if isinstance(reservation, _RemoteReservation) and reservation.stream is not None \
                and not reservation.settled:
            reservation.settled = True
            reservation.stream.note("rate.refused", {"id": reservation.remote_id,
                                                     "retry_after": retry_after})

    def pause(self, seconds: float) -> None:
        _stream().note("rate.pause", {"model": self.name, "seconds": seconds})


class RemoteRateLimits(RateLimits):
    """The worker's `RateLimits`: every model's limiter is the driver's."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self._remote: dict[str, RateLimiter] = {}

    def for_model(self, name: str, *, rpm: int | None, tpm: int | None,
                  max_concurrency: int | None) -> RateLimiter:
        if name not in self._remote:
            self._remote[name] = _RemoteLimiter(name, self.clock)
        return self._remote[name]


# ---------------------------------------------------------------------------------------------
# The actor


class NodeWorker:
    """Runs nodes of one run on this machine (wrapped by ``ray.remote`` in the driver)."""

    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        self._streams: dict[int, _Stream] = {}
        self._orphans: list[Message] = []
        self._redact = redact_values(())
        self._clock = SystemClock()

    def ping(self) -> int:
        return os.getpid()

    async def open(self, setup: dict[str, Any]) -> dict[str, Any]:
        """Build this worker's runtime from plain values; start the task's MCP servers.
        Returns where it runs, the tools it has, and the events of its start."""
        task = TaskSpec.model_validate_json(setup["task"])
        ledger_dir = setup.get("ledger_dir")
        self.runtime = Runtime(task, run_id=setup["run_id"], clock=self._clock,
                               workspace=setup["workspace"], sinks=[self._sink],
                               ledger_dir=Path(ledger_dir) if ledger_dir else None,
                               rate_limits=RemoteRateLimits(self._clock))
        self._redact = redact_values(self.runtime.secrets())
        await self.runtime.prepare_tools()
        registry = self.runtime.tools
        events, self._orphans = self._orphans, []
        return {"host": socket.gethostname(), "pid": os.getpid(),
                "tools": [*registry.names(), *sorted(registry.groups)], "events": events}

    async def run_node(self, stream_id: int, payload: dict[str, Any]) -> AsyncIterator[list[Message]]:
        """Run one node attempt; yields its messages in batches, the result last."""
        stream = _Stream()
        self._streams[stream_id] = stream
        for message in self._orphans:  # events no node owned (a pool's background work)
            stream.put(message)
        self._orphans.clear()
        token = _STREAM.set(stream)
        try:
            work = asyncio.get_running_loop().create_task(self._node(stream, payload))
        finally:
            _STREAM.reset(token)
        try:
            async for batch in stream.batches():
                yield batch
        finally:
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            self._streams.pop(stream_id, None)

    async def reply(self, stream_id: int, call_id: int, ok: bool, value: Any) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.answer(call_id, ok, value)

    async def close(self) -> None:
        """Close the run's resources here: containers (every one labelled with the run, also
        those of a worker that died on this machine), MCP servers, connections."""
        if self.runtime is not None:
            await self.runtime.aclose()

    async def _node(self, stream: _Stream, payload: dict[str, Any]) -> None:
        assert self.runtime is not None
        try:
            node = PlanNode.model_validate_json(payload["node"])
            left = payload.get("seconds_left")
            budget = RemoteBudget(stream, scope=node.id, clock=self._clock,
                                  limits_models=bool(payload["limits_models"]),
                                  limits_tools=bool(payload["limits_tools"]),
                                  deadline=None if left is None else self._clock.monotonic() + left)
            executor = AgentExecutor(SwarmContext(runtime=self.runtime, budget=budget))
            with attempt_scope(int(payload["attempt"])):
                out = await executor.run_node(node, payload["inputs"], budget)
            stream.put(("result", self._scrub(out.output), self._scrub(out.sources)))
        except Exception as exc:  # the node failed: the driver's scheduler decides on retries
            stream.put(("error", self._scrub(error_dict(exc))))
        finally:
            stream.close()

    def _sink(self, event: Event) -> None:
        """Forward an event to the node it belongs to (its data as redacted JSON)."""
        message = ("event", event.kind, event.node_id, self._redact(dumps(event.data)))
        stream = _STREAM.get()
        if stream is None or stream.closed:
            self._orphans.append(message)
        else:
            stream.put(message)

    def _scrub(self, value: Any) -> Any:
        """`value` with this machine's secret values redacted (they are not the driver's)."""
        text = dumps(value)
        redacted = self._redact(text)
        return value if redacted is text else json.loads(redacted)
