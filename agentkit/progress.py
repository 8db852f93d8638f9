"""A live view of a run for the CLI: one more consumer of the event stream.

`ProgressDisplay` is an `EventBus` sink. On a terminal it shows a rich table with one row per
worker of the run — the planner, each node of the plan, the synthesizer (or the one agent of
``mode: agent``) — with its state, current step (the tool it is calling, a retry, a vote),
tokens, cost and elapsed time, updated in place. When the output is not a terminal (CI logs,
pipes) it prints one plain line per milestone instead (and, in agent mode, per tool call), so
logs stay readable. It only reads events: it never drives the run.

Each event kind has its own small handler (`_HANDLERS`). Tokens are input + output: reasoning
tokens are part of the output tokens, as in the run's summary, so the table's total equals
the summary's. Every text shown passes through `redact` (the CLI sets it to the run's
redactor: a key a model echoes never reaches the terminal).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from agentkit.events import Event
from agentkit.secrets import TextRedactor

__all__ = ["ProgressDisplay", "RowView"]

_STYLE = {"waiting": "dim", "running": "yellow", "done": "green", "failed": "bold red",
          "skipped": "magenta", "cancelled": "bold magenta"}
_MILESTONES = frozenset({"run.started", "plan.created", "plan.replanned", "node.started",
                         "node.finished", "node.failed", "node.skipped", "node.consensus",
                         "budget.exceeded", "approval.requested", "approval.decided",
                         "run.finished"})
#: rows of the roles that are not plan nodes: the planner first, the synthesizer last
PLANNER, SYNTHESIZER = "planner", "synthesizer"
_ROLE_ROWS = frozenset({PLANNER, SYNTHESIZER, "agent"})
_THINKING = "thinking"
#: how a run's final status leaves the rows still working
_END_STATE = {"succeeded": "done", "failed": "failed", "cancelled": "cancelled"}


@dataclass
class RowView:
    """One row of the table: a plan node, the planner, the synthesizer or the agent."""

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

    def end(self, state: str, now: float) -> None:
        self.state, self.ended = state, now


class ProgressDisplay:
    """Sink + context manager: ``with ProgressDisplay(console) as show: bus.add_sink(show)``.

    `live`: force the live table on or off (default: only when the console is a terminal).
    `redact`: applied to every text shown (default: credential shapes only).
    """

    def __init__(self, console: Console | None = None, *, live: bool | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 redact: Callable[[str], str] | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live_mode = self.console.is_terminal if live is None else live
        self.nodes: dict[str, RowView] = {}
        self.redact: Callable[[str], str] = redact or TextRedactor().text
        self.status = "starting"
        self.mode = "swarm"
        #: every model call of the run (the rows' sum may miss calls made outside any row)
        self.total_tokens, self.total_cost = 0, 0.0
        self._now = monotonic
        self._start = monotonic()
        #: when run.finished arrived (the title's clock stops there)
        self.ended: float | None = None
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> ProgressDisplay:
        if self.live_mode:
            self._live = Live(get_renderable=self.render, console=self.console,
                              refresh_per_second=4, transient=False)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Draw the table one last time and give the terminal back (idempotent)."""
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Give the terminal to someone else for a while (the approval prompt): the table
        stops redrawing, and comes back below whatever was printed meanwhile."""
        live = self._live
        if live is None:
            yield
            return
        live.refresh()
        live.stop()
        try:
            yield
        finally:
            if self._live is live:
                live.start()

    def note(self, text: str) -> None:
        """A message for the user above the table (or as a plain line)."""
        if self._live is not None:
            self._live.console.print(self.redact(text), markup=False, highlight=False)
        else:
            self.console.file.write(self.redact(text) + "\n")
            self.console.file.flush()

    # -- the sink -------------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        with self._lock:
            handler = _HANDLERS.get(event.kind)
            if handler is not None:
                handler(self, event, self._now())
        if not self.live_mode and not self._closed and (
                event.kind in _MILESTONES or (event.kind == "tool.call" and self.mode == "agent")):
            # a plain write, not console.print: rich's rendering cost ~17 ms per line under load,
            # paid inside the event sink, i.e. on the scheduler's path to the next node
            try:
                self.console.file.write(self._plain(event) + "\n")
                self.console.file.flush()
            except OSError:  # the reader went away (`| head`, a closed log pipe): the run goes on
                self._closed = True

    def row(self, event: Event) -> RowView | None:
        """The row an event belongs to (made on first sight), None for run-level events."""
        if event.node_id is None:
            return None
        return self.nodes.setdefault(event.node_id, RowView())

    # -- rendering ------------------------------------------------------------------------------

    def render(self) -> Table:
        """The current table (also used by tests to check what a user would see)."""
        now = self._now()
        elapsed = (self.ended if self.ended is not None else now) - self._start
        table = Table(title=f"agentkit  {self.status}  {elapsed:6.1f}s", expand=False)
        for col, justify in (("node", "left"), ("state", "left"), ("step", "left"),
                             ("tokens", "right"), ("cost $", "right"), ("time", "right")):
            table.add_column(col, justify=justify)  # type: ignore[arg-type]
        with self._lock:
            rows = self._ordered()
            total_tokens, total_cost = self.total_tokens, self.total_cost
        for node_id, view in rows:
            table.add_row(node_id, Text(view.state, style=_STYLE.get(view.state, "")),
                          self.redact(view.step)[:48], f"{view.tokens:,}",
                          f"{view.cost_usd:.4f}", f"{view.elapsed(now):.1f}s")
        table.add_row("total", "", "", f"{total_tokens:,}", f"{total_cost:.4f}", "",
                      style="bold")
        return table

    def _ordered(self) -> list[tuple[str, RowView]]:
        """Planner first, synthesizer last, the rest in the order they appeared."""
        rank = {PLANNER: 0, SYNTHESIZER: 2}
        return sorted(self.nodes.items(), key=lambda kv: rank.get(kv[0], 1))

    def _plain(self, event: Event) -> str:
        data = event.data
        where = f" {event.node_id}" if event.node_id else ""
        extra = data.get("status") or data.get("reason") or data.get("goal") or ""
        if event.kind in ("plan.created", "plan.replanned"):
            extra = f"{len(_plan_nodes(data))} nodes"
        elif event.kind == "node.consensus":
            extra = _consensus_text(data)
        elif event.kind == "tool.call":
            extra = _call_text(data, 100)
        elif event.kind == "approval.requested":
            extra = f"{data.get('key')} {_call_text(data, 80)}"
        elif event.kind == "approval.decided":
            extra = (f"{data.get('key')} {'approved' if data.get('approved') else 'denied'} "
                     f"via {data.get('via')}" + (f": {data['reason']}" if data.get("reason") else ""))
        elif event.kind == "node.failed":
            extra = _error_text(data)
        line = f"[{self._now() - self._start:7.1f}s] {event.kind}{where} {str(extra)[:100]}"
        return self.redact(line.rstrip())


# ---------------------------------------------------------------------------------------------
# One handler per event kind: (display, event, now) -> None, called under the display's lock

Handler = Callable[[ProgressDisplay, Event, float], None]


def _run_started(d: ProgressDisplay, event: Event, now: float) -> None:
    d.status, d.mode = "running", str(event.data.get("mode") or "swarm")


def _run_finished(d: ProgressDisplay, event: Event, now: float) -> None:
    d.status = str(event.data.get("status") or "finished")
    d.ended = now
    end = _END_STATE.get(d.status, "failed")
    for row_id, view in d.nodes.items():
        if view.state == "running":
            # plan nodes still running when a run fails (wall clock, budget) were cancelled by
            # it; a role's row (planner, synthesizer, agent) still running is what failed
            node_cut = end == "failed" and row_id not in _ROLE_ROWS
            view.end("cancelled" if node_cut else end, now)
            view.step = "" if end == "done" and view.step == _THINKING else view.step


def _plan(d: ProgressDisplay, event: Event, now: float) -> None:
    for node in _plan_nodes(event.data):
        if isinstance(node, dict) and node.get("id"):
            view = d.nodes.setdefault(str(node["id"]), RowView())
            view.goal = str(node.get("goal") or view.goal)
    planner = d.nodes.get(PLANNER)
    if planner is not None and planner.state == "running":
        planner.end("done", now)
        planner.step = f"plan: {len(_plan_nodes(event.data))} nodes"


def _node_started(d: ProgressDisplay, event: Event, now: float) -> None:
    view = d.nodes.setdefault(str(event.node_id), RowView())
    view.state, view.started, view.ended = "running", now, None
    view.goal = str(event.data.get("goal") or view.goal)
    attempt = int(event.data.get("attempt") or 1)
    view.step = f"attempt {attempt}" if attempt > 1 else ""


def _node_finished(d: ProgressDisplay, event: Event, now: float) -> None:
    view = d.row(event)
    if view is not None:
        view.end("failed" if event.data.get("status") == "failed" else "done", now)
        if view.step == _THINKING:  # over; a last tool call stays: what the node did last
            view.step = ""


def _node_failed(d: ProgressDisplay, event: Event, now: float) -> None:
    view = d.row(event)
    if view is not None:
        view.end("failed", now)
        view.step = _error_text(event.data)


def _node_skipped(d: ProgressDisplay, event: Event, now: float) -> None:
    view = d.row(event)
    if view is not None:
        view.end("skipped", now)
        view.step = str(event.data.get("reason") or "")[:60]


def _step(text: Callable[[dict[str, Any]], str]) -> Handler:
    """A handler that shows `text(data)` as the row's current step (and starts the row)."""
    def handle(d: ProgressDisplay, event: Event, now: float) -> None:
        view = d.row(event)
        if view is None:
            return
        # the planner, synthesizer and agent have no node.started: their first call starts
        # them (and the planner starts again when it re-plans)
        if view.state == "waiting" or (event.node_id == PLANNER and view.state == "done"):
            view.state, view.ended = "running", None
            view.started = view.started if view.started is not None else now
        view.step = text(event.data)
    return handle


def _model_response(d: ProgressDisplay, event: Event, now: float) -> None:
    usage = event.data.get("usage") or {}
    # reasoning tokens are part of output_tokens: counting them again inflated the total
    tokens = int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0)
    cost = float(event.data.get("cost_usd") or 0.0)
    d.total_tokens += tokens
    d.total_cost += cost
    view = d.row(event)
    if view is not None:
        view.tokens += tokens
        view.cost_usd += cost


_HANDLERS: dict[str, Handler] = {
    "run.started": _run_started,
    "run.finished": _run_finished,
    "plan.created": _plan,
    "plan.replanned": _plan,
    "node.started": _node_started,
    "node.finished": _node_finished,
    "node.failed": _node_failed,
    "node.skipped": _node_skipped,
    "model.request": _step(lambda data: _THINKING),
    "model.response": _model_response,
    "retry": _step(lambda data: f"retry {data.get('attempt', '')}: "
                                f"{str(data.get('error') or '')[:40]}".rstrip(": ")),
    "tool.call": _step(lambda data: _call_text(data, 40)),
    "node.sample": _step(lambda data: f"sample {int(data.get('sample') or 0) + 1} done"),
    "node.consensus": _step(lambda data: _consensus_text(data)),
    "answer.checked": _step(lambda data: "checking the answer's numbers and sources"),
    "budget.exceeded": _step(lambda data: f"budget {data.get('budget')} exceeded"),
    "approval.requested": _step(lambda data: f"awaiting approval: {_call_text(data, 30)}"),
    "approval.decided": _step(lambda data: f"{'approved' if data.get('approved') else 'denied'}"
                                           f" ({data.get('via')}): {data.get('tool')}"),
}


def _consensus_text(data: dict[str, Any]) -> str:
    return (f"{data.get('votes')} of {data.get('samples')} samples agree "
            f"(on {data.get('evidence')} output)")


def _call_text(data: dict[str, Any], width: int) -> str:
    args = data.get("arguments")
    shown = json.dumps(args, ensure_ascii=False, default=str)[:width] if args else ""
    return f"{data.get('tool', '?')}({shown})"


def _error_text(data: dict[str, Any]) -> str:
    error = data.get("error")
    if isinstance(error, dict):
        return f"{error.get('type', 'error')}: {error.get('message', '')}"[:80]
    return str(error or "")[:80]


def _plan_nodes(data: dict[str, Any]) -> list[Any]:
    """Nodes from ``{"plan": {"nodes": [...]}}`` or ``{"nodes": [...]}``."""
    plan = data.get("plan")
    nodes = (plan if isinstance(plan, dict) else data).get("nodes")
    return nodes if isinstance(nodes, list) else []
