"""Chat Completions dialects of the scripted server: how a `Reply` looks on the wire, and the
replay rules each provider enforces (answered with that provider's 400).

Shapes follow the providers' recorded traffic (the dialect table is in `_dialect_shapes`).
Rules marked "strict" are checks real servers do not make (vLLM silently drops a missing
`reasoning`); the scripted server makes them so a client that degrades quietly fails a test
instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from agentkit.testing._dialect_shapes import (
    DIALECTS,
    Dialect,
    Issued,
    call_ids,
    call_key,
    render_usage,
    signature_for,
)
from agentkit.testing._script import ErrorReply, Reply, ScriptedCall

__all__ = ["DIALECTS", "Dialect", "Issued", "call_ids", "check_request", "render_chunks",
           "render_json", "signature_for"]

_OR_FORMAT = "anthropic-claude-v1"


# ---------------------------------------------------------------------------------------------
# Rendering


def _args(c: ScriptedCall) -> str:
    return c.arguments if isinstance(c.arguments, str) else json.dumps(dict(c.arguments))


def _tagged(d: Dialect, r: Reply) -> str:
    open_, close = d.think_tag
    text = ""
    if r.reasoning and not d.reasoning_fields and not d.content_chunks:
        text = (open_ if d.open_tag else "") + r.reasoning + f"{close}\n\n"
    text += r.content or ""
    if d.text_tools:
        for c in r.tool_calls:
            args = c.arguments if isinstance(c.arguments, str) else dict(c.arguments)
            text += "\n<tool_call>\n" + json.dumps({"name": c.name, "arguments": args}) + "\n</tool_call>"
    return text


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
        if d.details or d.json_call_index:
            item["index"] = n
        if d.gemini and n == 0:
            item["extra_content"] = {"google": {"thought_signature": sig}}
        out.append(item)
    return out


def _thinking_chunk(text: str, **attrs: Any) -> dict[str, Any]:
    return {"type": "thinking", "thinking": [{"type": "text", "text": text}], **attrs}


def _or_details(r: Reply, sig: str) -> list[dict[str, Any]]:
    """OpenRouter's details for a reasoning turn: the readable text, signed, and its encrypted
    twin, both at index 0 (so a client must tell them apart by type)."""
    return [{"type": "reasoning.text", "text": r.reasoning, "signature": sig, "id": None,
             "format": _OR_FORMAT, "index": 0},
            {"type": "reasoning.encrypted", "data": f"enc-{sig}", "id": None,
             "format": _OR_FORMAT, "index": 0}]


def render_json(d: Dialect, r: Reply, counter: int, model: str) -> tuple[dict[str, Any], Issued]:
    ids, sig = call_ids(d, r, counter), signature_for(r, counter)
    content: Any = _tagged(d, r)
    if d.content_chunks and r.reasoning:
        content = [_thinking_chunk(r.reasoning, closed=True)] + (
            [{"type": "text", "text": content}] if content else [])
    msg: dict[str, Any] = {"role": "assistant", "content": content or d.empty_content}
    for f in d.reasoning_fields:
        if r.reasoning:
            msg[f] = r.reasoning
    issued = Issued(reasoning=r.reasoning or "")
    if d.details and r.reasoning:
        issued.details = _or_details(r, sig)
        msg["reasoning_details"] = issued.details
    if r.tool_calls and not d.text_tools:
        msg["tool_calls"] = _wire_calls(d, r, ids, sig)
        issued.extra = {key: c.get("extra_content") for c in msg["tool_calls"]
                        for key in (c["id"], call_key(c["function"]["name"],
                                                      c["function"]["arguments"]))}
    elif d.empty_tool_calls:
        msg["tool_calls"] = []
    if d.message_signature and r.reasoning and not r.tool_calls:
        msg["extra_content"] = {"google": {"thought": True, "thought_signature": sig}}
        msg["thought_signature"] = sig
    msg.update(r.extra or {})
    choice: dict[str, Any] = {"index": 0, "message": msg, "finish_reason": _finish(d, r, stream=False)}
    if d.stop_reason_token is not None:
        choice["stop_reason"] = None if r.tool_calls else d.stop_reason_token
    body: dict[str, Any] = {"id": f"chatcmpl-{counter}", "object": "chat.completion",
                            "model": d.served_model or model, "choices": [choice],
                            "usage": render_usage(d, r)}
    if d.usage_style == "llamacpp":
        body["timings"] = {"prompt_n": 40, "predicted_n": 30, "predicted_per_second": 50.0}
    if d.usage_style == "groq":
        body["x_groq"] = {"id": f"req_{counter:026d}"}
    return body, issued


def _pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] if text else []


def _reasoning_deltas(d: Dialect, r: Reply, sig: str, size: int) -> list[dict[str, Any]]:
    """Reasoning fragments in the dialect's field(s); OpenRouter's details fragments open with
    a ``signature: ""`` placeholder, the signature arrives last, then the encrypted twin."""
    parts = _pieces(r.reasoning or "", size) if d.reasoning_fields else []
    deltas = []
    for n, piece in enumerate(parts):
        delta: dict[str, Any] = {"content": None, **{f: piece for f in d.reasoning_fields}}
        if d.reasoning_channel:
            delta["channel"] = "analysis"
        if d.details:
            item: dict[str, Any] = {"type": "reasoning.text", "text": piece, "format": _OR_FORMAT,
                                    "index": 0}
            if n == 0:
                item["signature"] = ""
            delta["reasoning_details"] = [item]
        deltas.append(delta)
    if d.details and parts:
        deltas.append({"content": "", "reasoning": None, "reasoning_details": [
            {"type": "reasoning.text", "text": "", "signature": sig, "format": _OR_FORMAT,
             "index": 0}]})
        deltas.append({"content": "", "reasoning": None, "reasoning_details": [
            {"type": "reasoning.encrypted", "data": f"enc-{sig}", "format": _OR_FORMAT,
             "index": 0}]})
    return deltas


def _content_deltas(d: Dialect, r: Reply, size: int) -> list[dict[str, Any]]:
    if d.gemini and r.reasoning:
        deltas: list[dict[str, Any]] = [
            {"content": piece, "extra_content": {"google": {"thought": True}}}
            for piece in _pieces(d.think_tag[0] + r.reasoning, size)]
        deltas.append({"content": d.think_tag[1]})
        return deltas + [{"content": p} for p in _pieces(r.content or "", size)]
    if d.content_chunks and r.reasoning:
        # thinking as chunk lists; the last one closes it and may carry the first text chunk,
        # then the answer comes as plain strings
        thought, text = _pieces(r.reasoning, size), _pieces(r.content or "", size)
        deltas = [{"content": [_thinking_chunk(p)]} for p in thought[:-1]]
        last: list[Any] = [_thinking_chunk(thought[-1], closed=True)]
        if text:
            last.append({"type": "text", "text": text.pop(0)})
        return deltas + [{"content": last}] + [{"content": p} for p in text]
    extra = {"reasoning": None} if d.details else {}
    return [{"content": p, **extra} for p in _pieces(_tagged(d, r), size)]


def _stream_deltas(d: Dialect, r: Reply, ids: list[str], sig: str, size: int) -> list[dict[str, Any]]:
    first: dict[str, Any] = {"role": "assistant", "content": None if d.reasoning_fields else ""}
    first.update({f: "" for f in d.reasoning_fields})
    first.update(r.extra or {})
    deltas = [first, *_reasoning_deltas(d, r, sig, size), *_content_deltas(d, r, size)]
    if not d.text_tools:
        for n, call in enumerate(_wire_calls(d, r, ids, sig)):
            deltas.extend(_call_fragments(d, n, call))
    if d.message_signature and r.reasoning and not r.tool_calls:
        deltas.append({"content": "", "thought_signature": sig, "extra_content": {
            "google": {"thought": True, "thought_signature": sig}}})
    return deltas


def _call_fragments(d: Dialect, n: int, call: dict[str, Any]) -> list[dict[str, Any]]:
    if d.gemini:  # whole call in one chunk, no index
        return [{"tool_calls": [{k: v for k, v in call.items() if k != "index"}]}]
    index = 0 if d.reuse_index else n
    if d.whole_calls:
        return [{"tool_calls": [{**call, "index": index}]}]
    args = call["function"]["arguments"]
    half = len(args) // 2
    head = {"index": index, "id": call["id"], "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""}}
    return [{"tool_calls": [head]},
            {"tool_calls": [{"index": index, "function": {"arguments": args[:half]}}]},
            {"tool_calls": [{"index": index, "function": {"arguments": args[half:]}}]}]


def render_chunks(d: Dialect, r: Reply, counter: int, model: str, *, include_usage: bool,
                  size: int) -> tuple[list[dict[str, Any] | str], Issued]:
    """The SSE frames of one streamed turn (without the final [DONE]): `data:` payloads, and
    comment lines as ready-made frame text."""
    _, issued = render_json(d, r, counter, model)
    ids, sig = call_ids(d, r, counter), signature_for(r, counter)
    usage = render_usage(d, r)
    token = iter(range(1000, 10**6))

    def wrap(delta: dict[str, Any], fr: str | None = None) -> dict[str, Any]:
        if d.role_every_chunk:
            delta = {"role": "assistant", **delta, "token_id": next(token)}
        choice: dict[str, Any] = {"index": 0, "delta": delta}
        if fr is not None or not d.omit_null_finish:
            choice["finish_reason"] = fr
        if d.stop_reason_token is not None:
            choice["stop_reason"] = d.stop_reason_token if fr == "stop" else None
        if d.details and fr is not None:
            choice["native_finish_reason"] = "tool_use" if fr == "tool_calls" else "end_turn"
        chunk: dict[str, Any] = {"id": f"chatcmpl-{counter}", "object": "chat.completion.chunk",
                                 "model": d.served_model or model, "choices": [choice]}
        if d.gemini and include_usage:
            chunk["usage"] = usage
        if d.usage_style == "groq" and fr is not None:  # Groq: usage rides in x_groq
            chunk["x_groq"] = {"id": f"req_{counter:026d}", "usage": usage}
        if d.usage_style == "mistral" and fr is not None:  # always, no stream_options needed
            chunk["usage"] = usage
        return chunk

    if issued.details:  # what a client gets by concatenating the fragments per index and type
        issued.details = [{"type": "reasoning.text", "text": r.reasoning, "format": _OR_FORMAT,
                           "index": 0, "signature": sig},
                          {"type": "reasoning.encrypted", "data": f"enc-{sig}", "format": _OR_FORMAT,
                           "index": 0}]
    chunks: list[dict[str, Any] | str] = [f"{c}\n\n" for c in d.comments]
    chunks += [wrap(delta) for delta in _stream_deltas(d, r, ids, sig, size)]
    chunks.append(wrap({"role": "assistant"} if d.gemini else {}, _finish(d, r, stream=True)))
    if include_usage and not d.gemini and d.usage_style != "mistral":
        chunks.append({"id": f"chatcmpl-{counter}", "object": "chat.completion.chunk",
                       "model": d.served_model or model, "choices": [], "usage": usage})
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
            if not c.get("id"):
                return _bad(f"messages[{i}].tool_calls[{n}].id must not be empty", array=True)
            want = _issued_extra(c, issued)
            if want and c.get("extra_content") != want:
                return _bad(f"Function call is missing a thought_signature in functionCall parts. "
                            f"This is required for tools to work correctly (messages[{i}]."
                            f"tool_calls[{n}]).", array=True)
    return None


def _issued_extra(c: dict[str, Any], issued: Mapping[str, Issued]) -> Any:
    """The extra_content issued with this call: by id, or (ids were empty) by name and
    arguments."""
    sent = issued.get(str(c.get("id")))
    if sent is not None and str(c.get("id")) in sent.extra:
        return sent.extra[str(c.get("id"))]
    fn = c.get("function") or {}
    key = call_key(str(fn.get("name")), str(fn.get("arguments")))
    return next((x.extra[key] for x in issued.values() if key in x.extra), None)


_MISTRAL_ID = re.compile(r"[A-Za-z0-9]{9}")
#: request fields Mistral's schema does not have (it answers 422 "Extra inputs are not permitted")
_MISTRAL_UNKNOWN = ("stream_options", "max_completion_tokens", "seed", "reasoning",
                    "chat_template_kwargs")


def _check_mistral(d: Dialect, body: dict[str, Any], issued: Mapping[str, Issued]) -> ErrorReply | None:
    for key in _MISTRAL_UNKNOWN:
        if key in body:
            return ErrorReply(422, {"object": "error", "type": "invalid_request_error", "message": {
                "detail": [{"type": "extra_forbidden", "loc": ["body", key],
                            "msg": "Extra inputs are not permitted", "input": body[key]}]}})
    for m in body.get("messages") or []:
        ids = [str(c.get("id")) for c in m.get("tool_calls") or []]
        ids += [str(m["tool_call_id"])] if m.get("role") == "tool" else []
        for id_ in ids:
            if not _MISTRAL_ID.fullmatch(id_):
                return ErrorReply(400, {"object": "error", "type": "invalid_request_message_order",
                                        "message": f"Tool call id was {id_} but must be a-z, A-Z, "
                                                   "0-9, with a length of 9.", "code": "3280"})
    return None


def _check_groq(d: Dialect, body: dict[str, Any], issued: Mapping[str, Issued]) -> ErrorReply | None:
    for i, m in enumerate(body.get("messages") or []):
        for key in ("reasoning_content", "reasoning"):
            if m.get("role") == "assistant" and key in m:
                return _bad(f"'messages.{i}' : for 'role:assistant' the following must be "
                            f"satisfied[('messages.{i}' : property '{key}' is unsupported)]")
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
    "xai": _check_xai, "mistral": _check_mistral, "groq": _check_groq,
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
        got = _chunk_reasoning(m) if d.content_chunks else m.get(d.replay_field)
        if sent is not None and sent.reasoning and in_scope and got != sent.reasoning:
            where = "a thinking chunk in `content`" if d.content_chunks else f"`{d.replay_field}`"
            return _bad(f"scripted server (strict replay, dialect {d.name}): messages[{i}] must "
                        f"carry {where} exactly as issued; got {got!r}")
    return None


def _chunk_reasoning(m: dict[str, Any]) -> str | None:
    content = m.get("content")
    if not isinstance(content, list):
        return None
    return "".join(str(t.get("text", "")) for c in content if isinstance(c, dict)
                   and c.get("type") == "thinking" for t in c.get("thinking") or []
                   if isinstance(t, dict))


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
