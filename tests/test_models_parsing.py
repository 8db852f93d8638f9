"""Parsing units: think tags split anywhere, text tool calls, argument repair, fragment
accumulation, and profile data (reasoning mapping, refusals, lookup errors)."""

from __future__ import annotations

import pytest

from agentkit.errors import ConfigError
from agentkit.messages import Message, ReasoningPart
from agentkit.models._openai_wire import TurnBuilder, wire_messages
from agentkit.models._parsing import (
    ThinkSplitter,
    ToolCallAccumulator,
    extract_text_tool_calls,
    parse_arguments,
)
from agentkit.models.base import Delta
from agentkit.models.profiles import PROFILES, get_profile, reasoning_params
from agentkit.task import ReasoningSpec

TAGS = [("<think>", "</think>"), ("<thought>", "</thought>"), ("◁think▷", "◁/think▷")]


def split_all(text: str, size: int, *, implicit: bool = False, truncated: bool = False
              ) -> tuple[str, str]:
    sp = ThinkSplitter(TAGS, implicit_open=implicit)
    pieces = []
    for i in range(0, len(text), size):
        pieces += sp.feed(text[i:i + size])
    pieces += sp.finish(truncated=truncated)
    return ("".join(t for k, t in pieces if k == "reasoning"),
            "".join(t for k, t in pieces if k == "text"))


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 100])
@pytest.mark.parametrize("text", [
    "<think>User wants Oslo.</think>\n\nI will check.",      # R1-0528: both tags
    "User wants Oslo.\n</think>\n\nI will check.",            # R1 / V3.1: no opening tag
    "<thought>User wants Oslo.</thought>I will check.",       # Gemini
    "◁think▷User wants Oslo.◁/think▷I will check.",           # Kimi
])
def test_think_tags_survive_any_chunking(text: str, size: int) -> None:
    assert split_all(text, size) == ("User wants Oslo.\n" if "\n</think>" in text
                                     else "User wants Oslo.", "I will check.")


@pytest.mark.parametrize("size", [1, 3, 64])
def test_long_reasoning_without_an_opening_tag_is_held_then_split(size: int) -> None:
    """R1-style reasoning of 200,000 characters with no opening tag, streamed in small chunks:
    held undecided (as a list of chunks, not one string re-copied per chunk), then split at the
    close tag even when the tag itself arrives one character at a time."""
    thinking = "step " * 40_000
    reasoning, text = split_all(f"{thinking}</think>Answer: 42", size)
    assert reasoning == thinking and text == "Answer: 42"
    assert split_all(thinking, size) == ("", thinking)  # no tag at all: content
    assert split_all(thinking, size, implicit=True, truncated=True) == (thinking, "")


def test_no_tags_is_content_and_later_think_block_is_reasoning() -> None:
    assert split_all("Plain answer, no thinking.", 4) == ("", "Plain answer, no thinking.")
    assert split_all("Hi.<think>more</think>Done", 3) == ("more", "Hi.Done")


def test_unclosed_reasoning_cut_by_length() -> None:
    # explicit opening tag: reasoning whatever the finish
    assert split_all("<think>Check wea", 4) == ("Check wea", "")
    # no opening tag: only the length cut tells it was reasoning (implicit-open models)
    assert split_all("Check wea", 4, implicit=True, truncated=True) == ("Check wea", "")
    assert split_all("Check wea", 4, implicit=True, truncated=False) == ("", "Check wea")


def test_content_streams_through_once_decided() -> None:
    sp = ThinkSplitter(TAGS)
    assert sp.feed("<think>ab") == [("reasoning", "ab")]
    assert sp.feed("c</th") == [("reasoning", "c")]
    assert sp.feed("ink>hello <") == [("text", "hello ")]  # "<" could open a tag: held
    assert sp.feed("b>") == [("text", "<b>")]


@pytest.mark.parametrize(("raw", "expected"), [
    ("", {}), ("   ", {}), (None, {}), ("null", {}),
    ({"city": "Oslo"}, {"city": "Oslo"}),                     # Ollama native: an object
    ('{"city": "Oslo"}', {"city": "Oslo"}),
    ('{"city": "Oslo"', {"city": "Oslo"}),                    # missing final brace
    ('{"city": "Oslo"}\n<|call|>', {"city": "Oslo"}),         # trailing garbage
    ('"{\\"city\\": \\"Oslo\\"}"', {"city": "Oslo"}),         # double-encoded
])
def test_arguments_parsed_or_repaired(raw: object, expected: dict[str, str]) -> None:
    assert parse_arguments(raw) == (expected, None)


@pytest.mark.parametrize("raw", ['{"city": "Os', '{"a": 1}{"b": 2}', "city=Oslo", "[1, 2]", "42"])
def test_ambiguous_arguments_are_reported_not_guessed(raw: str) -> None:
    args, err = parse_arguments(raw)
    assert args == {} and err is not None and "JSON" in err


def test_accumulator_handles_every_fragment_deviation() -> None:
    acc = ToolCallAccumulator()
    # standard: id on the first fragment only, arguments in pieces, names resent (assign)
    acc.add({"index": 0, "id": "a", "function": {"name": "get_weather", "arguments": ""}})
    acc.add({"index": 0, "function": {"name": "get_weather", "arguments": '{"city":'}})
    acc.add({"index": 0, "function": {"name": "get_weather", "arguments": '"Oslo"}'}})
    # Ollama: index 0 reused for a second call, told apart by its id
    acc.add({"index": 0, "id": "b", "function": {"name": "get_time", "arguments": "{}"}})
    # Gemini: no index at all, extra_content to echo
    acc.add({"id": "c", "function": {"name": "f", "arguments": "{}"},
             "extra_content": {"google": {"thought_signature": "S"}}})
    # Poolside: integer id; Ollama native: arguments object; no arguments at all
    acc.add({"index": 5, "id": 7, "function": {"name": "g", "arguments": {"x": 1}}})
    acc.add({"index": 6, "id": "e", "function": {"name": "noargs"}})
    calls = acc.calls(provider="gemini")
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("a", "get_weather", {"city": "Oslo"}), ("b", "get_time", {}), ("c", "f", {}),
        ("7", "g", {"x": 1}), ("e", "noargs", {})]
    assert calls[2].extra == {"provider": "gemini",
                              "extra_content": {"google": {"thought_signature": "S"}}}


def test_text_tool_calls_tagged_and_fenced() -> None:
    text = ('I will check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}'
            '\n</tool_call>')
    rest, calls = extract_text_tool_calls(text, ["get_weather"])
    assert rest == "I will check." and calls[0].arguments == {"city": "Oslo"}
    fenced = 'Calling:\n```json\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n```'
    rest, calls = extract_text_tool_calls(fenced, ["get_weather"])
    assert rest == "Calling:" and calls[0].name == "get_weather"
    # JSON in an answer that names no offered tool stays text
    answer = 'Here:\n```json\n{"name": "Oslo", "population": 700000}\n```'
    assert extract_text_tool_calls(answer, ["get_weather"]) == (answer, [])


def test_profiles_lookup_and_required_set() -> None:
    required = {"deepseek", "deepseek-reasoner", "deepseek-hybrid", "kimi", "qwen", "dashscope",
                "openrouter", "vllm", "sglang", "llamacpp", "ollama", "openai", "gemini", "xai",
                "anthropic", "generic", "local", "mistral", "groq", "zai", "together",
                "huggingface", "cerebras", "ollama-cloud"}
    assert required <= set(PROFILES)
    with pytest.raises(ConfigError, match="unknown model profile 'deepseak'.*deepseek-reasoner"):
        get_profile("deepseak")


@pytest.mark.parametrize(("profile", "model", "spec", "stream", "expected"), [
    ("deepseek", "deepseek-chat", ReasoningSpec(effort="high"), False,
     {"thinking": {"type": "enabled"}, "reasoning_effort": "high"}),
    ("kimi", "kimi-k2.5", ReasoningSpec(enabled=False), False, {"thinking": {"type": "disabled"}}),
    ("deepseek-hybrid", "V3.1", ReasoningSpec(enabled=True), False,
     {"chat_template_kwargs": {"thinking": True}}),
    ("qwen", "Qwen3", ReasoningSpec(enabled=False), False,
     {"chat_template_kwargs": {"enable_thinking": False}}),
    ("dashscope", "qwen-plus", ReasoningSpec(budget_tokens=500), True,
     {"enable_thinking": True, "thinking_budget": 500}),
    ("dashscope", "qwen-plus", ReasoningSpec(budget_tokens=500), False, {"enable_thinking": False}),
    ("openrouter", "x", ReasoningSpec(effort="high"), False,
     {"reasoning": {"enabled": True, "effort": "high"}}),
    ("openrouter", "x", ReasoningSpec(budget_tokens=2000), False,
     {"reasoning": {"enabled": True, "max_tokens": 2000}}),
    ("sglang", "x", ReasoningSpec(enabled=True), False,
     {"separate_reasoning": True, "chat_template_kwargs": {"enable_thinking": True}}),
    ("ollama", "x", ReasoningSpec(enabled=False), False, {"reasoning_effort": "none"}),
    ("gemini", "x", ReasoningSpec(effort="low"), False, {"reasoning_effort": "low"}),
    ("gemini", "x", ReasoningSpec(budget_tokens=8000), False, {"extra_body": {"google": {
        "thinking_config": {"thinking_budget": 8000, "include_thoughts": True}}}}),
    ("gemini", "x", ReasoningSpec(enabled=False), False, {"reasoning_effort": "none"}),
    ("xai", "grok-3-mini", ReasoningSpec(effort="medium"), False, {"reasoning_effort": "high"}),
    ("openai", "o3", ReasoningSpec(effort="medium"), False, {"reasoning_effort": "medium"}),
    ("xai", "grok-3-mini", ReasoningSpec(effort="high"), False, {"reasoning_effort": "high"}),
    ("xai", "grok-4", ReasoningSpec(effort="high"), False, {}),   # refused on grok-4
    ("anthropic", "claude-sonnet-4-5", ReasoningSpec(budget_tokens=500), False,
     {"thinking": {"type": "enabled", "budget_tokens": 1024}}),    # minimum 1024
    ("anthropic", "claude-opus-4-7", ReasoningSpec(effort="high"), False,
     {"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}}),
    ("deepseek", "deepseek-chat", None, False, {}),
])
def test_reasoning_spec_maps_to_each_profile(profile: str, model: str, spec: ReasoningSpec | None,
                                             stream: bool, expected: dict[str, object]) -> None:
    assert reasoning_params(get_profile(profile), spec, model=model, stream=stream) == expected


def test_refusals_depend_on_model() -> None:
    openai, xai = get_profile("openai"), get_profile("xai")
    assert openai.refuses("temperature", "o3-mini") and openai.refuses("temperature", "gpt-5")
    assert not openai.refuses("temperature", "gpt-4o")
    assert openai.refuses("max_tokens", "gpt-4o")
    assert xai.refuses("stop", "grok-4") and not xai.refuses("stop", "grok-2")
    assert xai.refuses("reasoning_effort", "grok-4") and not xai.refuses("reasoning_effort", "grok-3-mini")


def _chunk(delta: dict[str, object], fr: str | None = None) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": fr}]}


def test_content_is_not_held_once_a_reasoning_field_shows_a_parser() -> None:
    seen: list[Delta] = []
    b = TurnBuilder(get_profile("vllm"), tool_names=[], on_delta=seen.append)
    b.feed(_chunk({"reasoning": "think"}))
    b.feed(_chunk({"content": "Hel"}))
    assert [(d.kind, d.text) for d in seen] == [("reasoning", "think"), ("text", "Hel")]
    b.feed(_chunk({"content": "lo"}, "stop"))
    assert b.build("vllm").message.text == "Hello"


def test_openrouter_details_merged_per_index_and_kept_in_order() -> None:
    b = TurnBuilder(get_profile("openrouter"), tool_names=[])
    fmt = "openai-responses-v1"
    b.feed(_chunk({"reasoning": "**Plan", "reasoning_details": [
        {"type": "reasoning.summary", "summary": "**Plan", "format": fmt, "index": 0}]}))
    b.feed(_chunk({"reasoning": "**", "reasoning_details": [
        {"type": "reasoning.summary", "summary": "**", "format": fmt, "index": 0}]}))
    b.feed(_chunk({"reasoning_details": [
        {"type": "reasoning.encrypted", "data": "b64", "format": fmt, "index": 1}]}, "stop"))
    part = b.build("openrouter").message.parts[0]
    assert isinstance(part, ReasoningPart) and part.text == "**Plan**"
    assert part.opaque == [{"type": "reasoning.summary", "summary": "**Plan**", "format": fmt, "index": 0},
                           {"type": "reasoning.encrypted", "data": "b64", "format": fmt, "index": 1}]
    wire = wire_messages(get_profile("openrouter"), [Message(role="assistant", parts=(part,))])
    assert wire[0]["reasoning_details"] == part.opaque  # replayed unchanged


def test_gemini_message_level_signature_echoed() -> None:
    b = TurnBuilder(get_profile("gemini"), tool_names=[])
    b.feed(_chunk({"content": "Hi", "extra_content": {"google": {"thought_signature": "M"}}}, "stop"))
    turn = b.build("gemini")
    assert turn.message.extra == {"gemini": {"extra_content": {"google": {"thought_signature": "M"}}}}
    wire = wire_messages(get_profile("gemini"), [turn.message])
    assert wire[0]["extra_content"] == {"google": {"thought_signature": "M"}}
    assert "extra_content" not in wire_messages(get_profile("deepseek"), [turn.message])[0]


def test_gemini_signature_on_a_thought_delta_and_top_level_duplicate_are_kept() -> None:
    """The signature may ride on a delta marked `thought: true` (it used to be dropped with the
    marker) and be repeated as a top-level `thought_signature`; both go back, the marker not."""
    b = TurnBuilder(get_profile("gemini"), tool_names=[])
    b.feed(_chunk({"content": "<thought>plan", "extra_content": {"google": {"thought": True}}}))
    b.feed(_chunk({"content": "</thought>4", "thought_signature": "S",
                   "extra_content": {"google": {"thought": True, "thought_signature": "S"}}},
                  "stop"))
    turn = b.build("gemini")
    assert (turn.message.reasoning, turn.message.text) == ("plan", "4")
    [wire] = wire_messages(get_profile("gemini"), [turn.message])
    assert wire["extra_content"] == {"google": {"thought_signature": "S"}}
    assert wire["thought_signature"] == "S"
    unsigned = TurnBuilder(get_profile("gemini"), tool_names=[])
    unsigned.feed(_chunk({"content": "x", "extra_content": {"google": {"thought": True}}}, "stop"))
    assert unsigned.build("gemini").message.extra is None


def test_text_tool_calls_in_other_model_formats() -> None:
    kimi = ("Checking.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
            '<|tool_call_argument_begin|>{"city": "Oslo"}<|tool_call_end|><|tool_calls_section_end|>')
    rest, [c] = extract_text_tool_calls(kimi, [])
    assert (rest, c.id, c.name, c.arguments) == ("Checking.", "functions.get_weather:0", "get_weather",
                                                 {"city": "Oslo"})
    llama = 'Sure. <function=get_weather>{"city": "Oslo"}</function>'
    rest, [c] = extract_text_tool_calls(llama, [])
    assert (rest, c.name, c.arguments) == ("Sure.", "get_weather", {"city": "Oslo"})
    coder = ("<tool_call>\n<function=get_weather>\n<parameter=city>\nOslo\n</parameter>\n"
             "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>")
    rest, [c] = extract_text_tool_calls(coder, [])
    assert (rest, c.arguments) == ("", {"city": "Oslo", "days": 3})
