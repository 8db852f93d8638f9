"""The request a model call records, built from messages rendered once each
(`agentkit.models._request`).

What it proves: over a growing conversation with every part kind (reasoning with a signature
and an opaque payload, tool calls with nested and non-ASCII arguments, tool results, provider
extras), each turn's recorded request equals a fresh ``model_dump`` of every message and tool,
and its fingerprint equals `request_fingerprint` of that request: a ledger written before this
cache resumes and replays against requests built with it. A message is rendered once however
often it is sent, and an evicted or changed entry is rendered again, never reused.
"""

from __future__ import annotations

from typing import Any

from agentkit.messages import (
    Message,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    ToolSpec,
)
from agentkit.models._request import RenderedRequests, request_fingerprint

TOOLS = [ToolSpec(name="list_files", description="List files.",
                  parameters={"type": "object", "properties": {"path": {"type": "string",
                                                                        "default": "."}}}),
         ToolSpec(name="note", description="Keep a note ✓.", parameters={"type": "object"})]
SETTINGS: dict[str, Any] = {"max_tokens": 256, "temperature": 0.5}


def fresh(model: str, messages: list[Message], tools: list[ToolSpec]) -> dict[str, Any]:
    """The request as it was built before the cache: every message dumped anew."""
    return {"model": model, "messages": [m.model_dump(mode="json") for m in messages],
            "tools": [t.model_dump(mode="json") for t in tools], "settings": SETTINGS}


def turn(i: int) -> list[Message]:
    """One assistant turn with tool calls and the tool message that answers it."""
    calls = tuple(ToolCallPart(id=f"c{i}.{k}", name="list_files",
                               arguments={"path": f"dir {k} — ü", "deep": {"n": [k, 1.5, None]},
                                          "z": True, "a": "\u2028"})
                  for k in range(3))
    assistant = Message(role="assistant", parts=(
        ReasoningPart(text=f"step {i}: think \"quoted\"", signature="sig==", opaque=[{"b": 1}],
                      provider="deepseek", field="reasoning_content"),
        TextPart(text=""), *calls), extra={"gemini": {"thought_signature": "x"}})
    results = Message(role="tool", parts=tuple(
        ToolResultPart(call_id=c.id, name=c.name, content=f"a.txt (3 bytes)\n{i}",
                       metadata={"entries": ["a.txt"]}) for c in calls))
    return [assistant, results]


def test_each_turns_request_and_fingerprint_equal_a_fresh_rendering() -> None:
    rendered = RenderedRequests()
    messages = [Message.system("You are a sub-agent ✓."), Message.user("List (job 7).")]
    for i in range(4):
        tools = [t.model_copy() for t in TOOLS]  # specs are built afresh every turn
        request, fingerprint = rendered.request("work", messages, tools, SETTINGS)
        assert request == fresh("work", messages, tools)
        assert fingerprint == request_fingerprint(fresh("work", messages, tools))
        messages += turn(i)


def test_a_message_is_rendered_once_and_an_evicted_one_again() -> None:
    rendered = RenderedRequests(capacity=2)
    first, second, third = Message.user("one"), Message.user("two"), Message.user("three")
    a, _ = rendered.request("m", [first, second], [], SETTINGS)
    b, _ = rendered.request("m", [first, second], [], SETTINGS)
    assert a["messages"][0] is b["messages"][0]  # the same rendering, not a new one
    rendered.request("m", [third], [], SETTINGS)  # evicts `first`
    c, fingerprint = rendered.request("m", [first], [], SETTINGS)
    assert c["messages"] == [first.model_dump(mode="json")]
    assert fingerprint == request_fingerprint(fresh("m", [first], []))


def test_a_tool_whose_schema_changed_is_rendered_again() -> None:
    rendered = RenderedRequests()
    old = ToolSpec(name="t", description="d", parameters={"type": "object"})
    new = ToolSpec(name="t", description="d", parameters={"type": "object", "required": ["x"]})
    rendered.request("m", [], [old], SETTINGS)
    request, fingerprint = rendered.request("m", [], [new], SETTINGS)
    assert request["tools"] == [new.model_dump(mode="json")]
    assert fingerprint == request_fingerprint(fresh("m", [], [new]))
