"""RPM/TPM/concurrency limits with a fake clock: tokens are reserved before the call (max_tokens
plus the prompt estimate), the unused part is refunded, waiters are admitted in FIFO order,
a 429's Retry-After pauses admission, and limits are shared per run (never per process unless
an object is passed in explicitly)."""

from __future__ import annotations

import asyncio

from agentkit.messages import Message
from agentkit.models.ratelimit import RateLimiter, RateLimits, estimate_tokens
from agentkit.runtime import Runtime
from agentkit.task import ModelSpec, TaskSpec
from agentkit.testing import FakeClock


async def test_fake_clock_wakes_sleepers_in_deadline_order() -> None:
    clock = FakeClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.monotonic()))

    async with asyncio.TaskGroup() as group:
        for name, seconds in (("c", 3.0), ("a", 1.0), ("b", 2.0), ("a2", 1.0)):
            group.create_task(sleeper(name, seconds))
    assert woke == [("a", 1.0), ("a2", 1.0), ("b", 2.0), ("c", 3.0)]
    assert clock.sleeps == [3.0, 1.0, 2.0, 1.0]


async def test_tpm_reservation_waits_for_refill() -> None:
    clock = FakeClock()
    limiter = RateLimiter(tpm=6000, clock=clock, margin_s=0)  # at most 6000 in any 60 s
    for _ in range(2):
        async with limiter.reserve(3000) as r:
            r.settle(3000)
    assert clock.monotonic() == 0.0
    async with limiter.reserve(3000) as r:
        r.settle(3000)
    assert abs(clock.monotonic() - 60.0) < 1e-6  # until the first one leaves the window


async def test_unused_reservation_is_refunded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(tpm=6000, clock=clock, margin_s=0)
    async with limiter.reserve(6000) as r:
        r.settle(1000)  # the answer used far less than max_tokens
    async with limiter.reserve(5000) as r:
        r.settle(5000)
    assert clock.monotonic() == 0.0  # the refund made room at once
    async with limiter.reserve(1000) as r:
        r.settle(1000)
    assert abs(clock.monotonic() - 60.0) < 1e-6


async def test_unsettled_reservation_stays_spent() -> None:
    """A failed request was counted by the provider too: no refund."""
    clock = FakeClock()
    limiter = RateLimiter(tpm=600, clock=clock, margin_s=0)
    try:
        async with limiter.reserve(600):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    async with limiter.reserve(60) as r:
        r.settle(60)
    assert abs(clock.monotonic() - 60.0) < 1e-6


async def test_rpm_and_pause() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=2, clock=clock, margin_s=0)
    for _ in range(3):
        async with limiter.reserve(1):
            pass
    assert abs(clock.monotonic() - 60.0) < 1e-6
    limiter.pause(7)
    async with limiter.reserve(1):
        pass
    assert clock.monotonic() >= 67.0


async def test_concurrency_limit_and_fifo_admission() -> None:
    clock = FakeClock()
    limiter = RateLimiter(tpm=1000, max_concurrency=2, clock=clock, margin_s=0)
    inflight, peak, order = 0, 0, []

    async def request(name: str, tokens: int) -> None:
        nonlocal inflight, peak
        async with limiter.reserve(tokens) as r:
            order.append(name)
            inflight += 1
            peak = max(peak, inflight)
            await clock.sleep(1)
            inflight -= 1
            r.settle(tokens)

    async with asyncio.TaskGroup() as group:
        group.create_task(request("big", 900))
        await asyncio.sleep(0)
        group.create_task(request("huge", 1000))  # must wait for the bucket to refill
        await asyncio.sleep(0)
        for i in range(3):
            group.create_task(request(f"small{i}", 10))
    assert peak <= 2
    assert order == ["big", "huge", "small0", "small1", "small2"]  # not overtaken
    assert clock.monotonic() >= 120.0  # huge waited for big to leave the window, smalls for huge


async def test_shorter_window_scales_the_per_minute_limit() -> None:
    clock = FakeClock()
    limiter = RateLimiter(tpm=6000, window_s=1.0, clock=clock, margin_s=0)  # 100 tokens in any second
    for _ in range(3):
        async with limiter.reserve(100) as r:
            r.settle(100)
    assert abs(clock.monotonic() - 2.0) < 1e-6


def test_estimate_grows_with_prompt() -> None:
    short = estimate_tokens([Message.user("hi")])
    long = estimate_tokens([Message.user("word " * 400)])
    assert long - short >= 400


async def test_limits_are_run_scoped_unless_shared_explicitly() -> None:
    task = TaskSpec(name="t", goal="g", model="m", models={"m": ModelSpec(model="x", tpm=100,
                                                                  base_url="http://127.0.0.1:9/v1")})
    clock = FakeClock()

    a, b = Runtime(task, clock=clock), Runtime(task, clock=clock)
    assert a.rate_limits is not b.rate_limits
    assert (await a.model("m")).resilient.limiter is not (await b.model("m")).resilient.limiter
    shared = RateLimits(clock)
    c, d = Runtime(task, clock=clock, rate_limits=shared), Runtime(task, clock=clock,
                                                                  rate_limits=shared)
    one, two = (await c.model("m")).resilient.limiter, (await d.model("m")).resilient.limiter
    assert one is not None and one is two
    for rt in (a, b, c, d):
        await rt.aclose()


async def test_default_margin_keeps_the_client_window_behind_the_providers() -> None:
    """The provider starts counting a moment after we admit: entries are held a bit longer."""
    clock = FakeClock()
    limiter = RateLimiter(tpm=600, clock=clock)
    for _ in range(2):
        async with limiter.reserve(600) as r:
            r.settle(600)
    assert 60.0 < clock.monotonic() <= 61.5


async def test_refund_wakes_a_waiting_request_early() -> None:
    clock = FakeClock()
    limiter = RateLimiter(tpm=1000, clock=clock, margin_s=0)
    admitted_at: list[float] = []

    async def first() -> None:
        async with limiter.reserve(1000) as r:  # holds the whole minute while it runs
            await clock.sleep(5)
            r.settle(200)  # used far less than max_tokens

    async def second() -> None:
        async with limiter.reserve(500) as r:
            admitted_at.append(clock.monotonic())
            r.settle(500)

    async with asyncio.TaskGroup() as group:
        group.create_task(first())
        await asyncio.sleep(0)
        group.create_task(second())
    assert admitted_at == [5.0]  # not 60: the refund let it in


async def test_a_429_refunds_the_refused_request_and_widens_the_margin() -> None:
    clock = FakeClock()
    limiter = RateLimiter(tpm=600, clock=clock, margin_s=0)
    async with limiter.reserve(600) as r:
        limiter.refused(r, retry_after=0.8)  # the provider did not count it
    async with limiter.reserve(600) as r:
        r.settle(600)
    assert abs(clock.monotonic() - 0.8) < 1e-6  # waited as told, not a whole window
    assert limiter.tpm is not None and 0 < limiter.tpm.margin <= 60 / 40
