"""Ollama's native `/api/chat` for the scripted server: NDJSON lines with
`message.thinking`, tool calls with object arguments and no ids, `done_reason: "stop"` even
after tool calls, usage as `prompt_eval_count` / `eval_count`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agentkit.testing._dialect_shapes import Issued
from agentkit.testing._script import ErrorReply, Reply

__all__ = ["check_ollama_native", "native_key", "render_ndjson"]


def native_key(name: str, arguments: Any) -> str:
    """Native calls have no ids: the server recognises its own calls by name and arguments."""
    return f"{name}:{json.dumps(arguments, sort_keys=True)}"


def _args(arguments: Any) -> Any:
    return json.loads(arguments) if isinstance(arguments, str) else dict(arguments)


def render_ndjson(r: Reply, model: str, size: int, *, stream: bool
                  ) -> tuple[list[dict[str, Any]], Issued, list[str]]:
    """(lines, what was issued, keys of the issued calls)."""
    calls = [{"function": {"name": c.name, "arguments": _args(c.arguments)}} for c in r.tool_calls]
    usage = dict(r.usage or {})
    final = {"model": model, "created_at": "2026-01-01T00:00:00Z", "done": True,
             "done_reason": r.finish_reason or "stop",
             "prompt_eval_count": usage.get("input_tokens", 40),
             "eval_count": usage.get("output_tokens", 31)}
    keys = [native_key(c["function"]["name"], c["function"]["arguments"]) for c in calls]
    issued = Issued(reasoning=r.reasoning or "")
    if not stream:
        msg: dict[str, Any] = {"role": "assistant", "content": r.content or ""}
        if r.reasoning:
            msg["thinking"] = r.reasoning
        if calls:
            msg["tool_calls"] = calls
        return [{**final, "message": msg}], issued, keys

    def line(**message: Any) -> dict[str, Any]:
        return {"model": model, "created_at": "2026-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": "", **message}, "done": False}

    text, thought = r.content or "", r.reasoning or ""
    lines = [line(thinking=thought[i:i + size]) for i in range(0, len(thought), size)]
    lines += [line(content=text[i:i + size]) for i in range(0, len(text), size)]
    if calls:
        lines.append(line(tool_calls=calls))
    lines.append({**final, "message": {"role": "assistant", "content": ""}})
    return lines, issued, keys


def check_ollama_native(body: dict[str, Any], issued: Mapping[str, Issued]) -> ErrorReply | None:
    """Strict replay (the real server does not check): tool-call turns of the current tool
    loop carry their `thinking` back, and tool results name their tool."""
    messages = body.get("messages") or []
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    for i, m in enumerate(messages):
        if m.get("role") == "tool" and not m.get("tool_name"):
            return ErrorReply(400, {"error": f"messages[{i}]: tool result without tool_name"})
        calls = m.get("tool_calls") or []
        if m.get("role") != "assistant" or not calls or i <= last_user:
            continue
        fn = calls[0].get("function") or {}
        sent = issued.get(native_key(str(fn.get("name")), fn.get("arguments")))
        if sent is not None and sent.reasoning and m.get("thinking") != sent.reasoning:
            return ErrorReply(400, {"error": f"scripted server (strict replay, ollama native): "
                                             f"messages[{i}] must carry `thinking` as issued"})
    return None
