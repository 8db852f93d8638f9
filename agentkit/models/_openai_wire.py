"""Chat Completions wire format: neutral messages -> request body, chunks -> `Turn`.

Streaming and non-streaming share one path: a non-streamed response is fed to `TurnBuilder`
as a single chunk whose `delta` is the whole message. All provider differences come from the
`Profile` (fields, tags, replay rule, refusals), never from the provider's name.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Sequence
from typing import Any

from agentkit.messages import (
    Message,
    Part,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    ToolSpec,
    Turn,
    Usage,
)
from agentkit.models._parsing import (
    Piece,
    ThinkSplitter,
    ToolCallAccumulator,
    content_pieces,
    extract_text_tool_calls,
    merge_extra,
)
from agentkit.models.base import Delta, DeltaCallback, ModelSettings
from agentkit.models.context import current_call
from agentkit.models.profiles import Profile, reasoning_params, thinking_enabled
from agentkit.task import ModelSpec

__all__ = ["TurnBuilder", "build_body", "normalise_finish", "openai_usage", "provider_cost",
           "wire_call_id"]

_WIRE_FIELDS = ("reasoning_content", "reasoning")
_FINISH = {"tool_calls": "tool_calls", "function_call": "tool_calls", "stop": "stop",
           "eos": "stop", "end_turn": "stop", "length": "length", "max_tokens": "length",
           "content_filter": "content_filter"}
_ALNUM = string.ascii_letters + string.digits
#: json.dumps(ensure_ascii=False), its encoder made once: every turn re-sends the arguments of
#: every tool call in the history, and json.dumps with options builds an encoder per call
_ARGUMENTS = json.JSONEncoder(ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# Request


def build_body(profile: Profile, spec: ModelSpec, messages: Sequence[Message],
               tools: Sequence[ToolSpec], settings: ModelSettings, *, stream: bool
               ) -> dict[str, Any]:
    """The request body: messages per the replay rule, settings minus refused parameters
    (renamed where the provider names them differently), reasoning parameters per the
    profile, then `extra_body` passed through unchanged."""
    model = spec.model
    body: dict[str, Any] = {"model": model, "messages": wire_messages(profile, messages)}
    if tools:
        body["tools"] = [{"type": "function", "function": {
            "name": t.name, "description": t.description, "parameters": t.parameters}}
            for t in tools]
        choice = settings.tool_choice
        allowed = profile.thinking_tool_choice
        if choice and allowed and choice not in allowed and thinking_enabled(profile, spec.reasoning):
            choice = "auto"  # thinking mode refuses forced tool use
        if choice:
            body["tool_choice"] = choice
    max_tokens = settings.max_tokens if settings.max_tokens is not None else spec.max_tokens
    temperature = settings.temperature if settings.temperature is not None else spec.temperature
    optional = {profile.max_tokens_param: max_tokens, "temperature": temperature,
                "top_p": settings.top_p, "seed": settings.seed, "stop": settings.stop}
    body.update({k: v for k, v in optional.items() if v is not None})
    body.update(reasoning_params(profile, spec.reasoning, model=model, stream=stream))
    if stream:
        body["stream"] = True
        if profile.stream_usage:
            body["stream_options"] = {"include_usage": True}
    for key in [k for k in body if k not in ("model", "messages")]:
        if profile.refuses(key, model):
            del body[key]
    for ours, theirs in profile.renamed_params:
        if ours in body:
            body[theirs] = body.pop(ours)
    body.update(spec.extra_body)
    body.update(settings.extra_body)
    return body


def wire_messages(profile: Profile, messages: Sequence[Message]) -> list[dict[str, Any]]:
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if m.role == "assistant":
            out.append(_assistant(profile, m, in_tool_loop=i > last_user))
        elif m.role == "tool":
            out.extend({"role": "tool", "tool_call_id": wire_call_id(profile, p.call_id),
                        "content": p.content}
                       for p in m.parts if isinstance(p, ToolResultPart))
        else:
            out.append({"role": m.role, "content": m.text})
    return out


def wire_call_id(profile: Profile, id_: str) -> str:
    """The id as issued, unless the provider accepts only ids of N letters and digits (Mistral)
    and this one is not: then a derived one, identical on the call and on its result."""
    size = profile.replay.call_id_alnum
    if size is None or (len(id_) == size and id_.isascii() and id_.isalnum()):
        return id_
    number = int(hashlib.sha256(id_.encode()).hexdigest(), 16)
    chars = []
    for _ in range(size):
        number, digit = divmod(number, len(_ALNUM))
        chars.append(_ALNUM[digit])
    return "".join(chars)


def _assistant(profile: Profile, m: Message, *, in_tool_loop: bool) -> dict[str, Any]:
    rule = profile.replay
    calls = m.tool_calls
    out: dict[str, Any] = {"role": "assistant", "content": m.text}
    mine = [p for p in m.parts if isinstance(p, ReasoningPart) and p.provider in (None, profile.name)]
    text = "".join(p.text for p in mine)
    if rule.scope == "all" or (rule.scope == "tool_loop" and in_tool_loop):
        if rule.content_chunks:
            if text:
                out["content"] = _thinking_chunks(mine, text, m.text)
        elif text or (rule.placeholder and calls):
            came_in = next((p.field for p in mine if p.field in _WIRE_FIELDS), None)
            out[rule.field or came_in or "reasoning_content"] = text
        if rule.details:
            details = [d for p in mine if isinstance(p.opaque, list) for d in p.opaque]
            if details:
                out["reasoning_details"] = details
    if calls:
        out["tool_calls"] = [_wire_call(profile, c) for c in calls]
    if rule.extra_content:
        out.update(_echoed(m.extra.get(profile.name) if m.extra else None))
    return out


def _thinking_chunks(mine: Sequence[ReasoningPart], reasoning: str, text: str
                     ) -> list[dict[str, Any]]:
    """Mistral's content list: the thinking chunk (with the attributes it came with, such as
    ``closed``), then the answer as a text chunk."""
    attrs = next((p.opaque for p in mine if isinstance(p.opaque, dict)
                  and p.opaque.get("type") == "thinking"), {"type": "thinking"})
    chunks = [{**attrs, "thinking": [{"type": "text", "text": reasoning}]}]
    if text:
        chunks.append({"type": "text", "text": text})
    return chunks


def _echoed(stored: Any) -> dict[str, Any]:
    """Gemini data to echo where it came from: ``extra_content`` (its thought signature,
    without the ``thought`` marker of streamed thought text) and a top-level
    ``thought_signature``."""
    if not isinstance(stored, dict):
        return {}
    out: dict[str, Any] = {}
    extra = stored.get("extra_content")
    if isinstance(extra, dict):
        out["extra_content"] = {k: {kk: vv for kk, vv in v.items() if kk != "thought"}
                                if isinstance(v, dict) else v for k, v in extra.items()}
    if stored.get("thought_signature"):
        out["thought_signature"] = stored["thought_signature"]
    return out


def _wire_call(profile: Profile, c: ToolCallPart) -> dict[str, Any]:
    wire: dict[str, Any] = {"id": wire_call_id(profile, c.id), "type": "function", "function": {
        "name": c.name, "arguments": _ARGUMENTS.encode(c.arguments)}}
    extra = c.extra or {}
    if profile.replay.extra_content and extra.get("provider") == profile.name:
        wire.update(_echoed(extra))
    return wire


# ---------------------------------------------------------------------------------------------
# Response


def openai_usage(u: dict[str, Any] | None) -> Usage:
    """Token counts wherever the provider puts them: cached prompt tokens in
    ``prompt_tokens_details.cached_tokens`` (OpenAI), ``prompt_cache_hit_tokens`` (DeepSeek),
    top-level ``cached_tokens`` (Together, Hugging Face router) or ``num_cached_tokens``
    (Mistral)."""
    if not isinstance(u, dict):
        return Usage()
    details = u.get("completion_tokens_details") or {}
    prompt_details = u.get("prompt_tokens_details") or {}
    cached = (prompt_details.get("cached_tokens") or u.get("prompt_cache_hit_tokens")
              or u.get("cached_tokens") or u.get("num_cached_tokens") or 0)
    return Usage(input_tokens=u.get("prompt_tokens") or 0,
                 output_tokens=u.get("completion_tokens") or 0,
                 reasoning_tokens=details.get("reasoning_tokens") or 0, cached_tokens=cached)


def provider_cost(u: dict[str, Any] | None) -> float | None:
    """What the provider says the call cost (OpenRouter ``usage.cost``: the credits charged;
    on a bring-your-own-key call the upstream bill, ``cost_details.upstream_inference_cost``,
    is paid separately and is added)."""
    cost = u.get("cost") if isinstance(u, dict) else None
    if not isinstance(cost, int | float) or isinstance(cost, bool):
        return None
    total = float(cost)
    upstream = (u.get("cost_details") or {}).get("upstream_inference_cost") \
        if isinstance(u, dict) and u.get("is_byok") is True else None
    if isinstance(upstream, int | float) and not isinstance(upstream, bool):
        total += float(upstream)
    return total


def normalise_finish(raw: str | None, has_calls: bool) -> str | None:
    """Normalised finish reason; a turn with tool calls reports ``tool_calls`` even when the
    provider said ``stop`` (Gemini streaming, Ollama)."""
    fr = _FINISH.get(raw, raw) if raw else None
    return "tool_calls" if has_calls and fr in (None, "stop") else fr


class TurnBuilder:
    """Assembles chunks (or one whole message) into a `Turn`, reporting deltas as they come."""

    def __init__(self, profile: Profile, *, tool_names: Sequence[str],
                 on_delta: DeltaCallback | None = None) -> None:
        self._p = profile
        self._tool_names = tuple(tool_names)
        self._on_delta = on_delta
        self._reasoning: list[str] = []
        self._field: str | None = None
        self._text: list[str] = []
        self._details: list[dict[str, Any]] = []
        self._chunk_attrs: dict[str, Any] | None = None
        self._calls = ToolCallAccumulator()
        self._split = (ThinkSplitter(profile.think_tags, implicit_open=profile.implicit_think_open)
                       if profile.think_tags else None)
        self._msg_extra: dict[str, Any] = {}
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.response_id: str | None = None

    def feed(self, chunk: dict[str, Any]) -> None:
        self.response_id = chunk.get("id") or self.response_id
        self.model = chunk.get("model") or self.model
        groq = chunk.get("x_groq")
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]  # Gemini repeats it on every chunk: keep the last
        elif isinstance(groq, dict) and isinstance(groq.get("usage"), dict):
            self.usage = groq["usage"]  # Groq streams put it under x_groq
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            whole = choice.get("message")
            if isinstance(whole, dict):  # a non-streamed message: each call is complete
                calls = [{"index": n, **c} if isinstance(c, dict) and "index" not in c else c
                         for n, c in enumerate(whole.get("tool_calls") or [])]
                self._delta({**whole, "tool_calls": calls})
            else:
                self._delta(choice.get("delta") or {})
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]

    def _emit(self, kind: str, text: str, index: int | None = None) -> None:
        if kind == "reasoning":
            self._reasoning.append(text)
        elif kind == "text":
            self._text.append(text)
        if self._on_delta is not None and (text or kind == "tool_call"):
            self._on_delta(Delta(kind=kind, text=text, tool_call_index=index))

    def _reasoning_arrived(self, field: str, text: str) -> None:
        """Reasoning from a field or a chunk: the server separates it, so content held back
        waiting for a lone close tag is text after all."""
        self._field = self._field or field
        self._emit("reasoning", text)
        for kind, piece in (self._split.assume_text() if self._split else []):
            self._emit(kind, piece)

    def _delta(self, d: dict[str, Any]) -> None:
        took_field = False
        for name in self._p.reasoning_fields:
            value = d.get(name)
            if isinstance(value, str) and value:
                self._reasoning_arrived(name, value)
                took_field = True
                break
        for item in d.get("reasoning_details") or []:
            if isinstance(item, dict):
                self._add_detail(item, emit_text=not took_field)
        content = d.get("content")
        if isinstance(content, str) and content and d.get("channel") == "analysis" and not took_field:
            self._reasoning_arrived("channel_analysis", content)  # harmony's reasoning channel
        elif isinstance(content, str) and content:
            self._text_piece(content)
        elif isinstance(content, list):  # typed chunks (Mistral)
            for kind, text, attrs in content_pieces(content):
                if kind == "reasoning":
                    self._chunk_attrs = {"type": "thinking", **(self._chunk_attrs or {}), **attrs}
                    if text:
                        self._reasoning_arrived("thinking_chunk", text)
                elif text:
                    self._text_piece(text)
        for frag in d.get("tool_calls") or []:
            if isinstance(frag, dict):
                index = self._calls.add(frag)
                args = (frag.get("function") or {}).get("arguments")
                self._emit("tool_call", args if isinstance(args, str) else "", index)
        self._keep_message_extra(d)

    def _text_piece(self, content: str) -> None:
        pieces: list[Piece] = self._split.feed(content) if self._split else [("text", content)]
        for kind, piece in pieces:
            self._emit(kind, piece)

    def _keep_message_extra(self, d: dict[str, Any]) -> None:
        """Gemini signs the message itself too: ``extra_content.google.thought_signature``
        (possibly on a delta also marked ``thought: true``) and a duplicate top-level
        ``thought_signature``. Markers without a signature are not kept."""
        extra = d.get("extra_content")
        if isinstance(extra, dict):
            self._msg_extra["extra_content"] = merge_extra(self._msg_extra.get("extra_content"),
                                                           extra)
        signature = d.get("thought_signature")
        if isinstance(signature, str) and signature:
            self._msg_extra["thought_signature"] = signature

    def _add_detail(self, item: dict[str, Any], *, emit_text: bool) -> None:
        """OpenRouter reasoning_details: stream fragments with the same `index` and type are
        concatenated (two types may share an index: text and its encrypted twin); everything
        else is kept in order, unmodified. A signature never goes back to ``""``."""
        text = item.get("text") or item.get("summary") or ""
        if emit_text and isinstance(text, str) and text:
            self._field = self._field or "reasoning_details"
            self._emit("reasoning", text)
        index = item.get("index")
        same = next((d for d in reversed(self._details) if index is not None
                     and d.get("index") == index and d.get("type") == item.get("type")), None)
        if same is None:
            self._details.append(dict(item))
            return
        for key, value in item.items():
            if key in ("text", "summary", "data") and isinstance(value, str):
                same[key] = (same.get(key) or "") + value
            elif value is not None and not (value == "" and same.get(key)):
                same[key] = value

    def build(self, provider: str) -> Turn:
        if self._split is not None:
            cut_short = self.finish in ("length", "max_tokens") and self._field is None
            for kind, piece in self._split.finish(truncated=cut_short):
                self._emit(kind, piece)
        text = "".join(self._text)
        reasoning = "".join(self._reasoning)
        seed = self.response_id or current_call().seed()  # ids a provider did not send
        calls = self._calls.calls(provider, seed=seed)
        if not calls and self._p.text_tool_calls:
            text, calls = extract_text_tool_calls(text, self._tool_names, seed=seed)
            if not calls and "<tool_call>" in reasoning:  # a call emitted inside <think>
                reasoning, calls = extract_text_tool_calls(reasoning, self._tool_names, seed=seed)
        parts: list[Part] = []
        if reasoning or self._details:
            opaque: Any = self._details or (self._chunk_attrs if self._field == "thinking_chunk"
                                            else None)
            parts.append(ReasoningPart(text=reasoning, provider=provider,
                                       field=self._field or "think_tag", opaque=opaque))
        if text:
            parts.append(TextPart(text=text))
        parts.extend(calls)
        kept = {k: v for k, v in self._msg_extra.items() if k != "extra_content" or any(
            isinstance(g, dict) and g.get("thought_signature") for g in v.values())}
        extra = {provider: kept} if kept else None
        return Turn(message=Message(role="assistant", parts=tuple(parts), extra=extra),
                    usage=openai_usage(self.usage), finish_reason=normalise_finish(self.finish, bool(calls)),
                    model=self.model, provider=provider, response_id=self.response_id,
                    provider_cost_usd=provider_cost(self.usage))
