"""A ledger as a readable timeline (``agentkit audit show``): one line per record.

Each line is ``+SECONDS #SEQ KIND NODE`` and the record's fields as ``key=value`` items, whole
items only (a line is never cut inside a value; what does not fit is counted, ``+3 more``).
Bulky fields (messages, reasoning, page text) are shown by size; money as dollars with six
decimals, durations in milliseconds precision; `full` prints every field as indented JSON
instead. A file whose first line is not a ledger record is refused (`ConfigError`), so a
wrong path is not shown as a screen of ``!!`` lines.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from agentkit.errors import ConfigError

__all__ = ["timeline"]

#: fields whose content is long: shown as their size (`full` shows them)
_BULKY = frozenset({"messages", "reasoning", "content", "text", "output", "body", "stdout",
                    "stderr", "diff", "tools", "plan", "preview", "cut_preview", "answer",
                    "results", "entries", "data", "nodes"})
#: fields shown first for a kind (the rest follow in the record's order)
_FIRST: dict[str, tuple[str, ...]] = {
    "run.started": ("task", "mode", "goal"),
    "run.finished": ("status", "error", "usage", "cost_usd"),
    "model.request": ("model", "provider_model", "messages"),
    "model.response": ("model", "finish_reason", "usage", "cost_usd"),
    "tool.call": ("tool", "arguments"),
    "tool.result": ("tool", "ok", "error", "duration_s"),
    "url.fetched": ("url", "status", "content_hash", "title"),
    "node.failed": ("attempt", "error"),
}
_STRING_CHARS = 60
#: strings shown whole whatever their length: hashes, URLs, paths
_WHOLE = re.compile(r"hash|sha|url|path|^head$")


def timeline(path: str | Path, *, kinds: Collection[str] = (), nodes: Collection[str] = (),
             full: bool = False, width: int | None = None) -> Iterator[str]:
    """The lines of the timeline. `kinds`: only these kinds (``node`` matches every
    ``node.*``); `nodes`: only records of these node ids; `width`: of the fields part
    (default: what the terminal leaves, at least 80)."""
    width = width or max(80, shutil.get_terminal_size((200, 24)).columns - 48)
    start: float | None = None
    with Path(path).open("rb") as fh:
        for n, raw in enumerate(fh):
            rec = _record(raw, n, path)
            if rec is None:
                yield f"{'':>10} #{n:<5} !! unreadable line ({len(raw)} bytes)"
                continue
            ts = float(rec.get("ts") or 0)
            start = ts if start is None else start
            kind, node = str(rec.get("kind", "?")), rec.get("node_id")
            if (kinds and not _kind_matches(kind, kinds)) or (nodes and node not in nodes):
                continue
            head = f"+{ts - start:9.3f}s #{rec.get('seq', n):<5} {kind:<16} {node or '-':<12}"
            raw_data = rec.get("data")
            data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
            if full:
                yield head
                yield from ("    " + line for line in json.dumps(
                    data, indent=2, ensure_ascii=False, sort_keys=True).splitlines())
            else:
                yield f"{head} {_fields(kind, data, width)}".rstrip()


def _record(raw: bytes, n: int, path: str | Path) -> dict[str, Any] | None:
    try:
        rec = json.loads(raw)
    except ValueError:
        rec = None
    if isinstance(rec, dict) and "kind" in rec and "hash" in rec:
        return rec
    if n == 0:
        raise ConfigError(f"{path}: not an agentkit ledger (its first line is not a ledger "
                          f"record); ledgers are the runs/<run id>.jsonl files a run writes")
    return None


def _kind_matches(kind: str, kinds: Collection[str]) -> bool:
    return any(kind == k or kind.startswith(k.rstrip(".") + ".") for k in kinds)


def _fields(kind: str, data: dict[str, Any], width: int) -> str:
    first = [k for k in _FIRST.get(kind, ()) if k in data]
    keys = first + [k for k in data if k not in first]
    items = [f"{k}={_value(k, data[k])}" for k in keys]
    shown: list[str] = []
    used = 0
    for item in items:  # whole items, in order; one that does not fit is counted, not cut
        if not shown or used + 2 + len(item) <= width:
            shown.append(item)
            used += len(item) + 2
    more = len(items) - len(shown)
    return "  ".join(shown) + (f"  +{more} more" if more else "")


def _value(key: str, value: Any) -> str:
    if key in _BULKY and isinstance(value, str | list | dict):
        unit = "chars" if isinstance(value, str) else "items"
        return f"<{len(value)} {unit}>"
    if isinstance(value, float):
        return _number(key, value)
    if isinstance(value, str):
        if len(value) <= _STRING_CHARS or _WHOLE.search(key):
            return json.dumps(value, ensure_ascii=False)
        cut = value[:_STRING_CHARS].rsplit(" ", 1)[0] if " " in value[:_STRING_CHARS] \
            else value[:_STRING_CHARS]
        return json.dumps(cut + "…", ensure_ascii=False)
    if isinstance(value, dict):
        if key == "usage" and "input_tokens" in value:
            return _usage(value)
        if isinstance(value.get("type"), str) and "message" in value:  # an error
            return json.dumps(f"{value['type']}: {value['message']}"[:_STRING_CHARS * 2],
                              ensure_ascii=False)
        if "$blob" in value:
            return f"<blob {str(value['$blob'])[:12]} {value.get('size', '?')} bytes>"
        return "{" + ", ".join(f"{k}: {_value(str(k), v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_value(key, v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False, default=str)


def _usage(usage: dict[str, Any]) -> str:
    text = f"{usage.get('input_tokens') or 0}in/{usage.get('output_tokens') or 0}out"
    if usage.get("reasoning_tokens"):
        text += f"({usage['reasoning_tokens']}reasoning)"
    return text


def _number(key: str, value: float) -> str:
    """Money as dollars (6 decimals), anything else with at most 3 decimals: no float noise."""
    if "cost" in key or "usd" in key:
        return f"${value:.6f}"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
