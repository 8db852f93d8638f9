"""Every model call has a total deadline and a size cap, and retries never wait past either the
retry policy's `max_delay_s` or the run's wall clock; over real HTTP against hostile servers.

- a server dripping SSE keep-alives, or one byte at a time, cannot keep a call alive past
  ``timeout_s`` (httpx's timeouts are per read, so each drop used to reset them);
- a gzip bomb (0.5 MB inflating to 512 MiB) and a 50 MB answer are cut at
  ``max_response_bytes`` with a clear error, and the calling process's peak RSS grows by at
  most twice the cap (measured with ``getrusage`` in a separate client process);
- ``Retry-After: 3600`` waits at most ``max_delay_s``; a wait that cannot end before the run's
  wall-clock deadline is not slept at all: the call fails at once, saying why (fake clock).
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentkit.budget import Budget
from agentkit.errors import ProviderResponseError, ProviderTimeout, ProviderUnavailable
from agentkit.events import EventBus
from agentkit.messages import Message
from agentkit.models import ManagedModel, build_model, call_scope
from agentkit.models.openai_compat import OpenAICompatModel
from agentkit.models.profiles import get_profile
from agentkit.retry import RetryPolicy
from agentkit.run import arun
from agentkit.task import BudgetSpec, ModelSpec, RetrySpec, TaskSpec
from agentkit.testing import (
    EventCapture,
    FakeClock,
    RecordedRequest,
    Reply,
    ScriptedModelServer,
    error,
    reply,
)
from agentkit.usage import RunUsage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _hostile import SMALL_ANSWER, HostileServer, measure_call  # noqa: E402

Q = [Message.user("hello")]
DEFAULT_CAP = ModelSpec(model="m").max_response_bytes
#: the bound on the client's peak-RSS growth for a call cut at the cap: the cap itself (the
#: bytes read so far) and as much again for everything else. Before the fix: 1,039 MB for the
#: gzip bomb, 163 MB (accepted) for the 50 MB JSON answer, 89 MB for the 50 MB stream.
RSS_BOUND_MB = 2 * DEFAULT_CAP / 2**20


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServer]:
    with HostileServer(drip_s=0.02) as server:
        yield server


def model(base_url: str, **spec: object) -> OpenAICompatModel:
    ms = ModelSpec.model_validate({"model": "m", "profile": "openai", **spec})
    return OpenAICompatModel(ms, name="fast", api_key=None, base_url=base_url,
                             profile=get_profile("openai"))


@pytest.mark.parametrize(("case", "stream"), [("sse-drip", True), ("byte-drip", False)])
async def test_a_dripping_server_cannot_extend_the_calls_deadline(hostile: HostileServer,
                                                                  case: str, stream: bool) -> None:
    """The server sends a keep-alive (or one space of JSON) every 20 ms forever, so no read
    ever times out. The call still ends at ``timeout_s`` with the whole-call deadline's error
    (not a read timeout), and the client hangs up. Before the fix the call never ended."""
    llm = model(hostile.base_url(case), stream=stream, timeout_s=0.5)
    try:
        # the outer limit only keeps a broken build from hanging the suite
        with pytest.raises(ProviderTimeout) as info:
            await asyncio.wait_for(llm.turn(Q), 60)
    finally:
        await llm.aclose()
    assert "timeout_s = 0.5 s, the deadline of the whole call" in str(info.value)
    assert "models.fast.timeout_s" in str(info.value)
    assert await asyncio.to_thread(hostile.hangup(case).wait, 30), "the client never hung up"


def test_a_gzip_bomb_is_cut_at_the_cap_with_bounded_memory(hostile: HostileServer) -> None:
    """0.5 MB of gzip inflating to 512 MiB: inflated in 64 KB steps and counted, cut at the
    default cap of 32 MiB; the client process's peak RSS grows by at most 2x the cap."""
    result = measure_call(hostile.base_url("gzip-bomb"))
    assert result["error"] is not None and result["error"]["type"] == "ProviderResponseError"
    assert f"max_response_bytes = {DEFAULT_CAP:,} bytes" in result["error"]["message"]
    assert "raise models.m.max_response_bytes" in result["error"]["message"]
    assert result["rss_growth_mb"] <= RSS_BOUND_MB, result


def test_an_error_body_that_is_a_gzip_bomb_is_read_only_in_part(hostile: HostileServer) -> None:
    """A 503 whose body inflates to 512 MiB: the error is reported from its first 64 KB,
    and the client's peak RSS barely moves (before: the whole body was inflated)."""
    result = measure_call(hostile.base_url("error-bomb"))
    assert result["error"] is not None and result["error"]["type"] == "ProviderHTTPError"
    assert "HTTP 503" in result["error"]["message"]
    assert result["rss_growth_mb"] <= 16, result


@pytest.mark.parametrize(("case", "stream"), [("big-json", False), ("big-sse", True)])
def test_a_50_mb_answer_is_refused_at_the_cap_with_bounded_memory(hostile: HostileServer,
                                                                  case: str, stream: bool) -> None:
    """A well-formed 50 MB answer (one JSON body, or a stream of chunks) is refused once 32 MiB
    have been read, naming the setting to raise; peak RSS growth stays within 2x the cap."""
    result = measure_call(hostile.base_url(case), stream=stream)
    assert result["error"] is not None and result["error"]["type"] == "ProviderResponseError"
    assert f"max_response_bytes = {DEFAULT_CAP:,} bytes" in result["error"]["message"]
    assert result["rss_growth_mb"] <= RSS_BOUND_MB, result


@pytest.mark.parametrize("case", ["gzip-json", "deflate-json"])
async def test_compressed_answers_within_the_cap_still_read(hostile: HostileServer,
                                                            case: str) -> None:
    """A 100 KB answer sent as two gzip members, or as raw deflate, decodes whole; the same
    answer under a 64 KiB cap is refused naming the setting (the cap counts decoded bytes)."""
    llm = model(hostile.base_url(case))
    small = model(hostile.base_url(case), max_response_bytes=64 * 1024)
    try:
        assert (await llm.turn(Q)).message.text == SMALL_ANSWER
        with pytest.raises(ProviderResponseError, match=r"max_response_bytes = 65,536 bytes"):
            await small.turn(Q)
    finally:
        await llm.aclose()
        await small.aclose()


async def test_an_answer_over_a_lowered_cap_is_refused_and_one_under_it_is_read() -> None:
    """The scripted server's own wire format: 20,000 characters of content pass a 1 MiB cap
    and fail a 10 KB one, streamed (in 6-character chunks: ~0.5 MB of events) and not."""
    text = "anemone " * 2_500
    async with ScriptedModelServer("openai") as srv:
        srv.script(reply(text), reply(text), reply(text), reply(text))
        for stream in (False, True):
            ok = model(srv.base_url, stream=stream, max_response_bytes=2**20)
            tight = model(srv.base_url, stream=stream, max_response_bytes=10_000)
            try:
                assert (await ok.turn(Q)).message.text == text
                with pytest.raises(ProviderResponseError, match="max_response_bytes = 10,000"):
                    await tight.turn(Q)
            finally:
                await ok.aclose()
                await tight.aclose()


# -- Retry-After ------------------------------------------------------------------------------


def managed(base_url: str, bus: EventBus, *, max_delay_s: float = 2.0) -> ManagedModel:
    """Model `m` as a run builds it (retry owner included), 4 attempts."""
    spec = ModelSpec(model="gpt-4o", profile="openai", base_url=base_url, stream=False)
    policy = RetryPolicy.from_spec(RetrySpec(attempts=4, max_delay_s=max_delay_s))
    return build_model("m", spec, clock=bus.clock, events=bus.emit, usage=RunUsage(),
                       policy=policy, rng=random.Random(3))


async def test_retry_after_storm_waits_at_most_max_delay() -> None:
    """Every answer is 429 with ``Retry-After: 3600``. With ``max_delay_s: 2`` and 4 attempts,
    each of the 3 waits is at most 2 s (virtual), 4 requests are made, and the call ends as
    unavailable. Before the fix each wait was 3600 s."""
    clock, events = FakeClock(), EventCapture()
    async with ScriptedModelServer("openai") as srv:
        srv.script(*[error(429, "slow down", retry_after=3600)] * 4)
        llm = managed(srv.base_url, EventBus("r", clock=clock, sinks=[events]))
        with pytest.raises(ProviderUnavailable, match="still failing after 4 attempts"):
            await llm.turn(Q)
        await llm.aclose()
    assert srv.stats.requests == 4
    assert len(clock.sleeps) == 3 and max(clock.sleeps) <= 2.0, clock.sleeps
    retries = [e.data for e in events.of("retry")]
    assert [r["retry_after"] for r in retries] == [3600.0] * 3
    assert all(r["delay_s"] <= 2.0 for r in retries)


async def test_a_wait_past_the_runs_wall_clock_fails_now_instead_of_sleeping() -> None:
    """The node's budget has 5 s of wall clock left; the provider asks for 3600 s, capped to
    ``max_delay_s`` = 30 s, which still does not fit: the call fails at once naming both
    figures, after one request and no sleep."""
    clock = FakeClock()
    bus = EventBus("r", clock=clock)
    budget = Budget.root(BudgetSpec(wall_seconds=5), emit=bus.emit, clock=clock)
    async with ScriptedModelServer("openai") as srv:
        srv.script(error(429, "slow down", retry_after=3600), reply("too late"))
        llm = managed(srv.base_url, bus, max_delay_s=30)
        with call_scope("n1", budget=budget), pytest.raises(ProviderUnavailable) as info:
            await llm.turn(Q)
        await llm.aclose()
    assert srv.stats.requests == 1 and clock.sleeps == []
    message = str(info.value)
    assert "would wait 30.0 s (Retry-After: 3600 s)" in message
    assert "5.0 s left of budget.wall_seconds" in message


async def test_a_run_ends_at_its_wall_clock_even_while_a_model_call_hangs(tmp_path: Path) -> None:
    """The model never answers (its own deadline, 600 s, is far off); the run's wall clock of
    1 s ends it: status failed with BudgetExceeded for wall_seconds, and the call is hung up.
    Without a setting the wall clock is 900 s, never unlimited."""
    async def never(request: RecordedRequest) -> Reply:
        await asyncio.get_running_loop().create_future()
        return reply("unreachable")

    assert BudgetSpec().wall_seconds == 900
    async with ScriptedModelServer("openai", default=never) as srv:
        task = TaskSpec.model_validate({
            "name": "wall", "goal": "wait", "mode": "agent", "model": "m",
            "models": {"m": {"profile": "openai", "model": "gpt-4o", "base_url": srv.base_url,
                             "stream": False}},
            "workspace": str(tmp_path), "budget": {"wall_seconds": 1}})
        result = await arun(task, environ={})
        await srv.wait_until(lambda: srv.stats.hangups == 1)
    assert result.status == "failed" and result.error is not None
    assert result.error.type == "BudgetExceeded" and "wall_seconds" in result.error.message
