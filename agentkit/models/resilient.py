"""The one retry owner: retries, channel failover and circuit breakers around a model.

Adapters raise `ProviderError` with normalised facts (retryable, status, retry_after) and never
retry. `ResilientModel` wraps the adapters of one model's *channels* (endpoints/keys serving
the same model, lower priority first) and decides:

- retryable error (408/409/429/5xx/529, reset, timeout, cut stream) -> the next attempt goes to
  the next healthy channel at once (a ``fallback`` event), or, with one channel, to the same
  one after a full-jitter backoff with ``Retry-After`` as the floor (a ``retry`` event), never
  longer than ``retry.max_delay_s``, and never past the calling node's wall-clock deadline: a
  wait that would not end before it fails the call at once (`ProviderUnavailable`, saying so)
  instead of sleeping into the run's timeout;
- a cut stream is simply re-issued whole: the partial turn is discarded, so the caller sees
  exactly one turn;
- non-retryable error (400/401/403/404/422, quota) -> raised at once, reworded to say what to
  do, with the API key redacted;
- each channel has a `CircuitBreaker`; an open breaker is skipped until its cooldown ends.

Rate limits are taken per attempt (a retried request is counted by the provider again).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from agentkit.clock import Clock
from agentkit.errors import ProviderError, ProviderHTTPError, ProviderUnavailable
from agentkit.events import Emitter
from agentkit.messages import Message, ToolSpec, Turn
from agentkit.models.base import ChatModel, DeltaCallback, ModelSettings
from agentkit.models.context import current_call
from agentkit.models.ratelimit import RateLimiter, estimate_tokens
from agentkit.retry import CircuitBreaker, RetryPolicy
from agentkit.secrets import TextRedactor

__all__ = ["Channel", "ResilientModel"]


@dataclass
class Channel:
    """One endpoint/key serving the model."""

    name: str
    model: ChatModel
    breaker: CircuitBreaker
    base_url: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None


class ResilientModel:
    """A `ChatModel` that retries, fails over between channels and trips breakers."""

    def __init__(self, name: str, channels: Sequence[Channel], policy: RetryPolicy, *,
                 clock: Clock, emit: Emitter, limiter: RateLimiter | None = None,
                 default_max_tokens: int = 4096, rng: random.Random | None = None) -> None:
        if not channels:
            raise ValueError(f"model {name!r} has no channel")
        self.name = name
        self.channels = list(channels)
        self.policy, self.clock, self.emit = policy, clock, emit
        self.limiter = limiter  # the run's limiter for this model (None: no limits)
        self.default_max_tokens = default_max_tokens
        self.rng = rng or random.Random()

    async def turn(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                   settings: ModelSettings | None = None, *,
                   on_delta: DeltaCallback | None = None) -> Turn:
        limiter = self.limiter
        max_tokens = (settings.max_tokens if settings and settings.max_tokens
                      else self.default_max_tokens)
        # what a rate limiter holds for the call; without one, nothing to estimate (the
        # estimate walks the whole conversation, every turn)
        reserve = 0 if limiter is None else estimate_tokens(messages, tools) + max_tokens
        previous: Channel | None = None
        last_error: ProviderError | None = None
        tried: set[str] = set()
        backoffs = 0
        for attempt in range(self.policy.attempts):
            channel = self._pick(after=previous)
            if channel is None:
                break
            if previous is not None and last_error is not None:
                # another healthy channel is tried at once; once all have failed, back off
                delay = 0.0
                if channel.name in tried:
                    delay = self.policy.delay(backoffs, last_error.retry_after, self.rng)
                    backoffs += 1
                    self._check_deadline(delay, last_error)
                self._emit_retry(attempt, previous, channel, last_error, delay)
                if channel is not previous:
                    self._emit_fallback(previous, channel, last_error)
                if delay > 0:
                    await self.clock.sleep(delay)
            tried.add(channel.name)
            try:
                return await self._attempt(channel, limiter, reserve, messages, tools, settings,
                                           on_delta)
            except ProviderError as err:
                if not err.retryable:
                    raise self._actionable(err, channel) from err
                self._record_failure(channel, err)
                previous, last_error = channel, err
        raise self._exhausted(last_error)

    async def aclose(self) -> None:
        for channel in self.channels:
            await channel.model.aclose()

    # -- one attempt --------------------------------------------------------------------------

    async def _attempt(self, channel: Channel, limiter: RateLimiter | None, reserve: int,
                       messages: Sequence[Message], tools: Sequence[ToolSpec],
                       settings: ModelSettings | None, on_delta: DeltaCallback | None) -> Turn:
        try:
            if limiter is None:
                turn = await channel.model.turn(messages, tools, settings, on_delta=on_delta)
            else:
                async with limiter.reserve(reserve) as reservation:
                    try:
                        turn = await channel.model.turn(messages, tools, settings,
                                                        on_delta=on_delta)
                    except ProviderError as err:
                        if err.status == 429 and err.retryable:
                            wait = err.retry_after
                            limiter.refused(reservation, None if wait is None
                                            else min(wait, self.policy.max_delay))
                        raise
                    reservation.settle(turn.usage.input_tokens + turn.usage.output_tokens)
        except ProviderError as err:
            if not err.retryable:  # no verdict on the endpoint's health
                channel.breaker.release_trial()
            raise
        except BaseException:
            channel.breaker.release_trial()
            raise
        if channel.breaker.record_success():
            self.emit("breaker.closed", {"model": self.name, "channel": channel.name})
        return turn

    def _pick(self, after: Channel | None) -> Channel | None:
        """The first channel (priority order) whose breaker lets a call through.

        After a failure on `after`, the search starts at the channel following it, so a
        failing endpoint hands over to the next one; it wraps round to `after` itself last.
        """
        order = self.channels
        if after is not None:
            i = order.index(after)
            order = order[i + 1:] + order[:i + 1]
        for channel in order:
            if channel.breaker.allow():
                return channel
        return None

    def _record_failure(self, channel: Channel, err: ProviderError) -> None:
        if channel.breaker.record_failure():
            self.emit("breaker.open", {
                "model": self.name, "channel": channel.name,
                "failures": channel.breaker.failures, "cooldown_s": channel.breaker.cooldown,
                "error": _redact(str(err), channel.api_key)})

    def _emit_retry(self, attempt: int, failed: Channel, next_channel: Channel,
                    err: ProviderError, delay: float) -> None:
        self.emit("retry", {
            "model": self.name, "attempt": attempt, "channel": failed.name,
            "next_channel": next_channel.name, "delay_s": round(delay, 6), "status": err.status,
            "retry_after": err.retry_after, "error": _redact(str(err), failed.api_key),
            "error_type": type(err).__name__})

    def _emit_fallback(self, old: Channel, new: Channel, err: ProviderError | None) -> None:
        self.emit("fallback", {
            "kind": "channel", "model": self.name, "from": old.name, "to": new.name,
            "status": err.status if err else None,
            "reason": _redact(str(err), old.api_key) if err else "circuit open"})

    # -- errors -------------------------------------------------------------------------------

    def _check_deadline(self, delay: float, err: ProviderError) -> None:
        """Refuse a wait that would not end before the calling node's wall-clock deadline."""
        budget = current_call().budget
        left = budget.remaining_seconds() if budget is not None else None
        if left is None or delay < left:
            return
        asked = f" (Retry-After: {err.retry_after:g} s)" if err.retry_after else ""
        keys = [c.api_key for c in self.channels]
        raise ProviderUnavailable(
            f"not retried: the next attempt would wait {delay:.1f} s{asked}, but the run has "
            f"{max(0.0, left):.1f} s left of budget.wall_seconds; last error: "
            f"{_redact(str(err), *keys)}", model=self.name, status=err.status,
            retry_after=err.retry_after, retryable=True)

    def _exhausted(self, last: ProviderError | None) -> ProviderUnavailable:
        if last is None:
            waits = [c.breaker.cooldown - (self.clock.monotonic() - (c.breaker.opened_at or 0))
                     for c in self.channels]
            return ProviderUnavailable(
                f"every channel's circuit breaker is open; the first closes again in "
                f"{max(0.0, min(waits)):.0f} s", model=self.name, retryable=True)
        keys = [c.api_key for c in self.channels]
        return ProviderUnavailable(
            f"still failing after {self.policy.attempts} attempts over "
            f"{len(self.channels)} channel(s); last error: {_redact(str(last), *keys)}",
            provider=last.provider, model=self.name, status=last.status,
            retry_after=last.retry_after, retryable=True)

    def _actionable(self, err: ProviderError, channel: Channel) -> ProviderError:
        """Reword a non-retryable error to say who must act and how (key redacted)."""
        where = f" at {channel.base_url}" if channel.base_url else ""
        hint = _hint(err.status, channel.api_key_env)
        body = _redact(err.body, channel.api_key) if err.body else None
        text = (f"{_redact(str(err), channel.api_key)} (model {self.name!r}, channel "
                f"{channel.name!r}{where}; not retried). {hint}")
        cls = type(err) if isinstance(err, ProviderHTTPError) else ProviderError
        try:
            return cls(text, status=err.status, body=body, retryable=False)
        except TypeError:  # a subclass with its own constructor
            return ProviderError(text, status=err.status, body=body, retryable=False)


def _hint(status: int | None, key_env: str | None) -> str:
    key = f"${key_env}" if key_env else "the API key"
    if status in (401, 403):
        return f"The provider refused the credentials: check that {key} holds a valid key " \
               f"for this endpoint and that it may use this model."
    if status == 404:
        return "Check the model id and base_url (the endpoint or model does not exist)."
    if status == 413:
        return "The request is too large: shorten the input or lower max_tokens."
    if status == 429:
        return "Quota or spend limit reached: top up the account or raise its limit."
    if status in (400, 422):
        return "The request was rejected as invalid: check the model's profile, reasoning " \
               "settings, max_tokens and extra_body against the provider's documentation."
    return "See the provider's message above."


def _redact(text: str | None, *secrets: str | None) -> str:
    return TextRedactor([s for s in secrets if s]).text(text or "")
