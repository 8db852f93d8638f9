"""Every profile against the scripted server speaking its dialect, streamed and not:
reasoning captured, the tool called with the right id and arguments, history replayed the way
that provider demands (the server answers 400 otherwise), and the final answer returned."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from _model_helpers import make_model, two_turns

from agentkit.messages import ReasoningPart
from agentkit.testing import ScriptedModelServer

REASONING = "Need weather; call tool."


def _field(name: str) -> Callable[[dict[str, Any]], None]:
    def check(msg: dict[str, Any]) -> None:
        assert msg[name] == REASONING
        other = {"reasoning", "reasoning_content"} - {name}
        assert not other & set(msg), f"only {name} is replayed"
    return check


def _stripped(msg: dict[str, Any]) -> None:
    assert "reasoning_content" not in msg and "reasoning" not in msg
    assert "think>" not in msg["content"]


def _openrouter(msg: dict[str, Any]) -> None:
    assert msg["reasoning"] == REASONING
    text, encrypted = msg["reasoning_details"]  # both at index 0, told apart by type
    assert text["type"] == "reasoning.text" and text["text"] == REASONING
    assert text["signature"].startswith("sig-") and text["index"] == encrypted["index"] == 0
    assert encrypted["type"] == "reasoning.encrypted" and encrypted["data"].startswith("enc-")


def _mistral(msg: dict[str, Any]) -> None:
    thinking = msg["content"][0]
    assert thinking["type"] == "thinking" and thinking["closed"] is True
    assert thinking["thinking"] == [{"type": "text", "text": REASONING}]
    assert "reasoning_content" not in msg and "reasoning" not in msg


def _gemini(msg: dict[str, Any]) -> None:
    sig = msg["tool_calls"][0]["extra_content"]["google"]["thought_signature"]
    assert sig.startswith("sig-")
    assert "reasoning_content" not in msg


def _nothing(msg: dict[str, Any]) -> None:
    assert "reasoning_content" not in msg and "reasoning" not in msg


# (dialect, profile, model, expected call id, replay check on the assistant message)
CASES = [
    ("deepseek", "deepseek", "deepseek-chat", "call_01", _field("reasoning_content")),
    ("kimi", "kimi", "kimi-k2-thinking", "functions.get_weather:0", _field("reasoning_content")),
    ("qwen", "qwen", "Qwen3-32B", "call_01", _field("reasoning_content")),
    ("dashscope", "dashscope", "qwen-plus", "call_01", _field("reasoning_content")),
    ("openrouter", "openrouter", "anthropic/claude-sonnet-4.5", "call_01", _openrouter),
    ("vllm", "vllm", "Qwen/Qwen3-8B", "chatcmpl-tool-1", _field("reasoning")),
    ("vllm-transition", "vllm", "Qwen/Qwen3-8B", "chatcmpl-tool-1", _field("reasoning")),
    ("sglang", "sglang", "deepseek-ai/DeepSeek-V3.1", "call_01", _field("reasoning_content")),
    ("llamacpp", "llamacpp", "qwen3", "call_01", _field("reasoning_content")),
    ("ollama", "ollama", "gpt-oss:20b", "call_01", _field("reasoning")),
    ("xai", "xai", "grok-3-mini", "call_01", _nothing),
    ("gemini", "gemini", "gemini-3-pro-preview", "fc-1", _gemini),
    ("gemini-3", "gemini", "gemini-3-flash", None, _gemini),
    ("mistral", "mistral", "magistral-medium-latest", None, _mistral),
    ("groq", "groq", "openai/gpt-oss-120b", None, _nothing),
    ("together", "generic", "deepseek-ai/DeepSeek-R1", "call_01", _field("reasoning")),
    ("together", "together", "openai/gpt-oss-120b", "call_01", _field("reasoning")),
    ("zai", "zai", "glm-4.6", "call_01", _field("reasoning_content")),
    ("deepseek-hybrid", "deepseek-hybrid", "DeepSeek-V3.1", None, _stripped),
    ("raw", "generic", "R1-distill", None, _field("reasoning_content")),
    ("raw", "vllm", "R1-distill", None, _field("reasoning")),
    ("raw-tagged", "llamacpp", "R1-0528", None, _field("reasoning_content")),
    ("generic", "generic", "whatever", "call_01", _field("reasoning_content")),
]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize(("dialect", "profile", "model", "call_id", "replay"), CASES,
                         ids=[f"{c[1]}@{c[0]}" for c in CASES])
async def test_tool_loop_per_profile(dialect: str, profile: str, model: str, call_id: str | None,
                                     replay: Callable[[dict[str, Any]], None], stream: bool) -> None:
    async with ScriptedModelServer(dialect) as srv:
        llm = make_model(srv, profile, model, stream=stream)
        first, second, _ = await two_turns(llm, srv)
        await llm.aclose()
    # reasoning captured from wherever this dialect puts it (field, tags, details)
    assert first.message.reasoning == REASONING
    [tool_call] = first.message.tool_calls
    assert (tool_call.name, tool_call.arguments) == ("get_weather", {"city": "Oslo"})
    assert tool_call.parse_error is None
    if call_id is not None:
        assert tool_call.id == call_id
    assert first.finish_reason == "tool_calls"  # even where the wire said "stop"
    assert first.message.text == ""
    # what went back to the server
    assert [r.status for r in srv.requests] == [200, 200]
    assert bool(srv.requests[0].body.get("stream")) is stream
    sent = srv.requests[1].messages
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"]
    assert sent[2]["tool_calls"][0]["id"] == tool_call.id
    assert sent[3] == {"role": "tool", "tool_call_id": tool_call.id, "content": "12C, sunny"}
    replay(sent[2])
    assert second.message.text == "Sunny in Oslo."
    assert second.message.tool_calls == []
    assert second.finish_reason == "stop"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_anthropic_tool_loop_replays_signed_blocks_first(stream: bool) -> None:
    async with ScriptedModelServer("anthropic") as srv:
        from agentkit.task import ReasoningSpec

        llm = make_model(srv, "anthropic", "claude-sonnet-4-5", stream=stream,
                         reasoning=ReasoningSpec(budget_tokens=2048), max_tokens=1024)
        first, second, _ = await two_turns(llm, srv)
        await llm.aclose()
    thinking = first.message.parts[0]
    assert isinstance(thinking, ReasoningPart) and thinking.text == REASONING
    assert thinking.signature and thinking.signature.startswith("sig-")
    [tool_call] = first.message.tool_calls
    assert (tool_call.id, tool_call.arguments) == ("toolu_01", {"city": "Oslo"})
    body = srv.requests[1].body
    assert body["messages"][1]["content"][0] == {"type": "thinking", "thinking": REASONING,
                                                 "signature": thinking.signature}
    assert body["messages"][1]["content"][1]["type"] == "tool_use"
    assert body["messages"][2]["content"][0]["type"] == "tool_result"
    assert body["system"] == "You are terse."
    assert body["max_tokens"] > body["thinking"]["budget_tokens"] == 2048
    assert srv.requests[0].headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert srv.requests[0].headers["x-api-key"] and "authorization" not in srv.requests[0].headers
    assert second.message.text == "Sunny in Oslo." and second.finish_reason == "stop"
    assert [r.status for r in srv.requests] == [200, 200]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "ndjson"])
async def test_ollama_native_api_chat(stream: bool) -> None:
    """NDJSON lines, `thinking`, object arguments, no ids, done_reason "stop" after a call."""
    async with ScriptedModelServer("ollama") as srv:
        from agentkit.task import ReasoningSpec

        llm = make_model(srv, "ollama-native", "qwen3", stream=stream,
                         reasoning=ReasoningSpec(effort="low"), max_tokens=300)
        first, second, _ = await two_turns(llm, srv)
        await llm.aclose()
    assert first.message.reasoning == REASONING and first.finish_reason == "tool_calls"
    [tool_call] = first.message.tool_calls
    assert (tool_call.name, tool_call.arguments) == ("get_weather", {"city": "Oslo"})
    assert (first.usage.input_tokens, first.usage.output_tokens) == (40, 31)
    req = srv.requests[1]
    assert req.path == "/api/chat" and req.body["stream"] is stream
    assert req.body["think"] == "low" and req.body["options"] == {"num_predict": 300}
    assistant, tool = req.body["messages"][2:]
    assert assistant["thinking"] == REASONING
    assert assistant["tool_calls"] == [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]
    assert tool == {"role": "tool", "content": "12C, sunny", "tool_name": "get_weather"}
    assert second.message.text == "Sunny in Oslo." and [r.status for r in srv.requests] == [200, 200]
