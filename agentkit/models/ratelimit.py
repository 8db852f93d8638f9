"""Per-model concurrency and RPM/TPM limits, shared by every agent that uses the model.

Providers count a request against TPM when it arrives, using its ``max_tokens`` and prompt
size, so a client that only counts tokens after the answer overshoots and gets a 429 storm.
`RateLimiter.reserve` therefore takes ``max_tokens`` plus the estimated prompt tokens from a
token bucket *before* sending, then gives back what the response did not use. Both buckets
refill continuously (``limit / 60`` per second) up to one minute's worth; waiters are admitted
in FIFO order so a large request is not starved by small ones.

Sharing: a Runtime keeps one `RateLimits` (run-scoped, `runtime.resource`). Several runtimes in
one process share limits only when the caller passes the same `RateLimits` object explicitly
(``await runtime.resource(RATE_LIMITS_KEY, lambda: shared)`` before the first model call);
there is no module-global registry.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from agentkit.clock import Clock
from agentkit.messages import Message, ToolSpec

__all__ = ["RATE_LIMITS_KEY", "RateLimiter", "RateLimits", "Reservation", "estimate_tokens"]

#: the `runtime.resource` key under which a run keeps its `RateLimits`
RATE_LIMITS_KEY = "agentkit.rate_limits"


def estimate_tokens(messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> int:
    """A cheap upper-ish estimate of prompt tokens (about 4 characters a token, plus framing).

    Used only to reserve rate-limit capacity; the provider's usage figure settles the account.
    """
    chars = sum(len(m.model_dump_json()) for m in messages)
    chars += sum(len(json.dumps(t.parameters)) + len(t.description) + len(t.name) for t in tools)
    return chars // 4 + 4 * len(messages) + 8


class _Bucket:
    """A token bucket holding up to one minute of `per_minute`, refilled continuously."""

    def __init__(self, per_minute: float, clock: Clock) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.clock = clock
        self._last: float | None = None

    def _refill(self) -> None:
        now = self.clock.monotonic()
        if self._last is not None:
            self.level = min(self.capacity, self.level + (now - self._last) * self.rate)
        self._last = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0 if it is now)."""
        self._refill()
        missing = min(amount, self.capacity) - self.level
        # a float residue (1e-14 tokens) must not turn into an endless series of tiny sleeps
        return 0.0 if missing <= 1e-6 else missing / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount

    def give(self, amount: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level + amount)


@dataclass
class Reservation:
    """Capacity held for one request; `settle` with the real token count to refund the rest."""

    limiter: RateLimiter
    tokens: int
    settled: bool = False

    def settle(self, used_tokens: int) -> None:
        if self.settled:
            return
        self.settled = True
        if self.limiter.tpm is not None:
            self.limiter.tpm.give(self.tokens - used_tokens)  # negative = debt, taken back


class RateLimiter:
    """Concurrency + RPM + TPM for one model. All waiting goes through `clock`."""

    def __init__(self, *, rpm: int | None = None, tpm: int | None = None,
                 max_concurrency: int | None = None, clock: Clock) -> None:
        self.clock = clock
        self.rpm = _Bucket(rpm, clock) if rpm else None
        self.tpm = _Bucket(tpm, clock) if tpm else None
        self._slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self._admission = asyncio.Lock()  # FIFO: first come, first admitted
        self._paused_until = 0.0
        #: seconds spent waiting for rate capacity (summed over requests)
        self.waited_s = 0.0

    def pause(self, seconds: float) -> None:
        """Hold back every new request for `seconds` (the server sent 429 + Retry-After)."""
        self._paused_until = max(self._paused_until, self.clock.monotonic() + seconds)

    @asynccontextmanager
    async def reserve(self, tokens: int) -> AsyncIterator[Reservation]:
        """Hold a concurrency slot and `tokens` of TPM for the duration of one request.

        If the caller never settles (the request failed), the whole reservation stays spent:
        the provider counted the request too.
        """
        if self._slots is not None:
            await self._slots.acquire()
        try:
            await self._admit(tokens)
            reservation = Reservation(self, min(tokens, int(self.tpm.capacity)) if self.tpm
                                      else tokens)
            yield reservation
        finally:
            if self._slots is not None:
                self._slots.release()

    async def _admit(self, tokens: int) -> None:
        async with self._admission:
            while True:
                wait = self._paused_until - self.clock.monotonic()
                if self.rpm is not None:
                    wait = max(wait, self.rpm.wait_for(1))
                if self.tpm is not None:
                    wait = max(wait, self.tpm.wait_for(tokens))
                if wait <= 0:
                    break
                self.waited_s += wait
                await self.clock.sleep(wait)
            if self.rpm is not None:
                self.rpm.take(1)
            if self.tpm is not None:
                self.tpm.take(min(tokens, self.tpm.capacity))


class RateLimits:
    """The limiters of every model, by model name. One per run unless shared explicitly."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._by_model: dict[str, RateLimiter] = {}

    def for_model(self, name: str, *, rpm: int | None, tpm: int | None,
                  max_concurrency: int | None) -> RateLimiter:
        limiter = self._by_model.get(name)
        if limiter is None:
            limiter = RateLimiter(rpm=rpm, tpm=tpm, max_concurrency=max_concurrency,
                                  clock=self.clock)
            self._by_model[name] = limiter
        return limiter
