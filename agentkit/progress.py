"""A live view of a run for the CLI: one more consumer of the event stream.

`ProgressDisplay` is an `EventBus` sink. On a terminal it shows a rich table of the plan's
nodes (state, current step, tokens, cost, elapsed time) that updates in place; when the output
is not a terminal (CI logs, pipes) it prints one plain line per milestone instead, so logs stay
readable. It only reads events: it never drives the run.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from agentkit.events import Event

__all__ = ["ProgressDisplay"]

_STYLE = {"waiting": "dim", "running": "yellow", "done": "green", "failed": "bold red",
          "skipped": "magenta"}
_MILESTONES = frozenset({"run.started", "plan.created", "plan.replanned", "node.started",
                         "node.finished", "node.failed", "node.skipped", "node.consensus",
                         "budget.exceeded", "run.finished"})
RUN_ROW = "(run)"


@dataclass
class NodeView:
    goal: str = ""
    state: str = "waiting"
    step: str = ""
    tokens: int = 0
    cost_usd: float = 0.0
    started: float | None = None
    ended: float | None = None

    def elapsed(self, now: float) -> float:
        if self.started is None:
            return 0.0
        return (self.ended if self.ended is not None else now) - self.started


class ProgressDisplay:
    """Sink + context manager: ``with ProgressDisplay(console) as show: bus.add_sink(show)``.

    `live`: force the live table on or off (default: only when the console is a terminal).
    """

    def __init__(self, console: Console | None = None, *, live: bool | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.console = console or Console(stderr=True)
        self.live_mode = self.console.is_terminal if live is None else live
        self.nodes: dict[str, NodeView] = {}
        self._now = monotonic
        self._start = monotonic()
        self._lock = threading.Lock()
        self._live: Live | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> ProgressDisplay:
        if self.live_mode:
            self._live = Live(get_renderable=self.render, console=self.console,
                              refresh_per_second=4, transient=False)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None

    # -- the sink -------------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._apply(event)
        if not self.live_mode and event.kind in _MILESTONES:
            # a plain write, not console.print: rich's rendering cost ~17 ms per line under load,
            # paid inside the event sink, i.e. on the scheduler's path to the next node
            self.console.file.write(self._plain(event) + "\n")
            self.console.file.flush()

    def _apply(self, event: Event) -> None:
        data, now = event.data, self._now()
        if event.kind in ("plan.created", "plan.replanned"):
            for node in _plan_nodes(data):
                if isinstance(node, dict) and node.get("id"):
                    view = self.nodes.setdefault(str(node["id"]), NodeView())
                    view.goal = str(node.get("goal") or view.goal)
            return
        view = self.nodes.setdefault(event.node_id or RUN_ROW, NodeView())
        if event.kind == "node.started":
            view.state, view.started, view.ended = "running", now, None
            view.goal = str(data.get("goal") or view.goal)
        elif event.kind in ("node.finished", "node.failed", "node.skipped"):
            status = str(data.get("status") or "")
            view.state = {"node.failed": "failed", "node.skipped": "skipped"}.get(
                event.kind, "failed" if status == "failed" else "done")
            view.ended = now
            if event.kind == "node.skipped":
                view.step = str(data.get("reason") or "")[:60]
        elif event.kind == "tool.call":
            view.step = _call_text(data)
        elif event.kind == "node.sample":
            view.step = f"sample {int(data.get('sample') or 0) + 1} done"
        elif event.kind == "node.consensus":
            view.step = _consensus_text(data)
        elif event.kind == "model.response":
            usage = data.get("usage") or {}
            view.tokens += sum(int(usage.get(k) or 0) for k in
                               ("input_tokens", "output_tokens", "reasoning_tokens"))
            view.cost_usd += float(data.get("cost_usd") or 0.0)
        elif event.kind == "model.request" and not view.step:
            view.step = "thinking"
        if event.node_id is None and view.started is None:
            view.state, view.started = "running", now
        if event.kind == "run.finished":
            view.state = "failed" if data.get("status") not in ("succeeded", None) else "done"
            view.ended = now

    # -- rendering ------------------------------------------------------------------------------

    def render(self) -> Table:
        """The current table (also used by tests to check what a user would see)."""
        now = self._now()
        table = Table(title=f"agentkit  {now - self._start:6.1f}s", expand=False)
        for col, justify in (("node", "left"), ("state", "left"), ("step", "left"),
                             ("tokens", "right"), ("cost $", "right"), ("time", "right")):
            table.add_column(col, justify=justify)  # type: ignore[arg-type]
        with self._lock:
            rows = list(self.nodes.items())
        total_tokens, total_cost = 0, 0.0
        for node_id, view in rows:
            total_tokens += view.tokens
            total_cost += view.cost_usd
            table.add_row(node_id, Text(view.state, style=_STYLE.get(view.state, "")),
                          view.step[:48], f"{view.tokens:,}", f"{view.cost_usd:.4f}",
                          f"{view.elapsed(now):.1f}s")
        table.add_row("total", "", "", f"{total_tokens:,}", f"{total_cost:.4f}", "",
                      style="bold")
        return table

    def _plain(self, event: Event) -> str:
        data = event.data
        where = f" {event.node_id}" if event.node_id else ""
        extra = data.get("status") or data.get("reason") or data.get("goal") or ""
        if event.kind in ("plan.created", "plan.replanned"):
            extra = f"{len(_plan_nodes(data))} nodes"
        elif event.kind == "node.consensus":
            extra = _consensus_text(data)
        return f"[{self._now() - self._start:7.1f}s] {event.kind}{where} {str(extra)[:100]}".rstrip()


def _consensus_text(data: dict[str, Any]) -> str:
    return (f"{data.get('votes')} of {data.get('samples')} samples agree "
            f"(on {data.get('evidence')} output)")


def _call_text(data: dict[str, Any]) -> str:
    args = data.get("arguments")
    shown = json.dumps(args, ensure_ascii=False, default=str)[:40] if args else ""
    return f"{data.get('tool', '?')}({shown})"


def _plan_nodes(data: dict[str, Any]) -> list[Any]:
    """Nodes from ``{"plan": {"nodes": [...]}}`` or ``{"nodes": [...]}``."""
    plan = data.get("plan")
    nodes = (plan if isinstance(plan, dict) else data).get("nodes")
    return nodes if isinstance(nodes, list) else []
