"""Model clients: one wire adapter per file, wrapped once with limits, retries and audit.

`build_model(name, runtime)` turns ``task.models[name]`` into the `ChatModel` a run calls
(`Runtime.model` caches it per run). API keys are read from the environment variable the spec
names (``api_key_env``), from ``runtime.environ`` or else ``os.environ``, only at this point.
"""

from __future__ import annotations

import importlib
import os
import random
from typing import TYPE_CHECKING, Any

from agentkit.errors import ConfigError, SetupError
from agentkit.models.base import ChatModel, Delta, DeltaCallback, ModelSettings
from agentkit.models.context import CallContext, call_scope, current_call
from agentkit.models.managed import ManagedModel, cost_meter, event_emitter
from agentkit.models.pricing import BUILTIN_PRICES, CostMeter, call_cost, price_for
from agentkit.models.ratelimit import RATE_LIMITS_KEY, RateLimiter, RateLimits
from agentkit.models.resilient import Channel, ResilientModel
from agentkit.retry import CircuitBreaker, RetryPolicy
from agentkit.task import ModelSpec

if TYPE_CHECKING:
    from agentkit.runtime import Runtime

__all__ = [
    "BUILTIN_PRICES",
    "CallContext",
    "ChatModel",
    "CostMeter",
    "Delta",
    "DeltaCallback",
    "ManagedModel",
    "ModelSettings",
    "RateLimiter",
    "RateLimits",
    "ResilientModel",
    "RetryPolicy",
    "build_model",
    "call_cost",
    "call_scope",
    "cost_meter",
    "current_call",
    "price_for",
]

#: wire adapter class by ModelSpec.provider ("module:Class", imported on first use)
_ADAPTERS = {
    "openai": "agentkit.models.openai_compat:OpenAICompatModel",
    "anthropic": "agentkit.models.anthropic:AnthropicModel",
    # chosen by the profile's wire (profile `openai-responses`), not by `provider`
    "responses": "agentkit.models.openai_responses:OpenAIResponsesModel",
}


def build_model(name: str, runtime: Runtime, *, policy: RetryPolicy | None = None,
                rng: random.Random | None = None) -> ManagedModel:
    """The audited, rate-limited, retrying `ChatModel` for ``runtime.task.models[name]``.

    No I/O happens here: connections open on the first call. Rate limits live in the run's
    `RateLimits` resource; to share them between runtimes, register one object under
    `RATE_LIMITS_KEY` in each runtime before the first call.
    """
    if name not in runtime.task.models:
        raise ConfigError(f"model {name!r} is not defined in the task's models "
                          f"(defined: {sorted(runtime.task.models)})")
    spec = runtime.task.models[name]
    policy = policy or RetryPolicy.from_spec(runtime.task.retry)
    channels = [_channel(name, spec, runtime, policy, ch_url, ch_env, ch_name)
                for ch_url, ch_env, ch_name in _channel_specs(spec)]

    async def limiter() -> RateLimiter | None:
        if not (spec.rpm or spec.tpm or spec.max_concurrency):
            return None

        async def make() -> RateLimits:
            return RateLimits(runtime.clock)

        limits = await runtime.resource(RATE_LIMITS_KEY, make)
        return limits.for_model(name, rpm=spec.rpm, tpm=spec.tpm,
                                max_concurrency=spec.max_concurrency)

    resilient = ResilientModel(name, channels, policy, clock=runtime.clock,
                               emit=event_emitter(runtime), limiter=limiter,
                               default_max_tokens=spec.max_tokens or 4096, rng=rng)
    return ManagedModel(name, runtime, resilient)


def _channel_specs(spec: ModelSpec) -> list[tuple[str | None, str | None, str]]:
    """(base_url, api_key_env, channel name) in priority order; one if no channels listed.

    A model on its profile's official endpoint (no base_url) uses the profile's key variable
    (DEEPSEEK_API_KEY ...) when the spec names none; a custom base_url never borrows it.
    """
    if not spec.channels:
        key_env = spec.api_key_env
        if key_env is None and spec.base_url is None and spec.provider != "local":
            from agentkit.models.profiles import get_profile

            key_env = get_profile(spec.profile).api_key_env
        return [(spec.base_url, key_env, "default")]
    ordered = sorted(enumerate(spec.channels), key=lambda ic: (ic[1].priority, ic[0]))
    return [(ch.base_url, ch.api_key_env or spec.api_key_env, ch.name or f"channel{i}")
            for i, ch in ordered]


def api_key_envs(spec: ModelSpec) -> set[str]:
    """Every environment variable a model may read its key from (for redaction)."""
    try:
        return {env for _, env, _ in _channel_specs(spec) if env}
    except ConfigError:  # an unknown profile: build_model reports it; nothing to redact
        return {env for env in [spec.api_key_env] if env}


def _channel(name: str, spec: ModelSpec, runtime: Runtime, policy: RetryPolicy,
             base_url: str | None, key_env: str | None, channel_name: str) -> Channel:
    api_key = _api_key(name, key_env, runtime)
    adapter = _adapter(name, spec, runtime, base_url, api_key)
    breaker = CircuitBreaker(policy.breaker_threshold, policy.breaker_cooldown, runtime.clock)
    return Channel(channel_name, adapter, breaker, base_url=getattr(adapter, "base_url", base_url),
                   api_key=api_key, api_key_env=key_env)


def _api_key(name: str, key_env: str | None, runtime: Runtime) -> str | None:
    if key_env is None:
        return None
    env = runtime.environ if runtime.environ is not None else os.environ
    key = env.get(key_env)
    if not key:
        raise ConfigError(f"model {name!r} needs an API key in the environment variable "
                          f"{key_env}, which is not set: export {key_env}=... (or remove "
                          f"api_key_env for a server that needs no key)")
    return key


def _adapter(name: str, spec: ModelSpec, runtime: Runtime, base_url: str | None,
             api_key: str | None) -> ChatModel:
    if spec.provider == "local":
        try:
            local = importlib.import_module("agentkit.models.local")
        except ImportError as exc:
            raise SetupError(f"model {name!r} uses provider 'local', which needs the local "
                             f"extra: pip install -e '.[local]' ({exc})") from None
        return local.LocalModel(spec, name=name, clock=runtime.clock,
                                think=runtime.task.think, environ=runtime.environ)
    from agentkit.models.profiles import get_profile

    profile: Any = get_profile(spec.profile)
    url = base_url or getattr(profile, "base_url", None)
    if not url:
        raise ConfigError(f"model {name!r} has no base_url and profile {spec.profile!r} has no "
                          f"default one: set models.{name}.base_url in the task")
    wire = getattr(profile, "wire", None)
    module, _, cls = _ADAPTERS["responses" if wire == "responses" else spec.provider].partition(":")
    adapter_cls = getattr(importlib.import_module(module), cls)
    return adapter_cls(spec, name=name, api_key=api_key, base_url=url,
                       profile=profile, clock=runtime.clock)
