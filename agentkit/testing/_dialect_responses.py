"""The OpenAI Responses API dialect of the scripted server: output items, named SSE events,
and the pairing rules: a reasoning item must come back immediately before the item it led to,
unmodified, and that item must be the one issued (a `message` with its `id`), else the API's
400 "Item 'rs_…' of type 'reasoning' was provided without its required following item".

As the real API streams: `response.created`, `response.in_progress`, summary and content
parts opened and closed around their deltas (`*.done` events), `sequence_number` on every
event and an `obfuscation` string on every delta. Reasoning text with blank lines becomes
several summary parts; ``signature=""`` issues a reasoning item without `encrypted_content`;
message items carry `phase` (``commentary`` beside tool calls, else ``final_answer``).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any

from agentkit.testing._dialect_shapes import Issued
from agentkit.testing._script import ErrorReply, Reply

__all__ = ["check_responses", "render_responses_events", "render_responses_json",
           "responses_call_ids"]


def _items(r: Reply, n: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if r.reasoning is not None:
        parts = [p for p in r.reasoning.split("\n\n") if p] or [r.reasoning]
        item: dict[str, Any] = {"type": "reasoning", "id": f"rs_{n}", "summary": [
            {"type": "summary_text", "text": p} for p in parts]}
        if r.signature != "":
            item["encrypted_content"] = r.signature or f"gAAAA-enc-{n}"
        items.append(item)
    if r.content:
        items.append({"type": "message", "id": f"msg_{n}", "role": "assistant", "status": "completed",
                      "content": [{"type": "output_text", "text": r.content, "annotations": [],
                                   "logprobs": []}],
                      "phase": "commentary" if r.tool_calls else "final_answer"})
    for k, c in enumerate(r.tool_calls):
        args = c.arguments if isinstance(c.arguments, str) else json.dumps(dict(c.arguments))
        items.append({"type": "function_call", "id": f"fc_{n}_{k}", "status": "completed",
                      "call_id": str(c.id) if c.id is not None else f"call_{n}_{k}",
                      "name": c.name, "arguments": args})
    return items


def responses_call_ids(r: Reply, n: int) -> list[str]:
    """The keys this turn is found by in later requests: its call ids and reasoning item ids."""
    return [i["call_id"] if i["type"] == "function_call" else i["id"] for i in _items(r, n)
            if i["type"] in ("function_call", "reasoning")]


def render_responses_json(r: Reply, n: int, model: str) -> tuple[dict[str, Any], Issued]:
    u = dict(r.usage or {})
    items = _items(r, n)
    status = "incomplete" if r.finish_reason == "length" else "completed"
    body = {"id": f"resp_{n}", "object": "response", "status": status, "model": model,
            "output": items,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "usage": {"input_tokens": u.get("input_tokens", 40),
                      "input_tokens_details": {"cached_tokens": u.get("cached_tokens", 0)},
                      "output_tokens": u.get("output_tokens", 30),
                      "output_tokens_details": {"reasoning_tokens": u.get("reasoning_tokens", 64)}}}
    reasoning = [i for i in items if i["type"] == "reasoning"]
    # which item each reasoning item led to: it must come back right after it, as issued
    following = {item["id"]: items[k + 1] for k, item in enumerate(items[:-1])
                 if item["type"] == "reasoning"}
    return body, Issued(reasoning=r.reasoning or "", blocks=reasoning, extra=following)


def render_responses_events(r: Reply, n: int, model: str, size: int
                            ) -> tuple[list[tuple[str, dict[str, Any] | str]], Issued]:
    body, issued = render_responses_json(r, n, model)
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": {**body, "status": "in_progress", "output": []}}),
        ("response.in_progress", {"response": {**body, "status": "in_progress", "output": []}})]
    for i, item in enumerate(body["output"]):
        empty = {**item, **{k: [] for k in ("summary", "content") if k in item}}
        if "arguments" in item:
            empty["arguments"] = ""
        events.append(("response.output_item.added", {"output_index": i, "item": empty}))
        events.extend(_item_events(i, item, size))
        events.append(("response.output_item.done", {"output_index": i, "item": item}))
    final = "response.incomplete" if body["status"] == "incomplete" else "response.completed"
    events.append((final, {"response": body}))
    numbered: list[tuple[str, dict[str, Any] | str]] = [
        (kind, {"type": kind, "sequence_number": k, **data}) for k, (kind, data) in enumerate(events)]
    return numbered, issued


def _deltas(kind: str, text: str, size: int, **where: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(kind, {**where, "delta": text[k:k + size],
                    "obfuscation": f"{zlib.crc32(text[k:k + size].encode()):x}"[:8]})
            for k in range(0, len(text), size)]


def _item_events(i: int, item: dict[str, Any], size: int) -> list[tuple[str, dict[str, Any]]]:
    """What streams between an item's `added` and `done`: parts opened, deltas, parts closed."""
    out: list[tuple[str, dict[str, Any]]] = []
    at = {"output_index": i, "item_id": item["id"]}
    if item["type"] == "reasoning":
        for s, part in enumerate(item["summary"]):
            where = {**at, "summary_index": s}
            out.append(("response.reasoning_summary_part.added",
                        {**where, "part": {"type": "summary_text", "text": ""}}))
            out += _deltas("response.reasoning_summary_text.delta", part["text"], size, **where)
            out.append(("response.reasoning_summary_text.done", {**where, "text": part["text"]}))
            out.append(("response.reasoning_summary_part.done", {**where, "part": part}))
    elif item["type"] == "message":
        for c, part in enumerate(item["content"]):
            where = {**at, "content_index": c}
            out.append(("response.content_part.added",
                        {**where, "part": {**part, "text": ""}}))
            out += _deltas("response.output_text.delta", part["text"], size, **where, logprobs=[])
            out.append(("response.output_text.done", {**where, "text": part["text"], "logprobs": []}))
            out.append(("response.content_part.done", {**where, "part": part}))
    else:
        out += _deltas("response.function_call_arguments.delta", item["arguments"], size, **at)
        out.append(("response.function_call_arguments.done", {**at, "arguments": item["arguments"]}))
    return out


def _bad(message: str) -> ErrorReply:
    return ErrorReply(400, {"error": {"message": message, "type": "invalid_request_error",
                                      "param": "input", "code": None}})


def _check_following(items: list[Any], i: int, issued: Mapping[str, Issued]) -> ErrorReply | None:
    item = items[i]
    nxt = items[i + 1] if i + 1 < len(items) else {}
    sent = issued.get(str(item.get("id")))
    want = sent.extra.get(str(item.get("id"))) if sent is not None else None
    if nxt.get("type") not in ("function_call", "message") or (
            isinstance(want, dict) and want.get("type") == "message"
            and (nxt.get("type") != "message" or nxt.get("id") != want.get("id"))):
        return _bad(f"Item '{item.get('id')}' of type 'reasoning' was provided without its "
                    "required following item.")
    return None


def check_responses(body: dict[str, Any], issued: Mapping[str, Issued]) -> ErrorReply | None:
    """Parameter refusals, then the pairing of reasoning items with the items they led to."""
    if "max_tokens" in body or "max_completion_tokens" in body:
        return _bad("Unsupported parameter: use 'max_output_tokens' with the Responses API.")
    items = body.get("input") or []
    if not isinstance(items, list):
        return None
    for i, item in enumerate(items):
        if item.get("type") == "reasoning":
            found = _check_following(items, i, issued)
            if found is not None:
                return found
        if item.get("type") != "function_call":
            continue
        sent = issued.get(str(item.get("call_id")))
        want = (sent.blocks or []) if sent is not None else []
        prev = [x for x in items[:i] if x.get("type") == "reasoning"]
        if want and (not prev or prev[-1] != want[-1]):
            return _bad(f"Item '{item.get('id')}' of type 'function_call' was provided without its "
                        f"required 'reasoning' item: '{want[-1]['id']}'.")
    return None
