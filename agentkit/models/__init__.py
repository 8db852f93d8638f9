"""Model clients: one wire adapter per file, wrapped once with limits, retries and audit.

`build_model` turns one `ModelSpec` into the `ManagedModel` a run calls, from exactly what it
needs (clock, event emitter, environment, rate limits, the usage owner, a resolver for fallback
models); the `Runtime` caches one per model name. API keys are read from the environment
variable the spec names (``api_key_env``) at this point and nowhere else.

The adapter is chosen by the profile's wire alone (``provider: local`` aside): Chat Completions,
Ollama's native API, OpenAI Responses or Anthropic Messages.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping

from agentkit.clock import Clock
from agentkit.errors import ConfigError
from agentkit.events import Emitter
from agentkit.models.anthropic import AnthropicModel
from agentkit.models.base import ChatModel, Delta, DeltaCallback, ModelSettings
from agentkit.models.context import CallContext, call_scope, current_call, tagged
from agentkit.models.local import LocalModel
from agentkit.models.managed import ManagedModel, ModelResolver
from agentkit.models.ollama import OllamaModel
from agentkit.models.openai_compat import OpenAICompatModel
from agentkit.models.openai_responses import OpenAIResponsesModel
from agentkit.models.pricing import BUILTIN_PRICES, call_cost, price_for
from agentkit.models.profiles import Profile, get_profile
from agentkit.models.ratelimit import RateLimiter, RateLimits
from agentkit.models.resilient import Channel, ResilientModel
from agentkit.retry import CircuitBreaker, RetryPolicy
from agentkit.task import ModelSpec, PriceSpec
from agentkit.usage import RunUsage

__all__ = [
    "BUILTIN_PRICES",
    "CallContext",
    "ChatModel",
    "Delta",
    "DeltaCallback",
    "ManagedModel",
    "ModelResolver",
    "ModelSettings",
    "RateLimiter",
    "RateLimits",
    "ResilientModel",
    "RetryPolicy",
    "api_key_envs",
    "build_model",
    "call_cost",
    "call_scope",
    "current_call",
    "price_for",
]

#: the adapter class for each wire of `Profile.wire` (``local`` is built separately)
_ADAPTERS: dict[str, type[OpenAICompatModel] | type[OpenAIResponsesModel] | type[AnthropicModel]] = {
    "openai": OpenAICompatModel,
    "ollama": OllamaModel,
    "responses": OpenAIResponsesModel,
    "anthropic": AnthropicModel,
}


def build_model(name: str, spec: ModelSpec, *, clock: Clock, events: Emitter, usage: RunUsage,
                policy: RetryPolicy, price: PriceSpec | None = None,
                rate_limits: RateLimits | None = None, resolve: ModelResolver | None = None,
                environ: Mapping[str, str] | None = None, think: bool = False,
                rng: random.Random | None = None) -> ManagedModel:
    """The audited, rate-limited, retrying model `name` of a run.

    No I/O happens here: connections open on the first call. `rate_limits` holds the run's
    per-model RPM/TPM/concurrency limiters (share one object between runs to share limits);
    `resolve` returns another model of the run by name (for ``fallbacks``).
    """
    env = environ if environ is not None else os.environ
    channels = [_channel(name, spec, policy, clock, env, think, url, key_env, ch_name)
                for url, key_env, ch_name in _channel_specs(spec)]
    limiter = None
    if rate_limits is not None and (spec.rpm or spec.tpm or spec.max_concurrency):
        limiter = rate_limits.for_model(name, rpm=spec.rpm, tpm=spec.tpm,
                                        max_concurrency=spec.max_concurrency)
    resilient = ResilientModel(name, channels, policy, clock=clock, emit=tagged(events),
                               limiter=limiter,
                               default_max_tokens=spec.max_tokens or 4096, rng=rng)
    return ManagedModel(name, spec, resilient, clock=clock, events=events, usage=usage,
                        price=price, resolve=resolve)


def _channel_specs(spec: ModelSpec) -> list[tuple[str | None, str | None, str]]:
    """(base_url, api_key_env, channel name) in priority order; one if no channels listed.

    A model on its profile's official endpoint (no base_url) uses the profile's key variable
    (DEEPSEEK_API_KEY ...) when the spec names none; a custom base_url never borrows it.
    """
    if not spec.channels:
        key_env = spec.api_key_env
        if key_env is None and spec.base_url is None and spec.provider != "local":
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


def _channel(name: str, spec: ModelSpec, policy: RetryPolicy, clock: Clock,
             env: Mapping[str, str], think: bool, base_url: str | None, key_env: str | None,
             channel_name: str) -> Channel:
    api_key = _api_key(name, key_env, env)
    adapter, url = _adapter(name, spec, clock, env, think, base_url, api_key)
    breaker = CircuitBreaker(policy.breaker_threshold, policy.breaker_cooldown, clock)
    return Channel(channel_name, adapter, breaker, base_url=url, api_key=api_key,
                   api_key_env=key_env)


def _api_key(name: str, key_env: str | None, env: Mapping[str, str]) -> str | None:
    if key_env is None:
        return None
    key = env.get(key_env)
    if not key:
        raise ConfigError(f"model {name!r} needs an API key in the environment variable "
                          f"{key_env}, which is not set: export {key_env}=... (or remove "
                          f"api_key_env for a server that needs no key)")
    return key


def _adapter(name: str, spec: ModelSpec, clock: Clock, env: Mapping[str, str], think: bool,
             base_url: str | None, api_key: str | None) -> tuple[ChatModel, str | None]:
    if spec.provider == "local":
        return _local_model(name, spec, clock, env, think), None
    profile: Profile = get_profile(spec.profile)
    url = base_url or profile.base_url
    if not url:
        raise ConfigError(f"model {name!r} has no base_url and profile {spec.profile!r} has no "
                          f"default one: set models.{name}.base_url in the task")
    adapter_cls = _ADAPTERS.get(profile.wire)
    if adapter_cls is None:
        raise ConfigError(f"model {name!r}: profile {spec.profile!r} is for the {profile.wire!r} "
                          f"wire, which needs provider: {profile.wire}")
    return adapter_cls(spec, name=name, api_key=api_key, base_url=url, profile=profile,
                       clock=clock), url


def _local_model(name: str, spec: ModelSpec, clock: Clock, env: Mapping[str, str],
                 think: bool) -> ChatModel:
    # llama_cpp (the [local] extra) is imported when the weights are first loaded
    return LocalModel(spec, name=name, clock=clock, think=think, environ=dict(env))
