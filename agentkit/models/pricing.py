"""Prices and cost accounting: USD per million tokens, per call and per run.

A price is found in this order: the task's ``prices[<model name>]``, the model's own
``price``, then the small built-in table below (matched on the provider's model id, longest
prefix first, ignoring an OpenRouter-style ``vendor/`` prefix). A model with no price costs 0
and its calls are marked ``priced: false`` in the ledger, so a missing price is visible rather
than silently wrong. `ratio` multiplies everything (new-api style channel/group ratios).

Usage convention (as the adapters normalise it): ``cached_tokens`` are part of
``input_tokens``; ``reasoning_tokens`` are part of ``output_tokens``.

The built-in figures are list prices as published by each provider in late 2025; they change,
so override them in the task file when accuracy matters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agentkit.messages import Usage
from agentkit.task import ModelSpec, PriceSpec, TaskSpec

__all__ = ["BUILTIN_PRICES", "CostMeter", "call_cost", "price_for"]


def _p(inp: float, out: float, cached: float | None = None) -> PriceSpec:
    return PriceSpec(input=inp, output=out, cached_input=cached)


#: USD per million tokens by provider model id prefix (check the provider's page for changes)
BUILTIN_PRICES: dict[str, PriceSpec] = {
    "deepseek-chat": _p(0.28, 0.42, 0.028),
    "deepseek-reasoner": _p(0.28, 0.42, 0.028),
    "kimi-k2-thinking": _p(0.60, 2.50, 0.15),
    "kimi-k2": _p(0.60, 2.50, 0.15),
    "qwen3-max": _p(1.20, 6.00),
    "qwen-plus": _p(0.40, 1.20),
    "qwen-flash": _p(0.05, 0.40),
    "gpt-5-mini": _p(0.25, 2.00, 0.025),
    "gpt-5-nano": _p(0.05, 0.40, 0.005),
    "gpt-5": _p(1.25, 10.00, 0.125),
    "o4-mini": _p(1.10, 4.40, 0.275),
    "o3": _p(2.00, 8.00, 0.50),
    "gpt-oss-120b": _p(0.10, 0.50),
    "claude-opus-4": _p(15.00, 75.00, 1.50),
    "claude-sonnet-4": _p(3.00, 15.00, 0.30),
    "claude-haiku-4": _p(1.00, 5.00, 0.10),
    "gemini-2.5-pro": _p(1.25, 10.00, 0.31),
    "gemini-2.5-flash": _p(0.30, 2.50, 0.075),
    "grok-3-mini": _p(0.30, 0.50, 0.075),
    "grok-4": _p(3.00, 15.00, 0.75),
}


def price_for(name: str, spec: ModelSpec, task: TaskSpec | None = None) -> PriceSpec | None:
    """The price of model `name` (a key of ``task.models``) with the override order above."""
    if task is not None and name in task.prices:
        return task.prices[name]
    if spec.price is not None:
        return spec.price
    if spec.provider == "local":
        return PriceSpec(input=0.0, output=0.0)
    model_id = spec.model.rsplit("/", 1)[-1].lower()
    for prefix in sorted(BUILTIN_PRICES, key=len, reverse=True):
        if model_id.startswith(prefix):
            return BUILTIN_PRICES[prefix]
    return None


def call_cost(usage: Usage, price: PriceSpec | None) -> float:
    """USD for one call's usage (0.0 when the price is unknown)."""
    if price is None:
        return 0.0
    cached = min(usage.cached_tokens, usage.input_tokens)
    reasoning = min(usage.reasoning_tokens, usage.output_tokens)
    cached_price = price.cached_input if price.cached_input is not None else price.input
    reasoning_price = price.reasoning if price.reasoning is not None else price.output
    micro = ((usage.input_tokens - cached) * price.input + cached * cached_price
             + (usage.output_tokens - reasoning) * price.output + reasoning * reasoning_price)
    return micro * price.ratio / 1_000_000


@dataclass
class CostMeter:
    """Running totals for a run (one per Runtime, kept as a run resource)."""

    total_usd: float = 0.0
    calls: int = 0
    by_model: dict[str, float] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)

    def add(self, model: str, usage: Usage, cost_usd: float) -> None:
        self.total_usd += cost_usd
        self.calls += 1
        self.by_model[model] = self.by_model.get(model, 0.0) + cost_usd
        self.usage = self.usage + usage
