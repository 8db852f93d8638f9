"""Chat Completions dialects of the scripted server: how a `Reply` looks on the wire, and the
replay rules each provider enforces (answered with that provider's 400).

Shapes follow the fixtures B1-B9 of `reference/reasoning-dialects.md`. Rules marked "strict"
are checks real servers do not make (vLLM silently drops a missing `reasoning`); the scripted
server makes them so a client that degrades quietly fails a test instead.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agentkit.testing._script import ErrorReply, Reply, ScriptedCall

__all__ = ["DIALECTS", "Dialect", "Issued", "check_request", "render_chunks", "render_json"]

THINK = ("<think>", "</think>")


@dataclass(frozen=True)
class Dialect:
    name: str
    wire: Literal["openai", "anthropic", "responses"] = "openai"
    #: fields carrying reasoning; empty: reasoning goes into content inside think tags
    reasoning_fields: tuple[str, ...] = ("reasoning_content",)
    think_tag: tuple[str, str] = THINK
    #: write the opening tag (R1 and V3.1 templates do not)
    open_tag: bool = True
    text_tools: bool = False
    details: bool = False
    gemini: bool = False
    reuse_index: bool = False
    id_style: str = "call"
    usage_style: str = "openai"
    empty_content: str | None = ""
    checks: tuple[str, ...] = ()
    #: which tool-call turns must come back with their reasoning, and in which field
    replay_scope: Literal["all", "tool_loop", "never"] | None = None
    replay_field: str = "reasoning_content"
    #: a second, native route (Ollama `/api/chat`, NDJSON)
    native_path: str | None = None


DIALECTS: Mapping[str, Dialect] = {d.name: d for d in (
    Dialect("deepseek", usage_style="deepseek", checks=("deepseek",), replay_scope="all"),
    Dialect("deepseek-reasoner", usage_style="deepseek", replay_scope="never"),
    Dialect("deepseek-hybrid", reasoning_fields=(), open_tag=False, text_tools=True,
            replay_scope="never"),
    Dialect("kimi", id_style="kimi", checks=("kimi",), replay_scope="all"),
    Dialect("qwen", replay_scope="tool_loop"),
    Dialect("dashscope", checks=("dashscope",), replay_scope="tool_loop"),
    Dialect("openrouter", reasoning_fields=("reasoning",), details=True, checks=("openrouter",),
            replay_scope="all", replay_field="reasoning"),
    Dialect("vllm", reasoning_fields=("reasoning",), id_style="vllm", usage_style="vllm",
            empty_content=None, replay_scope="tool_loop", replay_field="reasoning"),
    Dialect("vllm-transition", reasoning_fields=("reasoning", "reasoning_content"),
            id_style="vllm", usage_style="vllm", empty_content=None, replay_scope="tool_loop",
            replay_field="reasoning"),
    Dialect("sglang", replay_scope="tool_loop"),
    Dialect("llamacpp", usage_style="llamacpp", replay_scope="tool_loop"),
    Dialect("raw", reasoning_fields=(), open_tag=False, text_tools=True),
    Dialect("raw-tagged", reasoning_fields=(), text_tools=True),
    Dialect("ollama", reasoning_fields=("reasoning",), reuse_index=True,
            replay_scope="tool_loop", replay_field="reasoning", native_path="/api/chat"),
    Dialect("openai", reasoning_fields=(), checks=("openai",)),
    Dialect("gemini", reasoning_fields=(), think_tag=("<thought>", "</thought>"), gemini=True,
            id_style="gemini", empty_content=None, checks=("gemini",)),
    Dialect("xai", checks=("xai",)),
    Dialect("generic", replay_scope="tool_loop"),
    Dialect("anthropic", wire="anthropic", id_style="anthropic"),
    Dialect("openai-responses", wire="responses", reasoning_fields=()),
)}


@dataclass
class Issued:
    """What the server said in one turn, keyed by its tool-call ids, to check replays."""

    reasoning: str = ""
    details: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    blocks: list[dict[str, Any]] | None = None


# ---------------------------------------------------------------------------------------------
# Rendering


def call_ids(d: Dialect, r: Reply, counter: int) -> list[str]:
    styles: dict[str, Callable[[int, ScriptedCall], str]] = {
        "call": lambda n, c: f"call_{counter:02d}" + (f"_{n}" if n else ""),
        "kimi": lambda n, c: f"functions.{c.name}:{counter + n - 1}",
        "vllm": lambda n, c: f"chatcmpl-tool-{counter}" + (f"-{n}" if n else ""),
        "gemini": lambda n, c: f"fc-{counter}" + (f"-{n}" if n else ""),
        "anthropic": lambda n, c: f"toolu_{counter:02d}" + (f"_{n}" if n else ""),
    }
    return [str(c.id) if c.id is not None else styles[d.id_style](n, c)
            for n, c in enumerate(r.tool_calls)]


def _args(c: ScriptedCall) -> str:
    return c.arguments if isinstance(c.arguments, str) else json.dumps(dict(c.arguments))


def signature_for(r: Reply, counter: int) -> str:
    return r.signature or f"sig-{counter}-{zlib.crc32((r.reasoning or '').encode()):08x}"


def _tagged(d: Dialect, r: Reply) -> str:
    open_, close = d.think_tag
    text = ""
    if r.reasoning and not d.reasoning_fields:
        text = (open_ if d.open_tag else "") + r.reasoning + f"{close}\n\n"
    text += r.content or ""
    if d.text_tools:
        for c in r.tool_calls:
            args = c.arguments if isinstance(c.arguments, str) else dict(c.arguments)
            text += "\n<tool_call>\n" + json.dumps({"name": c.name, "arguments": args}) + "\n</tool_call>"
    return text


def _usage(d: Dialect, r: Reply) -> dict[str, Any]:
    u = dict(r.usage or {})
    inp, out = u.get("input_tokens", 40), u.get("output_tokens", 30)
    rt, cached = u.get("reasoning_tokens", 18 if r.reasoning else 0), u.get("cached_tokens", 0)
    base: dict[str, Any] = {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out}
    if d.usage_style == "deepseek":
        base.update(completion_tokens_details={"reasoning_tokens": rt},
                    prompt_cache_hit_tokens=cached, prompt_cache_miss_tokens=inp - cached)
    elif d.usage_style == "vllm":
        base["completion_tokens_details"] = None
    elif d.usage_style == "openai":
        base.update(completion_tokens_details={"reasoning_tokens": rt},
                    prompt_tokens_details={"cached_tokens": cached})
    return base


def _finish(d: Dialect, r: Reply, *, stream: bool) -> str:
    if r.finish_reason:
        return r.finish_reason
    if r.tool_calls and not d.text_tools and not (d.gemini and stream):
        return "tool_calls"
    return "stop"


def _wire_calls(d: Dialect, r: Reply, ids: list[str], sig: str) -> list[dict[str, Any]]:
    out = []
    for n, (c, id_) in enumerate(zip(r.tool_calls, ids, strict=True)):
        item: dict[str, Any] = {"id": id_, "type": "function",
                                "function": {"name": c.name, "arguments": _args(c)}}
        if d.details:
            item["index"] = n
        if d.gemini and n == 0:
            item["extra_content"] = {"google": {"thought_signature": sig}}
        out.append(item)
    return out


def render_json(d: Dialect, r: Reply, counter: int, model: str) -> tuple[dict[str, Any], Issued]:
    ids, sig = call_ids(d, r, counter), signature_for(r, counter)
    content = _tagged(d, r)
    msg: dict[str, Any] = {"role": "assistant", "content": content or d.empty_content}
    for f in d.reasoning_fields:
        if r.reasoning:
            msg[f] = r.reasoning
    issued = Issued(reasoning=r.reasoning or "")
    if d.details and r.reasoning:
        issued.details = [{"type": "reasoning.text", "text": r.reasoning, "signature": sig,
                           "id": None, "format": "anthropic-claude-v1", "index": 0}]
        msg["reasoning_details"] = issued.details
    if r.tool_calls and not d.text_tools:
        msg["tool_calls"] = _wire_calls(d, r, ids, sig)
        issued.extra = {c["id"]: c.get("extra_content") for c in msg["tool_calls"]}
    msg.update(r.extra or {})
    body: dict[str, Any] = {"id": f"chatcmpl-{counter}", "object": "chat.completion",
                            "model": model, "choices": [{"index": 0, "message": msg,
                                                         "finish_reason": _finish(d, r, stream=False)}],
                            "usage": _usage(d, r)}
    if d.usage_style == "llamacpp":
        body["timings"] = {"prompt_n": 40, "predicted_n": 30, "predicted_per_second": 50.0}
    return body, issued


def _pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] if text else []


def _stream_deltas(d: Dialect, r: Reply, ids: list[str], sig: str, size: int) -> list[dict[str, Any]]:
    first: dict[str, Any] = {"role": "assistant", "content": None if d.reasoning_fields else ""}
    first.update({f: "" for f in d.reasoning_fields})
    first.update(r.extra or {})
    deltas = [first]
    parts = _pieces(r.reasoning or "", size) if d.reasoning_fields else []
    for n, piece in enumerate(parts):
        delta: dict[str, Any] = {"content": None, **{f: piece for f in d.reasoning_fields}}
        if d.details:
            item = {"type": "reasoning.text", "text": piece, "format": "anthropic-claude-v1", "index": 0}
            if n == len(parts) - 1:
                item["signature"] = sig
            delta["reasoning_details"] = [item]
        deltas.append(delta)
    if d.gemini and r.reasoning:
        for piece in _pieces(d.think_tag[0] + r.reasoning, size):
            deltas.append({"content": piece, "extra_content": {"google": {"thought": True}}})
        deltas.append({"content": d.think_tag[1]})
        deltas.extend({"content": p} for p in _pieces(r.content or "", size))
    else:
        deltas.extend({"content": p} for p in _pieces(_tagged(d, r), size))
    if not d.text_tools:
        for n, call in enumerate(_wire_calls(d, r, ids, sig)):
            deltas.extend(_call_fragments(d, n, call))
    return deltas


def _call_fragments(d: Dialect, n: int, call: dict[str, Any]) -> list[dict[str, Any]]:
    if d.gemini:  # whole call in one chunk, no index
        return [{"tool_calls": [call]}]
    index = 0 if d.reuse_index else n
    args = call["function"]["arguments"]
    half = len(args) // 2
    head = {"index": index, "id": call["id"], "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""}}
    return [{"tool_calls": [head]},
            {"tool_calls": [{"index": index, "function": {"arguments": args[:half]}}]},
            {"tool_calls": [{"index": index, "function": {"arguments": args[half:]}}]}]


def render_chunks(d: Dialect, r: Reply, counter: int, model: str, *, include_usage: bool,
                  size: int) -> tuple[list[dict[str, Any]], Issued]:
    """The SSE `data:` payloads of one streamed turn (without the final [DONE])."""
    _, issued = render_json(d, r, counter, model)
    ids, sig = call_ids(d, r, counter), signature_for(r, counter)
    usage = _usage(d, r)

    def wrap(delta: dict[str, Any], fr: str | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {"id": f"chatcmpl-{counter}", "object": "chat.completion.chunk",
                                 "model": model,
                                 "choices": [{"index": 0, "delta": delta, "finish_reason": fr}]}
        if d.gemini and include_usage:
            chunk["usage"] = usage
        return chunk

    if issued.details:  # what a client gets by concatenating the streamed fragments per index
        issued.details = [{"type": "reasoning.text", "text": r.reasoning, "format": "anthropic-claude-v1",
                           "index": 0, "signature": sig}]
    chunks = [wrap(delta) for delta in _stream_deltas(d, r, ids, sig, size)]
    chunks.append(wrap({"role": "assistant"} if d.gemini else {}, _finish(d, r, stream=True)))
    if include_usage and not d.gemini:
        chunks.append({"id": f"chatcmpl-{counter}", "object": "chat.completion.chunk",
                       "model": model, "choices": [], "usage": usage})
    return chunks, issued


# ---------------------------------------------------------------------------------------------
# Replay rules


def _bad(message: str, *, array: bool = False, kind: str = "invalid_request_error") -> ErrorReply:
    err = {"message": message, "type": kind, "code": "invalid_request_error"}
    if array:
        return ErrorReply(400, [{"error": {"code": 400, "message": message,
                                           "status": "INVALID_ARGUMENT"}}])
    return ErrorReply(400, {"error": err})


_Check = Callable[[Dialect, dict[str, Any], Mapping[str, Issued]], ErrorReply | None]


def _assistant_calls(body: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return [(i, m) for i, m in enumerate(body.get("messages") or [])
            if m.get("role") == "assistant" and m.get("tool_calls")]


def _check_deepseek(d: Dialect, body: dict[str, Any], issued: Mapping[str, Issued]) -> ErrorReply | None:
    for _, m in _assistant_calls(body):
        if "reasoning_content" not in m:
            return _bad("The `reasoning_content` in the thinking mode must be passed back to the API.")
    return None


def _check_kimi(d: Dialect, body: dict[str, Any], issued: Mapping[str, Issued]) -> ErrorReply | None:
    if "thinking" in body and not isinstance(body["thinking"], dict):
        return _bad("Invalid request: thinking must be an object like {\"type\": \"enabled\"}")
    for i, m in _assistant_calls(body):
        if not isinstance(m.get("reasoning_content"), str):
            return _bad(f"thinking is enabled but reasoning_content is missing in assistant tool "
                        f"call message at index {i}")
    return None


def _check_openrouter(d: Dialect, body: dict[str, Any], issued: Mapping[str, Issued]) -> ErrorReply | None:
    for i, m in _assistant_calls(body):
        sent = issued.get(str(m["tool_calls"][0].get("id")))
        if sent is not None and sent.details and m.get("reasoning_details") != sent.details:
            return _bad(f"messages[{i}].reasoning_details must be passed back unmodified and in "
                        "order (the upstream provider needs the signed reasoning blocks)")
    return None


def _check_gemini(d: Dialect, body: dict[str, Any], issued: Mapping[str, Issued]) -> ErrorReply | None:
    config = (((body.get("extra_body") or {}).get("google") or {}).get("thinking_config") or {})
    if "thinking_budget" in config and ("thinking_level" in config or "reasoning_effort" in body):
        return _bad("thinking_budget and thinking_level (reasoning_effort) cannot be combined",
                    array=True)
    for i, m in _assistant_calls(body):
        for n, c in enumerate(m["tool_calls"]):
            sent = issued.get(str(c.get("id")))
            want = sent.extra.get(str(c.get("id"))) if sent else None
            if want and c.get("extra_content") != want:
                return _bad(f"Function call is missing a thought_signature in functionCall parts. "
                            f"This is required for tools to work correctly (messages[{i}]."
                            f"tool_calls[{n}]).", array=True)
    return None


def _check_openai(d: Dialect, body: dict[str, Any], issued: Mapping[str, Issued]) -> ErrorReply | None:
    if "max_tokens" in body:
        return _bad("Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                    "'max_completion_tokens' instead.")
    if body.get("temperature") not in (None, 1, 1.0):
        return _bad(f"Unsupported value: 'temperature' does not support {body['temperature']} "
                    "with this model. Only the default (1) value is supported.")
    return None


def _check_dashscope(d: Dialect, body: dict[str, Any], issued: Mapping[str, Issued]) -> ErrorReply | None:
    thinking = body.get("enable_thinking") is True
    if thinking and not body.get("stream"):
        return _bad("parameter.enable_thinking must be set to false for non-streaming calls")
    choice = body.get("tool_choice")
    if thinking and (choice == "required" or isinstance(choice, dict)):
        return _bad("The tool_choice parameter does not support being set to required or object "
                    "in thinking mode")
    return None


def _check_xai(d: Dialect, body: dict[str, Any], issued: Mapping[str, Issued]) -> ErrorReply | None:
    model = str(body.get("model", ""))
    if "reasoning_effort" in body and not re.search(r"grok-3-mini|grok-4\.3", model):
        return _bad(f"Model {model} does not support parameter reasoningEffort.")
    if re.search(r"grok-3-mini|grok-4", model):
        for p in ("stop", "presence_penalty", "frequency_penalty"):
            if p in body:
                return _bad(f"Model {model} does not support parameter {p}.")
    return None


_CHECKS: Mapping[str, _Check] = {
    "deepseek": _check_deepseek, "kimi": _check_kimi, "openrouter": _check_openrouter,
    "gemini": _check_gemini, "openai": _check_openai, "dashscope": _check_dashscope,
    "xai": _check_xai,
}


def _check_tool_ids(body: dict[str, Any]) -> ErrorReply | None:
    seen: set[str] = set()
    for i, m in enumerate(body.get("messages") or []):
        for c in m.get("tool_calls") or []:
            seen.add(str(c.get("id")))
        if m.get("role") == "tool" and str(m.get("tool_call_id")) not in seen:
            return _bad(f"Invalid parameter: messages[{i}] with role 'tool' must be a response to "
                        f"a preceding message with 'tool_calls' (unknown id "
                        f"{m.get('tool_call_id')!r})")
    return None


def _check_replay(d: Dialect, body: dict[str, Any], issued: Mapping[str, Issued]) -> ErrorReply | None:
    messages = body.get("messages") or []
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    for i, m in enumerate(messages):
        if m.get("role") != "assistant":
            continue
        if d.replay_scope == "never":
            if "reasoning_content" in m or d.think_tag[1] in str(m.get("content") or ""):
                return _bad("The reasoning_content of a previous turn must not be sent back: "
                            f"remove it from messages[{i}] (the template adds reasoning itself)")
            continue
        sent = issued.get(str((m.get("tool_calls") or [{}])[0].get("id")))
        in_scope = d.replay_scope == "all" or (d.replay_scope == "tool_loop" and i > last_user)
        if sent is not None and sent.reasoning and in_scope and m.get(d.replay_field) != sent.reasoning:
            return _bad(f"scripted server (strict replay, dialect {d.name}): messages[{i}] must "
                        f"carry `{d.replay_field}` exactly as issued; got {m.get(d.replay_field)!r}")
    return None


def check_request(d: Dialect, body: dict[str, Any], issued: Mapping[str, Issued]) -> ErrorReply | None:
    """The 400 a provider of dialect `d` would answer to `body`, or None if it is accepted."""
    for name in d.checks:
        found = _CHECKS[name](d, body, issued)
        if found is not None:
            return found
    found = _check_tool_ids(body)
    if found is None and d.replay_scope is not None:
        found = _check_replay(d, body, issued)
    return found
