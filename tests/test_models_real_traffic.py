"""What real Chat Completions servers send that tidy fixtures do not, each over real HTTP
against the scripted server's dialect of that provider, JSON and SSE: Mistral chunk lists and
9-character ids, Gemini empty ids and message-level signatures, OpenRouter comment lines, cost
and twin details, Groq `x_groq.usage`, Together per-chunk role/token ids, vLLM integer
`stop_reason`, DeepSeek's served model name, Z.ai chunks without `finish_reason`."""

from __future__ import annotations

import httpx
import pytest
from _model_helpers import TOOLS, make_model, two_turns

from agentkit.errors import ProviderHTTPError
from agentkit.messages import Message, ReasoningPart, TextPart, ToolCallPart, ToolResultPart
from agentkit.models._openai_wire import TurnBuilder, provider_cost
from agentkit.models.base import Delta, ModelSettings
from agentkit.models.profiles import get_profile
from agentkit.task import ReasoningSpec
from agentkit.testing import Reply, ScriptedModelServer, call, reply

STREAM = pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])


async def _raw(dialect: str, r: Reply, *, stream: bool = False) -> str:
    """One response in `dialect` exactly as it crosses the wire (the quirk is really there)."""
    async with ScriptedModelServer(dialect) as srv, httpx.AsyncClient() as client:
        srv.script(r)
        body = {"model": "m", "messages": [], "stream": stream}
        return (await client.post(srv.base_url + "/chat/completions", json=body)).text


# -- Mistral -----------------------------------------------------------------------------------


@STREAM
async def test_mistral_chunk_list_content_is_read_not_lost(stream: bool) -> None:
    """Reasoning arrives as a `thinking` chunk and the answer as a `text` chunk (JSON) or as
    chunk lists then plain strings (SSE): both end up in the turn, streamed live, with the
    cached count from `num_cached_tokens`. Before, `content` was read only as a string and the
    answer came back empty."""
    async with ScriptedModelServer("mistral") as srv:
        srv.script(reply("The answer is 4.", reasoning="2+2 is 4.",
                         usage={"input_tokens": 50, "output_tokens": 20, "cached_tokens": 32}))
        llm = make_model(srv, "mistral", "magistral-medium-latest", stream=stream)
        deltas: list[Delta] = []
        turn = await llm.turn([Message.user("2+2?")], on_delta=deltas.append)
        await llm.aclose()
    assert (turn.message.text, turn.message.reasoning) == ("The answer is 4.", "2+2 is 4.")
    assert turn.finish_reason == "stop"
    assert (turn.usage.input_tokens, turn.usage.cached_tokens) == (50, 32)
    assert "".join(d.text for d in deltas if d.kind == "text") == "The answer is 4."
    assert "".join(d.text for d in deltas if d.kind == "reasoning") == "2+2 is 4."
    part = turn.message.parts[0]
    assert isinstance(part, ReasoningPart) and part.opaque == {"type": "thinking", "closed": True}


async def test_mistral_request_uses_its_own_parameter_names() -> None:
    """Mistral answers 422 to fields it does not document: the profile sends `random_seed`,
    `reasoning_effort: high`, and no `stream_options`; a generic client gets the 422."""
    async with ScriptedModelServer("mistral") as srv:
        srv.script(reply("ok"))
        llm = make_model(srv, "mistral", "mistral-medium-3-5", stream=True,
                         reasoning=ReasoningSpec(effort="medium"))
        await llm.turn([Message.user("q")], settings=ModelSettings(seed=7))
        generic = make_model(srv, "generic", "mistral-medium-3-5", stream=True)
        with pytest.raises(ProviderHTTPError) as info:
            await generic.turn([Message.user("q")])
        await llm.aclose()
        await generic.aclose()
    body = srv.requests[0].body
    assert body["random_seed"] == 7 and "seed" not in body and "stream_options" not in body
    assert body["reasoning_effort"] == "high"
    assert info.value.status == 422 and "stream_options" in str(info.value.body)


async def test_mistral_gets_nine_character_ids_for_calls_issued_elsewhere() -> None:
    """A history whose call ids came from another provider (`call_01`) is mapped to Mistral's
    9 letters and digits, identically on the call and its result; sent as is, Mistral's 400."""
    foreign = Message(role="assistant", parts=(
        ToolCallPart(id="call_01", name="get_weather", arguments={"city": "Oslo"}),))
    history = [Message.user("Weather?"), foreign,
               Message(role="tool", parts=(ToolResultPart(call_id="call_01", content="sunny"),))]
    async with ScriptedModelServer("mistral") as srv:
        srv.script(reply("Sunny."))
        llm = make_model(srv, "mistral", "mistral-small-latest")
        turn = await llm.turn(history, TOOLS)
        generic = make_model(srv, "generic", "mistral-small-latest")
        with pytest.raises(ProviderHTTPError, match="must be a-z, A-Z, 0-9, with a length of 9"):
            await generic.turn(history, TOOLS)
        await llm.aclose()
        await generic.aclose()
    sent = srv.requests[0].messages
    mapped = sent[1]["tool_calls"][0]["id"]
    assert len(mapped) == 9 and mapped.isalnum() and sent[2]["tool_call_id"] == mapped
    assert turn.message.text == "Sunny."


# -- Gemini ------------------------------------------------------------------------------------


@STREAM
async def test_gemini_message_signature_and_its_top_level_duplicate_go_back(stream: bool) -> None:
    """A text answer signed at message level (`extra_content` marked `thought: true`, plus a
    top-level `thought_signature`) is replayed with its signature on the assistant message."""
    async with ScriptedModelServer("gemini-3") as srv:
        srv.script(reply("Hello.", reasoning="Greet.", signature="SIG-M"), reply("Again."))
        llm = make_model(srv, "gemini", "gemini-3-flash", stream=stream)
        first = await llm.turn([Message.user("hi")])
        await llm.turn([Message.user("hi"), first.message, Message.user("again")])
        await llm.aclose()
    assert (first.message.text, first.message.reasoning) == ("Hello.", "Greet.")
    replayed = srv.requests[1].messages[1]
    assert replayed["extra_content"] == {"google": {"thought_signature": "SIG-M"}}
    assert replayed["thought_signature"] == "SIG-M"


@STREAM
async def test_gemini_empty_tool_call_ids_are_replaced_by_stable_ones(stream: bool) -> None:
    """Gemini 3 issues `id: ""`: the client names each call itself (never sending an empty id),
    the same id on the call and its result, and the same id for the same response each time;
    parallel calls without index or id stay two calls, each keeping its own signature."""
    async with ScriptedModelServer("gemini-3") as srv:
        srv.script(reply(tool_calls=[call("get_weather", {"city": "Oslo"}),
                                     call("get_weather", {"city": "Bergen"})]),
                   reply("Both sunny."))
        llm = make_model(srv, "gemini", "gemini-3-flash", stream=stream)
        msgs = [Message.user("Oslo and Bergen?")]
        first = await llm.turn(msgs, TOOLS)
        msgs += [first.message, Message(role="tool", parts=tuple(
            ToolResultPart(call_id=c.id, content="sunny") for c in first.message.tool_calls))]
        second = await llm.turn(msgs, TOOLS)
        await llm.aclose()
    oslo, bergen = first.message.tool_calls
    assert (oslo.arguments, bergen.arguments) == ({"city": "Oslo"}, {"city": "Bergen"})
    assert oslo.id and bergen.id and oslo.id != bergen.id
    sent = srv.requests[1].messages
    assert [c["id"] for c in sent[1]["tool_calls"]] == [oslo.id, bergen.id]
    assert [m["tool_call_id"] for m in sent[2:]] == [oslo.id, bergen.id]
    assert sent[1]["tool_calls"][0]["extra_content"]["google"]["thought_signature"]
    assert second.message.text == "Both sunny." and [r.status for r in srv.requests] == [200, 200]
    # stable: the same response read again names its calls the same way
    again = TurnBuilder(get_profile("gemini"), tool_names=[])
    again.feed({"id": first.response_id, "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"tool_calls": [{"id": "", "type": "function", "function": {
                    "name": "get_weather", "arguments": '{"city": "Oslo"}'}}]}}]})
    assert again.build("gemini").message.tool_calls[0].id == oslo.id


# -- OpenRouter --------------------------------------------------------------------------------


async def test_openrouter_stream_comments_placeholder_signature_and_null_reasoning() -> None:
    """`: OPENROUTER PROCESSING` comments, a `signature: ""` placeholder before the real one,
    `reasoning: null` on content deltas, and a text and an encrypted detail sharing index 0:
    the turn keeps both details (signature intact) and reports OpenRouter's cost."""
    async with ScriptedModelServer("openrouter") as srv:
        srv.script(reply("4", reasoning="Add them.", signature="SIG-R",
                         usage={"input_tokens": 10, "output_tokens": 5, "cost_micro_usd": 2500}))
        llm = make_model(srv, "openrouter", "anthropic/claude-sonnet-4.5", stream=True)
        turn = await llm.turn([Message.user("2+2?")])
        await llm.aclose()
    text, encrypted = turn.message.parts[0].opaque  # type: ignore[union-attr]
    assert text["signature"] == "SIG-R" and text["text"] == "Add them."
    assert encrypted == {"type": "reasoning.encrypted", "data": "enc-SIG-R",
                         "format": "anthropic-claude-v1", "index": 0}
    assert turn.message.text == "4" and turn.provider_cost_usd == pytest.approx(0.0025)
    wire = await _raw("openrouter", reply("4", reasoning="Add them."), stream=True)
    assert wire.startswith(": OPENROUTER PROCESSING\n\n") and '"reasoning": null' in wire


@STREAM
async def test_openrouter_cost_is_recorded(stream: bool) -> None:
    """`usage.cost` (JSON and the last SSE chunk) becomes `Turn.provider_cost_usd`."""
    async with ScriptedModelServer("openrouter") as srv:
        srv.script(reply("ok", usage={"cost_micro_usd": 1500}))
        llm = make_model(srv, "openrouter", "deepseek/deepseek-v3.2", stream=stream)
        turn = await llm.turn([Message.user("q")])
        await llm.aclose()
    assert turn.provider_cost_usd == pytest.approx(0.0015)


def test_provider_cost_adds_the_upstream_bill_of_a_byok_call() -> None:
    """With your own upstream key OpenRouter charges a fee (`cost`) and the upstream provider
    bills `cost_details.upstream_inference_cost` separately: the call cost both."""
    byok = {"cost": 0.0001, "is_byok": True, "cost_details": {"upstream_inference_cost": 0.002}}
    assert provider_cost(byok) == pytest.approx(0.0021)
    assert provider_cost({**byok, "is_byok": False}) == pytest.approx(0.0001)
    assert provider_cost({"prompt_tokens": 3}) is None and provider_cost(None) is None


# -- Groq, Together, vLLM, DeepSeek, Z.ai ------------------------------------------------------


@STREAM
async def test_groq_usage_in_x_groq_channel_deltas_and_whole_call(stream: bool) -> None:
    """Streams carry usage only in `x_groq.usage`; reasoning deltas come marked
    `channel: "analysis"`; calls arrive whole with `fc_<uuid>` ids; the replay carries no
    reasoning field (Groq's 400 "property ... is unsupported")."""
    async with ScriptedModelServer("groq") as srv:
        usage = {"input_tokens": 61, "output_tokens": 23, "reasoning_tokens": 9}
        srv.script(reply(reasoning="Check weather.", usage=usage,
                         tool_calls=[call("get_weather", {"city": "Oslo"})]),
                   reply("Sunny.", usage=usage))
        llm = make_model(srv, "groq", "openai/gpt-oss-120b", stream=stream)
        first, second, _ = await two_turns(llm, srv, reasoning="Check weather.")
        await llm.aclose()
    [tool_call] = first.message.tool_calls
    assert tool_call.id.startswith("fc_") and tool_call.arguments == {"city": "Oslo"}
    assert first.message.reasoning == "Check weather."
    assert (first.usage.input_tokens, first.usage.output_tokens, first.usage.reasoning_tokens) \
        == (61, 23, 9)
    assert [r.status for r in srv.requests] == [200, 200]
    wire = await _raw("groq", reply("x", reasoning="r"), stream=True)
    assert '"channel": "analysis"' in wire and '"x_groq": {"id"' in wire


@STREAM
async def test_together_role_and_token_id_on_every_chunk_and_top_level_cached(stream: bool) -> None:
    """Every chunk repeats `delta.role` and a `token_id`, plain answers carry `tool_calls: []`,
    cached prompt tokens sit at the top of `usage`."""
    async with ScriptedModelServer("together") as srv:
        srv.script(reply("Hello there.", reasoning="Be kind.",
                         usage={"input_tokens": 30, "output_tokens": 4, "cached_tokens": 16}))
        llm = make_model(srv, "generic", "deepseek-ai/DeepSeek-R1", stream=stream)
        turn = await llm.turn([Message.user("hi")], TOOLS)
        await llm.aclose()
    assert (turn.message.text, turn.message.reasoning) == ("Hello there.", "Be kind.")
    assert turn.message.tool_calls == [] and turn.finish_reason == "stop"
    assert turn.usage.cached_tokens == 16


@STREAM
async def test_vllm_null_content_and_integer_stop_reason(stream: bool) -> None:
    """vLLM answers `content: null` beside `reasoning` on tool turns and adds an integer
    `stop_reason` token id beside `finish_reason`: the finish reason still rules."""
    async with ScriptedModelServer("vllm") as srv:
        srv.script(reply("Done.", reasoning="Finish."))
        llm = make_model(srv, "vllm", "Qwen/Qwen3-8B", stream=stream)
        turn = await llm.turn([Message.user("q")])
        await llm.aclose()
    assert (turn.message.text, turn.finish_reason) == ("Done.", "stop")
    assert '"stop_reason": 151645' in await _raw("vllm", reply("Done."))


@STREAM
async def test_deepseek_answers_under_another_model_name(stream: bool) -> None:
    """The turn records the model that answered (`deepseek-v4-flash`), not the alias asked
    for; indexed non-streamed tool calls stay one call each."""
    async with ScriptedModelServer("deepseek") as srv:
        srv.script(reply(reasoning="r", tool_calls=[call("get_weather", {"city": "Oslo"}),
                                                    call("get_weather", {"city": "Rome"})]))
        llm = make_model(srv, "deepseek", "deepseek-reasoner", stream=stream)
        turn = await llm.turn([Message.user("q")], TOOLS)
        await llm.aclose()
    assert srv.requests[0].body["model"] == "deepseek-reasoner"
    assert turn.model == "deepseek-v4-flash"
    assert [c.arguments["city"] for c in turn.message.tool_calls] == ["Oslo", "Rome"]


async def test_zai_chunks_without_finish_reason_key_complete_the_turn() -> None:
    """Z.ai chunks before the last have no `finish_reason` key at all."""
    async with ScriptedModelServer("zai") as srv:
        srv.script(reply(reasoning="Plan.", tool_calls=[call("get_weather", {"city": "Oslo"})]),
                   reply("Sunny."))
        llm = make_model(srv, "zai", "glm-4.6", stream=True)
        first, second, _ = await two_turns(llm, srv, reasoning="Plan.")
        await llm.aclose()
    assert first.finish_reason == "tool_calls" and second.message.text == "Sunny."
    assert srv.requests[1].messages[2]["reasoning_content"] == "Plan."
    wire = await _raw("zai", reply("x"), stream=True)
    first_chunk = wire.split("\n\n")[0]
    assert "finish_reason" not in first_chunk and '"finish_reason": "stop"' in wire


def test_text_part_order_survives_chunk_lists() -> None:
    """A transition chunk list holding the end of thinking and the first text chunk splits
    correctly; reasoning replays to Mistral as a thinking chunk followed by a text chunk."""
    b = TurnBuilder(get_profile("mistral"), tool_names=[])
    b.feed({"choices": [{"index": 0, "delta": {"content": [
        {"type": "thinking", "thinking": [{"type": "text", "text": "a"}]}]}}]})
    b.feed({"choices": [{"index": 0, "delta": {"content": [
        {"type": "thinking", "thinking": [{"type": "text", "text": "b"}], "closed": True},
        {"type": "text", "text": "X"}]}}]})
    b.feed({"choices": [{"index": 0, "delta": {"content": "Y"}, "finish_reason": "stop"}]})
    turn = b.build("mistral")
    assert (turn.message.reasoning, turn.message.text) == ("ab", "XY")
    assert isinstance(turn.message.parts[1], TextPart)
    from agentkit.models._openai_wire import wire_messages

    [wire] = wire_messages(get_profile("mistral"), [turn.message])
    assert wire["content"] == [{"type": "thinking", "closed": True,
                                "thinking": [{"type": "text", "text": "ab"}]},
                               {"type": "text", "text": "XY"}]


def test_analysis_channel_content_is_reasoning() -> None:
    """A delta marked `channel: "analysis"` (gpt-oss harmony) holds reasoning, even when a
    server puts it in `content` rather than in `reasoning`: it never leaks into the answer."""
    b = TurnBuilder(get_profile("groq"), tool_names=[])
    b.feed({"choices": [{"index": 0, "delta": {"content": "think", "channel": "analysis"}}]})
    b.feed({"choices": [{"index": 0, "delta": {"reasoning": "more", "channel": "analysis"}}]})
    b.feed({"choices": [{"index": 0, "delta": {"content": "Answer.", "channel": "final"},
                         "finish_reason": "stop"}]})
    message = b.build("groq").message
    assert (message.reasoning, message.text) == ("thinkmore", "Answer.")
