"""The scripted model server itself (public API): sync use from threads, RPM/TPM limits with
Retry-After, script exhaustion, raw frames, keep-alive comments on the wire; routing by model
name, a given port, answers held by the test, client hang-ups, wait_until, script files."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentkit.errors import TaskFileError
from agentkit.testing import FakeClock, ScriptedModelServer, call, error, reply


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
    """On a FakeClock: the third request in the window is refused with the exact wait until
    the first leaves it, and is admitted once that much time has passed."""
    clock = FakeClock()
    with ScriptedModelServer("openai", rpm=2, window_s=30, default=reply(content="ok"),
                             clock=clock) as srv, httpx.Client() as client:
        codes = [_post(client, srv).status_code for _ in range(2)]
        clock.advance(4)
        limited = _post(client, srv)
        clock.advance(25.5)
        still = _post(client, srv)
        clock.advance(0.5)
        admitted = _post(client, srv)
    assert codes == [200, 200] and limited.status_code == still.status_code == 429
    assert limited.headers["retry-after"] == "26" and limited.headers["retry-after-ms"] == "26000"
    assert still.headers["retry-after-ms"] == "500" and admitted.status_code == 200
    assert srv.stats.rate_limited == 2 and srv.stats.by_status == {200: 3, 429: 2}


def test_tpm_counts_max_tokens_up_front() -> None:
    clock = FakeClock()
    with ScriptedModelServer("openai", tpm=1000, window_s=1.0, default=reply(content="ok"),
                             token_estimate=lambda body: body.get("max_completion_tokens", 0),
                             clock=clock) as srv, httpx.Client() as client:
        assert _post(client, srv, max_completion_tokens=600).status_code == 200
        clock.advance(0.25)
        second = _post(client, srv, max_completion_tokens=600)
        assert second.status_code == 429 and second.headers["retry-after-ms"] == "750"
        assert _post(client, srv, max_completion_tokens=400).status_code == 200  # fits exactly
        clock.advance(0.75)  # the first 600 leave the window
        assert _post(client, srv, max_completion_tokens=600).status_code == 200


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


# -- routing by model name, ports, holding answers, hang-ups, script files ------------------


def _ask(client: httpx.Client, srv: ScriptedModelServer, model: str) -> httpx.Response:
    return client.post(srv.base_url + "/chat/completions",
                       json={"model": model, "messages": [{"role": "user", "content": "hi"}]})


def _content(resp: httpx.Response) -> str:
    assert resp.status_code == 200, resp.text
    return str(resp.json()["choices"][0]["message"]["content"])


def test_replies_are_routed_by_model_name_in_any_arrival_order() -> None:
    """Each routed model answers from its own queue (a list) or standing handler (a single
    item), whatever order the requests arrive in; other models use the shared script; running
    out names the model."""
    worker = lambda req: reply(f"worker saw {req.body['messages'][0]['content']}")  # noqa: E731
    with ScriptedModelServer("deepseek", routes={"planner-model": [reply("plan 1"), reply("plan 2")],
                                                  "worker-model": worker}) as srv, \
            httpx.Client() as client:
        srv.script(reply("shared 1"))
        assert srv.pending == 3
        got = [_content(_ask(client, srv, m)) for m in
               ("worker-model", "planner-model", "someone-else", "planner-model", "worker-model")]
        planner_out = _ask(client, srv, "planner-model")
        other_out = _ask(client, srv, "someone-else")
    assert got == ["worker saw hi", "plan 1", "shared 1", "plan 2", "worker saw hi"]
    assert planner_out.status_code == 500
    assert "script for model 'planner-model' is exhausted" in planner_out.text
    assert other_out.status_code == 500 and "script is exhausted" in other_out.text
    assert "'planner-model', 'worker-model'" in other_out.text  # a typo in a model name shows
    assert [r.body["model"] for r in srv.requests_for("planner-model")] == ["planner-model"] * 3
    assert srv.pending == 0


def test_route_queue_then_route_default_then_server_default() -> None:
    """A routed model falls back to its own default, then to the server's, and never takes
    from the shared script (which stays queued for the other models)."""
    with ScriptedModelServer("openai", default=reply("server default")) as srv, \
            httpx.Client() as client:
        srv.route("a", reply("a1"), default=reply("a default")).route("b", reply("b1"))
        srv.script(reply("shared"))
        got = [_content(_ask(client, srv, m)) for m in ("a", "a", "a", "b", "b", "c", "c")]
    assert got == ["a1", "a default", "a default", "b1", "server default", "shared",
                   "server default"]


def test_server_listens_on_the_port_it_is_given() -> None:
    with socket.socket() as probe:  # an unused port, released just before the server takes it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with ScriptedModelServer("generic", port=port, default=reply("here")) as srv, \
            httpx.Client() as client:
        assert srv.port == port and srv.base_url == f"http://127.0.0.1:{port}/v1"
        assert _content(_ask(client, srv, "m")) == "here"
    with pytest.raises(ValueError, match="port must be 0"):
        ScriptedModelServer("generic", port=70000)


async def test_async_handler_holds_the_answer_until_the_test_releases_it() -> None:
    """An async handler can wait for the test; `wait_until` sees the request arrive while it
    is held (status 0), and the client gets the answer only after the release."""
    release = asyncio.Event()

    async def held(req: object) -> Any:
        await release.wait()
        return reply("released")

    async with ScriptedModelServer("deepseek", routes={"slow": held}) as srv, \
            httpx.AsyncClient() as client:
        ask = asyncio.ensure_future(client.post(
            srv.base_url + "/chat/completions", json={"model": "slow", "messages": []}))
        await srv.wait_until(lambda: len(srv.requests) == 1)
        assert srv.requests[0].status == 0 and not ask.done()
        release.set()
        resp = await ask
    assert _content(resp) == "released" and srv.requests[0].status == 200


@pytest.mark.parametrize("hold_with", ["delay", "async handler"])
async def test_a_client_that_hangs_up_while_its_answer_is_held_is_counted(hold_with: str) -> None:
    """Cancelling the client's request closes its connection; the server notices while it
    still holds the answer (a delay, or an async handler, which is then cancelled) and records
    status 499, so a test can prove a cancelled agent really hung up."""
    handler_cancelled = asyncio.Event()

    async def never(req: object) -> Any:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            handler_cancelled.set()
            raise

    item: Any = reply("too late", delay=60) if hold_with == "delay" else never
    async with ScriptedModelServer("deepseek", script=(item,)) as srv, \
            httpx.AsyncClient() as client:
        ask = asyncio.ensure_future(client.post(
            srv.base_url + "/chat/completions", json={"model": "m", "messages": []}))
        await srv.wait_until(lambda: len(srv.requests) == 1)
        ask.cancel()
        await srv.wait_until(lambda: srv.stats.hangups == 1)
    assert srv.requests[0].status == 499 and srv.stats.by_status == {499: 1}
    assert handler_cancelled.is_set() == (hold_with == "async handler")


async def test_stopping_the_server_is_not_a_client_hang_up() -> None:
    """Connections the server closes itself (on stop) are not counted as clients leaving."""
    srv = ScriptedModelServer("deepseek", script=(reply("late", delay=60),))
    async with httpx.AsyncClient() as client:
        async with srv:
            ask = asyncio.ensure_future(client.post(
                srv.base_url + "/chat/completions", json={"model": "m", "messages": []}))
            await srv.wait_until(lambda: len(srv.requests) == 1)
        with pytest.raises(httpx.HTTPError):
            await ask
    assert srv.stats.hangups == 0 and srv.requests[0].status == 200


async def test_wait_until_works_while_the_server_runs_on_its_own_thread() -> None:
    """The sync form (a background thread, as the pytest fixture uses) still wakes waiters on
    the test's event loop."""
    with ScriptedModelServer("deepseek", default=reply("ok")) as srv:
        async with httpx.AsyncClient() as client:
            ask = asyncio.ensure_future(client.post(
                srv.base_url + "/chat/completions", json={"model": "m", "messages": []}))
            await srv.wait_until(lambda: srv.stats.by_status.get(200) == 1)
            assert (await ask).status_code == 200


async def test_wait_until_gives_up_saying_what_the_server_saw() -> None:
    async with ScriptedModelServer("deepseek") as srv:
        with pytest.raises(TimeoutError, match="saw 0 requests"):
            await srv.wait_until(lambda: len(srv.requests) > 0, timeout=0.01)


def test_a_handler_that_raises_is_a_500_naming_the_error() -> None:
    def broken(req: object) -> Any:
        raise KeyError("goal")

    with ScriptedModelServer("deepseek", default=broken) as srv, httpx.Client() as client:
        resp = _ask(client, srv, "m")
    assert resp.status_code == 500 and "the handler raised KeyError: 'goal'" in resp.text


SCRIPT_YAML = """\
replies:
  - content: shared answer
default: {content: fallback}
models:
  planner-model:
    - reasoning: Split it.
      tool_calls:
        - {name: submit_plan, arguments: {nodes: []}, id: plan-1}
  worker-model:
    default: {content: worker done, usage: {input_tokens: 7, output_tokens: 3}}
  flaky-model:
    - {error: 429, message: slow down, retry_after: 2}
"""


def test_script_file_routes_replies_by_model(tmp_path: Path) -> None:
    path = tmp_path / "replies.yaml"
    path.write_text(SCRIPT_YAML)
    with ScriptedModelServer("deepseek") as srv, httpx.Client() as client:
        srv.load_script(path)
        plan = _ask(client, srv, "planner-model").json()["choices"][0]["message"]
        worker = [_ask(client, srv, "worker-model").json() for _ in range(2)]
        flaky = _ask(client, srv, "flaky-model")
        texts = [_content(_ask(client, srv, m)) for m in ("other", "other", "planner-model")]
    assert plan["reasoning_content"] == "Split it."
    assert plan["tool_calls"][0]["id"] == "plan-1"
    assert plan["tool_calls"][0]["function"] == {"name": "submit_plan", "arguments": '{"nodes": []}'}
    assert [w["choices"][0]["message"]["content"] for w in worker] == ["worker done"] * 2
    assert worker[0]["usage"]["prompt_tokens"] == 7
    assert flaky.status_code == 429 and flaky.headers["retry-after"] == "2"
    assert "slow down" in flaky.text
    assert texts == ["shared answer", "fallback", "fallback"]


def test_a_script_file_may_be_just_a_json_list(tmp_path: Path) -> None:
    path = tmp_path / "replies.json"
    path.write_text('[{"content": "one"}, {"content": "two"}]')
    with ScriptedModelServer("openai") as srv, httpx.Client() as client:
        srv.load_script(path)
        assert [_content(_ask(client, srv, "m")) for _ in range(2)] == ["one", "two"]


@pytest.mark.parametrize(("name", "text", "where", "words"), [
    ("s.yaml", "models:\n  p:\n    - content: hi\n      tool_cals: []\n", ":4:7:",
     "unknown key 'tool_cals' (did you mean 'tool_calls'?)"),
    ("s.yaml", "- content: hi\n- {error: 503, content: x}\n", ":2:3:",
     "an item is a reply or an error, not both"),
    ("s.yaml", "- content: hi\n- retry_after: 3\n", ":2:3:", "add `error: STATUS`"),
    ("s.json", '[{"tool_calls": [{"name": 3}]}]', ":1:27:",
     "expected a string, got integer 3 (field replies[0].tool_calls[0].name)"),
    ("s.json", '[{"content": "x",]', ":1:18:", "invalid JSON"),
    ("s.yaml", "just text\n", ":1:1:", "a script file is a list of replies"),
    ("s.yaml", "- content: hi\n  usage: {prompt_tokens: 3}\n", ":2:11:",
     "unknown key 'prompt_tokens'"),
])
def test_script_file_mistakes_name_file_line_and_field(tmp_path: Path, name: str, text: str,
                                                        where: str, words: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(TaskFileError) as info:
        ScriptedModelServer("deepseek").load_script(path)
    assert str(info.value).startswith(str(path) + where) and words in str(info.value)


def test_every_script_file_mistake_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("- {content: a, colour: red}\n- {error: 99}\n")
    with pytest.raises(TaskFileError) as info:
        ScriptedModelServer("deepseek").load_script(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 2 and "unknown key 'colour'" in lines[0] and ":2:" in lines[1]
