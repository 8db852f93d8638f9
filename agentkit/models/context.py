"""Who is calling a model: the node, attempt, agent and step a call belongs to, and its budget.

The agent loop sets it with `call_scope` (the scheduler sets the node's attempt with
`attempt_scope`); the model layer reads it to tag ``model.request``, ``retry``, ``fallback`` ...
events with the right ``node_id``, to count usage against the right node, to reserve the call
from the right budget before it is made, and to give the call its deterministic `call_key`
(the same call of a re-executed run has the same key: what durable runs look calls up by).
A `ContextVar` rather than a parameter keeps the `ChatModel` protocol at three methods, and
it is not global state: each asyncio task sees the value of the task that created it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from agentkit.budget import Budget
from agentkit.events import Emitter, Event, EventKind

__all__ = ["CallContext", "attempt_scope", "call_scope", "current_attempt", "current_call", "tagged"]


@dataclass(frozen=True)
class CallContext:
    node_id: str | None = None
    agent_id: str | None = None
    step: int | None = None
    #: what the call is reserved from before it is made (None: no budget applies)
    budget: Budget | None = None
    #: the node's attempt (1 = first) and which run of this agent within it (a synthesizer's
    #: fix round is round 2)
    attempt: int = 1
    round: int = 1
    run_id: str | None = None

    def call_key(self, call: str = "m") -> str:
        """``node#attempt/agent#round/step/call``: stable across re-executions of a run
        (``m`` is the step's model call, ``t0``, ``t1`` ... its tool calls)."""
        return (f"{self.node_id or '-'}#{self.attempt}/{self.agent_id or '-'}#{self.round}/"
                f"{self.step or 0}/{call}")

    def seed(self) -> str:
        """What anything random about this call derives from (tool-call ids a provider did not
        send, ...): the run id and the call key, so a replayed request is the same request."""
        return f"{self.run_id or '-'}/{self.call_key()}"


_CURRENT: ContextVar[CallContext | None] = ContextVar("agentkit_model_call", default=None)
_ATTEMPT: ContextVar[int] = ContextVar("agentkit_node_attempt", default=1)
_NOBODY = CallContext()


def current_call() -> CallContext:
    return _CURRENT.get() or _NOBODY


def current_attempt() -> int:
    """The attempt of the node whose work runs in this task (set by the scheduler)."""
    return _ATTEMPT.get()


@contextmanager
def attempt_scope(attempt: int) -> Iterator[None]:
    """Work done inside this block belongs to the node's `attempt`."""
    token = _ATTEMPT.set(attempt)
    try:
        yield
    finally:
        _ATTEMPT.reset(token)


@contextmanager
def call_scope(node_id: str | None = None, *, agent_id: str | None = None,
               step: int | None = None, budget: Budget | None = None,
               round: int = 1, run_id: str | None = None) -> Iterator[CallContext]:
    """Model calls made inside this block are attributed to `node_id` (and `step`) and
    reserved from `budget`."""
    ctx = CallContext(node_id=node_id, agent_id=agent_id, step=step, budget=budget,
                      attempt=_ATTEMPT.get(), round=round, run_id=run_id)
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)


def tagged(events: Emitter) -> Emitter:
    """`events`, with each event attributed to the current call's node (and its step and agent
    in the payload): how the model layer's events land on the node that made the call."""

    def emit(kind: EventKind, data: dict[str, Any] | None = None, *,
             node_id: str | None = None) -> Event:
        call = current_call()
        data = data if data is not None else {}
        if call.step is not None:
            data["step"] = call.step
        if call.agent_id is not None:
            data["agent_id"] = call.agent_id
        return events(kind, data, node_id=node_id if node_id is not None else call.node_id)

    return emit
