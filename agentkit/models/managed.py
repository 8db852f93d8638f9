"""The model a run actually calls: budget holds, audit events, usage and the fallback chain.

Layers, outside in (built by `agentkit.models.build_model`):

    ManagedModel     reserve from the budget -> model.request -> call -> model.response,
                     usage counted once (the run's `RunUsage`), fallback models
      ResilientModel retries, channel failover, circuit breakers, rate limits (per attempt)
        adapter      one wire API (OpenAICompatModel, AnthropicModel, LocalModel, ...)

Every model call of a run passes `ManagedModel.turn_without_fallback`, which makes it the one
point where a call is reserved before it is made (prompt, estimated from above, plus
``max_tokens``, and their cost at the model's price: a call that does not fit is not made),
and where what it used is counted, exactly once, for the node that made it.

A character count cannot know a provider's tokenizer, so under a token or cost cap the hold is
calibrated by the answers (`HoldEstimator`): the first capped call to a model goes alone, and
every answer raises the prompt multiplier to the largest ratio of reported to estimated prompt
tokens seen (and the output allowance to the most a call went past ``max_tokens``, as reasoning
models that do not count their thinking against it do).

Fallback models (``ModelSpec.fallbacks``) are tried in order for *availability* errors only
(`ProviderUnavailable`: every attempt and channel failed, or every breaker is open); a
request the provider rejects as invalid would be rejected by the fallback too, so it is not.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from agentkit.budget import Budget, ModelHold
from agentkit.clock import Clock
from agentkit.errors import ProviderError, ProviderUnavailable
from agentkit.events import Emitter
from agentkit.journal import Journal
from agentkit.messages import Message, ReasoningPart, TextPart, ToolCallPart, ToolSpec, Turn, Usage
from agentkit.models._request import RenderedRequests, request_fingerprint
from agentkit.models.base import DeltaCallback, ModelSettings
from agentkit.models.context import current_call, tagged
from agentkit.models.pricing import call_cost
from agentkit.models.ratelimit import estimate_tokens
from agentkit.models.resilient import ResilientModel
from agentkit.task import ModelSpec, PriceSpec
from agentkit.usage import RunUsage

__all__ = ["BUDGET_CHARS_PER_TOKEN", "HoldEstimator", "ManagedModel", "ModelResolver",
           "PricedTurn", "request_fingerprint"]

#: characters per prompt token assumed when a call is reserved from a budget: fewer than the
#: ~4 of English text for BPE tokenizers, so that the hold is an estimate from above
BUDGET_CHARS_PER_TOKEN = 3

#: another model of the same run, by name (for the fallback chain)
ModelResolver = Callable[[str], Awaitable["ManagedModel"]]


class HoldEstimator:
    """The most one call to a model can use, learnt from that model's answers (one per model).

    Until the first answer under a cap arrives, further capped calls wait for it (`admit`), so
    a fan-out of thirty never reserves thirty uncalibrated guesses at once.
    """

    def __init__(self) -> None:
        self.prompt_ratio = 1.0
        self.extra_output = 0
        self._calibrated = asyncio.Event()
        self._probing = False

    async def admit(self) -> None:
        """Return at once for the first capped call and after calibration; else wait."""
        if self._calibrated.is_set():
            return
        if not self._probing:
            self._probing = True
            return
        await self._calibrated.wait()

    def hold(self, prompt_estimate: int, max_tokens: int) -> tuple[int, int]:
        """(prompt tokens, output tokens) to hold for one call."""
        return math.ceil(prompt_estimate * self.prompt_ratio), max_tokens + self.extra_output

    def learn(self, prompt_estimate: int, max_tokens: int, usage: Usage | None) -> None:
        """An answer (or, with None, a failed call) arrived: calibrate and let waiters in."""
        if usage is not None and prompt_estimate > 0:
            self.prompt_ratio = max(self.prompt_ratio, usage.input_tokens / prompt_estimate)
            self.extra_output = max(self.extra_output, usage.output_tokens - max_tokens)
        self._calibrated.set()


class PricedTurn(Turn):
    """A `Turn` with what it cost and which configured model answered (after fallbacks)."""

    cost_usd: float = 0.0
    model_name: str | None = None


class ManagedModel:
    """A `ChatModel` that reserves, audits, counts and prices every call, with fallbacks."""

    def __init__(self, name: str, spec: ModelSpec, resilient: ResilientModel, *, clock: Clock,
                 events: Emitter, usage: RunUsage, price: PriceSpec | None = None,
                 resolve: ModelResolver | None = None) -> None:
        self.name, self.spec, self.resilient = name, spec, resilient
        self.clock, self.usage = clock, usage
        #: events of a call are attributed to the node (step, agent) that made it
        self._emit = tagged(events)
        self.price, self.resolve = price, resolve
        self.holds = HoldEstimator()
        #: a resumed or replayed run's journal: calls it holds answers for are answered from it
        #: (no request, no usage counted: the run's usage was restored from the ledger)
        self.journal: Journal | None = None
        #: each message rendered once for the ledger and the fingerprint, not once a turn
        self._rendered = RenderedRequests()

    async def turn(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                   settings: ModelSettings | None = None, *,
                   on_delta: DeltaCallback | None = None) -> PricedTurn:
        try:
            return await self.turn_without_fallback(messages, tools, settings, on_delta=on_delta)
        except ProviderUnavailable as err:
            error: ProviderError = err
        for fallback in self.spec.fallbacks:
            self._emit("fallback", {"kind": "model", "from": self.name, "to": fallback,
                                    "status": error.status, "reason": str(error)})
            if self.resolve is None:
                break
            other = await self.resolve(fallback)
            try:
                return await other.turn_without_fallback(messages, tools, settings,
                                                         on_delta=on_delta)
            except ProviderUnavailable as err:
                error = err
        raise error

    async def turn_without_fallback(self, messages: Sequence[Message],
                                    tools: Sequence[ToolSpec] = (),
                                    settings: ModelSettings | None = None, *,
                                    on_delta: DeltaCallback | None = None) -> PricedTurn:
        """One reserved, audited, counted call to this model only."""
        settings = self._settings(settings)
        request, fingerprint = self._rendered.request(
            self.name, messages, tools, settings.model_dump(mode="json", exclude_none=True))
        if self.journal is not None:  # a resumed or replayed run: a completed call is not made
            recorded = self.journal.model_answer(current_call().call_key(), fingerprint,
                                                 request)
            if recorded is not None:
                return _recorded_turn(recorded)
        budget = current_call().budget
        if budget is None or not budget.limits_model_calls():
            return await self._call(request, fingerprint, messages, tools, settings, on_delta, None)
        prompt = estimate_tokens(messages, tools, chars_per_token=BUDGET_CHARS_PER_TOKEN)
        output = settings.max_tokens or self.resilient.default_max_tokens
        await self.holds.admit()
        usage: Usage | None = None
        try:
            turn = await self._call(request, fingerprint, messages, tools, settings, on_delta,
                                    await self._reserve(budget, prompt, output))
            usage = turn.usage
            return turn
        finally:  # answered, failed or refused: calls waiting for calibration go on
            self.holds.learn(prompt, output, usage)

    async def _call(self, request: dict[str, Any], fingerprint: str,
                    messages: Sequence[Message], tools: Sequence[ToolSpec],
                    settings: ModelSettings, on_delta: DeltaCallback | None,
                    hold: ModelHold | None) -> PricedTurn:
        call = current_call()
        key = call.call_key()
        self._emit("model.request", {**request, "provider_model": self.spec.model,
                                     "profile": self.spec.profile, "call_key": key,
                                     "fingerprint": fingerprint})
        started = self.clock.monotonic()
        try:
            turn = await self.resilient.turn(messages, tools, settings, on_delta=on_delta)
        except BaseException as err:
            if hold is not None:
                hold.budget.release_model(hold)
            if isinstance(err, ProviderError):
                self._emit("model.error", {"model": self.name, "error": err.to_dict(),
                                           "latency_s": self.clock.monotonic() - started})
            raise
        cost = call_cost(turn.usage, self.price)
        # counted first, before anything that could still fail: a billed call is never lost
        self.usage.record(node_id=call.node_id, model=self.name, usage=turn.usage, cost_usd=cost)
        if hold is not None:
            hold.budget.settle_model(hold, turn.usage, cost)
        self._emit("model.response", {
            **_response_data(self.name, turn, self._rendered.message(turn.message)[0], cost,
                             self.price is not None, self.clock.monotonic() - started),
            "call_key": key, "fingerprint": fingerprint})
        return PricedTurn(**dict(turn), cost_usd=cost, model_name=self.name)

    async def _reserve(self, budget: Budget, prompt_estimate: int, max_tokens: int) -> ModelHold:
        """Hold the most this call can use; `BudgetExceeded` if it does not fit (not made)."""
        prompt, output = self.holds.hold(prompt_estimate, max_tokens)
        cost = 0.0
        if self.price is not None:
            cost = (prompt * self.price.input + output * max(
                self.price.output, self.price.reasoning or 0.0)) * self.price.ratio / 1_000_000
        return await budget.acquire_model(prompt + output, cost)

    async def aclose(self) -> None:
        await self.resilient.aclose()

    def _settings(self, settings: ModelSettings | None) -> ModelSettings:
        """Fill max_tokens/temperature from the model's spec where the caller left them."""
        settings = settings or ModelSettings()
        updates: dict[str, Any] = {}
        if settings.max_tokens is None and self.spec.max_tokens is not None:
            updates["max_tokens"] = self.spec.max_tokens
        if settings.temperature is None and self.spec.temperature is not None:
            updates["temperature"] = self.spec.temperature
        return settings.model_copy(update=updates) if updates else settings


def _recorded_turn(data: dict[str, Any]) -> PricedTurn:
    """A `model.response` record as the turn it recorded."""
    return PricedTurn(message=Message.model_validate(data["message"]),
                      usage=Usage.model_validate(data.get("usage") or {}),
                      finish_reason=data.get("finish_reason"), model=data.get("provider_model"),
                      provider=data.get("provider"), response_id=data.get("response_id"),
                      provider_cost_usd=data.get("provider_cost_usd"),
                      cost_usd=float(data.get("cost_usd") or 0.0), model_name=data.get("model"))


def _response_data(name: str, turn: Turn, message_json: dict[str, Any], cost: float,
                   priced: bool, latency: float) -> dict[str, Any]:
    message = turn.message
    return {
        "model": name, "provider_model": turn.model, "provider": turn.provider,
        "response_id": turn.response_id, "finish_reason": turn.finish_reason,
        "reasoning": "".join(p.text for p in message.parts if isinstance(p, ReasoningPart)),
        "content": "".join(p.text for p in message.parts if isinstance(p, TextPart)),
        "tool_calls": [{"id": p.id, "name": p.name, "arguments": p.arguments,
                        "parse_error": p.parse_error}
                       for p in message.parts if isinstance(p, ToolCallPart)],
        "message": message_json,
        "usage": turn.usage.model_dump(), "cost_usd": cost, "priced": priced,
        # what the provider itself says the call cost (OpenRouter), beside our own figure
        "provider_cost_usd": turn.provider_cost_usd, "latency_s": latency}
