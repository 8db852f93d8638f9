"""Who is calling a model: the node, agent and step a model call belongs to, and its budget.

The agent loop sets it with `call_scope`; the model layer reads it to tag ``model.request``,
``retry``, ``fallback`` ... events with the right ``node_id``, to count usage against the right
node, and to reserve the call from the right budget before it is made. A `ContextVar` rather
than a parameter keeps the `ChatModel` protocol at three methods, and it is not global state:
each asyncio task sees the value of the task that created it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from agentkit.budget import Budget
from agentkit.events import Emitter, Event, EventKind

__all__ = ["CallContext", "call_scope", "current_call", "tagged"]


@dataclass(frozen=True)
class CallContext:
    node_id: str | None = None
    agent_id: str | None = None
    step: int | None = None
    #: what the call is reserved from before it is made (None: no budget applies)
    budget: Budget | None = None


_CURRENT: ContextVar[CallContext | None] = ContextVar("agentkit_model_call", default=None)
_NOBODY = CallContext()


def current_call() -> CallContext:
    return _CURRENT.get() or _NOBODY


@contextmanager
def call_scope(node_id: str | None = None, *, agent_id: str | None = None,
               step: int | None = None, budget: Budget | None = None) -> Iterator[CallContext]:
    """Model calls made inside this block are attributed to `node_id` (and `step`) and
    reserved from `budget`."""
    ctx = CallContext(node_id=node_id, agent_id=agent_id, step=step, budget=budget)
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
