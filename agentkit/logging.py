"""Events as structured log lines: one more consumer of the event stream.

`structlog_sink` returns an `EventBus` sink that logs each event through a structlog logger
wrapped explicitly with `structlog.wrap_logger` (no global ``structlog.configure``: embedding
applications keep their own logging setup). Payloads are not logged by default, only their
keys; the ledger is the place for full content. A payload that is logged is redacted as
everything leaving a run is (`agentkit.secrets.TextRedactor`): credential keys, credential
shapes, and the values of the run's secrets (``secrets=runtime.secrets()``).
"""

from __future__ import annotations

import logging as std_logging
from collections.abc import Iterable
from typing import Any

import structlog

from agentkit.events import Event, EventSink
from agentkit.secrets import TextRedactor

__all__ = ["structlog_sink"]

#: kinds logged at warning level (everything else is info, high-volume kinds are debug)
_WARN = frozenset({"model.error", "node.failed", "budget.exceeded", "retry", "fallback",
                   "breaker.open", "url.blocked", "answer.ungrounded", "recovered",
                   "plan.rejected"})
_DEBUG = frozenset({"tool.call", "tool.result", "model.request", "model.response",
                    "budget.reserved", "budget.released"})


def structlog_sink(logger: Any = None, *, include_data: bool = False,
                   secrets: Iterable[str] = ()) -> EventSink:
    """A sink logging each event with kind, run, node and seq.

    `logger`: any structlog-compatible logger; by default the stdlib ``agentkit`` logger
    wrapped with `structlog.wrap_logger` (so the host's logging handlers decide where it goes).
    `include_data`: also log the payload, redacted (off by default). `secrets`: values to hide
    wherever they appear, e.g. ``runtime.secrets()`` (the run's API keys).
    """
    redactor = TextRedactor(secrets)
    log = logger if logger is not None else structlog.wrap_logger(
        std_logging.getLogger("agentkit"),
        processors=[structlog.processors.TimeStamper(fmt="iso"),
                    structlog.processors.KeyValueRenderer(key_order=["event", "kind"])])

    def sink(event: Event) -> None:
        level = "warning" if event.kind in _WARN else ("debug" if event.kind in _DEBUG else "info")
        fields: dict[str, Any] = {"kind": event.kind, "run_id": event.run_id, "seq": event.seq}
        if event.node_id is not None:
            fields["node"] = event.node_id
        if include_data:
            fields["data"] = redactor.value(event.data)
        else:
            fields["keys"] = sorted(event.data)
        getattr(log, level)("agentkit.event", **fields)

    return sink
