"""Ollama's native `/api/chat`: request body, and NDJSON lines translated to
Chat Completions chunks so the one `TurnBuilder` assembles them like any other stream.

Native differences: `think` instead of reasoning params, `options.num_predict` for max tokens,
`message.thinking` for reasoning, tool-call arguments as objects and no call ids or indexes,
`done_reason: "stop"` even when tools were called, usage as `prompt_eval_count`/`eval_count`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentkit.messages import Message, ReasoningPart, ToolResultPart, ToolSpec
from agentkit.models.base import ModelSettings
from agentkit.models.profiles import Profile, reasoning_params
from agentkit.task import ModelSpec

__all__ = ["NdjsonTranslator", "build_ollama_body"]


def build_ollama_body(profile: Profile, spec: ModelSpec, messages: Sequence[Message],
                      tools: Sequence[ToolSpec], settings: ModelSettings, *, stream: bool
                      ) -> dict[str, Any]:
    body: dict[str, Any] = {"model": spec.model, "messages": _messages(profile, messages),
                            "stream": stream}
    if tools:
        body["tools"] = [{"type": "function", "function": {
            "name": t.name, "description": t.description, "parameters": t.parameters}}
            for t in tools]
    options = {"num_predict": settings.max_tokens or spec.max_tokens,
               "temperature": settings.temperature if settings.temperature is not None
               else spec.temperature, "top_p": settings.top_p, "seed": settings.seed,
               "stop": settings.stop}
    options = {k: v for k, v in options.items() if v is not None}
    if options:
        body["options"] = options
    body.update(reasoning_params(profile, spec.reasoning, model=spec.model, stream=stream))
    body.update(spec.extra_body)
    body.update(settings.extra_body)
    return body


def _messages(profile: Profile, messages: Sequence[Message]) -> list[dict[str, Any]]:
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if m.role == "tool":
            out.extend({"role": "tool", "content": p.content, "tool_name": p.name}
                       for p in m.parts if isinstance(p, ToolResultPart))
            continue
        msg: dict[str, Any] = {"role": m.role, "content": m.text}
        if m.role == "assistant":
            mine = "".join(p.text for p in m.parts if isinstance(p, ReasoningPart)
                           and p.provider in (None, profile.name))
            scope = profile.replay.scope
            if mine and (scope == "all" or (scope == "tool_loop" and i > last_user)):
                msg["thinking"] = mine
            if m.tool_calls:
                msg["tool_calls"] = [{"function": {"name": c.name, "arguments": c.arguments}}
                                     for c in m.tool_calls]
        out.append(msg)
    return out


class NdjsonTranslator:
    """One NDJSON line (or the single non-streamed object) -> one Chat Completions chunk.
    Calls get distinct indexes, since native calls carry neither index nor id."""

    def __init__(self) -> None:
        self._calls = 0

    def chunk(self, line: dict[str, Any]) -> dict[str, Any]:
        msg = line.get("message") or {}
        delta: dict[str, Any] = {"content": msg.get("content"), "thinking": msg.get("thinking")}
        fragments = []
        for c in msg.get("tool_calls") or []:
            fn = c.get("function") or {}
            fragments.append({"index": self._calls, "id": c.get("id"),
                              "function": {"name": fn.get("name"), "arguments": fn.get("arguments")}})
            self._calls += 1
        if fragments:
            delta["tool_calls"] = fragments
        done = bool(line.get("done"))
        finish = (line.get("done_reason") or "stop") if done else None
        chunk: dict[str, Any] = {"model": line.get("model"), "choices": [
            {"index": 0, "delta": delta, "finish_reason": finish}]}
        if done:
            chunk["usage"] = {"prompt_tokens": line.get("prompt_eval_count") or 0,
                              "completion_tokens": line.get("eval_count") or 0}
        return chunk
