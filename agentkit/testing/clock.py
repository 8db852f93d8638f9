"""`FakeClock`: virtual time for backoff, rate-limit and deadline tests.

``await clock.sleep(7)`` returns at once (after the event loop has run every task that was
ready), with ``clock.monotonic()`` moved forward by 7 s. Concurrent sleepers wake in order of
their virtual deadline (ties in the order they went to sleep), so a test that starts ten
sleepers sees the same interleaving every time. Every requested sleep is kept in `sleeps`, so a
test can assert "waited at least 7 s" without timing anything.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

__all__ = ["FakeClock"]

#: how many event-loop hops the clock waits with no new sleeper before it jumps: enough for
#: tasks that were just woken (or just started) to reach their next ``sleep``.
_SETTLE_HOPS = 8


class FakeClock:
    """A `agentkit.clock.Clock` whose time only moves when someone sleeps (or on `advance`)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._epoch = start
        self._now = 0.0
        self._counter = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._jump_scheduled = False
        self._quiet_hops = 0
        #: every duration passed to `sleep`, in call order
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self._epoch + self._now

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by hand (wakes sleepers whose deadline has passed)."""
        self._now += max(0.0, seconds)
        self._wake_due()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._counter), future))
        self._quiet_hops = 0
        if not self._jump_scheduled:
            self._jump_scheduled = True
            loop.call_soon(self._maybe_jump, loop)
        await future

    # -- internals ----------------------------------------------------------------------------

    def _maybe_jump(self, loop: asyncio.AbstractEventLoop) -> None:
        """Jump to the earliest deadline once the loop has settled (no new sleepers)."""
        self._drop_cancelled()
        if not self._sleepers:
            self._jump_scheduled = False
            return
        if self._quiet_hops < _SETTLE_HOPS:
            self._quiet_hops += 1
            loop.call_soon(self._maybe_jump, loop)
            return
        self._now = max(self._now, self._sleepers[0][0])
        self._wake_due()
        self._quiet_hops = 0
        if self._sleepers:
            loop.call_soon(self._maybe_jump, loop)
        else:
            self._jump_scheduled = False

    def _wake_due(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    def _drop_cancelled(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
