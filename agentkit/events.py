"""Events: frozen values on one stream with several consumers.

Every step of a run emits an `Event` through the run's `EventBus`. Consumers are plain
callables in a list (the structlog idea): the audit ledger, a structlog logger, the CLI's
progress display, and any number of async subscribers (`Run.events()`). The bus assigns `seq`
and `ts`, so the ledger is exactly the ordered stream of events.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict

from agentkit.clock import Clock, SystemClock

__all__ = ["EVENT_KINDS", "Event", "EventBus", "EventSink"]

#: The kinds agentkit itself emits. Other kinds are allowed (custom tools, extensions).
EVENT_KINDS = frozenset({
    "run.started", "run.finished", "recovered",
    "model.request", "model.response", "model.error",
    "tool.call", "tool.result",
    "file.diff", "url.fetched", "url.blocked", "url.cited", "search.results",
    "sandbox.created", "sandbox.exec", "sandbox.removed", "sandbox.relaxed",
    "retry", "fallback", "breaker.open", "breaker.closed",
    "plan.created", "plan.rejected", "plan.replanned",
    "node.started", "node.finished", "node.failed", "node.skipped", "node.sample",
    "node.consensus",
    "budget.reserved", "budget.released", "budget.exceeded",
    "answer.checked", "answer.ungrounded",
})


class Event(BaseModel):
    """One thing that happened. Immutable once emitted."""

    model_config = ConfigDict(frozen=True)

    kind: str
    run_id: str
    node_id: str | None = None
    seq: int
    ts: float
    data: dict[str, Any] = {}


EventSink = Callable[[Event], None]


class EventBus:
    """Assigns sequence numbers and timestamps and hands each event to every sink, in order.

    A sink that raises stops the run: an event that cannot be audited must not be lost
    silently (ENOSPC on the ledger halts the run rather than continuing unaudited).
    """

    def __init__(self, run_id: str, *, clock: Clock | None = None,
                 sinks: Iterable[EventSink] = ()) -> None:
        self.run_id = run_id
        self.clock: Clock = clock or SystemClock()
        self.sinks: list[EventSink] = list(sinks)
        self._seq = 0
        self._subscribers: list[asyncio.Queue[Event | None]] = []
        self.closed = False

    def emit(self, kind: str, data: dict[str, Any] | None = None, *,
             node_id: str | None = None) -> Event:
        event = Event(kind=kind, run_id=self.run_id, node_id=node_id, seq=self._seq,
                      ts=self.clock.time(), data=data or {})
        self._seq += 1
        for sink in self.sinks:
            sink(event)
        for queue in self._subscribers:
            queue.put_nowait(event)
        return event

    def add_sink(self, sink: EventSink) -> None:
        self.sinks.append(sink)

    async def subscribe(self) -> AsyncIterator[Event]:
        """Yield events as they are emitted until the bus is closed."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            if self.closed:
                return
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._subscribers.remove(queue)

    def close(self) -> None:
        """End every subscription (after the last event, normally ``run.finished``)."""
        self.closed = True
        for queue in self._subscribers:
            queue.put_nowait(None)
