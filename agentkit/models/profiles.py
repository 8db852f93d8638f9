"""Provider-family profiles: every wire quirk as data, looked up by name.

A `Profile` says where reasoning arrives (fields read in order, think-tag forms), how the
portable `ReasoningSpec` becomes request parameters (a list of named mappers, see
`_MAPPERS`), which parameters the provider refuses (possibly only for some models), how
history must be replayed (`ReplayRule`), and whether the transport must stream. Adapters read
these fields; they never branch on a provider's name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agentkit.errors import ConfigError
from agentkit.task import ReasoningSpec

__all__ = ["PROFILES", "Profile", "Refusal", "ReplayRule", "get_profile", "reasoning_params",
           "thinking_enabled"]

ThinkTag = tuple[str, str]
THINK: ThinkTag = ("<think>", "</think>")
THOUGHT: ThinkTag = ("<thought>", "</thought>")
KIMI_THINK: ThinkTag = ("◁think▷", "◁/think▷")


@dataclass(frozen=True)
class Refusal:
    """A request parameter the provider answers with 400. `models` / `except_models` are
    regexes (searched in the model name) narrowing which models refuse it."""

    param: str
    models: str | None = None
    except_models: str | None = None

    def applies(self, model: str) -> bool:
        if self.models is not None and not re.search(self.models, model):
            return False
        return self.except_models is None or not re.search(self.except_models, model)


@dataclass(frozen=True)
class ReplayRule:
    """How an assistant turn goes back in the next request.

    `scope`: which assistant messages carry their reasoning text back: ``all`` (DeepSeek and
    Kimi: every tool-call turn, in every later request), ``tool_loop`` (only after the last
    user message: the Qwen template rule), ``never`` (strip: legacy R1, templates that re-add
    it, providers that return none). `field` is the wire name the server reads (None: the field
    it arrived in). `placeholder` sends ``""`` on tool-call turns with no stored reasoning
    (after a provider switch). `details` replays OpenRouter ``reasoning_details`` verbatim;
    `extra_content` echoes Gemini ``extra_content`` and ``thought_signature`` (on tool calls
    and on the message). `content_chunks` sends reasoning back inside `content` as a
    ``thinking`` chunk followed by a ``text`` chunk (Mistral), instead of a field.
    `call_id_alnum`: the provider accepts only tool-call ids of exactly that many letters and
    digits (Mistral: 9); other ids are mapped to such an id, the same on the call and its
    result.
    """

    scope: Literal["all", "tool_loop", "never"] = "tool_loop"
    field: str | None = "reasoning_content"
    placeholder: bool = False
    details: bool = False
    extra_content: bool = False
    content_chunks: bool = False
    call_id_alnum: int | None = None


@dataclass(frozen=True)
class Profile:
    """The quirks of one provider family (see module docstring)."""

    name: str
    #: openai: Chat Completions; ollama: Ollama native /api/chat (NDJSON); responses: OpenAI
    #: Responses API; anthropic: Messages; local: in-process model
    wire: Literal["openai", "ollama", "responses", "anthropic", "local"] = "openai"
    base_url: str | None = None
    api_key_env: str | None = None
    #: message/delta fields holding reasoning text, read in this order (first non-empty wins)
    reasoning_fields: tuple[str, ...] = ("reasoning_content", "reasoning")
    #: think-tag forms to split out of `content` (empty: content is taken as is)
    think_tags: tuple[ThinkTag, ...] = ()
    #: the model omits the opening tag: text before a lone close tag is reasoning, and text cut
    #: off by `length` before any tag is reasoning too
    implicit_think_open: bool = False
    #: names of `_MAPPERS` turning a ReasoningSpec into request parameters, applied in order
    reasoning_params: tuple[str, ...] = ()
    thinking_default: bool = False
    max_tokens_param: str = "max_tokens"
    refused: tuple[Refusal, ...] = ()
    #: tool_choice values allowed while thinking (None: any); others become "auto"
    thinking_tool_choice: tuple[str, ...] | None = None
    replay: ReplayRule = field(default_factory=ReplayRule)
    #: `stream: auto` streams when thinking is on (DashScope refuses thinking without it)
    stream_when_thinking: bool = False
    #: ask for a final usage chunk (`stream_options.include_usage`)
    stream_usage: bool = True
    #: look for `<tool_call>` / fenced JSON tool calls in content (no server tool parser)
    text_tool_calls: bool = False
    #: request parameters the provider names differently: (ours, theirs), e.g. Mistral's
    #: ``random_seed`` for ``seed``
    renamed_params: tuple[tuple[str, str], ...] = ()

    def refuses(self, param: str, model: str) -> bool:
        return any(r.param == param and r.applies(model) for r in self.refused)


_LOCAL_TAGS = (THINK, THOUGHT, KIMI_THINK)
_TOOL_LOOP = ReplayRule(scope="tool_loop", field="reasoning_content")
_ALL_WITH_PLACEHOLDER = ReplayRule(scope="all", field="reasoning_content", placeholder=True)
_NEVER = ReplayRule(scope="never", field=None)

PROFILES: Mapping[str, Profile] = {p.name: p for p in (
    Profile("deepseek", base_url="https://api.deepseek.com", api_key_env="DEEPSEEK_API_KEY",
            reasoning_params=("thinking_object", "effort"), replay=_ALL_WITH_PLACEHOLDER,
            thinking_tool_choice=("auto", "none")),
    Profile("deepseek-reasoner", base_url="https://api.deepseek.com",
            api_key_env="DEEPSEEK_API_KEY", thinking_default=True, replay=_NEVER),
    Profile("deepseek-hybrid", base_url="http://127.0.0.1:8000/v1", think_tags=(THINK,),
            implicit_think_open=True, reasoning_params=("template_thinking",), replay=_NEVER,
            text_tool_calls=True),
    Profile("kimi", base_url="https://api.moonshot.ai/v1", api_key_env="MOONSHOT_API_KEY",
            think_tags=(KIMI_THINK,), reasoning_params=("thinking_object",),
            thinking_default=True, replay=_ALL_WITH_PLACEHOLDER),
    Profile("qwen", base_url="http://127.0.0.1:8000/v1", think_tags=(THINK,),
            implicit_think_open=True, reasoning_params=("template_enable_thinking",),
            thinking_default=True, replay=_TOOL_LOOP, text_tool_calls=True),
    Profile("dashscope", base_url="https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
            api_key_env="DASHSCOPE_API_KEY", reasoning_params=("dashscope",),
            thinking_tool_choice=("auto", "none"), replay=_TOOL_LOOP,
            stream_when_thinking=True),
    Profile("openrouter", base_url="https://openrouter.ai/api/v1",
            api_key_env="OPENROUTER_API_KEY", reasoning_fields=("reasoning", "reasoning_content"),
            reasoning_params=("openrouter",),
            replay=ReplayRule(scope="all", field="reasoning", details=True)),
    Profile("vllm", base_url="http://127.0.0.1:8000/v1",
            reasoning_fields=("reasoning", "reasoning_content"), think_tags=(THINK,),
            reasoning_params=("effort", "template_enable_thinking"),
            replay=ReplayRule(scope="tool_loop", field="reasoning"), text_tool_calls=True),
    Profile("sglang", base_url="http://127.0.0.1:30000/v1", think_tags=(THINK,),
            reasoning_params=("separate_reasoning", "template_enable_thinking"),
            replay=_TOOL_LOOP, text_tool_calls=True),
    Profile("llamacpp", base_url="http://127.0.0.1:8080/v1", think_tags=(THINK,),
            reasoning_params=("effort_or_none",), replay=_TOOL_LOOP, text_tool_calls=True),
    Profile("ollama", base_url="http://127.0.0.1:11434/v1",
            reasoning_fields=("reasoning", "reasoning_content"), think_tags=(THINK,),
            reasoning_params=("effort_or_none",),
            replay=ReplayRule(scope="tool_loop", field="reasoning"), text_tool_calls=True),
    Profile("ollama-native", wire="ollama", base_url="http://127.0.0.1:11434",
            reasoning_fields=("thinking",), think_tags=(THINK,), reasoning_params=("ollama_think",),
            replay=ReplayRule(scope="tool_loop", field="thinking"), text_tool_calls=True),
    Profile("openai", base_url="https://api.openai.com/v1", api_key_env="OPENAI_API_KEY",
            reasoning_params=("effort",), max_tokens_param="max_completion_tokens",
            refused=(Refusal("temperature", models=r"^(o\d|gpt-5)"),
                     Refusal("top_p", models=r"^(o\d|gpt-5)"),
                     Refusal("max_tokens")),
            replay=_NEVER),
    Profile("openai-responses", wire="responses", base_url="https://api.openai.com/v1",
            api_key_env="OPENAI_API_KEY", reasoning_params=("responses",),
            refused=(Refusal("temperature", models=r"^(o\d|gpt-5)"),
                     Refusal("top_p", models=r"^(o\d|gpt-5)")),
            replay=ReplayRule(scope="all", field=None)),
    Profile("gemini", base_url="https://generativelanguage.googleapis.com/v1beta/openai",
            api_key_env="GEMINI_API_KEY", think_tags=(THOUGHT,),
            reasoning_params=("gemini",), stream_usage=True,
            replay=ReplayRule(scope="never", field=None, extra_content=True)),
    Profile("xai", base_url="https://api.x.ai/v1", api_key_env="XAI_API_KEY",
            reasoning_params=("xai_effort",),
            refused=(Refusal("reasoning_effort", except_models=r"grok-3-mini|grok-4\.3"),
                     Refusal("stop", models=r"grok-3-mini|grok-4"),
                     Refusal("presence_penalty", models=r"grok-3-mini|grok-4"),
                     Refusal("frequency_penalty", models=r"grok-3-mini|grok-4")),
            replay=_NEVER),
    Profile("anthropic", wire="anthropic", base_url="https://api.anthropic.com",
            api_key_env="ANTHROPIC_API_KEY", reasoning_params=("anthropic",),
            # Opus 4.7+ answers 400 to manual budgets: adaptive thinking is used instead
            refused=(Refusal("budget_tokens", models=r"claude-opus-(4-[7-9]|[5-9])"),),
            thinking_tool_choice=("auto", "none"),
            replay=ReplayRule(scope="all", field=None)),
    # Mistral: reasoning and answer arrive as typed chunks in `content` (read for every
    # profile); the docs ask for the thinking chunks back on every later turn. The API refuses
    # fields it does not document (stream_options, seed: it is random_seed) and tool-call
    # ids that are not 9 letters and digits.
    Profile("mistral", base_url="https://api.mistral.ai/v1", api_key_env="MISTRAL_API_KEY",
            reasoning_params=("mistral",), stream_usage=False,
            renamed_params=(("seed", "random_seed"),),
            replay=ReplayRule(scope="all", field=None, content_chunks=True, call_id_alnum=9)),
    # Groq: gpt-oss/qwen reasoning in `reasoning`; assistant messages carrying
    # `reasoning_content` (or, on some models, `reasoning`) are refused with a 400
    # "property ... is unsupported", so reasoning is never sent back. Streams always end with
    # usage in `x_groq.usage`, so no usage chunk is asked for.
    Profile("groq", base_url="https://api.groq.com/openai/v1", api_key_env="GROQ_API_KEY",
            reasoning_fields=("reasoning", "reasoning_content"), think_tags=(THINK,),
            reasoning_params=("effort",), stream_usage=False, replay=_NEVER),
    # Z.ai (GLM-4.5+): `thinking` object, reasoning_content, accepted back on every turn
    # (preserved thinking).
    Profile("zai", base_url="https://api.z.ai/api/paas/v4", api_key_env="ZAI_API_KEY",
            reasoning_params=("thinking_object",), thinking_default=True,
            replay=ReplayRule(scope="all", field="reasoning_content")),
    # Hosted open-model endpoints. Reasoning comes in `reasoning` (or as <think> text); they
    # route to many backends, some of which refuse reasoning fields on assistant messages
    # (Cerebras, Groq behind the Hugging Face router), so only Together, which reads it,
    # gets it back. Together and the router report cached tokens at the top of `usage`.
    Profile("together", base_url="https://api.together.xyz/v1", api_key_env="TOGETHER_API_KEY",
            reasoning_fields=("reasoning", "reasoning_content"), think_tags=(THINK,),
            reasoning_params=("effort",), replay=ReplayRule(scope="tool_loop", field=None)),
    Profile("huggingface", base_url="https://router.huggingface.co/v1", api_key_env="HF_TOKEN",
            reasoning_fields=("reasoning", "reasoning_content"), think_tags=(THINK,),
            reasoning_params=("effort",), replay=_NEVER),
    Profile("cerebras", base_url="https://api.cerebras.ai/v1", api_key_env="CEREBRAS_API_KEY",
            reasoning_fields=("reasoning", "reasoning_content"), think_tags=(THINK,),
            reasoning_params=("effort",), replay=_NEVER),
    # Ollama's cloud: the native /api/chat of ollama.com with a bearer key
    Profile("ollama-cloud", wire="ollama", base_url="https://ollama.com",
            api_key_env="OLLAMA_API_KEY", reasoning_fields=("thinking",), think_tags=(THINK,),
            reasoning_params=("ollama_think",),
            replay=ReplayRule(scope="tool_loop", field="thinking")),
    Profile("generic", reasoning_fields=("reasoning_content", "reasoning"),
            think_tags=_LOCAL_TAGS, reasoning_params=("effort",),
            replay=ReplayRule(scope="tool_loop", field=None), text_tool_calls=True),
    Profile("local", wire="local", think_tags=_LOCAL_TAGS, thinking_default=True,
            replay=_NEVER, text_tool_calls=True),
)}


def get_profile(name: str) -> Profile:
    """The profile called `name`; a ConfigError lists the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise ConfigError(f"unknown model profile {name!r}; known profiles: {known}") from None


def thinking_enabled(profile: Profile, reasoning: ReasoningSpec | None) -> bool:
    """Whether this request asks the model to think (explicit > effort/budget > default)."""
    if reasoning is None:
        return profile.thinking_default
    if reasoning.enabled is not None:
        return reasoning.enabled
    if reasoning.effort == "none":
        return False
    if reasoning.effort is not None or reasoning.budget_tokens:
        return True
    return profile.thinking_default


# ---------------------------------------------------------------------------------------------
# ReasoningSpec -> request parameters. Each mapper returns a fragment that is deep-merged.

_Mapper = Callable[[ReasoningSpec, bool, bool], dict[str, Any]]


def _effort(r: ReasoningSpec, on: bool, stream: bool) -> dict[str, Any]:
    return {"reasoning_effort": r.effort} if r.effort else {}


def _effort_or_none(r: ReasoningSpec, on: bool, stream: bool) -> dict[str, Any]:
    if r.enabled is False:
        return {"reasoning_effort": "none"}
    return _effort(r, on, stream)


def _thinking_object(r: ReasoningSpec, on: bool, stream: bool) -> dict[str, Any]:
    return {"thinking": {"type": "enabled" if on else "disabled"}}


def _template_thinking(r: ReasoningSpec, on: bool, stream: bool) -> dict[str, Any]:
    return {"chat_template_kwargs": {"thinking": on}}


def _template_enable_thinking(r: ReasoningSpec, on: bool, stream: bool) -> dict[str, Any]:
    return {"chat_template_kwargs": {"enable_thinking": on}}


def _separate_reasoning(r: ReasoningSpec, on: bool, stream: bool) -> dict[str, Any]:
    return {"separate_reasoning": True}


def _dashscope(r: ReasoningSpec, on: bool, stream: bool) -> dict[str, Any]:
    # DashScope refuses enable_thinking=true on non-streaming calls: turn thinking off there.
    out: dict[str, Any] = {"enable_thinking": on and stream}
    if on and stream and r.budget_tokens:
        out["thinking_budget"] = r.budget_tokens
    return out


def _openrouter(r: ReasoningSpec, on: bool, stream: bool) -> dict[str, Any]:
    if not on:
        return {"reasoning": {"enabled": False}}
    obj: dict[str, Any] = {"enabled": True}
    if r.budget_tokens:
        obj["max_tokens"] = r.budget_tokens
    elif r.effort:
        obj["effort"] = r.effort
    return {"reasoning": obj}


def _gemini(r: ReasoningSpec, on: bool, stream: bool) -> dict[str, Any]:
    """A budget goes in Google's thinking_config (with include_thoughts, or no thought text
    comes back); an effort in reasoning_effort. Never both: level + budget is a 400."""
    if not on:
        return {"reasoning_effort": "none"}
    if r.budget_tokens:
        return {"extra_body": {"google": {"thinking_config": {
            "thinking_budget": r.budget_tokens, "include_thoughts": True}}}}
    if r.effort:
        return {"reasoning_effort": r.effort}
    return {"extra_body": {"google": {"thinking_config": {"include_thoughts": True}}}}


def _xai_effort(r: ReasoningSpec, on: bool, stream: bool) -> dict[str, Any]:
    """grok-3-mini takes only low/high."""
    if not r.effort or r.effort == "none":
        return {}
    return {"reasoning_effort": "low" if r.effort in ("minimal", "low") else "high"}


def _responses(r: ReasoningSpec, on: bool, stream: bool) -> dict[str, Any]:
    """Responses API: effort plus a readable summary (the full reasoning stays encrypted)."""
    if not on:
        return {"reasoning": {"effort": "none"}} if r.effort == "none" else {}
    return {"reasoning": {"effort": r.effort or "medium", "summary": "auto"}}


def _ollama_think(r: ReasoningSpec, on: bool, stream: bool) -> dict[str, Any]:
    if not on:
        return {"think": False}
    return {"think": r.effort if r.effort in ("low", "medium", "high") else True}


def _mistral(r: ReasoningSpec, on: bool, stream: bool) -> dict[str, Any]:
    """Mistral documents two levels: ``high`` (a full thinking chunk) and ``none``."""
    return {"reasoning_effort": "high" if on else "none"}


def _anthropic(r: ReasoningSpec, on: bool, stream: bool) -> dict[str, Any]:
    if not on:
        return {}
    if r.budget_tokens:
        return {"thinking": {"type": "enabled", "budget_tokens": max(1024, r.budget_tokens)}}
    out: dict[str, Any] = {"thinking": {"type": "adaptive"}}
    if r.effort:
        out["output_config"] = {"effort": r.effort}
    return out


_MAPPERS: Mapping[str, _Mapper] = {
    "effort": _effort, "effort_or_none": _effort_or_none, "thinking_object": _thinking_object,
    "template_thinking": _template_thinking, "template_enable_thinking": _template_enable_thinking,
    "separate_reasoning": _separate_reasoning, "dashscope": _dashscope,
    "openrouter": _openrouter, "anthropic": _anthropic, "ollama_think": _ollama_think,
    "gemini": _gemini, "xai_effort": _xai_effort, "responses": _responses,
    "mistral": _mistral,
}


def reasoning_params(profile: Profile, reasoning: ReasoningSpec | None, *, model: str,
                     stream: bool) -> dict[str, Any]:
    """Request parameters for `reasoning` under `profile`, minus those the model refuses.

    With no ReasoningSpec nothing is sent (the provider's own default applies), except where a
    mapper must act on the transport (DashScope without streaming turns thinking off).
    """
    spec = reasoning if reasoning is not None else ReasoningSpec()
    if reasoning is None and "dashscope" not in profile.reasoning_params:
        return {}
    on = thinking_enabled(profile, reasoning)
    out: dict[str, Any] = {}
    for name in profile.reasoning_params:
        for key, value in _MAPPERS[name](spec, on, stream).items():
            if profile.refuses(key, model):
                continue
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = {**out[key], **value}
            else:
                out[key] = value
    return out
