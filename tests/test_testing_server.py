"""The scripted model server itself (public API): sync use from threads, RPM/TPM limits with
Retry-After, script exhaustion, routing, raw frames, keep-alive comments on the wire."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from agentkit.testing import ScriptedModelServer, call, error, reply


def _post(client: httpx.Client, srv: ScriptedModelServer, **body: object) -> httpx.Response:
    payload = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}
    return client.post(srv.base_url + "/chat/completions", json=payload)


def test_sync_use_from_plain_code() -> None:
    with ScriptedModelServer("deepseek") as srv, httpx.Client() as client:
        srv.script(reply(reasoning="r", tool_calls=[call("get_weather", {"city": "Oslo"})]))
        data = _post(client, srv).json()
        msg = data["choices"][0]["message"]
        assert msg["reasoning_content"] == "r" and msg["tool_calls"][0]["id"] == "call_01"
        assert data["usage"]["completion_tokens_details"]["reasoning_tokens"] == 18
        assert data["choices"][0]["finish_reason"] == "tool_calls"
        assert srv.requests[0].body["messages"][0]["content"] == "hi"


def test_stream_wire_has_keepalives_usage_chunk_and_done() -> None:
    with ScriptedModelServer("deepseek") as srv, httpx.Client() as client:
        srv.script(reply(content="hello", keepalives=2))
        text = _post(client, srv, stream=True, stream_options={"include_usage": True}).text
    assert text.startswith(": keep-alive\n\n")
    assert '"choices": [], "usage"' in text and text.rstrip().endswith("data: [DONE]")


def test_rpm_limit_answers_429_with_retry_after() -> None:
    with ScriptedModelServer("openai", rpm=2, window_s=30, default=reply(content="ok")) as srv, \
            httpx.Client() as client:
        codes = [_post(client, srv).status_code for _ in range(3)]
        limited = _post(client, srv)
    assert codes == [200, 200, 429] and limited.status_code == 429
    assert 25 <= int(limited.headers["retry-after"]) <= 30
    assert srv.stats.rate_limited == 2 and srv.stats.by_status == {200: 2, 429: 2}


def test_tpm_counts_max_tokens_up_front() -> None:
    with ScriptedModelServer("openai", tpm=1000, window_s=1.0, default=reply(content="ok"),
                             token_estimate=lambda body: body.get("max_completion_tokens", 0)) as srv, \
            httpx.Client() as client:
        assert _post(client, srv, max_completion_tokens=600).status_code == 200
        second = _post(client, srv, max_completion_tokens=600)
        assert second.status_code == 429 and float(second.headers["retry-after-ms"]) <= 1000
        assert _post(client, srv, max_completion_tokens=400).status_code == 200  # fits exactly


async def test_script_exhaustion_and_unknown_route_are_loud() -> None:
    async with ScriptedModelServer("deepseek") as srv, httpx.AsyncClient() as client:
        resp = await client.post(srv.base_url + "/chat/completions", json={"model": "m", "messages": []})
        assert resp.status_code == 500 and "script is exhausted" in resp.text
        resp = await client.post(srv.base_url + "/messages", json={})
        assert resp.status_code == 404


async def test_callable_script_items_and_concurrent_clients() -> None:
    async with ScriptedModelServer("vllm", default=lambda req: reply(
            content=f"echo {req.body['messages'][-1]['content']}")) as srv, \
            httpx.AsyncClient() as client:
        async def ask(i: int) -> str:
            resp = await client.post(srv.base_url + "/chat/completions",
                                     json={"model": "m", "messages": [{"role": "user", "content": str(i)}]})
            return str(resp.json()["choices"][0]["message"]["content"])
        answers = await asyncio.gather(*(ask(i) for i in range(20)))
    assert answers == [f"echo {i}" for i in range(20)]


async def test_anthropic_dialect_requires_its_headers() -> None:
    async with ScriptedModelServer("anthropic") as srv, httpx.AsyncClient() as client:
        srv.script(reply(content="hi"))
        resp = await client.post(srv.base_url + "/v1/messages", json={"model": "c", "max_tokens": 10,
                                                                       "messages": []})
        assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"
        resp = await client.post(srv.base_url + "/v1/messages",
                                 headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
                                 json={"model": "c", "max_tokens": 10, "messages": [], "stream": True})
    assert "event: message_start" in resp.text and "event: message_stop" in resp.text
    assert "[DONE]" not in resp.text


def test_unknown_dialect_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown dialect 'deepsek'.*deepseek"):
        ScriptedModelServer("deepsek")


def test_error_helper_shapes() -> None:
    e = error(429, "slow", retry_after=7)
    assert e.headers == {"Retry-After": "7"} and e.body["error"]["message"] == "slow"


@pytest.mark.parametrize(("dialect", "extra", "words"), [
    ("openai", {"max_tokens": 10}, "Use 'max_completion_tokens' instead"),
    ("openai", {"temperature": 0.2}, "Only the default (1) value is supported"),
    ("xai", {"model": "grok-4", "reasoning_effort": "high"}, "does not support parameter reasoningEffort"),
    ("xai", {"model": "grok-3-mini", "stop": ["x"]}, "does not support parameter stop"),
    ("dashscope", {"enable_thinking": True}, "must be set to false for non-streaming calls"),
    ("dashscope", {"enable_thinking": True, "stream": True, "tool_choice": "required"},
     "does not support being set to required"),
    ("kimi", {"thinking": True}, "thinking must be an object"),
    ("deepseek", {"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]},
     "must be a response to a preceding message with 'tool_calls'"),
])
def test_server_refuses_what_the_provider_refuses(dialect: str, extra: dict[str, object],
                                                  words: str) -> None:
    with ScriptedModelServer(dialect, script=(reply(content="ok"),)) as srv, httpx.Client() as client:
        resp = _post(client, srv, **extra)
    assert resp.status_code == 400 and words in resp.text
    assert srv.pending == 1 and srv.requests[0].status == 400  # a refusal consumes no script item


@pytest.mark.parametrize(("extra", "words"), [
    ({"thinking": {"type": "enabled", "budget_tokens": 2000}, "max_tokens": 1000},
     "`max_tokens` must be greater than `thinking.budget_tokens`"),
    ({"thinking": {"type": "adaptive"}, "tool_choice": {"type": "any"}},
     "Thinking may not be enabled when tool_choice forces tool use"),
    ({"model": "claude-opus-4-7", "thinking": {"type": "enabled", "budget_tokens": 1024}},
     "thinking.type.enabled is not supported for this model"),
])
def test_anthropic_server_refusals(extra: dict[str, object], words: str) -> None:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 4096, "messages": [], **extra}
    with ScriptedModelServer("anthropic") as srv, httpx.Client() as client:
        resp = client.post(srv.base_url + "/v1/messages", json=body,
                           headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
    assert resp.status_code == 400 and words in resp.text
