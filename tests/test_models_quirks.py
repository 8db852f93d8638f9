"""The quirks of `reasoning-dialects.md` section (c) and the streaming deviations, each over
real HTTP against the scripted server: replay rules broken -> the provider's 400, refused
parameters never sent, truncation reported, irregular fragments assembled."""

from __future__ import annotations

import json

import pytest
from _model_helpers import TOOLS, make_model, two_turns

from agentkit.errors import ProviderHTTPError
from agentkit.messages import Message, ReasoningPart, ToolCallPart, ToolResultPart
from agentkit.models.base import Delta, ModelSettings
from agentkit.task import ReasoningSpec
from agentkit.testing import ScriptedModelServer, call, raw, reply


def _history(first: Message) -> list[Message]:
    return [Message.user("Weather in Oslo?"), first,
            Message(role="tool", parts=tuple(ToolResultPart(call_id=c.id, content="sunny")
                                             for c in first.tool_calls))]


def _without_reasoning(m: Message) -> Message:
    return Message(role=m.role, parts=tuple(p for p in m.parts if not isinstance(p, ReasoningPart)))


async def _first_then(dialect: str, profile: str, model: str = "m", **spec: object
                      ) -> tuple[ScriptedModelServer, Message, object]:
    srv = await ScriptedModelServer(dialect).start()
    srv.script(reply(reasoning="Need weather.", tool_calls=[call("get_weather", {"city": "Oslo"})]),
               reply(content="Sunny"))
    llm = make_model(srv, profile, model, **spec)
    first = await llm.turn([Message.user("Weather in Oslo?")], TOOLS)
    return srv, first.message, llm


# -- quirk 2: dropping reasoning on tool turns -> HTTP 400 ------------------------------------


@pytest.mark.parametrize(("dialect", "words"), [
    ("deepseek", "The `reasoning_content` in the thinking mode must be passed back"),
    ("kimi", "reasoning_content is missing in assistant tool call message at index 1"),
])
async def test_dropping_reasoning_content_gets_the_providers_400(dialect: str, words: str) -> None:
    srv, first, llm = await _first_then(dialect, dialect)
    stripping = make_model(srv, "deepseek-reasoner")  # a client that never replays reasoning
    try:
        with pytest.raises(ProviderHTTPError) as info:
            await stripping.turn(_history(first), TOOLS)
        assert info.value.status == 400 and not info.value.retryable
        assert words in str(info.value)
        # the same history through the right profile is accepted
        turn = await llm.turn(_history(first), TOOLS)  # type: ignore[attr-defined]
        assert turn.message.text == "Sunny"
        assert srv.requests[-1].messages[1]["reasoning_content"] == "Need weather."
    finally:
        await llm.aclose()  # type: ignore[attr-defined]
        await stripping.aclose()
        await srv.stop()


async def test_provider_switch_sends_placeholder_reasoning_to_deepseek() -> None:
    """A tool turn with no stored reasoning (another provider made it) still gets `""`."""
    srv, first, llm = await _first_then("deepseek", "deepseek")
    try:
        foreign = Message(role="assistant", parts=(
            ReasoningPart(text="other vendor", provider="openrouter", opaque=[{"x": 1}]),
            ToolCallPart(id="x1", name="get_weather", arguments={"city": "Oslo"})))
        msgs = [Message.user("q"), foreign, Message(role="tool", parts=(
            ToolResultPart(call_id="x1", content="sunny"),))]
        turn = await llm.turn(msgs, TOOLS)  # type: ignore[attr-defined]
        assert turn.message.text == "Sunny"
        sent = srv.requests[-1].messages[1]
        assert sent["reasoning_content"] == "" and "reasoning_details" not in sent
    finally:
        await llm.aclose()  # type: ignore[attr-defined]
        await srv.stop()


async def test_kimi_refuses_boolean_thinking() -> None:
    async with ScriptedModelServer("kimi") as srv:
        llm = make_model(srv, "kimi", extra_body={"thinking": True})
        with pytest.raises(ProviderHTTPError, match="thinking must be an object"):
            await llm.turn([Message.user("hi")])
        srv.script(reply(content="ok"))
        good = make_model(srv, "kimi", reasoning=ReasoningSpec(enabled=True))
        assert (await good.turn([Message.user("hi")])).message.text == "ok"
        assert srv.requests[-1].body["thinking"] == {"type": "enabled"}
        await llm.aclose()
        await good.aclose()


@pytest.mark.parametrize("stream", [False, True])
async def test_legacy_deepseek_reasoner_strips_reasoning(stream: bool) -> None:
    async with ScriptedModelServer("deepseek-reasoner") as srv:
        srv.script(reply(content="4", reasoning="2+2..."), reply(content="8", reasoning="4*2"))
        llm = make_model(srv, "deepseek-reasoner", "deepseek-reasoner", stream=stream)
        first = await llm.turn([Message.user("2+2?")])
        assert first.message.reasoning == "2+2..." and first.message.text == "4"
        second = await llm.turn([Message.user("2+2?"), first.message, Message.user("times 2?")])
        assert second.message.text == "8"
        assert "reasoning_content" not in srv.requests[1].messages[1]
        # the DeepSeek-V3.2 profile replays it, which this legacy endpoint refuses
        wrong = make_model(srv, "deepseek", "deepseek-reasoner", stream=stream)
        srv.script(reply(content="4", reasoning="2+2..."))
        own = await wrong.turn([Message.user("2+2?")])
        with pytest.raises(ProviderHTTPError, match="must not be sent back"):
            await wrong.turn([Message.user("2+2?"), own.message, Message.user("times 2?")])
        await llm.aclose()
        await wrong.aclose()


async def test_anthropic_rejects_missing_or_modified_thinking() -> None:
    spec = {"reasoning": ReasoningSpec(budget_tokens=1024), "max_tokens": 4096}
    srv, first, llm = await _first_then("anthropic", "anthropic", "claude-sonnet-4-5", **spec)
    try:
        with pytest.raises(ProviderHTTPError, match="Expected `thinking` or `redacted_thinking`, but "
                                                    "found `tool_use`"):
            await llm.turn(_history(_without_reasoning(first)), TOOLS)  # type: ignore[attr-defined]
        thinking = first.parts[0]
        assert isinstance(thinking, ReasoningPart)
        forged = Message(role="assistant", parts=(thinking.model_copy(update={"text": "edited"}),
                                                  *first.parts[1:]))
        with pytest.raises(ProviderHTTPError, match="Invalid `signature`"):
            await llm.turn(_history(forged), TOOLS)  # type: ignore[attr-defined]
        assert (await llm.turn(_history(first), TOOLS)).message.text == "Sunny"  # type: ignore[attr-defined]
    finally:
        await llm.aclose()  # type: ignore[attr-defined]
        await srv.stop()


async def test_openrouter_details_must_come_back_unmodified() -> None:
    srv, first, llm = await _first_then("openrouter", "openrouter")
    try:
        part = first.parts[0]
        assert isinstance(part, ReasoningPart) and part.opaque[0]["signature"].startswith("sig-")
        tampered = [{**part.opaque[0], "signature": "forged"}]
        bad = Message(role="assistant", parts=(part.model_copy(update={"opaque": tampered}),
                                               *first.parts[1:]))
        with pytest.raises(ProviderHTTPError, match="reasoning_details must be passed back unmodified"):
            await llm.turn(_history(bad), TOOLS)  # type: ignore[attr-defined]
    finally:
        await llm.aclose()  # type: ignore[attr-defined]
        await srv.stop()


async def test_gemini_missing_thought_signature_gets_array_shaped_400() -> None:
    srv, first, llm = await _first_then("gemini", "gemini")
    try:
        stripped = Message(role="assistant", parts=tuple(
            p.model_copy(update={"extra": None}) if isinstance(p, ToolCallPart) else p
            for p in first.parts))
        with pytest.raises(ProviderHTTPError) as info:
            await llm.turn(_history(stripped), TOOLS)  # type: ignore[attr-defined]
        assert "thought_signature" in str(info.value) and "INVALID_ARGUMENT" in str(info.value)
    finally:
        await llm.aclose()  # type: ignore[attr-defined]
        await srv.stop()


# -- quirk 3: a replay field the server would silently ignore (strict scripted check) --------


async def test_vllm_server_flags_reasoning_content_it_would_ignore() -> None:
    """A client replaying `reasoning_content` to vLLM >= 0.16 degrades silently in production;
    the scripted server makes that a 400 so the bug cannot hide."""
    srv, first, llm = await _first_then("vllm", "sglang")  # sglang's field name, wrong here
    try:
        with pytest.raises(ProviderHTTPError, match="strict replay.*`reasoning`"):
            await llm.turn(_history(first), TOOLS)  # type: ignore[attr-defined]
    finally:
        await llm.aclose()  # type: ignore[attr-defined]
        await srv.stop()


async def test_qwen_replays_reasoning_only_in_the_current_tool_loop() -> None:
    async with ScriptedModelServer("qwen") as srv:
        llm = make_model(srv, "qwen")
        first, second, msgs = await two_turns(llm, srv)
        srv.script(reply(content="Still sunny."))
        msgs += [second.message, Message.user("And now?")]
        await llm.turn(msgs, TOOLS)
        old_turn = srv.requests[-1].messages[2]
        assert old_turn["tool_calls"] and "reasoning_content" not in old_turn  # before last user
        await llm.aclose()


# -- quirk 4: tool calls inside <think>, fenced JSON ------------------------------------------


async def test_tool_call_emitted_inside_think_is_still_a_call() -> None:
    content = ('<think>I should call it.\n<tool_call>{"name": "get_weather", "arguments": '
               '{"city": "Oslo"}}</tool_call></think>')
    async with ScriptedModelServer("raw") as srv:
        srv.script(reply(content=content))
        llm = make_model(srv, "generic")
        turn = await llm.turn([Message.user("q")], TOOLS)
        await llm.aclose()
    assert turn.message.tool_calls[0].arguments == {"city": "Oslo"}
    assert turn.message.reasoning == "I should call it." and turn.finish_reason == "tool_calls"


# -- quirk 5: reasoning never closes -----------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("dialect", "profile"), [("vllm", "vllm"), ("deepseek-hybrid", "deepseek-hybrid")])
async def test_length_before_reasoning_ends_is_truncation(dialect: str, profile: str, stream: bool) -> None:
    async with ScriptedModelServer(dialect) as srv:
        if dialect == "vllm":
            srv.script(reply(reasoning="Check wea", finish_reason="length"))
        else:  # raw template output: no opening tag and never a closing one
            srv.script(reply(content="Check wea", finish_reason="length"))
        llm = make_model(srv, profile, stream=stream)
        turn = await llm.turn([Message.user("q")], TOOLS)
        await llm.aclose()
    assert turn.truncated and turn.finish_reason == "length"
    assert turn.message.reasoning == "Check wea" and turn.message.text == ""


# -- quirks 7, 8: irregular fragments and arguments ---------------------------------------------


def _chunk(delta: dict[str, object], fr: str | None = None) -> dict[str, object]:
    return {"id": "c", "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": fr}]}


async def test_irregular_stream_fragments_assemble() -> None:
    events = [
        ": keep-alive\n\n", "\n",
        _chunk({"role": "assistant", "content": None, "reasoning_content": ""}),
        _chunk({"reasoning_content": "Two calls."}),
        # MiniMax-style: the full name on every fragment; Poolside-style: integer id
        _chunk({"tool_calls": [{"index": 0, "id": 11, "type": "function",
                                "function": {"name": "get_weather", "arguments": '{"ci'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"name": "get_weather",
                                                         "arguments": 'ty": "Oslo"}'}}]}),
        # Ollama-compat: the second call reuses index 0 with a new id, empty arguments
        _chunk({"tool_calls": [{"index": 0, "id": "call_b", "type": "function",
                                "function": {"name": "get_weather", "arguments": ""}}]}),
        _chunk({}, "stop"),
        {"id": "c", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7,
                                             "completion_tokens_details": {"reasoning_tokens": 3}}},
        "data: [DONE]\n\n",
    ]
    async with ScriptedModelServer("generic") as srv:
        srv.script(raw(events))
        llm = make_model(srv, "deepseek", stream=True)
        deltas: list[Delta] = []
        turn = await llm.turn([Message.user("q")], TOOLS, on_delta=deltas.append)
        await llm.aclose()
    assert [(c.id, c.name, c.arguments) for c in turn.message.tool_calls] == [
        ("11", "get_weather", {"city": "Oslo"}), ("call_b", "get_weather", {})]
    assert turn.finish_reason == "tool_calls" and turn.message.reasoning == "Two calls."
    assert (turn.usage.input_tokens, turn.usage.output_tokens, turn.usage.reasoning_tokens) == (5, 7, 3)
    assert "".join(d.text for d in deltas if d.kind == "reasoning") == "Two calls."
    assert {d.tool_call_index for d in deltas if d.kind == "tool_call"} == {0, 1}


@pytest.mark.parametrize("stream", [False, True])
async def test_invalid_arguments_reported_not_run(stream: bool) -> None:
    async with ScriptedModelServer("deepseek") as srv:
        srv.script(reply(reasoning="r", tool_calls=[call("get_weather", '{"city": "Os')]))
        llm = make_model(srv, "deepseek", stream=stream)
        turn = await llm.turn([Message.user("q")], TOOLS)
        await llm.aclose()
    [c] = turn.message.tool_calls
    assert c.arguments == {} and c.raw_arguments == '{"city": "Os'
    assert c.parse_error and "not valid JSON" in c.parse_error


# -- quirks 9, 10: refused parameters are never sent ---------------------------------------------


async def test_openai_o_series_gets_max_completion_tokens_and_no_temperature() -> None:
    async with ScriptedModelServer("openai") as srv:
        srv.script(reply(content="hi", usage={"reasoning_tokens": 64, "cached_tokens": 10}))
        llm = make_model(srv, "openai", "o3", max_tokens=500, temperature=0.2,
                         reasoning=ReasoningSpec(effort="high"))
        turn = await llm.turn([Message.user("q")])
        await llm.aclose()
    body = srv.requests[0].body
    assert body["max_completion_tokens"] == 500 and "max_tokens" not in body
    assert "temperature" not in body and body["reasoning_effort"] == "high"
    assert (turn.usage.reasoning_tokens, turn.usage.cached_tokens) == (64, 10)


@pytest.mark.parametrize(("model", "sent_effort"), [("grok-3-mini", True), ("grok-4", False)])
async def test_xai_effort_only_where_accepted(model: str, sent_effort: bool) -> None:
    async with ScriptedModelServer("xai") as srv:
        srv.script(reply(content="ok"))
        llm = make_model(srv, "xai", model, reasoning=ReasoningSpec(effort="high"))
        await llm.turn([Message.user("q")], settings=ModelSettings(stop=["END"]))
        await llm.aclose()
    body = srv.requests[0].body
    assert ("reasoning_effort" in body) is sent_effort and "stop" not in body


async def test_dashscope_auto_streams_when_thinking_and_never_forces_tools() -> None:
    async with ScriptedModelServer("dashscope") as srv:
        srv.script(reply(reasoning="hm", content="ok"), reply(content="plain"))
        llm = make_model(srv, "dashscope", "qwen3-max", reasoning=ReasoningSpec(budget_tokens=300))
        turn = await llm.turn([Message.user("q")], TOOLS, ModelSettings(tool_choice="required"))
        assert turn.message.reasoning == "hm"
        body = srv.requests[0].body
        assert body["stream"] is True and body["enable_thinking"] is True
        assert body["thinking_budget"] == 300 and body["tool_choice"] == "auto"
        # forced non-streaming: thinking is switched off instead of drawing a 400
        plain = make_model(srv, "dashscope", "qwen3-max", stream=False,
                           reasoning=ReasoningSpec(enabled=True))
        assert (await plain.turn([Message.user("q")])).message.text == "plain"
        assert srv.requests[1].body["enable_thinking"] is False
        await llm.aclose()
        await plain.aclose()


async def test_deepseek_thinking_downgrades_forced_tool_choice_and_passes_extra_body() -> None:
    async with ScriptedModelServer("deepseek") as srv:
        srv.script(reply(content="ok"))
        llm = make_model(srv, "deepseek", reasoning=ReasoningSpec(enabled=True),
                         extra_body={"user_id": "u1"})
        await llm.turn([Message.user("q")], TOOLS,
                       ModelSettings(tool_choice="required", extra_body={"top_k": 5}))
        await llm.aclose()
    body = srv.requests[0].body
    assert body["tool_choice"] == "auto" and body["thinking"] == {"type": "enabled"}
    assert body["user_id"] == "u1" and body["top_k"] == 5


async def test_anthropic_forced_tool_choice_with_thinking_becomes_auto() -> None:
    async with ScriptedModelServer("anthropic") as srv:
        srv.script(reply(content="ok"))
        llm = make_model(srv, "anthropic", "claude-opus-4-7", reasoning=ReasoningSpec(effort="high"),
                         temperature=0.3)
        await llm.turn([Message.user("q")], TOOLS, ModelSettings(tool_choice="required"))
        await llm.aclose()
    body = srv.requests[0].body
    assert body["tool_choice"] == {"type": "auto"} and body["thinking"] == {"type": "adaptive"}
    assert body["output_config"] == {"effort": "high"} and "temperature" not in body
    assert "anthropic-beta" not in srv.requests[0].headers  # adaptive turns it on by itself


async def test_gemini_usage_on_every_chunk_is_not_summed() -> None:
    async with ScriptedModelServer("gemini") as srv:
        srv.script(reply(content="hello there", reasoning="think", usage={"input_tokens": 9,
                                                                         "output_tokens": 4}))
        llm = make_model(srv, "gemini", stream=True)
        turn = await llm.turn([Message.user("q")])
        await llm.aclose()
    assert json.dumps(srv.requests[0].body["stream_options"]) == '{"include_usage": true}'
    assert (turn.usage.input_tokens, turn.usage.output_tokens) == (9, 4)
    assert turn.message.reasoning == "think" and turn.message.text == "hello there"


async def test_anthropic_opus_47_gets_adaptive_instead_of_a_budget() -> None:
    async with ScriptedModelServer("anthropic") as srv:
        srv.script(reply(content="ok"))
        llm = make_model(srv, "anthropic", "claude-opus-4-7", reasoning=ReasoningSpec(budget_tokens=4000))
        assert (await llm.turn([Message.user("q")])).message.text == "ok"
        await llm.aclose()
    body = srv.requests[0].body
    assert body["thinking"] == {"type": "adaptive"} and "anthropic-beta" not in srv.requests[0].headers


async def test_non_streamed_calls_without_ids_or_indexes_stay_separate() -> None:
    message = {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
        {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Bergen"}'}}]}
    async with ScriptedModelServer("llamacpp") as srv:
        srv.script(raw(body={"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]}))
        llm = make_model(srv, "llamacpp")
        turn = await llm.turn([Message.user("q")], TOOLS)
        await llm.aclose()
    calls = turn.message.tool_calls
    assert [c.arguments["city"] for c in calls] == ["Oslo", "Bergen"] and calls[0].id != calls[1].id


async def test_gemini_budget_goes_to_thinking_config_not_with_effort() -> None:
    async with ScriptedModelServer("gemini") as srv:
        srv.script(reply(content="ok", reasoning="t"))
        llm = make_model(srv, "gemini", reasoning=ReasoningSpec(budget_tokens=1024, effort="high"))
        turn = await llm.turn([Message.user("q")])
        await llm.aclose()
    body = srv.requests[0].body
    assert "reasoning_effort" not in body and turn.message.reasoning == "t"
    assert body["extra_body"]["google"]["thinking_config"] == {"thinking_budget": 1024,
                                                               "include_thoughts": True}


@pytest.mark.parametrize("profile", ["deepseek", "anthropic"])
async def test_stream_auto_follows_the_delta_callback(profile: str) -> None:
    dialect = "anthropic" if profile == "anthropic" else "deepseek"
    async with ScriptedModelServer(dialect) as srv:
        srv.script(reply(content="quiet"),
                   reply(reasoning="Need weather.", content="Checking.",
                         tool_calls=[call("get_weather", {"city": "Oslo"})]))
        llm = make_model(srv, profile)  # stream: auto
        await llm.turn([Message.user("q")], TOOLS)
        deltas: list[Delta] = []
        turn = await llm.turn([Message.user("q")], TOOLS, on_delta=deltas.append)
        await llm.aclose()
    assert not srv.requests[0].body.get("stream") and srv.requests[1].body["stream"] is True
    by_kind = {k: "".join(d.text for d in deltas if d.kind == k) for k in ("reasoning", "text", "tool_call")}
    assert by_kind["reasoning"] == turn.message.reasoning == "Need weather."
    assert by_kind["text"] == turn.message.text == "Checking."
    assert json.loads(by_kind["tool_call"]) == {"city": "Oslo"}
    assert len([d for d in deltas if d.kind == "reasoning"]) > 1  # pieces, as they arrived
