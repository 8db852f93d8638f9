"""`OpenAIResponsesModel`: the OpenAI Responses API, stateless (`store: false`).

Reasoning survives tool calls here only if each `reasoning` output item (with its
`encrypted_content`) is sent back verbatim, immediately before the item it led to (a
`function_call`, or a `message` carrying the `id` it was issued with, else the API's 400
"...provided without its required following item"); the reasoning item is kept whole in
`ReasoningPart.opaque`, message items (id, `phase`) in `Message.extra`. Streamed and non-streamed responses
both end as the list of output items and become a `Turn` through one function.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import httpx

from agentkit.clock import Clock
from agentkit.errors import ProviderResponseError
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
from agentkit.models.profiles import Profile, reasoning_params
from agentkit.task import ModelSpec

__all__ = ["OpenAIResponsesModel"]

#: streamed delta event -> Delta kind
_DELTAS = {"response.reasoning_summary_text.delta": "reasoning",
           "response.reasoning_text.delta": "reasoning",
           "response.output_text.delta": "text",
           "response.function_call_arguments.delta": "tool_call"}


def _status_of(kind: str) -> int:
    return 429 if "rate" in kind else 400 if "invalid" in kind else 500


class OpenAIResponsesModel:
    """The Responses API. Construction does no I/O."""

    def __init__(self, spec: ModelSpec, *, name: str, api_key: str | None,
                 base_url: str | None, profile: Profile, http: httpx.AsyncClient | None = None,
                 clock: Clock | None = None) -> None:
        url = (base_url or spec.base_url or profile.base_url or "https://api.openai.com/v1").rstrip("/")
        self.name, self.spec, self.profile, self.base_url = name, spec, profile, url
        self._url = url + "/responses"
        self._ep = Endpoint(provider=profile.name, model=spec.model, api_key=api_key)
        self._http = http
        self._clients: Clients | None = None
        self._clock = clock
        self._limits = CallLimits(spec.timeout_s, spec.max_response_bytes, f"models.{name}")

    def build_body(self, messages: Sequence[Message], tools: Sequence[ToolSpec],
                   settings: ModelSettings, *, stream: bool) -> dict[str, Any]:
        spec, model = self.spec, self.spec.model
        body: dict[str, Any] = {"model": model, "input": _input_items(self.profile, messages),
                                "store": False, "include": ["reasoning.encrypted_content"]}
        system = "\n\n".join(m.text for m in messages if m.role == "system")
        if system:
            body["instructions"] = system
        if tools:
            body["tools"] = [{"type": "function", "name": t.name, "description": t.description,
                              "parameters": t.parameters} for t in tools]
            if settings.tool_choice:
                body["tool_choice"] = settings.tool_choice
        optional = {"max_output_tokens": settings.max_tokens or spec.max_tokens,
                    "temperature": settings.temperature if settings.temperature is not None
                    else spec.temperature, "top_p": settings.top_p}
        body.update({k: v for k, v in optional.items()
                     if v is not None and not self.profile.refuses(k, model)})
        body.update(reasoning_params(self.profile, spec.reasoning, model=model, stream=stream))
        if stream:
            body["stream"] = True
        body.update(spec.extra_body)
        body.update(settings.extra_body)
        return body

    def _client(self) -> Clients:
        if self._clients is None:
            self._clients = Clients(self.spec.timeout_s, self._http,
                                    tls=not self._url.startswith("http://"))
        return self._clients

    async def turn(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                   settings: ModelSettings | None = None, *,
                   on_delta: DeltaCallback | None = None) -> Turn:
        stream = self.spec.stream if isinstance(self.spec.stream, bool) else on_delta is not None
        body = self.build_body(messages, tools, settings or ModelSettings(), stream=stream)
        headers = {"Content-Type": "application/json", **self.spec.headers}
        if self._ep.api_key:
            headers["Authorization"] = f"Bearer {self._ep.api_key}"
        async with post(self._client(), self._url, body=body, headers=headers, ep=self._ep,
                        limits=self._limits, clock=self._clock) as resp:
            if "event-stream" in resp.headers.get("content-type", ""):
                data = await self._read_stream(resp, on_delta)
            else:
                data = loads(await resp.text(), self._ep, "response")
        if not isinstance(data, dict) or "error" in data and data["error"]:
            raise stream_error(data or {}, self._ep, _status_of)
        return _to_turn(data, self.profile.name)

    async def _read_stream(self, resp: Body, on_delta: DeltaCallback | None) -> dict[str, Any]:
        """Deltas go to `on_delta`; the finished items (`output_item.done`) make the turn."""
        items: dict[int, dict[str, Any]] = {}
        async for event in iter_sse(resp):
            if not event.data.strip():
                continue
            data = loads(event.data, self._ep, "stream event")
            kind = (event.event or "").strip() or data.get("type")
            if kind in ("error", "response.failed"):
                raise stream_error(data.get("response", data), self._ep, _status_of)
            if kind in _DELTAS and on_delta is not None:
                on_delta(Delta(kind=_DELTAS[kind], text=str(data.get("delta", "")),
                               tool_call_index=data.get("output_index")))
            elif kind == "response.output_item.done":
                items[int(data.get("output_index", len(items)))] = data["item"]
            elif kind in ("response.completed", "response.incomplete"):
                final = dict(data.get("response") or {})
                final["output"] = final.get("output") or [items[i] for i in sorted(items)]
                return final
        raise ProviderResponseError("the stream ended before response.completed",
                                    provider=self._ep.provider, model=self._ep.model, retryable=True)

    async def aclose(self) -> None:
        if self._clients is not None:  # closes only the clients it made, never a given one
            await self._clients.aclose()
            self._clients = None


def _message_text(item: dict[str, Any]) -> str:
    return "".join(c.get("text", "") for c in item.get("content") or []
                   if isinstance(c, dict) and c.get("type") == "output_text")


def _to_turn(data: dict[str, Any], provider: str) -> Turn:
    parts: list[Part] = []
    messages: list[dict[str, Any]] = []
    for item in data.get("output") or []:
        kind = item.get("type")
        if kind == "reasoning":
            summary = "\n\n".join(s.get("text", "") for s in item.get("summary") or [])
            text = summary + "".join(c.get("text", "") for c in item.get("content") or [])
            parts.append(ReasoningPart(text=text, opaque=item, provider=provider, field="reasoning_item"))
        elif kind == "message":
            text = _message_text(item)
            if text:
                parts.append(TextPart(text=text))
                messages.append(item)  # its id and phase go back with it
        elif kind == "function_call":
            parts.append(make_tool_call(str(item.get("call_id")), str(item.get("name")),
                                        item.get("arguments"),
                                        {"provider": provider, "item_id": item.get("id")}))
    u = data.get("usage") or {}
    usage = Usage(input_tokens=u.get("input_tokens") or 0, output_tokens=u.get("output_tokens") or 0,
                  reasoning_tokens=(u.get("output_tokens_details") or {}).get("reasoning_tokens") or 0,
                  cached_tokens=(u.get("input_tokens_details") or {}).get("cached_tokens") or 0)
    has_calls = any(isinstance(p, ToolCallPart) for p in parts)
    incomplete = (data.get("incomplete_details") or {}).get("reason")
    finish = ("length" if incomplete == "max_output_tokens" else incomplete) if incomplete else (
        "tool_calls" if has_calls else "stop")
    extra = {provider: {"message_items": messages}} if messages else None
    return Turn(message=Message(role="assistant", parts=tuple(parts), extra=extra), usage=usage,
                finish_reason=finish, model=data.get("model"), provider=provider,
                response_id=data.get("id"))


def _input_items(profile: Profile, messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Messages as input items; each reasoning item goes back verbatim, in its place."""
    items: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "user":
            items.append({"role": "user", "content": m.text})
        elif m.role == "tool":
            items.extend({"type": "function_call_output", "call_id": p.call_id, "output": p.content}
                         for p in m.parts if isinstance(p, ToolResultPart))
        elif m.role == "assistant":
            items.extend(_assistant_items(profile, m))
    return items


def _assistant_items(profile: Profile, m: Message) -> list[dict[str, Any]]:
    """Items in the order received. A message item goes back as issued (its `id`, which the
    reasoning item before it is paired with, and its `phase`, ``commentary`` or
    ``final_answer``) while its text is unchanged."""
    out: list[dict[str, Any]] = []
    issued = iter(((m.extra or {}).get(profile.name) or {}).get("message_items") or [])
    for p in m.parts:
        if isinstance(p, ReasoningPart):
            if p.provider == profile.name and isinstance(p.opaque, dict):
                out.append(p.opaque)
        elif isinstance(p, TextPart) and p.text:
            item = next(issued, None)
            if isinstance(item, dict) and _message_text(item) == p.text:
                out.append(item)
            else:
                out.append({"type": "message", "role": "assistant",
                            "content": [{"type": "output_text", "text": p.text}]})
        elif isinstance(p, ToolCallPart):
            item = {"type": "function_call", "call_id": p.id, "name": p.name,
                    "arguments": json.dumps(p.arguments, ensure_ascii=False)}
            extra = p.extra or {}
            if extra.get("provider") == profile.name and extra.get("item_id"):
                item["id"] = extra["item_id"]
            out.append(item)
    return out
