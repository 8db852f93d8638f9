"""The retry owner, over real HTTP to the scripted server, with a fake clock for every wait:
429 + Retry-After is honoured as a minimum, a 503 storm opens the channel's breaker and fails
over to the next channel, 400/401/quota are never retried (clear message, key redacted), a
stream cut mid-way is re-issued whole and yields one turn, fallback models serve only when the
primary is unavailable, and every call is audited with usage and cost."""

from __future__ import annotations

import random
from typing import Any

import pytest

from agentkit.errors import ConfigError, ProviderError, ProviderHTTPError, ProviderUnavailable
from agentkit.events import Event
from agentkit.messages import Message
from agentkit.models import ManagedModel, build_model, call_scope, price_for
from agentkit.retry import CircuitBreaker, RetryPolicy
from agentkit.runtime import Runtime
from agentkit.task import ChannelSpec, ModelSpec, RetrySpec, TaskSpec
from agentkit.testing import FakeClock, ScriptedModelServer, error, reply

KEY = "sk-test-SECRET-key-12345"
HELLO = [Message.user("hello")]


def runtime(models: dict[str, ModelSpec], events: list[Event], clock: FakeClock,
            attempts: int = 4, max_delay_s: float = 4) -> Runtime:
    task = TaskSpec(name="t", goal="g", model=next(iter(models)), models=models,
                    retry=RetrySpec(attempts=attempts, base_delay_s=0.5, max_delay_s=max_delay_s))
    return Runtime(task, clock=clock, sinks=[events.append], environ={"TEST_KEY": KEY})


def build(rt: Runtime, name: str, *, policy: RetryPolicy | None = None,
          rng: random.Random | None = None) -> ManagedModel:
    """The model `name` of `rt`'s task, built from parts (a chosen retry policy and seed)."""
    spec = rt.task.models[name]
    return build_model(name, spec, clock=rt.clock, events=rt.emit, usage=rt.usage,
                       policy=policy or RetryPolicy.from_spec(rt.task.retry),
                       price=price_for(name, spec, rt.task), rate_limits=rt.rate_limits,
                       resolve=rt.model, environ=rt.environ, rng=rng)


def spec(base_url: str, **kw: Any) -> ModelSpec:
    base: dict[str, Any] = {"model": "deepseek-chat", "profile": "deepseek", "base_url": base_url,
                            "api_key_env": "TEST_KEY", "stream": False}
    return ModelSpec(**{**base, **kw})


def kinds(events: list[Event], kind: str) -> list[dict[str, Any]]:
    return [e.data for e in events if e.kind == kind]


async def test_429_retry_after_is_a_floor_then_success() -> None:
    events: list[Event] = []
    clock = FakeClock()
    async with ScriptedModelServer("deepseek") as srv:
        srv.script(error(429, "slow down", retry_after=7), reply("hi"))
        rt = runtime({"m": spec(srv.base_url)}, events, clock, max_delay_s=30)
        model = build(rt, "m", rng=random.Random(1))
        turn = await model.turn(HELLO)
        await model.aclose()
    assert turn.message.text == "hi"
    assert srv.stats.requests == 2
    assert clock.monotonic() >= 7.0
    (retry,) = kinds(events, "retry")
    assert retry["status"] == 429 and retry["delay_s"] >= 7.0 and retry["attempt"] == 1


async def test_503_storm_opens_breaker_and_fails_over_to_second_channel() -> None:
    events: list[Event] = []
    clock = FakeClock()
    async with ScriptedModelServer("deepseek", default=error(503, "overloaded")) as bad, \
            ScriptedModelServer("deepseek", default=reply("from backup")) as good:
        channels = [ChannelSpec(base_url=good.base_url, priority=2, name="backup"),
                    ChannelSpec(base_url=bad.base_url, priority=1, name="primary")]
        rt = runtime({"m": spec(bad.base_url, channels=channels)}, events, clock)
        policy = RetryPolicy(attempts=4, breaker_threshold=3, breaker_cooldown=30.0)
        model = build(rt, "m", policy=policy, rng=random.Random(1))
        answers = [(await model.turn(HELLO)).message.text for _ in range(5)]
        assert answers == ["from backup"] * 5
        # three failures open the primary's breaker; calls 4 and 5 skip it entirely
        assert bad.stats.requests == 3 and good.stats.requests == 5
        assert [f["from"] for f in kinds(events, "fallback")] == ["primary"] * 3
        assert all(f["status"] == 503 and f["to"] == "backup" for f in kinds(events, "fallback"))
        # failing over to a healthy channel is a retry without waiting
        assert [(r["channel"], r["next_channel"], r["delay_s"]) for r in kinds(events, "retry")] \
            == [("primary", "backup", 0.0)] * 3 and clock.sleeps == []
        (opened,) = kinds(events, "breaker.open")
        assert opened["channel"] == "primary" and opened["failures"] == 3
        # after the cooldown one trial goes to the primary; it has recovered: breaker closes
        bad.script(reply("primary is back"))
        clock.advance(31)
        assert (await model.turn(HELLO)).message.text == "primary is back"
        assert kinds(events, "breaker.closed") == [{"model": "m", "channel": "primary"}]
        await model.aclose()


@pytest.mark.parametrize("status,message,hint", [
    (400, "invalid request: bad field", "rejected as invalid"),
    (401, f"Incorrect API key provided: {KEY}", "$TEST_KEY"),
    (429, "You exceeded your current quota, please check your plan and billing details",
     "Quota or spend limit"),
])
async def test_client_errors_are_not_retried(status: int, message: str, hint: str) -> None:
    events: list[Event] = []
    clock = FakeClock()
    async with ScriptedModelServer("deepseek") as srv:
        srv.script(error(status, message), reply("never reached"))
        rt = runtime({"m": spec(srv.base_url)}, events, clock)
        model = build(rt, "m")
        with pytest.raises(ProviderHTTPError) as info:
            await model.turn(HELLO)
        await model.aclose()
    assert srv.stats.requests == 1
    assert not kinds(events, "retry") and clock.sleeps == []
    err = info.value
    assert err.status == status and not err.retryable
    assert "not retried" in str(err) and hint in str(err)
    assert KEY not in str(err) and KEY not in repr(kinds(events, "model.error"))


async def test_reset_mid_stream_reissues_and_yields_one_turn() -> None:
    events: list[Event] = []
    clock = FakeClock()
    async with ScriptedModelServer("deepseek") as srv:
        srv.script(reply("a long answer that gets cut", reasoning="thinking...", reset_after=3),
                   reply("the whole answer", reasoning="thinking again"))
        rt = runtime({"m": spec(srv.base_url, stream=True)}, events, clock)
        model = build(rt, "m", rng=random.Random(3))
        turn = await model.turn(HELLO)
        await model.aclose()
    assert srv.stats.requests == 2
    assert turn.message.text == "the whole answer"
    assert turn.message.reasoning == "thinking again"
    (retry,) = kinds(events, "retry")
    assert retry["error_type"] == "ProviderConnectionError"
    assert len(kinds(events, "model.request")) == 1 and len(kinds(events, "model.response")) == 1


async def test_fallback_model_serves_when_primary_is_unavailable_only() -> None:
    events: list[Event] = []
    clock = FakeClock()
    async with ScriptedModelServer("deepseek", default=error(503)) as down, \
            ScriptedModelServer("openai", default=reply("from the fallback")) as up:
        models = {"a": spec(down.base_url, fallbacks=["b"]),
                  "b": spec(up.base_url, profile="openai", model="gpt-5-mini")}
        rt = runtime(models, events, clock, attempts=2)
        async with rt:
            model = await rt.model("a")
            turn = await model.turn(HELLO)
            assert turn.message.text == "from the fallback" and turn.model_name == "b"
            assert down.stats.requests == 2
            (fb,) = [f for f in kinds(events, "fallback") if f["kind"] == "model"]
            assert fb["from"] == "a" and fb["to"] == "b"
            assert kinds(events, "model.response")[-1]["model"] == "b"
            # an invalid request is not an availability problem: no fallback
            down.script(error(400, "bad request"))
            with pytest.raises(ProviderError):
                await model.turn(HELLO)
            assert up.stats.requests == 1


async def test_all_channels_down_raises_unavailable() -> None:
    clock = FakeClock()
    async with ScriptedModelServer("deepseek", default=error(502)) as srv:
        rt = runtime({"m": spec(srv.base_url)}, [], clock, attempts=3)
        model = build(rt, "m", rng=random.Random(0))
        with pytest.raises(ProviderUnavailable) as info:
            await model.turn(HELLO)
        await model.aclose()
    assert srv.stats.requests == 3 and "after 3 attempts" in str(info.value)
    assert len(clock.sleeps) == 2


async def test_request_and_response_are_audited_with_cost() -> None:
    events: list[Event] = []
    clock = FakeClock()
    async with ScriptedModelServer("deepseek") as srv:
        srv.script(reply("Oslo is sunny", reasoning="Check the weather.",
                         usage={"input_tokens": 1_000_000, "output_tokens": 1_000_000}))
        rt = runtime({"m": spec(srv.base_url)}, events, clock)
        model = build(rt, "m")
        with call_scope("node-7", step=2):
            await model.turn([Message.system("be brief"), Message.user("weather?")])
        await model.aclose()
    request = next(e for e in events if e.kind == "model.request")
    response = next(e for e in events if e.kind == "model.response")
    assert request.node_id == response.node_id == "node-7" and request.data["step"] == 2
    assert [m["parts"][0]["text"] for m in request.data["messages"]] == ["be brief", "weather?"]
    assert response.data["reasoning"] == "Check the weather."
    assert response.data["content"] == "Oslo is sunny"
    assert response.data["usage"]["input_tokens"] == 1_000_000
    assert response.data["cost_usd"] == pytest.approx(0.28 + 0.42)  # built-in deepseek-chat price
    line = rt.usage.by_model["m"]
    assert line.calls == 1 and line.cost_usd == pytest.approx(0.70)
    assert rt.usage.node("node-7").cost_usd == pytest.approx(0.70)  # counted for its node


def test_missing_key_names_variable_and_model() -> None:
    task = TaskSpec(name="t", goal="g", model="m",
                    models={"m": ModelSpec(model="x", profile="deepseek", api_key_env="NOPE_KEY")})
    with pytest.raises(ConfigError) as info:
        build(Runtime(task, environ={}), "m")
    assert "NOPE_KEY" in str(info.value) and "'m'" in str(info.value)


def test_full_jitter_bounds_and_retry_after_floor() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0)
    rng = random.Random(42)
    delays = [policy.delay(n, None, rng) for n in range(8) for _ in range(50)]
    assert all(0 <= d <= 4.0 for d in delays)
    assert max(policy.delay(0, None, rng) for _ in range(200)) <= 0.5
    assert len({round(d, 6) for d in delays}) > 100  # jittered, not a fixed ladder
    assert policy.delay(0, 3.0, rng) >= 3.0  # Retry-After is a floor...
    assert policy.delay(0, 3600.0, rng) == 4.0  # ...never above max_delay


def test_breaker_half_open_lets_exactly_one_trial_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=2, cooldown=10, clock=clock)
    assert not breaker.record_failure() and breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.advance(10)
    assert breaker.allow() and not breaker.allow()  # one trial only
    assert breaker.record_failure() and breaker.state == "open"  # trial failed: open again
    clock.advance(10)
    assert breaker.allow() and breaker.record_success()
    assert breaker.state == "closed"  # type: ignore[comparison-overlap]  # mypy kept "open"


async def test_anthropic_529_overloaded_is_retried() -> None:
    events: list[Event] = []
    clock = FakeClock()
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    async with ScriptedModelServer("anthropic") as srv:
        srv.script(error(529, body=overloaded), reply("fine now", reasoning="ok", signature="sig"))
        m = ModelSpec(provider="anthropic", profile="anthropic", model="claude-sonnet-4-5",
                      base_url=srv.base_url, api_key_env="TEST_KEY", stream=False, max_tokens=512)
        rt = runtime({"m": m}, events, clock)
        model = build(rt, "m", rng=random.Random(5))
        turn = await model.turn(HELLO)
        await model.aclose()
    assert turn.message.text == "fine now" and srv.stats.requests == 2
    assert [r["status"] for r in kinds(events, "retry")] == [529]
    assert srv.requests[0].headers.get("x-api-key") == KEY  # the key went where it belongs


def test_price_lookup_order_and_token_classes() -> None:
    from agentkit.messages import Usage
    from agentkit.models import call_cost, price_for
    from agentkit.task import PriceSpec

    own = PriceSpec(input=1.0, output=2.0)
    override = PriceSpec(input=10.0, output=20.0, reasoning=40.0, cached_input=5.0, ratio=0.5)
    models = {"a": ModelSpec(model="openrouter/deepseek/deepseek-chat-v3.1"),
              "b": ModelSpec(model="deepseek-chat", price=own),
              "c": ModelSpec(model="some-unknown-model")}
    task = TaskSpec(name="t", goal="g", model="a", models=models, prices={"b": override})
    builtin = price_for("a", models["a"], task)
    assert builtin is not None and builtin.input == 0.28  # built-in, vendor prefix ignored
    assert price_for("b", models["b"], task) is override  # task prices beat the model's own
    assert price_for("b", models["b"], None) is own
    assert price_for("c", models["c"], task) is None
    usage = Usage(input_tokens=1_000_000, cached_tokens=400_000, output_tokens=1_000_000,
                  reasoning_tokens=250_000)
    # (0.6M*10 + 0.4M*5 + 0.75M*20 + 0.25M*40) / 1M * ratio 0.5
    assert call_cost(usage, override) == pytest.approx((6 + 2 + 15 + 10) * 0.5)
    assert call_cost(usage, None) == 0.0
