"""What each Chat Completions dialect of the scripted server looks like: the `Dialect` table
(fields, ids, usage, framing quirks of the real servers), tool-call ids and usage objects.

Every quirk below was seen in real traffic: Mistral's chunk-list content and 9-character ids,
Gemini's empty ids and message-level signatures, OpenRouter's comment lines, costs and
twin `reasoning_details`, Groq's `x_groq.usage` and `channel` deltas, Together's per-chunk
`role`/`token_id`, vLLM's integer `stop_reason`, DeepSeek answering under another model name,
Z.ai chunks without a `finish_reason` key.
"""

from __future__ import annotations

import json
import string
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agentkit.testing._script import Reply, ScriptedCall

__all__ = ["DIALECTS", "Dialect", "Issued", "call_ids", "render_usage", "signature_for"]

THINK = ("<think>", "</think>")


@dataclass(frozen=True)
class Dialect:
    name: str
    wire: Literal["openai", "anthropic", "responses"] = "openai"
    #: fields carrying reasoning; empty: reasoning goes into content inside think tags
    reasoning_fields: tuple[str, ...] = ("reasoning_content",)
    think_tag: tuple[str, str] = THINK
    #: write the opening tag (R1 and V3.1 templates do not)
    open_tag: bool = True
    text_tools: bool = False
    details: bool = False
    gemini: bool = False
    reuse_index: bool = False
    id_style: str = "call"
    usage_style: str = "openai"
    empty_content: str | None = ""
    checks: tuple[str, ...] = ()
    #: which tool-call turns must come back with their reasoning, and in which field
    replay_scope: Literal["all", "tool_loop", "never"] | None = None
    replay_field: str = "reasoning_content"
    #: a second, native route (Ollama `/api/chat`, NDJSON)
    native_path: str | None = None
    #: reasoning and answer as typed chunks in `content` (Mistral)
    content_chunks: bool = False
    #: each tool call streamed whole in one fragment (Groq, Mistral)
    whole_calls: bool = False
    #: reasoning deltas marked ``channel: "analysis"`` (Groq gpt-oss)
    reasoning_channel: bool = False
    #: every chunk repeats ``delta.role`` and carries a ``token_id`` (Together)
    role_every_chunk: bool = False
    #: ``tool_calls: []`` on answers without calls (Together)
    empty_tool_calls: bool = False
    #: chunks before the last have no ``finish_reason`` key at all (Z.ai)
    omit_null_finish: bool = False
    #: the integer token id vLLM puts in ``stop_reason`` beside ``finish_reason``
    stop_reason_token: int | None = None
    #: the model name answered, whatever was requested (DeepSeek's aliases)
    served_model: str | None = None
    #: ``index`` on the tool calls of a non-streamed message (DeepSeek, OpenRouter)
    json_call_index: bool = False
    #: SSE comment lines before the first chunk (OpenRouter while queued)
    comments: tuple[str, ...] = ()
    #: a signature on the message itself (``extra_content`` with ``thought: true``) and its
    #: top-level duplicate ``thought_signature`` (Gemini 3)
    message_signature: bool = False


DIALECTS: Mapping[str, Dialect] = {d.name: d for d in (
    Dialect("deepseek", usage_style="deepseek", checks=("deepseek",), replay_scope="all",
            json_call_index=True, served_model="deepseek-v4-flash"),
    Dialect("deepseek-reasoner", usage_style="deepseek", replay_scope="never"),
    Dialect("deepseek-hybrid", reasoning_fields=(), open_tag=False, text_tools=True,
            replay_scope="never"),
    Dialect("kimi", id_style="kimi", checks=("kimi",), replay_scope="all"),
    Dialect("qwen", replay_scope="tool_loop"),
    Dialect("dashscope", checks=("dashscope",), replay_scope="tool_loop"),
    Dialect("openrouter", reasoning_fields=("reasoning",), details=True, checks=("openrouter",),
            replay_scope="all", replay_field="reasoning", usage_style="openrouter",
            json_call_index=True, comments=(": OPENROUTER PROCESSING",) * 2),
    Dialect("vllm", reasoning_fields=("reasoning",), id_style="vllm", usage_style="vllm",
            empty_content=None, replay_scope="tool_loop", replay_field="reasoning",
            stop_reason_token=151645),
    Dialect("vllm-transition", reasoning_fields=("reasoning", "reasoning_content"),
            id_style="vllm", usage_style="vllm", empty_content=None, replay_scope="tool_loop",
            replay_field="reasoning"),
    Dialect("sglang", replay_scope="tool_loop"),
    Dialect("llamacpp", usage_style="llamacpp", replay_scope="tool_loop"),
    Dialect("raw", reasoning_fields=(), open_tag=False, text_tools=True),
    Dialect("raw-tagged", reasoning_fields=(), text_tools=True),
    Dialect("ollama", reasoning_fields=("reasoning",), reuse_index=True,
            replay_scope="tool_loop", replay_field="reasoning", native_path="/api/chat"),
    Dialect("openai", reasoning_fields=(), checks=("openai",)),
    Dialect("gemini", reasoning_fields=(), think_tag=("<thought>", "</thought>"), gemini=True,
            id_style="gemini", empty_content=None, checks=("gemini",)),
    Dialect("gemini-3", reasoning_fields=(), think_tag=("<thought>", "</thought>"), gemini=True,
            id_style="empty", empty_content=None, checks=("gemini",), message_signature=True),
    Dialect("xai", checks=("xai",)),
    Dialect("mistral", reasoning_fields=(), content_chunks=True, id_style="mistral",
            usage_style="mistral", whole_calls=True, checks=("mistral",), replay_scope="all"),
    Dialect("groq", reasoning_fields=("reasoning",), reasoning_channel=True, id_style="groq",
            usage_style="groq", whole_calls=True, checks=("groq",)),
    Dialect("together", reasoning_fields=("reasoning",), role_every_chunk=True,
            empty_tool_calls=True, usage_style="together", replay_scope="tool_loop",
            replay_field="reasoning"),
    Dialect("zai", omit_null_finish=True, replay_scope="all"),
    Dialect("generic", replay_scope="tool_loop"),
    Dialect("anthropic", wire="anthropic", id_style="anthropic"),
    Dialect("openai-responses", wire="responses", reasoning_fields=()),
)}


@dataclass
class Issued:
    """What the server said in one turn, keyed by its tool-call ids, to check replays."""

    reasoning: str = ""
    details: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    blocks: list[dict[str, Any]] | None = None


_ALNUM = string.ascii_letters + string.digits


def _mistral_id(seed: str) -> str:
    """Nine letters and digits, as Mistral issues (and demands back)."""
    number, chars = zlib.crc32(seed.encode()) * 7919 + 10**12, []
    for _ in range(9):
        number, digit = divmod(number, len(_ALNUM))
        chars.append(_ALNUM[digit])
    return "".join(chars)


def call_ids(d: Dialect, r: Reply, counter: int) -> list[str]:
    styles: dict[str, Callable[[int, ScriptedCall], str]] = {
        "call": lambda n, c: f"call_{counter:02d}" + (f"_{n}" if n else ""),
        "kimi": lambda n, c: f"functions.{c.name}:{counter + n - 1}",
        "vllm": lambda n, c: f"chatcmpl-tool-{counter}" + (f"-{n}" if n else ""),
        "gemini": lambda n, c: f"fc-{counter}" + (f"-{n}" if n else ""),
        "empty": lambda n, c: "",
        "mistral": lambda n, c: _mistral_id(f"{counter}-{n}"),
        "groq": lambda n, c: f"fc_{uuid.uuid5(uuid.NAMESPACE_OID, f'{counter}-{n}')}",
        "anthropic": lambda n, c: f"toolu_{counter:02d}" + (f"_{n}" if n else ""),
    }
    return [str(c.id) if c.id is not None else styles[d.id_style](n, c)
            for n, c in enumerate(r.tool_calls)]


def call_key(name: str, arguments: str) -> str:
    """How a call is recognised when its id is empty (Gemini 3): by name and arguments."""
    try:
        arguments = json.dumps(json.loads(arguments), sort_keys=True)
    except (json.JSONDecodeError, TypeError):
        pass
    return f"{name}:{arguments}"


def signature_for(r: Reply, counter: int) -> str:
    return r.signature or f"sig-{counter}-{zlib.crc32((r.reasoning or '').encode()):08x}"


def render_usage(d: Dialect, r: Reply) -> dict[str, Any]:
    u = dict(r.usage or {})
    inp, out = u.get("input_tokens", 40), u.get("output_tokens", 30)
    rt, cached = u.get("reasoning_tokens", 18 if r.reasoning else 0), u.get("cached_tokens", 0)
    base: dict[str, Any] = {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out}
    if d.usage_style == "deepseek":
        base.update(completion_tokens_details={"reasoning_tokens": rt},
                    prompt_cache_hit_tokens=cached, prompt_cache_miss_tokens=inp - cached)
    elif d.usage_style == "vllm":
        base["completion_tokens_details"] = None
    elif d.usage_style in ("openai", "openrouter"):
        base.update(completion_tokens_details={"reasoning_tokens": rt},
                    prompt_tokens_details={"cached_tokens": cached})
        if d.usage_style == "openrouter":  # its own bill, in credits (USD)
            base.update(cost=u.get("cost_micro_usd", 1234) / 1e6, is_byok=False,
                        cost_details={"upstream_inference_cost": None,
                                      "upstream_inference_prompt_cost": 0.0008,
                                      "upstream_inference_completions_cost": 0.0004})
    elif d.usage_style == "mistral":
        base["num_cached_tokens"] = cached
    elif d.usage_style == "together":
        base["cached_tokens"] = cached
    elif d.usage_style == "groq":
        base.update(queue_time=0.02, prompt_time=0.003, completion_time=0.06, total_time=0.063,
                    completion_tokens_details={"reasoning_tokens": rt},
                    prompt_tokens_details={"cached_tokens": cached})
    return base
