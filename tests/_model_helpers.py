"""Shared helpers for the model wire tests: build an adapter against a scripted server and run
the small two-turn tool loop (call -> tool result -> answer) the agent loop would run."""

from __future__ import annotations

from typing import Any

from agentkit.messages import Message, ToolResultPart, ToolSpec, Turn
from agentkit.models.anthropic import AnthropicModel
from agentkit.models.base import ChatModel, ModelSettings
from agentkit.models.ollama import OllamaModel
from agentkit.models.openai_compat import OpenAICompatModel
from agentkit.models.profiles import get_profile
from agentkit.task import ModelSpec
from agentkit.testing import ScriptedModelServer, call, reply

WEATHER = ToolSpec(name="get_weather", description="Current weather for a city.",
                   parameters={"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"]})
TOOLS = [WEATHER]
KEY = "sk-test-SECRET-0123456789"


def make_model(srv: ScriptedModelServer, profile: str, model: str = "test-model",
               **spec: Any) -> ChatModel:
    ms = ModelSpec(model=model, profile=profile,
                   provider="anthropic" if profile == "anthropic" else "openai", **spec)
    wire = get_profile(profile).wire
    if wire == "anthropic":
        return AnthropicModel(ms, name="m", api_key=KEY, base_url=srv.base_url,
                              profile=get_profile(profile))
    cls = OllamaModel if wire == "ollama" else OpenAICompatModel
    base = srv.root_url if wire == "ollama" else srv.base_url
    return cls(ms, name="m", api_key=KEY, base_url=base, profile=get_profile(profile))


async def two_turns(model: ChatModel, srv: ScriptedModelServer, *,
                    reasoning: str = "Need weather; call tool.", final: str = "Sunny in Oslo.",
                    settings: ModelSettings | None = None, on_delta: Any = None
                    ) -> tuple[Turn, Turn, list[Message]]:
    """Script a tool call then an answer; feed the tool result back like the agent loop."""
    srv.script(reply(reasoning=reasoning, tool_calls=[call("get_weather", {"city": "Oslo"})]),
               reply(content=final, reasoning="Answer now."))
    msgs = [Message.system("You are terse."), Message.user("Weather in Oslo?")]
    first = await model.turn(msgs, TOOLS, settings, on_delta=on_delta)
    msgs.append(first.message)
    msgs.append(Message(role="tool", parts=tuple(
        ToolResultPart(call_id=c.id, name=c.name, content="12C, sunny")
        for c in first.message.tool_calls)))
    second = await model.turn(msgs, TOOLS, settings, on_delta=on_delta)
    return first, second, msgs
