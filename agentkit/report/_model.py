"""The report's data: a run's ledger records folded into rows, bars, tables and conversations.

One pass over the records. Each agent of the run is a row: the plan's nodes (a delegated
sub-team's nodes after the node that spawned them) and the agents without node events of
their own (planner, re-planner, synthesizer). A row holds what the first paint needs — its
state, its bars on the run's time axis (attempts, model calls, tool calls, waits, marks),
tokens and cost — and, kept apart, its conversation, which the page renders only when the row
is opened. Times are integer milliseconds from the run's first record, which keeps the
embedded JSON small.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentkit.report._layout import layout
from agentkit.report._read import LedgerScan, scan_ledger

__all__ = ["RunModel", "build_model"]

#: longest text shown inline in a conversation; the rest stays in the ledger
CLIP = 4000
_SUBTEAM = re.compile(r"^(?P<parent>.+?)\.sub\d+\.")
_MARK_KINDS = frozenset({"retry", "fallback", "breaker.open", "budget.exceeded", "node.failed",
                         "url.blocked", "answer.ungrounded", "plan.rejected", "answer.empty"})


def clip(value: Any, limit: int = CLIP) -> str:
    """Text for the page: a blob reference becomes its preview, long text is cut (and says
    how much is left in the ledger)."""
    if isinstance(value, dict) and "$blob" in value:
        return (f"{value.get('preview', '')}… [{value.get('size', '?')} bytes in blob "
                f"{str(value['$blob'])[:12]} beside the ledger]")
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit:,} more characters in the ledger]"


@dataclass
class Row:
    id: str
    kind: str
    seen: int
    goal: str = ""
    deps: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    parent: str | None = None
    status: str = "waiting"
    error: str | None = None
    output: str | None = None
    attempts: list[list[Any]] = field(default_factory=list)  # [start, end, status]
    calls: list[list[int]] = field(default_factory=list)  # [start, end, ok]
    toolbars: list[list[int]] = field(default_factory=list)  # [start, end, ok]
    waits: list[list[int]] = field(default_factory=list)  # [start, end]
    marks: list[list[Any]] = field(default_factory=list)  # [time, kind]
    first: int | None = None
    last: int | None = None
    tokens: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # in, out, reasoning, cached
    cost: float = 0.0
    ntools: int = 0
    details: list[dict[str, Any]] = field(default_factory=list)

    def touch(self, t: int) -> None:
        self.first = t if self.first is None else min(self.first, t)
        self.last = t if self.last is None else max(self.last, t)


@dataclass
class RunModel:
    """What the page embeds: `summary` (first paint) and one conversation per row."""

    summary: dict[str, Any]
    details: list[list[dict[str, Any]]]


def _row_kind(node_id: str) -> str:
    tail = node_id.rsplit(".", 1)[-1]
    if node_id == "synthesizer":
        return "synth"
    if tail == "planner":
        return "planner"
    if node_id.startswith("replan:") or tail.startswith("replan:"):
        return "replan"
    if node_id == "agent":
        return "agent"
    return "node"


class _Builder:
    def __init__(self) -> None:
        self.t0: float | None = None
        self.rows: dict[str, Row] = {}
        self.run: dict[str, Any] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self.urls: dict[str, dict[str, Any]] = {}
        self.cited: dict[str, dict[str, Any]] = {}
        self.open_calls: dict[str, tuple[Row, dict[str, Any]]] = {}
        self.open_tools: dict[tuple[str, Any], tuple[Row, dict[str, Any]]] = {}
        self.open_waits: dict[tuple[str, Any], tuple[Row, int]] = {}
        self.seen_msgs: dict[tuple[str, Any], int] = {}
        self.ungrounded: list[str] = []
        self.synth_answer: str | None = None
        self.t_end = 0
        #: time of each record by seq (to place a break in the chain on the timeline)
        self.times: list[int] = []

    def ms(self, record: dict[str, Any]) -> int:
        ts = float(record.get("ts") or 0.0)
        if self.t0 is None:
            self.t0 = ts
            self.run["id"] = record.get("run_id")
        return round((ts - self.t0) * 1000)

    def row(self, node_id: str | None) -> Row | None:
        if node_id is None:
            return None
        row = self.rows.get(node_id)
        if row is None:
            match = _SUBTEAM.match(node_id)
            row = Row(id=node_id, kind=_row_kind(node_id), seen=len(self.rows),
                      parent=match.group("parent") if match else None)
            self.rows[node_id] = row
        return row

    # -- the pass ------------------------------------------------------------------------------

    def feed(self, record: dict[str, Any]) -> None:
        """Fold one ledger record in."""
        t = self.ms(record)
        self.times.append(t)
        self.t_end = max(self.t_end, t)
        data = record.get("data")
        data = data if isinstance(data, dict) else {}
        row = self.row(record.get("node_id"))
        if row is not None:
            row.touch(t)
        kind = str(record["kind"])
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, row, data, t)
        if row is not None and (kind in _MARK_KINDS or kind.startswith("approval.")):
            row.marks.append([t, kind])
            if kind.startswith("approval."):
                self.approval(row, kind, data, t)

    def approval(self, row: Row, kind: str, data: dict[str, Any], t: int) -> None:
        """A person's approval: the time between its request and its answer is a wait."""
        key = (row.id, data.get("call_id") or data.get("id"))
        if kind == "approval.requested":
            self.open_waits[key] = (row, t)
        elif key in self.open_waits:
            waiting, start = self.open_waits.pop(key)
            waiting.waits.append([start, t])

    def finish(self, scan: LedgerScan) -> RunModel:
        ordered = _ordered(self.rows)
        index = {row.id: i for i, row in enumerate(ordered)}
        for row in ordered:
            if row.kind != "node" and row.status == "waiting":
                row.status = "failed" if row.error else "done"
        return RunModel(summary=self.summary(scan, ordered, index),
                        details=[row.details for row in ordered])

    def summary(self, scan: LedgerScan, rows: list[Row], index: dict[str, int]) -> dict[str, Any]:
        verify = scan.verify
        bad = verify.first_bad_seq
        edges = _edges(rows, index)
        answer = self.run.get("answer")
        if answer is None and self.synth_answer is not None:
            answer = self.synth_answer
            for url, info in self.cited.items():
                if not info["ok"]:
                    answer = answer.replace(url, "unverified source removed")
        return {
            "run": {**self.run, "ledger": scan.path.name, "t0": self.t0,
                    "dur": self.t_end, "events": scan.records},
            "verify": {"ok": verify.ok, "count": verify.count, "bad_seq": bad,
                       "reason": verify.reason, "head": verify.head,
                       "bad_t": self.times[bad] if bad is not None and bad < len(self.times)
                       else None, "unreadable": scan.unreadable},
            "rows": [_row_summary(row) for row in rows],
            "edges": edges, "pos": layout(len(rows), edges),
            "models": sorted(self.models.values(), key=lambda m: -m["cost"] - m["calls"] * 1e-9),
            "urls": [{**u, "cited": self.cited.get(u["url"], {}).get("ok")}
                     for u in self.urls.values()],
            "dropped": [u for u, info in self.cited.items() if not info["ok"]],
            "answer": answer, "ungrounded": self.ungrounded,
        }


def _row_summary(row: Row) -> dict[str, Any]:
    return {"id": row.id, "kind": row.kind, "goal": clip(row.goal, 600), "deps": row.deps,
            "tools": row.tools, "parent": row.parent, "status": row.status,
            "error": clip(row.error, 600) if row.error else None, "att": row.attempts,
            "calls": row.calls, "tbars": row.toolbars, "waits": row.waits, "marks": row.marks,
            "first": row.first, "last": row.last, "tok": row.tokens, "cost": round(row.cost, 8),
            "ntools": row.ntools}


def _ordered(rows: dict[str, Row]) -> list[Row]:
    """First-seen order, each delegated sub-team right after the node that spawned it."""
    children: dict[str | None, list[Row]] = {}
    for row in sorted(rows.values(), key=lambda r: r.seen):
        parent = row.parent if row.parent in rows else None
        children.setdefault(parent, []).append(row)
    out: list[Row] = []
    stack = list(reversed(children.get(None, [])))
    while stack:
        row = stack.pop()
        out.append(row)
        stack.extend(reversed(children.get(row.id, [])))
    return out


def _edges(rows: list[Row], index: dict[str, int]) -> list[list[int]]:
    """[from, to, style]: 0 a dependency, 1 a sub-team under its parent, 2 planner/synthesizer."""
    edges: list[list[int]] = []
    nodes = [r for r in rows if r.kind == "node"]
    for row in nodes:
        for dep in row.deps:
            if dep in index:
                edges.append([index[dep], index[row.id], 0])
        if row.parent in index and not row.deps:
            edges.append([index[row.parent], index[row.id], 1])
    top = [r for r in nodes if r.parent is None]
    if "planner" in index:
        edges += [[index["planner"], index[r.id], 2] for r in top if not r.deps]
    if "synthesizer" in index:
        needed = {d for r in top for d in r.deps}
        edges += [[index[r.id], index["synthesizer"], 2] for r in top if r.id not in needed]
    return edges


# ---------------------------------------------------------------------------------------------
# Handlers, one per kind the report reads

Handler = Callable[[_Builder, Row | None, dict[str, Any], int], None]


def _run_started(b: _Builder, row: Row | None, data: dict[str, Any], t: int) -> None:
    b.run.update(task=data.get("task"), mode=data.get("mode"), goal=clip(data.get("goal"), 2000))


def _run_finished(b: _Builder, row: Row | None, data: dict[str, Any], t: int) -> None:
    usage = data.get("usage") or {}
    error = data.get("error") or None
    b.run.update(status=data.get("status"), cost=data.get("cost_usd") or 0.0,
                 tokens=[usage.get(k) or 0 for k in ("input_tokens", "output_tokens",
                                                       "reasoning_tokens", "cached_tokens")],
                 error=clip(error.get("message"), 2000) if isinstance(error, dict) else None)
    if "answer" in data:
        b.run["answer"] = clip(data.get("answer"), 20000) if data.get("answer") else None
    for node_id, status in (data.get("nodes") or {}).items():
        found = b.rows.get(node_id)
        if found is not None and isinstance(status, str):
            found.status = status


def _plan_created(b: _Builder, row: Row | None, data: dict[str, Any], t: int) -> None:
    for node in data.get("nodes") or []:
        if not isinstance(node, dict) or not node.get("id"):
            continue
        planned = b.row(str(node["id"]))
        assert planned is not None
        planned.kind = "node"
        planned.goal = str(node.get("goal") or "")
        planned.deps = [str(d) for d in node.get("depends_on") or []]
        planned.tools = [str(x) for x in node.get("tools") or []]
        if data.get("source") == "delegate" and data.get("parent"):
            planned.parent = str(data["parent"])


def _node_started(b: _Builder, row: Row | None, data: dict[str, Any], t: int) -> None:
    if row is None:
        return
    row.kind, row.status = "node", "running"
    row.attempts.append([t, None, "running"])
    row.details.append({"t": "attempt", "n": data.get("attempt"), "s": t})


def _end_attempt(row: Row, t: int, status: str) -> None:
    if row.attempts and row.attempts[-1][1] is None:
        row.attempts[-1][1:] = [t, status]


def _node_finished(b: _Builder, row: Row | None, data: dict[str, Any], t: int) -> None:
    if row is None:
        return
    row.status, row.error = "succeeded", None
    _end_attempt(row, t, "succeeded")
    if data.get("output") is not None:
        row.output = clip(data.get("output"))
        row.details.append({"t": "output", "x": row.output})


def _node_failed(b: _Builder, row: Row | None, data: dict[str, Any], t: int) -> None:
    if row is None:
        return
    error = data.get("error") or {}
    row.error = f"{error.get('type', 'Error')}: {error.get('message', '')}"
    _end_attempt(row, t, "failed")
    row.status = "running" if data.get("will_retry") else "failed"
    row.details.append({"t": "event", "k": "node.failed", "s": t, "x": clip(row.error, 1000)})


def _node_skipped(b: _Builder, row: Row | None, data: dict[str, Any], t: int) -> None:
    if row is None:
        return
    row.status, row.error = "skipped", clip(data.get("reason"), 600)
    row.details.append({"t": "event", "k": "node.skipped", "s": t, "x": row.error})


def _model_request(b: _Builder, row: Row | None, data: dict[str, Any], t: int) -> None:
    if row is None:
        return
    agent = data.get("agent_id")
    messages = [m for m in data.get("messages") or [] if isinstance(m, dict)]
    seen = b.seen_msgs.get((row.id, agent), 0)
    if seen > len(messages):  # a new agent run on this node: its history starts again
        seen = 0
    b.seen_msgs[(row.id, agent)] = len(messages) + 1  # + the answer this call will add
    shown = []
    for message in messages[seen:]:
        if message.get("role") == "tool":
            _tool_reads(b, row, message)
        else:
            shown.append({"r": message.get("role"), "x": clip(_text_of(message))})
    item = {"t": "call", "agent": agent if agent != row.id else None, "m": data.get("model"),
            "pm": data.get("provider_model"), "s": t, "e": None, "msgs": shown, "ev": []}
    row.details.append(item)
    b.open_calls[str(data.get("call_key") or f"{row.id}/{agent}")] = (row, item)


def _text_of(message: dict[str, Any]) -> str:
    parts = message.get("parts") or []
    return "".join(str(p.get("text") or p.get("content") or "") for p in parts
                   if isinstance(p, dict) and p.get("kind") in ("text", "tool_result"))


def _tool_reads(b: _Builder, row: Row, message: dict[str, Any]) -> None:
    """A tool message in a request: what each tool call's model read, shown with the call."""
    for part in message.get("parts") or []:
        if not isinstance(part, dict):
            continue
        found = b.open_tools.get((row.id, part.get("call_id")))
        item = found[1] if found else next(
            (d for d in reversed(row.details) if d.get("t") == "tool"
             and d.get("id") == part.get("call_id")), None)
        if item is not None:
            item["read"] = clip(part.get("content"))


def _open_call(b: _Builder, row: Row | None, data: dict[str, Any]) -> dict[str, Any] | None:
    if row is None:
        return None
    key = str(data.get("call_key") or f"{row.id}/{data.get('agent_id')}")
    found = b.open_calls.pop(key, None)
    return found[1] if found else None


def _model_response(b: _Builder, row: Row | None, data: dict[str, Any], t: int) -> None:
    item = _open_call(b, row, data)
    if row is None or item is None:
        return
    usage = data.get("usage") or {}
    tokens = [int(usage.get(k) or 0) for k in ("input_tokens", "output_tokens",
                                                 "reasoning_tokens", "cached_tokens")]
    cost = float(data.get("cost_usd") or 0.0)
    row.tokens = [a + b_ for a, b_ in zip(row.tokens, tokens, strict=True)]
    row.cost += cost
    row.calls.append([item["s"], t, 1])
    item.update(e=t, tok=tokens, cost=cost, fin=data.get("finish_reason"),
                rsn=clip(data.get("reasoning") or ""), txt=clip(data.get("content") or ""),
                pm=data.get("provider_model") or item.get("pm"),
                tc=[{"id": c.get("id"), "n": c.get("name"), "a": clip(c.get("arguments"), 2000)}
                    for c in data.get("tool_calls") or [] if isinstance(c, dict)])
    if row.kind == "synth" and data.get("content"):
        b.synth_answer = str(data["content"])
    name = str(data.get("model") or "?")
    line = b.models.setdefault(name, {"name": name, "pm": [], "provider": data.get("provider"),
                                      "calls": 0, "tok": [0, 0, 0, 0], "cost": 0.0})
    line["calls"] += 1
    line["tok"] = [a + b_ for a, b_ in zip(line["tok"], tokens, strict=True)]
    line["cost"] = round(line["cost"] + cost, 8)
    if item["pm"] and item["pm"] not in line["pm"]:
        line["pm"].append(item["pm"])


def _model_error(b: _Builder, row: Row | None, data: dict[str, Any], t: int) -> None:
    item = _open_call(b, row, data)
    if row is None or item is None:
        return
    error = data.get("error") or {}
    row.calls.append([item["s"], t, 0])
    item.update(e=t, err=clip(error.get("message") or error, 1000))
    key = (row.id, data.get("agent_id"))
    b.seen_msgs[key] = max(0, b.seen_msgs.get(key, 1) - 1)  # no answer joined the history


def _retry(b: _Builder, row: Row | None, data: dict[str, Any], t: int) -> None:
    if row is None:
        return
    delay = round(float(data.get("delay_s") or 0.0) * 1000)
    if delay > 0:
        row.waits.append([t, t + delay])
    _call_event(b, row, data, t, f"retry {data.get('attempt')}: {data.get('error_type') or ''} "
                                 f"{data.get('status') or ''}, waiting {delay} ms")


def _call_event(b: _Builder, row: Row, data: dict[str, Any], t: int, text: str) -> None:
    """Noted on the open model call of the same agent, else in the row's conversation."""
    agent = data.get("agent_id")
    agent = None if agent == row.id else agent
    for owner, item in b.open_calls.values():
        if owner is row and item.get("agent") == agent:
            item["ev"].append(clip(text, 1000))
            return
    row.details.append({"t": "event", "k": "note", "s": t, "x": clip(text, 1000)})


def _fallback(b: _Builder, row: Row | None, data: dict[str, Any], t: int) -> None:
    if row is not None:
        _call_event(b, row, data, t, f"fallback ({data.get('kind')}) {data.get('from')} -> "
                                     f"{data.get('to')}: {data.get('reason') or ''}")


def _budget_exceeded(b: _Builder, row: Row | None, data: dict[str, Any], t: int) -> None:
    if row is not None:
        row.details.append({"t": "event", "k": "budget.exceeded", "s": t, "x": clip(
            f"{data.get('budget')} budget exceeded (limit {data.get('limit')}, "
            f"scope {data.get('scope')})", 600)})


def _tool_call(b: _Builder, row: Row | None, data: dict[str, Any], t: int) -> None:
    if row is None:
        return
    row.ntools += 1
    item = {"t": "tool", "n": data.get("tool"), "id": data.get("call_id"), "s": t, "e": None,
            "a": clip(data.get("arguments") if data.get("arguments") is not None
                      else data.get("raw_arguments"), 3000)}
    row.details.append(item)
    b.open_tools[(row.id, data.get("call_id"))] = (row, item)


def _tool_result(b: _Builder, row: Row | None, data: dict[str, Any], t: int) -> None:
    found = b.open_tools.pop((row.id if row else "", data.get("call_id")), None)
    if row is None or found is None:
        return
    item = found[1]
    ok = bool(data.get("ok", True))
    row.toolbars.append([item["s"], t, int(ok)])
    error = data.get("error") or {}
    item.update(e=t, ok=ok, data=clip(data.get("data"), 3000) if data.get("data") else None,
                err=None if ok else clip(f"[{error.get('code')}] {error.get('message')}", 1000))


def _file_diff(b: _Builder, row: Row | None, data: dict[str, Any], t: int) -> None:
    if row is not None:
        row.details.append({"t": "diff", "s": t, "path": data.get("path"),
                            "diff": clip(data.get("diff") or "(no text diff)", 20000)})


def _url_fetched(b: _Builder, row: Row | None, data: dict[str, Any], t: int) -> None:
    url = str(data.get("url") or "")
    if not url:
        return
    b.urls[url] = {"url": url, "final": data.get("final_url"), "title": data.get("title"),
                   "hash": data.get("content_hash"), "node": row.id if row else None,
                   "chars": data.get("chars"), "status": data.get("status")}
    if row is not None:
        row.details.append({"t": "event", "k": "url.fetched", "s": t,
                            "x": f"{url}  sha256 {data.get('content_hash')}"})


def _url_cited(b: _Builder, row: Row | None, data: dict[str, Any], t: int) -> None:
    if data.get("url"):
        b.cited[str(data["url"])] = {"ok": bool(data.get("ok")), "hash": data.get("content_hash")}


def _answer_checked(b: _Builder, row: Row | None, data: dict[str, Any], t: int) -> None:
    b.ungrounded = [str(x) for x in data.get("ungrounded") or []]


_HANDLERS: dict[str, Handler] = {
    "run.started": _run_started, "run.finished": _run_finished,
    "plan.created": _plan_created, "plan.replanned": _plan_created,
    "node.started": _node_started, "node.finished": _node_finished,
    "node.failed": _node_failed, "node.skipped": _node_skipped,
    "model.request": _model_request, "model.response": _model_response,
    "model.error": _model_error, "retry": _retry, "fallback": _fallback,
    "budget.exceeded": _budget_exceeded, "tool.call": _tool_call, "tool.result": _tool_result,
    "file.diff": _file_diff, "url.fetched": _url_fetched, "url.cited": _url_cited,
    "answer.checked": _answer_checked,
}


def build_model(ledger: str | Path) -> tuple[RunModel, LedgerScan]:
    """Read `ledger` once, folding each record into the report's data."""
    builder = _Builder()
    scan = scan_ledger(ledger, builder.feed)
    return builder.finish(scan), scan
