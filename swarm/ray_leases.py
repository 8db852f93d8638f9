"""The driver's side of a remote node: where its events land and its holds are decided.

One `NodeLeases` serves one node attempt running on a worker. It takes the worker's messages
in the order they were sent (see `agentkit.swarm.remote`) and

- emits each event on the run's bus, which gives it its ``seq`` and writes it to the one
  hash-chained ledger (the only writer); a ``model.response`` is first counted by the run's
  usage owner, as `ManagedModel` counts a local answer;
- answers budget holds from the node's `Budget` (the scheduler's child of the run's budget):
  the check and the hold happen here without an ``await`` between them, so thirty workers
  reserving at once can never take more than the limit, exactly as thirty local agents;
- answers rate-limit reservations from the run's `RateLimits` (one limiter per model for the
  whole cluster), holding the concurrency slot until the worker's request is done.

What a worker held when it died or was cancelled is given back by `aclose` (rate slots) and by
the scheduler's ``budget.close()`` (model holds), so a lost worker never leaks capacity.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from agentkit.budget import Budget, ModelHold
from agentkit.errors import AgentkitError, RunFailed
from agentkit.messages import Usage
from agentkit.models import ratelimit
from agentkit.runtime import Runtime
from agentkit.swarm.remote import error_dict, error_from_dict
from agentkit.swarm.scheduler import NodeOutput

__all__ = ["NodeLeases", "Reply"]

#: sends an answer to the worker: (call id, ok, value or error dict)
Reply = Callable[[int, bool, Any], None]


class _RateHold:
    """A rate-limit reservation held for a worker's request until it says it is done."""

    def __init__(self) -> None:
        self.reservation: ratelimit.Reservation | None = None
        self.limiter: ratelimit.RateLimiter | None = None
        self.done = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class NodeLeases:
    """Serves one node attempt's messages; `handle` returns the node's output when it ends."""

    def __init__(self, runtime: Runtime, budget: Budget, node_id: str, reply: Reply) -> None:
        self.runtime, self.budget, self.node_id, self.reply = runtime, budget, node_id, reply
        self._holds: dict[int, ModelHold] = {}
        self._rates: dict[int, _RateHold] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "budget.settle": self._settle, "budget.release": self._release,
            "budget.tool": self._count_tool, "rate.settle": self._rate_settle,
            "rate.release": self._rate_release, "rate.refused": self._rate_refused,
            "rate.pause": self._rate_pause}
        #: messages served, by kind (the benchmark reports them)
        self.counts = {"event": 0, "call": 0, "note": 0}

    def handle(self, message: tuple[Any, ...]) -> NodeOutput | None:
        """Apply one message; the node's output for its ``result`` (its error is raised)."""
        kind = message[0]
        if kind == "event":
            self.counts["event"] += 1
            self._event(message[1], message[2], message[3])
        elif kind == "call":
            self.counts["call"] += 1
            self._call(int(message[1]), str(message[2]), message[3])
        elif kind == "note":
            self.counts["note"] += 1
            self._handlers[str(message[1])](message[2])
        elif kind == "result":
            return NodeOutput(output=str(message[1]), sources=[str(s) for s in message[2]])
        elif kind == "error":
            raise error_from_dict(message[1])
        else:
            raise RunFailed(f"node {self.node_id!r}: a worker sent an unknown message {kind!r}")
        return None

    async def aclose(self) -> None:
        """Give back every rate slot still held (the worker is gone or the node ended)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._rates.clear()

    # -- events -------------------------------------------------------------------------------

    def _event(self, kind: Any, node_id: str | None, data_json: str) -> None:
        data = json.loads(data_json)
        if kind == "model.response":  # counted first, before anything that could still fail
            self.runtime.usage.record(node_id=node_id, model=str(data.get("model")),
                                      usage=Usage.model_validate(data.get("usage") or {}),
                                      cost_usd=float(data.get("cost_usd") or 0.0))
        self.runtime.emit(kind, data, node_id=node_id)

    # -- calls: answered now (budget) or when the limiter admits (rate) ----------------------

    def _call(self, call_id: int, op: str, args: dict[str, Any]) -> None:
        try:
            if op == "budget.model":
                hold = self.budget.reserve_model(int(args["tokens"]), float(args["cost_usd"]))
                self._holds[call_id] = hold
                self.reply(call_id, True, call_id)
            elif op == "budget.tool":
                self.budget.reserve_tool()
                self.reply(call_id, True, None)
            elif op == "rate.reserve":
                self._reserve_rate(call_id, str(args["model"]), int(args["tokens"]))
            else:
                raise RunFailed(f"a worker asked for an unknown operation {op!r}")
        except AgentkitError as exc:  # BudgetExceeded: refused here, raised there
            self.reply(call_id, False, error_dict(exc))

    def _reserve_rate(self, call_id: int, model: str, tokens: int) -> None:
        spec = self.runtime.task.models.get(model)
        if spec is None:
            raise RunFailed(f"a worker asked for rate limits of an unknown model {model!r}")
        limiter = self.runtime.rate_limits.for_model(model, rpm=spec.rpm, tpm=spec.tpm,
                                                     max_concurrency=spec.max_concurrency)
        hold = _RateHold()
        hold.limiter = limiter
        self._rates[call_id] = hold
        hold.task = asyncio.get_running_loop().create_task(
            self._hold_rate(call_id, hold, limiter, tokens), name=f"rate:{self.node_id}:{call_id}")
        self._tasks.add(hold.task)
        hold.task.add_done_callback(self._tasks.discard)

    async def _hold_rate(self, call_id: int, hold: _RateHold, limiter: ratelimit.RateLimiter,
                         tokens: int) -> None:
        async with limiter.reserve(tokens) as reservation:
            hold.reservation = reservation
            self.reply(call_id, True, call_id)
            await hold.done.wait()

    # -- notes --------------------------------------------------------------------------------

    def _settle(self, args: dict[str, Any]) -> None:
        hold = self._holds.pop(int(args["id"]), None)
        if hold is not None:
            hold.budget.settle_model(hold, Usage.model_validate(args["usage"]),
                                     float(args["cost_usd"]))

    def _release(self, args: dict[str, Any]) -> None:
        hold = self._holds.pop(int(args["id"]), None)
        if hold is not None:
            hold.budget.release_model(hold)

    def _count_tool(self, args: dict[str, Any]) -> None:
        self.budget.reserve_tool()  # no limit in the chain: counted, never refused

    def _rate_settle(self, args: dict[str, Any]) -> None:
        hold = self._rates.get(int(args["id"]))
        if hold is not None and hold.reservation is not None:
            hold.reservation.settle(int(args["used"]))

    def _rate_release(self, args: dict[str, Any]) -> None:
        hold = self._rates.pop(int(args["id"]), None)
        if hold is not None:
            hold.done.set()

    def _rate_refused(self, args: dict[str, Any]) -> None:
        hold = self._rates.get(int(args["id"]))
        if hold is not None and hold.reservation is not None and hold.limiter is not None:
            retry_after = args.get("retry_after")
            hold.limiter.refused(hold.reservation,
                                 None if retry_after is None else float(retry_after))

    def _rate_pause(self, args: dict[str, Any]) -> None:
        spec = self.runtime.task.models.get(str(args["model"]))
        if spec is not None:
            self.runtime.rate_limits.for_model(
                str(args["model"]), rpm=spec.rpm, tpm=spec.tpm,
                max_concurrency=spec.max_concurrency).pause(float(args["seconds"]))
