"""Failures mapped at the HTTP boundary: status -> retryable, Retry-After, resets mid-stream,
truncated streams, timeouts, errors inside streams; the API key never shows; no retries."""

from __future__ import annotations

import socket

import pytest
from _model_helpers import KEY, make_model

from agentkit.errors import (
    ProviderConnectionError,
    ProviderHTTPError,
    ProviderResponseError,
    ProviderTimeout,
)
from agentkit.messages import Message
from agentkit.models.openai_compat import OpenAICompatModel
from agentkit.models.profiles import get_profile
from agentkit.task import ModelSpec
from agentkit.testing import ScriptedModelServer, error, raw, reply, reset

Q = [Message.user("q")]


@pytest.mark.parametrize(("status", "retryable"), [
    (400, False), (401, False), (403, False), (404, False), (413, False), (422, False),
    (408, True), (409, True), (429, True), (500, True), (502, True), (503, True), (529, True),
])
async def test_status_decides_retryable(status: int, retryable: bool) -> None:
    async with ScriptedModelServer("deepseek") as srv:
        srv.script(error(status, "boom"))
        llm = make_model(srv, "deepseek")
        with pytest.raises(ProviderHTTPError) as info:
            await llm.turn(Q)
        await llm.aclose()
    assert info.value.status == status and info.value.retryable is retryable
    assert len(srv.requests) == 1  # adapters never retry


async def test_retry_after_seconds_and_ms() -> None:
    async with ScriptedModelServer("openai") as srv:
        srv.script(error(429, "slow down", retry_after=7),
                   error(429, "slow down", headers={"retry-after-ms": "1500"}))
        llm = make_model(srv, "openai")
        for expected in (7.0, 1.5):
            with pytest.raises(ProviderHTTPError) as info:
                await llm.turn(Q)
            assert info.value.retry_after == expected and info.value.retryable
        await llm.aclose()


async def test_quota_429_is_not_retryable_and_says_why() -> None:
    async with ScriptedModelServer("openai") as srv:
        srv.script(error(429, "You exceeded your current quota, please check your plan and "
                              "billing details.", body=None))
        llm = make_model(srv, "openai")
        with pytest.raises(ProviderHTTPError, match="exceeded your current quota") as info:
            await llm.turn(Q)
        await llm.aclose()
    assert not info.value.retryable


async def test_api_key_never_in_the_error() -> None:
    async with ScriptedModelServer("openai") as srv:
        srv.script(error(401, f"Incorrect API key provided: {KEY}. Find your key at ..."))
        llm = make_model(srv, "openai")
        with pytest.raises(ProviderHTTPError) as info:
            await llm.turn(Q)
        await llm.aclose()
    exc = info.value
    assert KEY not in str(exc) and KEY not in (exc.body or "") and KEY not in repr(exc.to_dict())
    assert "check the API key" in str(exc) and not exc.retryable
    assert srv.requests[0].headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("stream", [False, True])
async def test_reset_mid_response_raises_connection_error_once(stream: bool) -> None:
    async with ScriptedModelServer("deepseek") as srv:
        srv.script(reply(reasoning="long thought " * 20, content="x", reset_after=4))
        llm = make_model(srv, "deepseek", stream=stream)
        with pytest.raises(ProviderConnectionError) as info:
            await llm.turn(Q)
        await llm.aclose()
    assert info.value.retryable and len(srv.requests) == 1


async def test_reset_before_any_byte() -> None:
    async with ScriptedModelServer("deepseek") as srv:
        srv.script(reset(), reply(content="after"))
        llm = make_model(srv, "deepseek")
        with pytest.raises(ProviderConnectionError):
            await llm.turn(Q)
        assert (await llm.turn(Q)).message.text == "after"  # the next call works
        await llm.aclose()


async def test_stream_cut_cleanly_before_finish_is_retryable_response_error() -> None:
    async with ScriptedModelServer("deepseek") as srv:
        srv.script(raw([{"choices": [{"index": 0, "delta": {"content": "partial"}}]}]))
        llm = make_model(srv, "deepseek", stream=True)
        with pytest.raises(ProviderResponseError, match="ended before the turn finished") as info:
            await llm.turn(Q)
        await llm.aclose()
    assert info.value.retryable


async def test_error_object_inside_a_stream() -> None:
    async with ScriptedModelServer("openrouter") as srv:
        srv.script(raw([{"error": {"message": "upstream overloaded", "code": 502}}]))
        llm = make_model(srv, "openrouter", stream=True)
        with pytest.raises(ProviderHTTPError, match="upstream overloaded"):
            await llm.turn(Q)
        await llm.aclose()


async def test_malformed_json_body_is_a_response_error() -> None:
    async with ScriptedModelServer("deepseek") as srv:
        srv.script(raw(body=b"{not json", content_type="application/json"))
        llm = make_model(srv, "deepseek")
        with pytest.raises(ProviderResponseError, match="malformed JSON"):
            await llm.turn(Q)
        await llm.aclose()


async def test_timeout_is_provider_timeout() -> None:
    async with ScriptedModelServer("deepseek") as srv:
        srv.script(reply(content="late", delay=2.0))
        llm = make_model(srv, "deepseek", timeout_s=0.3)
        with pytest.raises(ProviderTimeout):
            await llm.turn(Q)
        await llm.aclose()


async def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    llm = OpenAICompatModel(ModelSpec(model="m", profile="vllm"), name="m", api_key=KEY,
                            base_url=f"http://127.0.0.1:{port}/v1", profile=get_profile("vllm"))
    with pytest.raises(ProviderConnectionError, match="connection failed") as info:
        await llm.turn(Q)
    await llm.aclose()
    assert KEY not in str(info.value)


async def test_anthropic_overloaded_529_and_stream_error_event() -> None:
    async with ScriptedModelServer("anthropic") as srv:
        srv.script(error(529, body={"type": "error", "error": {"type": "overloaded_error",
                                                               "message": "Overloaded"}}),
                   raw(["event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n",
                        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":"
                        "\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"]))
        llm = make_model(srv, "anthropic", stream=True)
        with pytest.raises(ProviderHTTPError, match="Overloaded") as first:
            await llm.turn(Q)
        with pytest.raises(ProviderHTTPError, match="Overloaded") as second:
            await llm.turn(Q)
        await llm.aclose()
    assert first.value.status == 529 and first.value.retryable
    assert second.value.status == 529 and second.value.retryable


async def test_json_answer_to_a_stream_request_is_still_read() -> None:
    """Some servers ignore `stream: true` (or answer errors as JSON): the body decides."""
    body = {"choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "plain json"}}]}
    async with ScriptedModelServer("vllm") as srv:
        srv.script(raw(body=body))
        llm = make_model(srv, "vllm", stream=True)
        assert (await llm.turn(Q)).message.text == "plain json"
        await llm.aclose()


def test_provider_and_profile_must_speak_the_same_wire() -> None:
    from agentkit.errors import ConfigError
    from agentkit.models.anthropic import AnthropicModel

    claude = ModelSpec(model="claude-sonnet-4-5", provider="anthropic")
    with pytest.raises(ConfigError, match="'anthropic' wire.*provider: anthropic"):
        OpenAICompatModel(claude, name="m", api_key=None, base_url=None, profile=get_profile("anthropic"))
    with pytest.raises(ConfigError, match="use profile: anthropic"):
        AnthropicModel(claude, name="m", api_key=None, base_url=None, profile=get_profile("deepseek"))
    # provider anthropic with the default profile just works
    assert AnthropicModel(claude, name="m", api_key=None, base_url=None,
                          profile=get_profile("generic")).profile.name == "anthropic"
