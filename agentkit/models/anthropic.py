"""`AnthropicModel`: the Anthropic Messages API over httpx (Claude thinking blocks with signatures).

Thinking blocks keep their `signature` and `redacted_thinking` blocks are kept whole, so the
last assistant turn can start with them verbatim, as the API demands when thinking is on. JSON
and named-event SSE responses are both reduced to a list of content blocks and converted to
a `Turn` by one function. Adapters never retry; 529 (overloaded) is marked retryable.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import httpx

from agentkit.clock import Clock
from agentkit.errors import ConfigError, ProviderResponseError
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
from agentkit.models._http import (
    Body,
    CallLimits,
    Clients,
    Endpoint,
    iter_sse,
    loads,
    post,
    stream_error,
)
from agentkit.models._parsing import make_tool_call
from agentkit.models.base import Delta, DeltaCallback, ModelSettings
from agentkit.models.profiles import Profile, get_profile, reasoning_params, thinking_enabled
from agentkit.task import ModelSpec

__all__ = ["AnthropicModel"]

API_VERSION = "2023-06-01"
INTERLEAVED_BETA = "interleaved-thinking-2025-05-14"
_CLAUDE_4 = re.compile(r"claude-(opus|sonnet|haiku)-4|claude-4")
_DEFAULT_MAX_TOKENS = 4096
_STOP = {"end_turn": "stop", "stop_sequence": "stop", "tool_use": "tool_calls",
         "max_tokens": "length", "refusal": "content_filter"}
#: delta type -> (block field to extend, delta key, Delta kind for on_delta)
_DELTAS: dict[str, tuple[str, str, str | None]] = {
    "thinking_delta": ("thinking", "thinking", "reasoning"),
    "text_delta": ("text", "text", "text"),
    "signature_delta": ("signature", "signature", None),
    "input_json_delta": ("_json", "partial_json", "tool_call"),
}
_CHOICE = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}


def _status_of(kind: str) -> int:
    return {"overloaded_error": 529, "rate_limit_error": 429, "api_error": 500,
            "invalid_request_error": 400}.get(kind, 500)


class AnthropicModel:
    """The Messages API. Construction does no I/O."""

    def __init__(self, spec: ModelSpec, *, name: str, api_key: str | None,
                 base_url: str | None, profile: Profile, http: httpx.AsyncClient | None = None,
                 clock: Clock | None = None) -> None:
        if profile.wire != "anthropic":
            if profile.name != "generic":
                raise ConfigError(f"model {name!r}: provider 'anthropic' speaks the Messages API, "
                                  f"but profile {profile.name!r} is for another wire; use "
                                  "profile: anthropic (or provider: openai)")
            profile = get_profile("anthropic")  # the default profile: take the only one that fits
        root = (base_url or spec.base_url or profile.base_url or "https://api.anthropic.com").rstrip("/")
        self.name = name
        self.spec = spec
        self.profile = profile
        self._url = root + ("/messages" if root.endswith("/v1") else "/v1/messages")
        self._ep = Endpoint(provider=profile.name, model=spec.model, api_key=api_key)
        self.base_url = root
        self._http = http
        self._clients: Clients | None = None
        self._clock = clock
        self._limits = CallLimits(spec.timeout_s, spec.max_response_bytes, f"models.{name}")

    def _client(self) -> Clients:
        if self._clients is None:
            self._clients = Clients(self.spec.timeout_s, self._http,
                                    tls=not self._url.startswith("http://"))
        return self._clients

    def build_request(self, messages: Sequence[Message], tools: Sequence[ToolSpec],
                      settings: ModelSettings, *, stream: bool) -> tuple[dict[str, Any], dict[str, str]]:
        """(body, headers) for one call."""
        spec, on = self.spec, thinking_enabled(self.profile, self.spec.reasoning)
        system = "\n\n".join(m.text for m in messages if m.role == "system")
        body: dict[str, Any] = {"model": spec.model, "messages": _wire_messages(messages)}
        if system:
            body["system"] = system
        body["max_tokens"] = settings.max_tokens or spec.max_tokens or _DEFAULT_MAX_TOKENS
        body.update(reasoning_params(self.profile, spec.reasoning, model=spec.model, stream=stream))
        if "budget_tokens" in body.get("thinking", {}) and self.profile.refuses("budget_tokens", spec.model):
            body["thinking"] = {"type": "adaptive"}
        budget = (body.get("thinking") or {}).get("budget_tokens")
        if budget is not None and body["max_tokens"] <= budget:
            body["max_tokens"] += budget  # budget_tokens must stay below max_tokens
        if tools:
            body["tools"] = [{"name": t.name, "description": t.description,
                              "input_schema": t.parameters} for t in tools]
            choice = settings.tool_choice
            if choice and on and choice not in (self.profile.thinking_tool_choice or (choice,)):
                choice = "auto"  # "Thinking may not be enabled when tool_choice forces tool use"
            if choice:
                body["tool_choice"] = _CHOICE[choice]
        temperature = settings.temperature if settings.temperature is not None else spec.temperature
        if temperature is not None and not on:  # thinking accepts only the default temperature
            body["temperature"] = temperature
        if settings.stop:
            body["stop_sequences"] = settings.stop
        if stream:
            body["stream"] = True
        body.update(spec.extra_body)
        body.update(settings.extra_body)
        headers = {"Content-Type": "application/json", "anthropic-version": API_VERSION}
        if self._ep.api_key:
            headers["x-api-key"] = self._ep.api_key
        if budget is not None and _CLAUDE_4.search(spec.model):
            headers["anthropic-beta"] = INTERLEAVED_BETA
        headers.update(spec.headers)
        return body, headers

    async def turn(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                   settings: ModelSettings | None = None, *,
                   on_delta: DeltaCallback | None = None) -> Turn:
        stream = self.spec.stream if isinstance(self.spec.stream, bool) else on_delta is not None
        body, headers = self.build_request(messages, tools, settings or ModelSettings(), stream=stream)
        async with post(self._client(), self._url, body=body, headers=headers, ep=self._ep,
                        limits=self._limits, clock=self._clock) as resp:
            if stream:
                acc = await self._read_stream(resp, on_delta)
            else:
                data = loads(await resp.text(), self._ep, "response")
                if not isinstance(data, dict) or data.get("type") == "error":
                    raise stream_error(data or {}, self._ep, _status_of)
                acc = {"blocks": list(data.get("content") or []), "message": data,
                       "stop_reason": data.get("stop_reason"), "usage": data.get("usage") or {}}
        return self._to_turn(acc)

    async def _read_stream(self, resp: Body, on_delta: DeltaCallback | None) -> dict[str, Any]:
        acc: dict[str, Any] = {"blocks": {}, "message": {}, "stop_reason": None, "usage": {}}
        done = False
        async for event in iter_sse(resp):
            if not event.data.strip():
                continue
            data = loads(event.data, self._ep, "stream event")
            # names and payloads may be padded with whitespace; the payload's type decides
            kind = (event.event or "").strip() or data.get("type")
            if kind == "error":
                raise stream_error(data, self._ep, _status_of)
            if kind == "message_stop":
                done = True
                break
            _apply_event(acc, kind, data, on_delta)
        if not done:
            raise ProviderResponseError("the stream ended before message_stop",
                                        provider=self._ep.provider, model=self._ep.model,
                                        retryable=True)
        acc["blocks"] = [acc["blocks"][i] for i in sorted(acc["blocks"])]
        return acc

    def _to_turn(self, acc: dict[str, Any]) -> Turn:
        parts: list[Part] = []
        for block in acc["blocks"]:
            part = _block_to_part(block, self.profile.name)
            if part is not None:
                parts.append(part)
        usage = _usage(acc["usage"])
        stop = acc["stop_reason"]
        has_calls = any(isinstance(p, ToolCallPart) for p in parts)
        finish = _STOP.get(stop, stop) if stop else None
        if has_calls and finish in (None, "stop"):
            finish = "tool_calls"
        return Turn(message=Message(role="assistant", parts=tuple(parts)), usage=usage,
                    finish_reason=finish, model=acc["message"].get("model"),
                    provider=self.profile.name, response_id=acc["message"].get("id"))

    async def aclose(self) -> None:
        if self._clients is not None:  # closes only the clients it made, never a given one
            await self._clients.aclose()
            self._clients = None


def _usage(u: dict[str, Any]) -> Usage:
    """Input counts cache reads and writes (Anthropic reports them apart); thinking tokens
    come in ``output_tokens_details.thinking_tokens`` and are part of `output_tokens`."""
    cached = u.get("cache_read_input_tokens") or 0
    details = u.get("output_tokens_details")
    details = details if isinstance(details, dict) else {}
    thinking = details.get("thinking_tokens") or details.get("reasoning_tokens") or 0
    return Usage(input_tokens=(u.get("input_tokens") or 0) + cached
                 + (u.get("cache_creation_input_tokens") or 0),
                 output_tokens=u.get("output_tokens") or 0, reasoning_tokens=thinking,
                 cached_tokens=cached)


def _apply_event(acc: dict[str, Any], kind: str | None, data: dict[str, Any],
                 on_delta: DeltaCallback | None) -> None:
    """Fold one named SSE event into the accumulator (blocks by index, usage, stop reason)."""
    if kind == "message_start":
        acc["message"] = data.get("message") or {}
        acc["usage"].update(acc["message"].get("usage") or {})
    elif kind == "content_block_start":
        acc["blocks"][data["index"]] = dict(data.get("content_block") or {})
    elif kind == "content_block_delta":
        block, delta = acc["blocks"].setdefault(data["index"], {}), data.get("delta") or {}
        spec = _DELTAS.get(str(delta.get("type")))
        if spec is not None:
            field, key, out_kind = spec
            piece = str(delta.get(key) or "")
            block[field] = (block.get(field) or "") + piece
            if on_delta is not None and out_kind is not None:
                on_delta(Delta(kind=out_kind, text=piece,
                               tool_call_index=data["index"] if out_kind == "tool_call" else None))
    elif kind == "message_delta":
        # its usage repeats input and cache counts (cumulative values, not increments)
        acc["stop_reason"] = (data.get("delta") or {}).get("stop_reason") or acc["stop_reason"]
        acc["usage"].update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})


def _block_to_part(block: dict[str, Any], provider: str) -> Part | None:
    kind = block.get("type")
    if kind == "thinking":
        return ReasoningPart(text=block.get("thinking") or "", signature=block.get("signature"),
                             provider=provider, field="thinking")
    if kind == "redacted_thinking":
        return ReasoningPart(text="", opaque=dict(block), provider=provider, field="redacted_thinking")
    if kind == "text":
        return TextPart(text=block.get("text") or "") if block.get("text") else None
    if kind in ("tool_use", "server_tool_use"):
        raw = block["_json"] if "_json" in block else block.get("input")
        return make_tool_call(str(block.get("id")), str(block.get("name")), raw)
    return None


# ---------------------------------------------------------------------------------------------
# Request messages


def _assistant_blocks(m: Message) -> list[dict[str, Any]]:
    """Blocks in the order received; only Anthropic's own signed thinking goes back."""
    blocks: list[dict[str, Any]] = []
    for p in m.parts:
        if isinstance(p, ReasoningPart) and p.provider in ("anthropic", None):
            if isinstance(p.opaque, dict) and p.opaque.get("type") == "redacted_thinking":
                blocks.append(dict(p.opaque))
            elif p.signature:
                blocks.append({"type": "thinking", "thinking": p.text, "signature": p.signature})
        elif isinstance(p, TextPart) and p.text:
            blocks.append({"type": "text", "text": p.text})
        elif isinstance(p, ToolCallPart):
            blocks.append({"type": "tool_use", "id": p.id, "name": p.name, "input": p.arguments})
    return blocks


def _wire_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        if m.role == "assistant":
            role, blocks = "assistant", _assistant_blocks(m)
        elif m.role == "tool":
            role, blocks = "user", [{"type": "tool_result", "tool_use_id": p.call_id,
                                     "content": p.content, **({"is_error": True} if p.is_error else {})}
                                    for p in m.parts if isinstance(p, ToolResultPart)]
        else:
            role, blocks = "user", [{"type": "text", "text": m.text}]
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)  # the API wants alternating roles
        else:
            out.append({"role": role, "content": blocks})
    return out
