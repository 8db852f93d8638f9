"""Who is calling a model: the node (and step) that events of a model call belong to.

The agent loop sets it with `call_scope`; model wrappers read it to tag `model.request`,
`retry`, `fallback` ... events with the right ``node_id``. A `ContextVar` rather than a
parameter keeps the `ChatModel` protocol at three methods, and it is not global state: each
asyncio task sees the value of the task that created it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["CallContext", "call_scope", "current_call"]


@dataclass(frozen=True)
class CallContext:
    node_id: str | None = None
    agent_id: str | None = None
    step: int | None = None


_CURRENT: ContextVar[CallContext | None] = ContextVar("agentkit_model_call", default=None)
_NOBODY = CallContext()


def current_call() -> CallContext:
    return _CURRENT.get() or _NOBODY


@contextmanager
def call_scope(node_id: str | None = None, *, agent_id: str | None = None,
               step: int | None = None) -> Iterator[CallContext]:
    """Model calls made inside this block are attributed to `node_id` (and `step`)."""
    ctx = CallContext(node_id=node_id, agent_id=agent_id, step=step)
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)
