"""Per-model concurrency and RPM/TPM limits, shared by every agent that uses the model.

Providers count a request against TPM when it arrives, using its ``max_tokens`` and prompt
size, so a client that only counts tokens after the answer overshoots and gets a 429 storm.
`RateLimiter.reserve` therefore takes ``max_tokens`` plus the estimated prompt tokens *before*
sending, then gives back what the response did not use. A limit means what it says: at most N
in any 60 s (a sliding window, so a client that keeps to it is never refused by a provider
counting the same way or with a token bucket of that size). Waiters are admitted in FIFO
order so a large request is not starved by small ones.

Sharing: a Runtime keeps one `RateLimits` of its own. Several runtimes in one process share
limits only when the caller passes the same object explicitly (``Runtime(...,
rate_limits=shared)``, ``start(..., rate_limits=shared)``); there is no module-global registry.
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from agentkit.clock import Clock
from agentkit.messages import Message, ReasoningPart, TextPart, ToolCallPart, ToolSpec

__all__ = ["RateLimiter", "RateLimits", "Reservation", "estimate_tokens"]

#: the `runtime.resource` key under which a run keeps its `RateLimits`


def estimate_tokens(messages: Sequence[Message], tools: Sequence[ToolSpec] = (), *,
                    chars_per_token: int = 4) -> int:
    """A cheap estimate of prompt tokens: `chars_per_token` characters a token (about 4 for
    English with BPE tokenizers), plus message framing.

    Used only to reserve capacity before the call (rate limits; budgets, with a smaller
    divisor so the hold is from above); the provider's usage figure settles the account
    afterwards.
    """
    chars = 0
    for message in messages:
        chars += 32  # role and framing
        for part in message.parts:
            if isinstance(part, (TextPart, ReasoningPart)):
                chars += len(part.text)
            elif isinstance(part, ToolCallPart):
                chars += len(part.name) + len(part.id) + len(part.raw_arguments
                                                            or json.dumps(part.arguments))
            else:
                chars += len(part.content) + len(part.call_id)
    for tool in tools:
        chars += len(json.dumps(tool.parameters)) + len(tool.description) + len(tool.name) + 16
    return -(-chars // chars_per_token) + 4


class _Window:
    """At most `limit` units in any `window_s` seconds (a sliding-window log).

    The literal meaning of "N per minute", and what a provider checks: a client that keeps to
    it is never refused, whether the provider counts over a sliding window or a token bucket
    of the same size. An entry can be lowered after the fact (a refund) or raised (debt).
    """

    def __init__(self, limit: float, window_s: float, clock: Clock, margin_s: float = 0.0) -> None:
        # the provider starts counting a request a little after we admit it (network, event
        # loop): holding each entry `margin_s` longer keeps our window behind the provider's
        self.limit, self.base, self.margin, self.clock = float(limit), window_s, margin_s, clock
        self.log: collections.deque[list[float]] = collections.deque()  # [time, amount]

    @property
    def window(self) -> float:
        return self.base + self.margin

    def _prune(self) -> float:
        now = self.clock.monotonic()
        while self.log and self.log[0][0] <= now - self.window:
            self.log.popleft()
        return now

    def used(self) -> float:
        self._prune()
        return sum(amount for _, amount in self.log)

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` more fits in the window (0 if it fits now)."""
        now = self._prune()
        excess = self.used() + min(amount, self.limit) - self.limit
        # a float residue (1e-12 tokens) must not turn into an endless series of tiny sleeps
        if excess <= 1e-6:
            return 0.0
        for ts, held in self.log:
            excess -= held
            if excess <= 1e-6:
                return max(ts + self.window - now, 1e-6)
        return self.window  # unreachable: amount <= limit

    def take(self, amount: float) -> list[float]:
        entry = [self._prune(), min(amount, self.limit)]
        self.log.append(entry)
        return entry


@dataclass
class Reservation:
    """Capacity held for one request; `settle` with the real token count to refund the rest."""

    tokens: int
    entry: list[float] | None = None
    settled: bool = False
    on_refund: Callable[[], None] | None = None

    def settle(self, used_tokens: int) -> None:
        """Count what the request really used (less: refund; more: debt, taken back)."""
        if self.settled:
            return
        self.settled = True
        if self.entry is not None:
            refund = self.entry[1] - used_tokens
            self.entry[1] = float(used_tokens)
            if refund > 0 and self.on_refund is not None:
                self.on_refund()


class RateLimiter:
    """Concurrency + RPM + TPM for one model. All waiting goes through `clock`.

    `window_s` is the period the limits are counted over (60 for per-minute limits; a test or
    benchmark may shrink it together with the server's); the limits stay per-minute figures.
    """

    def __init__(self, *, rpm: int | None = None, tpm: int | None = None,
                 max_concurrency: int | None = None, clock: Clock,
                 window_s: float = 60.0, margin_s: float | None = None) -> None:
        self.clock = clock
        scale = window_s / 60.0
        margin = margin_s if margin_s is not None else 0.005 * window_s + 0.01
        self.rpm = _Window(max(1.0, rpm * scale), window_s, clock, margin) if rpm else None
        self.tpm = _Window(tpm * scale, window_s, clock, margin) if tpm else None
        self._slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self._admission = asyncio.Lock()  # FIFO: first come, first admitted
        self._refunded = asyncio.Event()
        self._paused_until = 0.0
        #: seconds spent waiting for rate capacity (summed over requests)

    def pause(self, seconds: float) -> None:
        """Hold back every new request for `seconds` (the server sent 429 + Retry-After)."""
        self._paused_until = max(self._paused_until, self.clock.monotonic() + seconds)

    def refused(self, reservation: Reservation, retry_after: float | None) -> None:
        """The provider answered 429 although we kept to the limits: our window runs ahead of
        its. The refused request was not counted (refund it); wait as told; and hold future
        entries a little longer (by what the provider said, up to a tenth of the window)."""
        reservation.settle(0)
        if retry_after:
            self.pause(retry_after)
            for window in (self.rpm, self.tpm):
                if window is not None:
                    window.margin = min(window.margin + retry_after / 4, window.base / 40)

    @asynccontextmanager
    async def reserve(self, tokens: int) -> AsyncIterator[Reservation]:
        """Hold a concurrency slot and `tokens` of TPM for the duration of one request.

        If the caller never settles (the request failed), the whole reservation stays spent:
        the provider counted the request too.
        """
        if self._slots is not None:
            await self._slots.acquire()
        try:
            yield await self._admit(tokens)
        finally:
            if self._slots is not None:
                self._slots.release()

    async def _admit(self, tokens: int) -> Reservation:
        async with self._admission:
            while True:
                wait = self._paused_until - self.clock.monotonic()
                if self.rpm is not None:
                    wait = max(wait, self.rpm.wait_for(1))
                if self.tpm is not None:
                    wait = max(wait, self.tpm.wait_for(tokens))
                if wait <= 0:
                    break
                await self._sleep_or_refund(wait)
            if self.rpm is not None:
                self.rpm.take(1)
            if self.tpm is None:
                return Reservation(tokens)
            entry = self.tpm.take(tokens)
            return Reservation(int(entry[1]), entry, on_refund=self._refunded.set)

    async def _sleep_or_refund(self, seconds: float) -> None:
        """Sleep `seconds`, or less if a finished request gives tokens back meanwhile
        (reservations hold max_tokens; the refund often lets the next request in early)."""
        self._refunded.clear()
        waits = [asyncio.ensure_future(self.clock.sleep(seconds)),
                 asyncio.ensure_future(self._refunded.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
            await asyncio.gather(*waits, return_exceptions=True)


class RateLimits:
    """The limiters of every model, by model name. One per run unless shared explicitly."""

    def __init__(self, clock: Clock, *, window_s: float = 60.0) -> None:
        self.clock, self.window_s = clock, window_s
        self._by_model: dict[str, RateLimiter] = {}

    def for_model(self, name: str, *, rpm: int | None, tpm: int | None,
                  max_concurrency: int | None) -> RateLimiter:
        limiter = self._by_model.get(name)
        if limiter is None:
            limiter = RateLimiter(rpm=rpm, tpm=tpm, max_concurrency=max_concurrency,
                                  clock=self.clock, window_s=self.window_s)
            self._by_model[name] = limiter
        return limiter
