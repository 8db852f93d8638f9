"""Events: frozen values on one stream with several consumers.

Every step of a run emits an `Event` through the run's `EventBus`. Consumers are plain
callables in a list (the structlog idea): the audit ledger (always first), a structlog logger,
the CLI's progress display, and `Run.events()`. The bus assigns `seq` and `ts`, so the ledger
is exactly the ordered stream of events.

Event kinds are a `Literal` (`EventKind`): a consumer cannot listen for a kind no producer
emits, and the type checker catches a misspelt kind on either side. Payloads the engine itself
reads back have a `TypedDict` here, next to the kind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal, Protocol, TypedDict

from pydantic import BaseModel, ConfigDict

from agentkit.clock import Clock, SystemClock

__all__ = ["Emitter", "Event", "EventBus", "EventKind", "EventSink", "NodeFinished", "UrlFetched"]

EventKind = Literal[
    # the run
    "run.started", "run.finished", "recovered",
    # a durable run picked up again from its ledger; a resumed call that differs from the
    # recorded one (continued live with --from-divergence)
    "run.resumed", "resume.diverged",
    # model calls (model.request/response pairs; retries, fallbacks, breakers between them)
    "model.request", "model.response", "model.error",
    "retry", "fallback", "breaker.open", "breaker.closed",
    # tool calls and what they touched
    "tool.call", "tool.result", "tool.log",
    # a call that waits for a person's yes (agentkit.approvals), and the decision
    "approval.requested", "approval.decided",
    # a side-effecting tool's intent, journalled before the effect; what a resumed run did
    # with a call that was in flight at the crash; a sandbox session rebuilt on resume
    "tool.intent", "tool.in_flight", "sandbox.rebuilt",
    "file.diff", "url.fetched", "url.blocked", "url.cited", "search.results",
    "sandbox.created", "sandbox.exec", "sandbox.removed", "sandbox.relaxed",
    # the warm pool sized from a plan: how many run_code agents can run at once
    "sandbox.prewarm",
    # MCP servers a run started (command or URL, never secrets), stopped, and the tools offered
    "mcp.started", "mcp.stopped", "mcp.tools",
    # the plan and its nodes
    "plan.created", "plan.rejected", "plan.replanned",
    "node.started", "node.finished", "node.failed", "node.skipped", "node.sample",
    "node.consensus",
    # budgets and the answer's checks
    "budget.reserved", "budget.released", "budget.exceeded",
    "answer.checked", "answer.ungrounded", "answer.empty",
]


class UrlFetched(TypedDict, total=False):
    """``url.fetched``: a page `web_fetch` downloaded (the synthesizer cites only these)."""

    url: str
    final_url: str
    title: str | None
    content_hash: str
    chars: int


class NodeFinished(TypedDict):
    """``node.finished``: a node succeeded, with what it hands on."""

    attempt: int
    output: str
    #: raw tool outputs the node saw (the synthesizer's grounding corpus; a resumed run
    #: restores them with the output)
    sources: list[str]
    output_chars: int
    duration_s: float


class Event(BaseModel):
    """One thing that happened. Immutable once emitted."""

    model_config = ConfigDict(frozen=True)

    kind: EventKind
    run_id: str
    node_id: str | None = None
    seq: int
    ts: float
    data: dict[str, Any] = {}


EventSink = Callable[[Event], None]

#: the fields-set of every emitted event (all fields are given); never changed: Event is frozen
_EVERY_FIELD = set(Event.model_fields)


class Emitter(Protocol):
    """What producers call: ``emit(kind, data, node_id=...)`` (the bus, or a tagged wrapper)."""

    def __call__(self, kind: EventKind, data: dict[str, Any] | None = None, *,
                 node_id: str | None = None) -> Event: ...


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

    def emit(self, kind: EventKind, data: dict[str, Any] | None = None, *,
             node_id: str | None = None) -> Event:
        # model_construct: the fields are ours and already of the right types; validating
        # every event would cost more than writing it to the ledger. Every field is set, so
        # the events share one fields-set (a run keeps its events: one set less each)
        event = Event.model_construct(_EVERY_FIELD, kind=kind, run_id=self.run_id,
                                      node_id=node_id, seq=self._seq, ts=self.clock.time(),
                                      data=data or {})
        self._seq += 1
        for sink in self.sinks:
            sink(event)
        return event

    def add_sink(self, sink: EventSink, *, first: bool = False) -> None:
        """Add a consumer; `first` puts it before the others (the ledger)."""
        if first:
            self.sinks.insert(0, sink)
        else:
            self.sinks.append(sink)
