"""`OllamaModel`: Ollama's native ``/api/chat`` (profiles of the ``ollama`` wire, e.g.
``ollama-native``, ``ollama-cloud``): NDJSON lines, one JSON object each (one in all when not
streaming), translated to Chat Completions chunks so the same `TurnBuilder` assembles the turn.

Everything else (HTTP client, headers, limits, errors) is the Chat Completions adapter's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentkit.errors import ProviderResponseError
from agentkit.messages import Message, ToolSpec
from agentkit.models._http import Body, loads, stream_error
from agentkit.models._ollama_wire import NdjsonTranslator, build_ollama_body
from agentkit.models._openai_wire import TurnBuilder
from agentkit.models.base import ModelSettings
from agentkit.models.openai_compat import OpenAICompatModel, status_of

__all__ = ["OllamaModel"]


class OllamaModel(OpenAICompatModel):
    """Ollama's native chat API."""

    wire = "ollama"
    path = "/api/chat"

    def build_body(self, messages: Sequence[Message], tools: Sequence[ToolSpec],
                   settings: ModelSettings, *, stream: bool) -> dict[str, Any]:
        return build_ollama_body(self.profile, self.spec, messages, tools, settings, stream=stream)

    async def read(self, resp: Body, builder: TurnBuilder, *, stream: bool) -> None:
        translate = NdjsonTranslator()
        async for line in resp.lines():
            if not line.strip():
                continue
            data = loads(line, self._ep, "NDJSON line")
            if not isinstance(data, dict) or "error" in data:
                raise stream_error(data if data else {}, self._ep, status_of)
            builder.feed(translate.chunk(data))
        if builder.finish is None:
            raise ProviderResponseError("the NDJSON stream ended before done:true",
                                        provider=self._ep.provider, model=self._ep.model,
                                        retryable=True)
