"""`OpenAICompatModel`: any Chat Completions endpoint (DeepSeek, Kimi, Qwen/DashScope,
OpenRouter, OpenAI, Gemini compat, xAI, Mistral, vLLM, SGLang, llama.cpp, Ollama ...) over httpx.
Ollama's native `/api/chat` is its own adapter (`agentkit.models.ollama`), on the same plumbing.

One adapter, many providers: every difference comes from the `Profile`. JSON and SSE responses
go through the same `TurnBuilder`, so a streamed turn equals a non-streamed one. The adapter
never retries: failures leave as `ProviderError` with status/retryable/retry_after, and a
connection reset mid-stream is raised, so the retry owner re-issues the whole call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from agentkit.clock import Clock
from agentkit.errors import ConfigError, ProviderResponseError
from agentkit.messages import Message, ToolSpec, Turn
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
from agentkit.models._openai_wire import TurnBuilder, build_body
from agentkit.models.base import DeltaCallback, ModelSettings
from agentkit.models.profiles import Profile, thinking_enabled
from agentkit.task import ModelSpec

__all__ = ["OpenAICompatModel", "status_of"]


def status_of(kind: str) -> int:
    """The HTTP status an in-body error kind stands for (errors sent inside a 200 answer)."""
    k = kind.lower()
    if "rate" in k or "resource_exhausted" in k:
        return 429
    if "overload" in k or "unavailable" in k:
        return 503
    if "invalid" in k:
        return 400
    return 500


class OpenAICompatModel:
    """A Chat Completions endpoint. Construction does no I/O; the HTTP client is created on
    the first call unless one is given (then the caller owns and closes it)."""

    #: the profiles' wire this adapter speaks, and the path it posts to under the base URL
    wire: str = "openai"
    path: str = "/chat/completions"

    def __init__(self, spec: ModelSpec, *, name: str, api_key: str | None,
                 base_url: str | None, profile: Profile, http: httpx.AsyncClient | None = None,
                 clock: Clock | None = None) -> None:
        if profile.wire != self.wire:
            raise ConfigError(f"model {name!r}: profile {profile.name!r} speaks the "
                              f"{profile.wire!r} wire, not {self.wire!r}; choose a profile of "
                              f"that wire (provider: anthropic for anthropic profiles)")
        url = base_url or spec.base_url or profile.base_url
        if not url:
            raise ConfigError(f"model {name!r}: profile {profile.name!r} has no default "
                              "base_url; set base_url in the model's settings")
        self.name = name
        self.spec = spec
        self.profile = profile
        self._url = url.rstrip("/") + self.path
        self._ep = Endpoint(provider=profile.name, model=spec.model, api_key=api_key)
        self.base_url = url
        self._http = http
        self._clients: Clients | None = None
        self._clock = clock
        self._limits = CallLimits(spec.timeout_s, spec.max_response_bytes, f"models.{name}")

    def wants_stream(self, on_delta: DeltaCallback | None) -> bool:
        """`stream: auto` streams when the profile needs it (DashScope thinking) or a live
        delta callback is attached; true/false force the transport."""
        if isinstance(self.spec.stream, bool):
            return self.spec.stream
        if self.profile.stream_when_thinking and thinking_enabled(self.profile, self.spec.reasoning):
            return True
        return on_delta is not None

    def _client(self) -> Clients:
        if self._clients is None:
            self._clients = Clients(self.spec.timeout_s, self._http,
                                    tls=not self._url.startswith("http://"))
        return self._clients

    def _headers(self, stream: bool) -> dict[str, str]:
        headers = {"Content-Type": "application/json",
                   "Accept": "text/event-stream" if stream else "application/json"}
        if self._ep.api_key:
            headers["Authorization"] = f"Bearer {self._ep.api_key}"
        headers.update(self.spec.headers)
        return headers

    async def turn(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                   settings: ModelSettings | None = None, *,
                   on_delta: DeltaCallback | None = None) -> Turn:
        stream = self.wants_stream(on_delta)
        body = self.build_body(messages, tools, settings or ModelSettings(), stream=stream)
        builder = TurnBuilder(self.profile, tool_names=[t.name for t in tools], on_delta=on_delta)
        async with post(self._client(), self._url, body=body, headers=self._headers(stream),
                        ep=self._ep, limits=self._limits, clock=self._clock) as resp:
            await self.read(resp, builder, stream=stream)
        return builder.build(self.profile.name)

    def build_body(self, messages: Sequence[Message], tools: Sequence[ToolSpec],
                   settings: ModelSettings, *, stream: bool) -> dict[str, Any]:
        return build_body(self.profile, self.spec, messages, tools, settings, stream=stream)

    async def read(self, resp: Body, builder: TurnBuilder, *, stream: bool) -> None:
        """Feed the answer to `builder`: SSE or JSON, by what came back, not what we asked."""
        ctype = resp.headers.get("content-type", "")
        if "event-stream" in ctype or (stream and "json" not in ctype):
            await self._read_stream(resp, builder)
        else:
            self._read_json(loads(await resp.text(), self._ep, "response"), builder)

    def _read_json(self, data: Any, builder: TurnBuilder) -> None:
        if isinstance(data, list) or not isinstance(data, dict) or "error" in data:
            raise stream_error(data if data else {}, self._ep, status_of)
        if not data.get("choices"):
            raise ProviderResponseError(f"response has no choices: {str(data)[:200]}",
                                        provider=self._ep.provider, model=self._ep.model)
        builder.feed(data)

    async def _read_stream(self, resp: Body, builder: TurnBuilder) -> None:
        done = False
        async for event in iter_sse(resp):
            if event.data.strip() == "[DONE]":
                done = True
                break
            chunk = loads(event.data, self._ep, "stream chunk")
            if isinstance(chunk, list) or not isinstance(chunk, dict) or "error" in chunk:
                raise stream_error(chunk, self._ep, status_of)
            builder.feed(chunk)
        if not done and builder.finish is None:
            raise ProviderResponseError("the stream ended before the turn finished (no "
                                        "finish_reason, no [DONE])", provider=self._ep.provider,
                                        model=self._ep.model, retryable=True)

    async def aclose(self) -> None:
        if self._clients is not None:  # closes only the clients it made, never a given one
            await self._clients.aclose()
            self._clients = None
