"""The Anthropic Messages dialect of the scripted server: content blocks, named SSE events,
and the rules the real API enforces on thinking replay and parameters.

As the real API does: a redacted thinking block streams first, `message_delta` usage repeats
the input and cache counts (cumulative, not increments), thinking tokens are reported in
``usage.output_tokens_details.thinking_tokens``, messages carry ``stop_details``, and stream
payloads may be padded with whitespace."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from agentkit.testing._dialect_shapes import DIALECTS, Issued, call_ids, signature_for
from agentkit.testing._script import ErrorReply, Reply

__all__ = ["check_anthropic", "render_anthropic_events", "render_anthropic_json"]

_STOP = {"tool_calls": "tool_use", "stop": "end_turn", "length": "max_tokens"}


def _blocks(r: Reply, counter: int) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if r.redacted:
        blocks.append({"type": "redacted_thinking", "data": r.redacted})
    if r.reasoning is not None:
        blocks.append({"type": "thinking", "thinking": r.reasoning,
                       "signature": signature_for(r, counter)})
    if r.content:
        blocks.append({"type": "text", "text": r.content})
    for c, id_ in zip(r.tool_calls, call_ids(DIALECTS["anthropic"], r, counter), strict=True):
        args = json.loads(c.arguments) if isinstance(c.arguments, str) else dict(c.arguments)
        blocks.append({"type": "tool_use", "id": id_, "name": c.name, "input": args})
    return blocks


def _stop_reason(r: Reply) -> str:
    if r.finish_reason:
        return _STOP.get(r.finish_reason, r.finish_reason)
    return "tool_use" if r.tool_calls else "end_turn"


def _usage(r: Reply) -> dict[str, Any]:
    u = dict(r.usage or {})
    thinking = u.get("reasoning_tokens", 40 if r.reasoning else 0)
    return {"input_tokens": u.get("input_tokens", 80), "output_tokens": u.get("output_tokens", 70),
            "cache_read_input_tokens": u.get("cached_tokens", 0),
            "cache_creation_input_tokens": u.get("cache_write_tokens", 0),
            "output_tokens_details": {"thinking_tokens": thinking}}


def _stop_details(stop: str) -> dict[str, Any] | None:
    if stop != "refusal":
        return None
    return {"type": "refusal", "category": "cyber", "explanation": "scripted refusal"}


def render_anthropic_json(r: Reply, counter: int, model: str) -> tuple[dict[str, Any], Issued]:
    blocks = _blocks(r, counter)
    body = {"id": f"msg_{counter:04d}", "type": "message", "role": "assistant", "model": model,
            "content": blocks, "stop_reason": _stop_reason(r), "stop_sequence": None,
            "stop_details": _stop_details(_stop_reason(r)), "usage": _usage(r)}
    return body, Issued(reasoning=r.reasoning or "", blocks=[b for b in blocks
                                                              if "thinking" in b["type"]])


def render_anthropic_events(r: Reply, counter: int, model: str, size: int
                            ) -> tuple[list[tuple[str, dict[str, Any] | str]], Issued]:
    """Named events; payloads are pre-encoded with the whitespace padding seen on the wire."""
    body, issued = render_anthropic_json(r, counter, model)
    usage = body["usage"]
    start = {**body, "content": [], "stop_reason": None, "stop_details": None,
             "usage": {**usage, "output_tokens": 1, "output_tokens_details": {"thinking_tokens": 0}}}
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start",
                                                                    "message": start}),
                                                ("ping", {"type": "ping"})]
    for i, block in enumerate(body["content"]):
        events.extend(_block_events(i, block, size))
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": body["stop_reason"],
                                               "stop_sequence": None,
                                               "stop_details": body["stop_details"]},
                                     "usage": usage}))  # input and cache counts again
    events.append(("message_stop", {"type": "message_stop"}))
    return [(name, f" {json.dumps(data)}  ") for name, data in events], issued


def _block_events(i: int, block: dict[str, Any], size: int) -> list[tuple[str, dict[str, Any]]]:
    kind = block["type"]
    empty = {"thinking": {"type": "thinking", "thinking": "", "signature": ""},
             "text": {"type": "text", "text": ""},
             "tool_use": {**block, "input": {}}}.get(kind, block)
    out: list[tuple[str, dict[str, Any]]] = [
        ("content_block_start", {"type": "content_block_start", "index": i, "content_block": empty})]

    def delta(d: dict[str, Any]) -> None:
        out.append(("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d}))

    if kind == "thinking":
        for k in range(0, len(block["thinking"]), size):
            delta({"type": "thinking_delta", "thinking": block["thinking"][k:k + size]})
        delta({"type": "signature_delta", "signature": block["signature"]})
    elif kind == "text":
        for k in range(0, len(block["text"]), size):
            delta({"type": "text_delta", "text": block["text"][k:k + size]})
    elif kind == "tool_use":
        raw = json.dumps(block["input"])
        half = len(raw) // 2
        delta({"type": "input_json_delta", "partial_json": raw[:half]})
        delta({"type": "input_json_delta", "partial_json": raw[half:]})
    out.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    return out


def _bad(message: str, status: int = 400, kind: str = "invalid_request_error") -> ErrorReply:
    return ErrorReply(status, {"type": "error", "error": {"type": kind, "message": message}})


def check_anthropic(body: dict[str, Any], headers: Mapping[str, str],
                    issued: Mapping[str, Issued]) -> ErrorReply | None:
    """The 4xx the Messages API would answer, or None."""
    if not headers.get("x-api-key"):
        return _bad("x-api-key header is required", 401, "authentication_error")
    if not headers.get("anthropic-version"):
        return _bad("anthropic-version: header is required")
    thinking = body.get("thinking") or {}
    on = thinking.get("type") in ("enabled", "adaptive")
    manual = thinking.get("type") == "enabled"
    if manual and re.search(r"claude-opus-(4-[7-9]|[5-9])", str(body.get("model"))):
        return _bad("thinking.type.enabled is not supported for this model. Use thinking.type."
                    "adaptive and output_config.effort to control thinking behavior.")
    if manual and thinking.get("budget_tokens", 0) >= body.get("max_tokens", 0):
        return _bad("`max_tokens` must be greater than `thinking.budget_tokens`")
    choice = body.get("tool_choice") or {}
    if on and choice.get("type") in ("any", "tool"):
        return _bad("Thinking may not be enabled when tool_choice forces tool use.")
    if on:
        return _check_last_assistant(body.get("messages") or [], issued)
    return None


def _check_last_assistant(messages: list[dict[str, Any]], issued: Mapping[str, Issued]
                          ) -> ErrorReply | None:
    idx = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    if idx is None or not isinstance(messages[idx].get("content"), list):
        return None
    content = messages[idx]["content"]
    uses = [b for b in content if b.get("type") == "tool_use"]
    if not uses:
        return None
    sent = issued.get(str(uses[0].get("id")))
    want = sent.blocks if sent is not None else None
    first = content[0].get("type") if content else None
    if first not in ("thinking", "redacted_thinking"):
        return _bad(f"messages.{idx}.content.0.type: Expected `thinking` or `redacted_thinking`, "
                    f"but found `{first}`. When `thinking` is enabled, a final `assistant` message "
                    "must start with a thinking block (preceeding the lastmost set of `tool_use` "
                    "and `tool_result` blocks).")
    if want and content[:len(want)] != want:
        return _bad(f"messages.{idx}.content: Invalid `signature` in `thinking` block: thinking "
                    "blocks must be passed back unmodified")
    return None
