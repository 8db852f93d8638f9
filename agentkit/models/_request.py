"""A model call's request as the ledger records it, and its fingerprint, each message rendered
once per run instead of once per turn.

An agent's history grows by a turn's messages at a time and is sent whole on every turn, so
rendering it whole each time (``model_dump`` of every message, then ``json.dumps`` of the
lot for the fingerprint) did work quadratic in the conversation, and allocated a fresh copy
of every earlier message for the ``model.request`` event each turn (work for the garbage
collector, whose full passes stall every agent of the run at once). Here each message's JSON
form and its canonical text are made the first time the message is sent and reused after:
the recorded request is the same value, and the fingerprint the same digest, as
`request_fingerprint` computes from scratch (the canonical text of a list is its items'
canonical texts joined by commas, of a dict its sorted keys' entries).

Messages and tool specs are frozen values; the cached JSON forms are shared by the
``model.request`` events of later turns, which no consumer changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, TypeVar

from agentkit._canonical import dumps as canonical
from agentkit.messages import Message, ToolSpec

__all__ = ["RenderedRequests", "request_fingerprint"]

_Frozen = TypeVar("_Frozen", Message, ToolSpec)


def request_fingerprint(request: dict[str, Any]) -> str:
    """sha256 of a request's canonical JSON: model name, messages, tools, settings. Two
    executions of a run that built the same request have the same fingerprint."""
    return _digest(canonical(request))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class RenderedRequests:
    """The JSON forms of one model's messages and tool specs, made once each.

    Messages are keyed by identity and held (so an id is never reused while its entry lives);
    past `capacity` the oldest entries go, and are rendered again if sent again. Tool specs
    (the same object every turn for most tools, a new one for some) are keyed by name and
    description and used only if their schema is equal (a C-speed comparison, much cheaper
    than rendering it).
    """

    def __init__(self, capacity: int = 16384) -> None:
        self.capacity = capacity
        self._messages: dict[int, tuple[Message, dict[str, Any], str]] = {}
        self._tools: dict[tuple[str, str], tuple[ToolSpec, dict[str, Any], str]] = {}

    def request(self, model: str, messages: Sequence[Message], tools: Sequence[ToolSpec],
                settings: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """(the request as recorded, its fingerprint), equal to `request_fingerprint`'s."""
        sent = [self.message(m) for m in messages]
        specs = [self._tool(t) for t in tools]
        request = {"model": model, "messages": [d for d, _ in sent],
                   "tools": [d for d, _ in specs], "settings": settings}
        text = (f'{{"messages":[{",".join(t for _, t in sent)}],"model":{canonical(model)},'
                f'"settings":{canonical(settings)},"tools":[{",".join(t for _, t in specs)}]}}')
        return request, _digest(text)

    def message(self, message: Message) -> tuple[dict[str, Any], str]:
        """(JSON form, canonical text) of one message; an answer's, recorded in its
        ``model.response``, is then reused when the history is sent on the next turn."""
        hit = self._messages.get(id(message))
        if hit is None or hit[0] is not message:
            hit = self._messages[id(message)] = _render(message, self._messages, self.capacity)
        return hit[1], hit[2]

    def _tool(self, spec: ToolSpec) -> tuple[dict[str, Any], str]:
        key = (spec.name, spec.description)
        hit = self._tools.get(key)
        if hit is None or (hit[0] is not spec and hit[0].parameters != spec.parameters):
            hit = self._tools[key] = _render(spec, self._tools, self.capacity)
        return hit[1], hit[2]


def _render(value: _Frozen, cache: dict[Any, tuple[_Frozen, dict[str, Any], str]],
            capacity: int) -> tuple[_Frozen, dict[str, Any], str]:
    """`value` with its JSON form and canonical text, making room in `cache` (oldest first)
    for the caller to store it."""
    if len(cache) >= capacity:
        del cache[next(iter(cache))]
    dump = value.model_dump(mode="json")
    return value, dump, canonical(dump)
