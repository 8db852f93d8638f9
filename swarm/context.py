"""What the swarm's parts share during one run: the runtime, the root budget, fetched pages,
and the nodes' outcomes so far. One per run, never module-global."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from agentkit.budget import Budget
from agentkit.events import Event, UrlFetched
from agentkit.runtime import Runtime
from agentkit.swarm.scheduler import NodeOutput, NodeResult

__all__ = ["SwarmContext"]


@dataclass
class SwarmContext:
    runtime: Runtime
    budget: Budget
    #: url -> {content_hash, title}, from ``url.fetched`` events of this run
    fetched: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: every node's outcome so far (kept current while the scheduler runs)
    nodes: dict[str, NodeResult] = field(default_factory=dict)
    #: a resumed run's finished nodes (from the ledger): they keep their outputs, not re-run
    restored: dict[str, NodeOutput] = field(default_factory=dict)

    def on_event(self, event: Event) -> None:
        """An event sink: remembers the pages fetched in this run (the only citable ones)."""
        if event.kind == "url.fetched":
            page = cast(UrlFetched, event.data)
            if page.get("url"):
                self.fetched[page["url"]] = {"content_hash": page.get("content_hash"),
                                             "title": page.get("title")}
