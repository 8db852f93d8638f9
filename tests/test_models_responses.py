"""OpenAI Responses API: encrypted reasoning items replayed verbatim right before
their function_call, streamed and not; the scripted server answers the API's 400 otherwise."""

from __future__ import annotations

import pytest
from _model_helpers import KEY, TOOLS, two_turns

from agentkit.errors import ProviderHTTPError
from agentkit.messages import Message, ReasoningPart, ToolResultPart
from agentkit.models.base import Delta
from agentkit.models.openai_responses import OpenAIResponsesModel
from agentkit.models.profiles import get_profile
from agentkit.task import ModelSpec, ReasoningSpec
from agentkit.testing import ScriptedModelServer, call, reply


def _model(srv: ScriptedModelServer, **spec: object) -> OpenAIResponsesModel:
    ms = ModelSpec(model="o4-mini", profile="openai-responses", **spec)  # type: ignore[arg-type]
    return OpenAIResponsesModel(ms, name="m", api_key=KEY, base_url=srv.base_url,
                                profile=get_profile("openai-responses"))


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_reasoning_item_replayed_before_its_function_call(stream: bool) -> None:
    async with ScriptedModelServer("openai-responses") as srv:
        llm = _model(srv, stream=stream, reasoning=ReasoningSpec(effort="high"), temperature=0.5,
                     max_tokens=800)
        deltas: list[Delta] = []
        first, second, _ = await two_turns(llm, srv, on_delta=deltas.append if stream else None)
        await llm.aclose()
    part = first.message.parts[0]
    assert isinstance(part, ReasoningPart) and part.text == "Need weather; call tool."
    assert part.opaque["encrypted_content"] == "gAAAA-enc-1"
    [tool_call] = first.message.tool_calls
    assert (tool_call.id, tool_call.arguments, first.finish_reason) == ("call_1_0", {"city": "Oslo"},
                                                                         "tool_calls")
    assert first.usage.reasoning_tokens == 64
    body = srv.requests[1].body
    assert body["store"] is False and body["include"] == ["reasoning.encrypted_content"]
    assert body["instructions"] == "You are terse." and body["max_output_tokens"] == 800
    assert body["reasoning"] == {"effort": "high", "summary": "auto"} and "temperature" not in body
    kinds = [i.get("type", i.get("role")) for i in body["input"]]
    assert kinds == ["user", "reasoning", "function_call", "function_call_output"]
    assert body["input"][1] == part.opaque  # verbatim, encrypted content included
    assert body["input"][3] == {"type": "function_call_output", "call_id": "call_1_0",
                                "output": "12C, sunny"}
    assert second.message.text == "Sunny in Oslo." and [r.status for r in srv.requests] == [200, 200]
    if stream:
        assert "".join(d.text for d in deltas if d.kind == "text") == "Sunny in Oslo."


async def test_missing_reasoning_item_is_the_apis_400() -> None:
    async with ScriptedModelServer("openai-responses") as srv:
        srv.script(reply(reasoning="Look up weather.", tool_calls=[call("get_weather", {"city": "Oslo"})]))
        llm = _model(srv, reasoning=ReasoningSpec(effort="low"))
        first = await llm.turn([Message.user("q")], TOOLS)
        stripped = Message(role="assistant", parts=tuple(
            p for p in first.message.parts if not isinstance(p, ReasoningPart)))
        result = Message(role="tool", parts=(ToolResultPart(call_id="call_1_0", content="x"),))
        with pytest.raises(ProviderHTTPError, match="without its required 'reasoning' item: 'rs_1'"):
            await llm.turn([Message.user("q"), stripped, result], TOOLS)
        await llm.aclose()


async def test_incomplete_response_is_truncation() -> None:
    async with ScriptedModelServer("openai-responses") as srv:
        srv.script(reply(reasoning="long", finish_reason="length"))
        llm = _model(srv, stream=True)
        turn = await llm.turn([Message.user("q")])
        await llm.aclose()
    assert turn.truncated and turn.message.text == "" and turn.message.reasoning == "long"


async def test_build_model_routes_the_responses_profile() -> None:
    from agentkit.runtime import Runtime
    from agentkit.task import TaskSpec

    async with ScriptedModelServer("openai-responses") as srv:
        srv.script(reply(content="hi from responses"))
        spec = ModelSpec(model="gpt-5", profile="openai-responses", base_url=srv.base_url,
                         api_key_env="TEST_KEY")
        rt = Runtime(TaskSpec(name="t", goal="g", model="m", models={"m": spec}),
                     environ={"TEST_KEY": KEY})
        model = await rt.model("m")
        turn = await model.turn([Message.user("q")])
        await rt.aclose()
    assert turn.message.text == "hi from responses" and srv.requests[0].path == "/v1/responses"
