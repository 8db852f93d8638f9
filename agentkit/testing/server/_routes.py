"""Which scripted answer a request gets: one shared queue, plus a queue (and a standing answer)
per model name, chosen by the request body's ``model`` field."""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from agentkit.testing._script import ErrorReply, Raw, RecordedRequest, Reply, Reset, error

__all__ = ["Answer", "Handler", "Item", "Routes"]

Answer = Reply | ErrorReply | Reset | Raw
#: computes the answer from the request; an ``async def`` handler may wait (for an event the
#: test sets, say) before answering
Handler = Callable[[RecordedRequest], Answer | Awaitable[Answer]]
Item = Answer | Handler


@dataclass
class _Queue:
    items: collections.deque[Item] = field(default_factory=collections.deque)
    default: Item | None = None


class Routes:
    """The shared queue and the per-model queues of one server."""

    def __init__(self, script: Iterable[Item]) -> None:
        self.shared: collections.deque[Item] = collections.deque(script)
        self.by_model: dict[str, _Queue] = {}

    def add(self, model: str, items: Iterable[Item], default: Item | None = None) -> None:
        queue = self.by_model.setdefault(model, _Queue())
        queue.items.extend(items)
        if default is not None:
            queue.default = default

    def add_all(self, routes: Mapping[str, Item | Sequence[Item]]) -> None:
        """`routes` values: a list/tuple is a queue; a single item answers every request."""
        for model, value in routes.items():
            if isinstance(value, Sequence):
                self.add(model, value)
            else:
                self.add(model, (), default=value)

    @property
    def pending(self) -> int:
        return len(self.shared) + sum(len(q.items) for q in self.by_model.values())

    def pick(self, req: RecordedRequest, fallback: Item | None, number: int) -> Item:
        """The next item for `req` (its model's queue, then that model's standing answer, then
        the server's `fallback`), or a 500 that says what ran out."""
        body = req.body if isinstance(req.body, dict) else {}
        model = body.get("model")
        queue = self.by_model.get(model) if isinstance(model, str) else None
        if queue is not None:
            item = queue.items.popleft() if queue.items else queue.default
            item = item if item is not None else fallback
            if item is None:
                return error(500, f"scripted model server: the script for model {model!r} is "
                             f"exhausted (request #{number} to {req.path} had no answer queued; "
                             "queue more with route() or give it a default)")
            return item
        item = self.shared.popleft() if self.shared else fallback
        if item is not None:
            return item
        routed = (f"; the routed models are {', '.join(map(repr, sorted(self.by_model)))}"
                  if self.by_model else "")
        return error(500, "scripted model server: the script is exhausted "
                     f"(request #{number} to {req.path} for model {model!r} had no answer "
                     f"queued{routed})")
