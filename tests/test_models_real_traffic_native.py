"""What the real Anthropic Messages and OpenAI Responses APIs send beyond the textbook shapes,
over real HTTP against the scripted server, JSON and SSE: thinking-token usage, usage repeated
in `message_delta`, `stop_details`, padded SSE payloads, redacted thinking streamed first;
Responses message ids and `phase` (replayed, or the API's 400), several summary parts, reasoning
without `encrypted_content`, the full event sequence with `sequence_number` and `obfuscation`."""

from __future__ import annotations

import httpx
import pytest
from _model_helpers import KEY, TOOLS, make_model

from agentkit.errors import ProviderHTTPError
from agentkit.messages import Message, ReasoningPart, ToolResultPart
from agentkit.models.base import Delta
from agentkit.models.openai_responses import OpenAIResponsesModel
from agentkit.models.profiles import get_profile
from agentkit.task import ModelSpec, ReasoningSpec
from agentkit.testing import ScriptedModelServer, call, reply

STREAM = pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])


def _claude(srv: ScriptedModelServer, stream: bool) -> object:
    return make_model(srv, "anthropic", "claude-sonnet-4-5", stream=stream,
                      reasoning=ReasoningSpec(budget_tokens=2048), max_tokens=1024)


def _responses(srv: ScriptedModelServer, stream: bool) -> OpenAIResponsesModel:
    spec = ModelSpec(model="gpt-5.5", profile="openai-responses", stream=stream,
                     reasoning=ReasoningSpec(effort="high"))
    return OpenAIResponsesModel(spec, name="m", api_key=KEY, base_url=srv.base_url,
                                profile=get_profile("openai-responses"))


# -- Anthropic ---------------------------------------------------------------------------------


@STREAM
async def test_anthropic_thinking_tokens_and_repeated_usage_counted_once(stream: bool) -> None:
    """Thinking tokens come from `output_tokens_details.thinking_tokens`; `message_delta`
    repeats input and cache counts, which must not be added twice."""
    async with ScriptedModelServer("anthropic") as srv:
        srv.script(reply("4", reasoning="Add.", usage={
            "input_tokens": 80, "output_tokens": 70, "reasoning_tokens": 33, "cached_tokens": 10,
            "cache_write_tokens": 5}))
        llm = _claude(srv, stream)
        turn = await llm.turn([Message.user("2+2?")])  # type: ignore[attr-defined]
        await llm.aclose()  # type: ignore[attr-defined]
    assert turn.usage.reasoning_tokens == 33
    assert (turn.usage.input_tokens, turn.usage.cached_tokens, turn.usage.output_tokens) \
        == (95, 10, 70)
    assert turn.message.text == "4" and turn.finish_reason == "stop"


async def test_anthropic_redacted_thinking_streamed_first_goes_back_first() -> None:
    """A `redacted_thinking` block opening the stream (padded payloads, `stop_details` in
    `message_delta`) is kept whole and replayed first, before the signed thinking block; the
    API accepts the tool loop."""
    async with ScriptedModelServer("anthropic") as srv:
        srv.script(reply(reasoning="Need weather.", redacted="ENCRYPTED==",
                         tool_calls=[call("get_weather", {"city": "Oslo"})]), reply("Sunny."))
        llm = _claude(srv, True)
        deltas: list[Delta] = []
        msgs = [Message.user("Weather in Oslo?")]
        first = await llm.turn(msgs, TOOLS, on_delta=deltas.append)  # type: ignore[attr-defined]
        msgs += [first.message, Message(role="tool", parts=(
            ToolResultPart(call_id=first.message.tool_calls[0].id, content="sunny"),))]
        second = await llm.turn(msgs, TOOLS)  # type: ignore[attr-defined]
        await llm.aclose()  # type: ignore[attr-defined]
    blocks = srv.requests[1].body["messages"][1]["content"]
    assert blocks[0] == {"type": "redacted_thinking", "data": "ENCRYPTED=="}
    assert blocks[1]["type"] == "thinking" and blocks[1]["thinking"] == "Need weather."
    assert [b["type"] for b in blocks[2:]] == ["tool_use"]
    assert second.message.text == "Sunny." and [r.status for r in srv.requests] == [200, 200]
    assert "".join(d.text for d in deltas if d.kind == "reasoning") == "Need weather."


def test_anthropic_stream_wire_is_padded_and_repeats_usage() -> None:
    """The scripted stream really carries the quirks the tests above rely on."""
    with ScriptedModelServer("anthropic") as srv, httpx.Client() as client:
        srv.script(reply("hi", reasoning="r"))
        text = client.post(srv.base_url + "/v1/messages", headers={
            "x-api-key": KEY, "anthropic-version": "2023-06-01"},
            json={"model": "m", "max_tokens": 10, "stream": True, "messages": []}).text
    delta_line = next(line for line in text.splitlines() if '"message_delta"' in line)
    assert delta_line.startswith("data:  {") and delta_line.endswith("}  ")
    assert '"input_tokens": 80' in delta_line and '"stop_details": null' in delta_line
    assert '"thinking_tokens"' in delta_line


@STREAM
async def test_anthropic_refusal_with_stop_details(stream: bool) -> None:
    """A refusal (`stop_reason: refusal` with a `stop_details` object) is a content filter."""
    async with ScriptedModelServer("anthropic") as srv:
        srv.script(reply("", finish_reason="refusal"))
        llm = _claude(srv, stream)
        turn = await llm.turn([Message.user("q")])  # type: ignore[attr-defined]
        await llm.aclose()  # type: ignore[attr-defined]
    assert turn.finish_reason == "content_filter" and turn.message.text == ""


# -- OpenAI Responses --------------------------------------------------------------------------


@STREAM
async def test_responses_message_id_and_phase_go_back_with_the_message(stream: bool) -> None:
    """gpt-5.x says a `commentary` message before its call: the message item comes back with
    its `id` and `phase`, between its reasoning item and the function call."""
    async with ScriptedModelServer("openai-responses") as srv:
        srv.script(reply("Let me check.", reasoning="Plan.",
                         tool_calls=[call("get_weather", {"city": "Oslo"})]),
                   reply("Sunny in Oslo."))
        llm = _responses(srv, stream)
        msgs = [Message.user("Weather in Oslo?")]
        first = await llm.turn(msgs, TOOLS)
        msgs += [first.message, Message(role="tool", parts=(
            ToolResultPart(call_id=first.message.tool_calls[0].id, content="12C"),))]
        second = await llm.turn(msgs, TOOLS)
        await llm.aclose()
    items = srv.requests[1].body["input"]
    assert [i.get("type", i.get("role")) for i in items] == [
        "user", "reasoning", "message", "function_call", "function_call_output"]
    assert (items[2]["id"], items[2]["phase"]) == ("msg_1", "commentary")
    assert items[2]["content"][0]["text"] == "Let me check."
    assert first.message.text == "Let me check." and second.message.text == "Sunny in Oslo."
    assert [r.status for r in srv.requests] == [200, 200]


@STREAM
async def test_responses_message_without_its_id_is_the_apis_400(stream: bool) -> None:
    """A reasoning item followed by a message item that is not the one it issued (no id):
    "Item 'rs_1' of type 'reasoning' was provided without its required following item"."""
    async with ScriptedModelServer("openai-responses") as srv:
        srv.script(reply("4", reasoning="Add."), reply("8"), reply("8"))
        llm = _responses(srv, stream)
        first = await llm.turn([Message.user("2+2?")])
        history = [Message.user("2+2?"), first.message, Message.user("times 2?")]
        second = await llm.turn(history)
        stripped = first.message.model_copy(update={"extra": None})
        with pytest.raises(ProviderHTTPError, match="'rs_1' of type 'reasoning' was provided "
                                                    "without its required following item"):
            await llm.turn([Message.user("2+2?"), stripped, Message.user("times 2?")])
        await llm.aclose()
    sent = srv.requests[1].body["input"][2]
    assert (sent["id"], sent["phase"]) == ("msg_1", "final_answer") and second.message.text == "8"


async def test_responses_full_event_stream_with_several_summary_parts() -> None:
    """`in_progress`, part added/done and text done events, `sequence_number` and
    `obfuscation` on the wire; two summary parts read as one text with a blank line."""
    async with ScriptedModelServer("openai-responses") as srv:
        srv.script(reply("Done.", reasoning="First part.\n\nSecond part."))
        llm = _responses(srv, True)
        deltas: list[Delta] = []
        turn = await llm.turn([Message.user("q")], on_delta=deltas.append)
        await llm.aclose()
    assert turn.message.reasoning == "First part.\n\nSecond part."
    assert "".join(d.text for d in deltas if d.kind == "text") == "Done."
    part = turn.message.parts[0]
    assert isinstance(part, ReasoningPart) and len(part.opaque["summary"]) == 2
    async with ScriptedModelServer("openai-responses") as wire_srv, httpx.AsyncClient() as client:
        wire_srv.script(reply("Done.", reasoning="a\n\nb"))
        text = (await client.post(wire_srv.base_url + "/responses",
                                  json={"model": "m", "input": [], "stream": True})).text
    for kind in ("response.in_progress", "response.output_text.done", "response.content_part.done",
                 "response.reasoning_summary_part.done", '"sequence_number": 12', '"obfuscation"'):
        assert kind in text


@STREAM
async def test_responses_reasoning_without_encrypted_content_replays_as_issued(stream: bool) -> None:
    """A reasoning item issued without `encrypted_content` goes back exactly as it came."""
    async with ScriptedModelServer("openai-responses") as srv:
        srv.script(reply(reasoning="Look up.", signature="",
                         tool_calls=[call("get_weather", {"city": "Oslo"})]), reply("Ok."))
        llm = _responses(srv, stream)
        msgs = [Message.user("q")]
        first = await llm.turn(msgs, TOOLS)
        msgs += [first.message, Message(role="tool", parts=(
            ToolResultPart(call_id=first.message.tool_calls[0].id, content="x"),))]
        await llm.turn(msgs, TOOLS)
        await llm.aclose()
    item = srv.requests[1].body["input"][1]
    assert item == {"type": "reasoning", "id": "rs_1",
                    "summary": [{"type": "summary_text", "text": "Look up."}]}
    assert [r.status for r in srv.requests] == [200, 200]
