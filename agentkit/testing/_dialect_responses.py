"""The OpenAI Responses API dialect of the scripted server (fixture B7): output items,
named SSE events, and the pairing rule: a reasoning item must come back immediately before
the item it led to, unmodified (else the API's "provided without its required ..." 400)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agentkit.testing._dialects import Issued
from agentkit.testing._script import ErrorReply, Reply

__all__ = ["check_responses", "render_responses_events", "render_responses_json",
           "responses_call_ids"]


def _items(r: Reply, n: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if r.reasoning is not None:
        items.append({"type": "reasoning", "id": f"rs_{n}",
                      "summary": [{"type": "summary_text", "text": r.reasoning}],
                      "encrypted_content": r.signature or f"gAAAA-enc-{n}"})
    if r.content:
        items.append({"type": "message", "id": f"msg_{n}", "role": "assistant", "status": "completed",
                      "content": [{"type": "output_text", "text": r.content, "annotations": []}]})
    for k, c in enumerate(r.tool_calls):
        args = c.arguments if isinstance(c.arguments, str) else json.dumps(dict(c.arguments))
        items.append({"type": "function_call", "id": f"fc_{n}_{k}", "status": "completed",
                      "call_id": str(c.id) if c.id is not None else f"call_{n}_{k}",
                      "name": c.name, "arguments": args})
    return items


def responses_call_ids(r: Reply, n: int) -> list[str]:
    return [i["call_id"] for i in _items(r, n) if i["type"] == "function_call"]


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
    return body, Issued(reasoning=r.reasoning or "", blocks=reasoning)


def render_responses_events(r: Reply, n: int, model: str, size: int
                            ) -> tuple[list[tuple[str, dict[str, Any]]], Issued]:
    body, issued = render_responses_json(r, n, model)
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"type": "response.created",
                              "response": {**body, "status": "in_progress", "output": []}})]
    for i, item in enumerate(body["output"]):
        empty = {**item, **{k: [] for k in ("summary", "content") if k in item}}
        if "arguments" in item:
            empty["arguments"] = ""
        events.append(("response.output_item.added", {"type": "response.output_item.added",
                                                      "output_index": i, "item": empty}))
        for kind, text in _streamed_text(item):
            for k in range(0, len(text), size):
                events.append((kind, {"type": kind, "output_index": i, "item_id": item["id"],
                                      "delta": text[k:k + size]}))
        events.append(("response.output_item.done", {"type": "response.output_item.done",
                                                     "output_index": i, "item": item}))
    final = "response.incomplete" if body["status"] == "incomplete" else "response.completed"
    events.append((final, {"type": final, "response": body}))
    return events, issued


def _streamed_text(item: dict[str, Any]) -> list[tuple[str, str]]:
    if item["type"] == "reasoning":
        return [("response.reasoning_summary_text.delta", s["text"]) for s in item["summary"]]
    if item["type"] == "message":
        return [("response.output_text.delta", c["text"]) for c in item["content"]]
    return [("response.function_call_arguments.delta", item["arguments"])]


def _bad(message: str) -> ErrorReply:
    return ErrorReply(400, {"error": {"message": message, "type": "invalid_request_error",
                                      "param": "input", "code": None}})


def check_responses(body: dict[str, Any], issued: Mapping[str, Issued]) -> ErrorReply | None:
    """Parameter refusals, then the reasoning/function_call pairing of the input items."""
    if "max_tokens" in body or "max_completion_tokens" in body:
        return _bad("Unsupported parameter: use 'max_output_tokens' with the Responses API.")
    items = body.get("input") or []
    if not isinstance(items, list):
        return None
    for i, item in enumerate(items):
        if item.get("type") == "reasoning":
            nxt = items[i + 1] if i + 1 < len(items) else {}
            if nxt.get("type") not in ("function_call", "message"):
                return _bad(f"Item '{item.get('id')}' of type 'reasoning' was provided without its "
                            "required following item.")
        if item.get("type") != "function_call":
            continue
        sent = issued.get(str(item.get("call_id")))
        want = (sent.blocks or []) if sent is not None else []
        prev = [x for x in items[:i] if x.get("type") == "reasoning"]
        if want and (not prev or prev[-1] != want[-1]):
            return _bad(f"Item '{item.get('id')}' of type 'function_call' was provided without its "
                        f"required 'reasoning' item: '{want[-1]['id']}'.")
    return None
