"""The model a run actually calls: audit events, cost accounting and the fallback chain.

Layers, outside in (built by `agentkit.models.build_model`):

    ManagedModel     model.request / model.response / model.error events, cost, fallback models
      ResilientModel retries, channel failover, circuit breakers, rate limits (per attempt)
        adapter      one wire API (OpenAICompatModel, AnthropicModel, LocalModel)

Fallback models (``ModelSpec.fallbacks``) are tried in order for *availability* errors only
(`ProviderUnavailable`: every attempt and channel failed, or every breaker is open); a
request the provider rejects as invalid would be rejected by the fallback too, so it is not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from agentkit.errors import ProviderError, ProviderUnavailable
from agentkit.messages import Message, ReasoningPart, TextPart, ToolCallPart, ToolSpec, Turn
from agentkit.models.base import DeltaCallback, ModelSettings
from agentkit.models.context import current_call
from agentkit.models.pricing import CostMeter, call_cost, price_for
from agentkit.models.resilient import ResilientModel

if TYPE_CHECKING:
    from agentkit.runtime import Runtime

__all__ = ["COSTS_KEY", "ManagedModel", "PricedTurn", "cost_meter", "event_emitter"]

#: the `runtime.resource` key of the run's `CostMeter`
COSTS_KEY = "agentkit.costs"


async def cost_meter(runtime: Runtime) -> CostMeter:
    """The run's running cost totals (per model and overall)."""

    async def make() -> CostMeter:
        return CostMeter()

    return await runtime.resource(COSTS_KEY, make)


class PricedTurn(Turn):
    """A `Turn` with what it cost and which configured model answered (after fallbacks)."""

    cost_usd: float = 0.0
    model_name: str | None = None


def event_emitter(runtime: Runtime) -> Callable[[str, dict[str, Any]], None]:
    """Emit on the run's bus, tagged with the node/step/agent of the current model call."""

    def emit(kind: str, data: dict[str, Any]) -> None:
        call = current_call()
        if call.step is not None:
            data["step"] = call.step
        if call.agent_id is not None:
            data["agent_id"] = call.agent_id
        runtime.emit(kind, data, node_id=call.node_id)

    return emit


class ManagedModel:
    """A `ChatModel` that audits every call, prices it and falls back to other models."""

    def __init__(self, name: str, runtime: Runtime, resilient: ResilientModel) -> None:
        self.name = name
        self.runtime = runtime
        self.resilient = resilient
        self.spec = runtime.task.models[name]
        self._emit = event_emitter(runtime)

    async def turn(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                   settings: ModelSettings | None = None, *,
                   on_delta: DeltaCallback | None = None) -> PricedTurn:
        settings = self._settings(settings)
        try:
            return await self.turn_without_fallback(messages, tools, settings, on_delta=on_delta)
        except ProviderUnavailable as err:
            error: ProviderError = err
        for fallback in self.spec.fallbacks:
            self._emit("fallback", {"kind": "model", "from": self.name, "to": fallback,
                                    "status": error.status, "reason": str(error)})
            other = await self.runtime.model(fallback)
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
        """One audited, priced call to this model only (used by other models' fallback)."""
        settings = self._settings(settings)
        self._emit("model.request", {
            "model": self.name, "provider_model": self.spec.model, "profile": self.spec.profile,
            "messages": [m.model_dump(mode="json") for m in messages],
            "tools": [t.model_dump(mode="json") for t in tools],
            "settings": settings.model_dump(mode="json", exclude_none=True)})
        started = self.runtime.clock.monotonic()
        try:
            turn = await self.resilient.turn(messages, tools, settings, on_delta=on_delta)
        except ProviderError as err:
            self._emit("model.error", {"model": self.name, "error": err.to_dict(),
                                       "latency_s": self.runtime.clock.monotonic() - started})
            raise
        latency = self.runtime.clock.monotonic() - started
        price = price_for(self.name, self.spec, self.runtime.task)
        cost = call_cost(turn.usage, price)
        (await cost_meter(self.runtime)).add(self.name, turn.usage, cost)
        self._emit("model.response", _response_data(self.name, turn, cost, price is not None,
                                                    latency))
        return PricedTurn(**dict(turn), cost_usd=cost, model_name=self.name)

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


def _response_data(name: str, turn: Turn, cost: float, priced: bool,
                   latency: float) -> dict[str, Any]:
    message = turn.message
    return {
        "model": name, "provider_model": turn.model, "provider": turn.provider,
        "response_id": turn.response_id, "finish_reason": turn.finish_reason,
        "reasoning": "".join(p.text for p in message.parts if isinstance(p, ReasoningPart)),
        "content": "".join(p.text for p in message.parts if isinstance(p, TextPart)),
        "tool_calls": [{"id": p.id, "name": p.name, "arguments": p.arguments,
                        "parse_error": p.parse_error}
                       for p in message.parts if isinstance(p, ToolCallPart)],
        "message": message.model_dump(mode="json"),
        "usage": turn.usage.model_dump(), "cost_usd": cost, "priced": priced,
        "latency_s": latency}
