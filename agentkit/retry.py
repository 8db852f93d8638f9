"""Retry policy as data, and the per-endpoint circuit breaker.

`RetryPolicy` says how often and how long to wait; `agentkit.models.resilient` is the one place
that applies it (adapters never retry, so one failure never turns into attempts x attempts
calls). Backoff is AWS "full jitter": ``rand(0, min(cap, base * 2**n))``, with the server's
``Retry-After`` as a floor, and no wait ever longer than `RetryPolicy.max_delay` (a provider
answering ``Retry-After: 3600`` is retried after ``max_delay_s``, or failed over). Only
`ProviderError.retryable` errors are retried: 408/409/429/5xx/529, connection resets and
timeouts, never 400/401/403/404/422 or quota/billing refusals.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from agentkit.clock import Clock
from agentkit.task import RetrySpec

__all__ = ["CircuitBreaker", "RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """How a model call is retried.

    `attempts` counts every try (1 = no retry). `breaker_threshold` consecutive retryable
    failures open an endpoint's circuit breaker for `breaker_cooldown` seconds.
    """

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: Literal["full", "none"] = "full"
    breaker_threshold: int = 5
    breaker_cooldown: float = 30.0

    @classmethod
    def from_spec(cls, spec: RetrySpec) -> RetryPolicy:
        return cls(attempts=spec.attempts, base_delay=spec.base_delay_s,
                   max_delay=spec.max_delay_s)

    def delay(self, retry_number: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry `retry_number` (0 = the first retry): full jitter,
        raised to the server's `retry_after`, never above `max_delay`."""
        cap = min(self.max_delay, self.base_delay * (2 ** retry_number))
        wait = rng.uniform(0.0, cap) if self.jitter == "full" else cap
        if retry_after is not None and retry_after > wait:
            wait = min(retry_after, self.max_delay)
        return wait


class CircuitBreaker:
    """Closed -> open after `threshold` consecutive failures -> half-open after `cooldown`.

    While open, callers skip the endpoint (another channel or a fallback model serves). In the
    half-open state exactly one trial call is let through: success closes the breaker, failure
    opens it for another cooldown. State changes are returned so the caller can emit events.
    """

    def __init__(self, threshold: int, cooldown: float, clock: Clock) -> None:
        self.threshold, self.cooldown, self.clock = threshold, cooldown, clock
        self.failures = 0
        self.opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> Literal["closed", "open", "half_open"]:
        if self.opened_at is None:
            return "closed"
        if self.clock.monotonic() - self.opened_at >= self.cooldown:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """May a call go to this endpoint now? (Claims the half-open trial if so.)"""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def record_success(self) -> bool:
        """Returns True if this closed a breaker that was open."""
        was_open = self.opened_at is not None
        self.failures, self.opened_at, self._trial_running = 0, None, False
        return was_open

    def record_failure(self) -> bool:
        """Returns True if this failure opened (or re-opened) the breaker."""
        self.failures += 1
        if self.opened_at is not None:  # already open: only a failed half-open trial re-opens
            reopened, self._trial_running = self._trial_running, False
            if reopened:
                self.opened_at = self.clock.monotonic()
            return reopened
        if self.failures >= self.threshold:
            self.opened_at = self.clock.monotonic()
            return True
        return False

    def release_trial(self) -> None:
        """A half-open trial ended without a verdict (non-retryable error, cancellation)."""
        self._trial_running = False
