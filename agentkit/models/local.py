"""`provider: local` — an in-process llama.cpp model (``pip install -e '.[local]'``).

Every step is grammar-constrained: with `ModelSettings.response_schema` the output is JSON
following that schema; with tools offered it is one action in the format of
`agentkit.models._local_actions` (code as a raw fenced block, other tool arguments as schema-
constrained JSON, or a final answer). The result is a standard `Turn`, so the agent loop and the
ledger see the same parts as from any other provider.

Reproducibility: the sampling seed is `ModelSettings.seed`, or else the spec's
``extra_body.seed`` (default 0) plus the number of tool results so far, so each step after a
(failed) tool run draws anew, and plus the node's attempt, so a retried node does not repeat
its failed attempt token for token. After failed programs the temperature is raised (0.3 per
failure in a row, to at most 0.8) for the same reason. The KV cache keeps the prompt prefix a
request shares with the one before it, evaluated in chunks whose bounds depend on the prompt alone
(`agentkit.models._llama_decode`), so the same request with the same seed gives the same
output whatever ran before it.

Concurrency: generation runs on a single worker thread owned by the loaded model, so the event
loop never blocks and one generation at a time runs per loaded model, process-wide (several
agents, runtimes or event loops queue on that thread without occupying other threads).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentkit._extras import require
from agentkit.clock import Clock
from agentkit.errors import ProviderResponseError, SetupError
from agentkit.messages import Message, TextPart, ToolSpec, Turn, Usage
from agentkit.models import _local_actions as actions
from agentkit.models._llama_decode import Decoder, Generation, Sampling
from agentkit.models._parsing import stable_id
from agentkit.models.base import Delta, DeltaCallback, ModelSettings
from agentkit.models.context import current_call
from agentkit.models.weights import resolve_model_path
from agentkit.plan import PlanToolSpec
from agentkit.task import ModelSpec

__all__ = ["LOADED_MODELS", "LoadedModel", "LoadedModels", "LocalModel"]

DEFAULT_CONTEXT = 8192
DEFAULT_MAX_TOKENS = 1024
DEFAULT_TEMPERATURE = 0.2
DEFAULT_TOP_P = 0.95
#: seed distance between independent samples of one request (`ModelSettings.sample`)
_SAMPLE_SEED_STRIDE = 1_000_003
#: temperature added per failed program in a row, and the most it is raised to
_HEAT_PER_FAILURE = 0.3
_MAX_REPAIR_TEMPERATURE = 0.8
#: seed distances between attempts of a node and fix rounds of an agent, so a retry draws anew
_RETRY_SEED_STRIDE = 7_919
_ROUND_SEED_STRIDE = 613


@dataclass(frozen=True)
class LoadKey:
    path: str
    context_tokens: int
    threads: int


@dataclass
class LoadedModel:
    """One llama.cpp model in memory, with the single thread that runs its generations."""

    key: LoadKey
    llm: Any
    formatter: Any
    #: the llama_cpp module (an optional extra, imported when a model is first loaded)
    lib: Any
    decoder: Decoder
    worker: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="agentkit-llama"))

    def generate(self, chat: list[dict[str, str]], grammar: str, sampling: Sampling,
                 cancel: threading.Event) -> Generation:
        """Blocking; runs on `worker` (see `_llama_decode` for prefix reuse and sampling)."""
        rendered = self.formatter(messages=chat)
        stops = [*(rendered.stop if isinstance(rendered.stop, list) else [rendered.stop] if
                   rendered.stop else []), *sampling.stop]
        return self.decoder.generate(rendered.prompt, grammar,
                                     dataclasses.replace(sampling, stop=stops), cancel)

    def close(self) -> None:
        self.worker.shutdown(wait=True)
        self.llm.close()


class LoadedModels:
    """The process-wide registry of loaded models: the ONE justified process-level cache.

    Why process-wide rather than per run: a GGUF model takes seconds to load and about 1 GB of
    memory; every agent and every runtime in the process must share one copy, and one llama.cpp
    context must not run two generations at once. Runs stay independent otherwise: the model
    holds no per-run state (its KV cache changes only the time a request takes). Keyed by
    (path, context size, threads).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[LoadKey, LoadedModel] = {}

    def get(self, key: LoadKey) -> LoadedModel:
        """The loaded model for `key`, loading it on first use (blocking: call off the loop)."""
        with self._lock:
            loaded = self._models.get(key)
            if loaded is None:
                loaded = self._models[key] = _load(key)
            return loaded

    def loaded(self) -> list[LoadKey]:
        with self._lock:
            return list(self._models)

    def unload_all(self) -> None:
        """Free every model (tests, long-lived services switching models)."""
        with self._lock:
            models, self._models = list(self._models.values()), {}
        for m in models:
            m.close()


LOADED_MODELS = LoadedModels()


def _load(key: LoadKey) -> LoadedModel:
    feature = "provider: local (the embedded llama.cpp model)"
    llama_cpp = require("llama_cpp", "local", feature=feature)
    chat_format = require("llama_cpp.llama_chat_format", "local", feature=feature)
    try:
        llm = llama_cpp.Llama(model_path=key.path, n_ctx=key.context_tokens, n_threads=key.threads,
                              n_threads_batch=key.threads, verbose=False)
    except (ValueError, RuntimeError) as exc:
        raise SetupError(f"llama.cpp could not load {key.path!r}: {exc}") from exc
    template = llm.metadata.get("tokenizer.chat_template")
    eos = _token_text(llm, llm.token_eos())
    bos = _token_text(llm, llm.token_bos())
    formatter: Any
    if template:
        formatter = chat_format.Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
    else:
        formatter = _chatml
    return LoadedModel(key=key, llm=llm, formatter=formatter, lib=llama_cpp,
                       decoder=Decoder(llm, llama_cpp, _message_start(llm, formatter)))


def _message_start(llm: Any, formatter: Any) -> int | None:
    """The token the chat template opens each message with (after any BOS), if there is one."""
    rendered = formatter(messages=[{"role": "user", "content": "x"}])
    tokens = llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=True, special=True)
    if tokens and tokens[0] == llm.token_bos():
        tokens = tokens[1:]
    return int(tokens[0]) if tokens else None


def _token_text(llm: Any, token: int) -> str:
    if token < 0:
        return ""
    return str(llm.detokenize([token], special=True).decode("utf-8", errors="ignore"))


@dataclass
class _Rendered:
    prompt: str
    stop: list[str]


def _chatml(*, messages: list[dict[str, str]]) -> _Rendered:
    """Fallback for a GGUF without a chat template: ChatML, which Qwen and many others use."""
    body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return _Rendered(prompt=body + "<|im_start|>assistant\n", stop=["<|im_end|>"])


class LocalModel:
    """A `ChatModel` running a GGUF in this process (see module docstring).

    `think` asks the model to reason in ``<think>`` tags first (`TaskSpec.think`); `environ`
    is where ``AGENTKIT_LOCAL_MODEL`` / ``AGENTKIT_CACHE`` are read. No I/O here: the weights
    are resolved (assembled and verified on first use) and loaded on the first `turn`.
    """

    provider = "local"

    def __init__(self, spec: ModelSpec, *, name: str | None = None, clock: Clock | None = None,
                 think: bool = False, environ: dict[str, str] | None = None,
                 registry: LoadedModels | None = None) -> None:
        self.spec = spec
        self.name = name or spec.model
        self.think = think
        self._environ = environ
        self._registry = registry or LOADED_MODELS
        self._key: LoadKey | None = None

    async def load(self) -> LoadedModel:
        """Resolve and load the weights (idempotent; the registry shares them process-wide)."""
        if self._key is None:
            path: Path = await asyncio.to_thread(resolve_model_path, self.spec.model, self._environ)
            self._key = LoadKey(path=str(path),
                                context_tokens=self.spec.context_tokens or DEFAULT_CONTEXT,
                                threads=self.spec.threads or os.cpu_count() or 1)
        return await asyncio.to_thread(self._registry.get, self._key)

    async def turn(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                   settings: ModelSettings | None = None, *,
                   on_delta: DeltaCallback | None = None) -> Turn:
        settings = settings or ModelSettings()
        loaded = await self.load()
        chat, grammar = self._request(messages, tools, settings)
        cancel = threading.Event()
        sampling = Sampling(
            max_tokens=settings.max_tokens or self.spec.max_tokens or DEFAULT_MAX_TOKENS,
            temperature=self._temperature(messages, tools, settings),
            top_p=_first(settings.top_p, DEFAULT_TOP_P), seed=self._seed(messages, settings),
            stop=tuple(settings.stop or ()))
        job = loaded.worker.submit(loaded.generate, chat, grammar, sampling, cancel)
        try:
            gen = await asyncio.wrap_future(job)
        except asyncio.CancelledError:
            cancel.set()  # stops a running generation at the next token; a queued one never runs
            job.cancel()
            raise
        except ValueError as exc:  # llama-cpp-python: prompt longer than the context window
            raise ProviderResponseError(
                f"{exc}; raise models.<name>.context_tokens (now {loaded.key.context_tokens})",
                provider="local", model=self.name, retryable=False) from exc
        if on_delta is not None and gen.text:
            on_delta(Delta(kind="text", text=gen.text))
        turn = self._turn(gen, tools, settings)
        if turn.message.reasoning:
            n = len(loaded.llm.tokenize(turn.message.reasoning.encode(), add_bos=False))
            turn.usage.reasoning_tokens = min(n, gen.completion_tokens)
        return turn

    def _temperature(self, messages: Sequence[Message], tools: Sequence[ToolSpec],
                     settings: ModelSettings) -> float:
        """The configured temperature, raised by `_HEAT_PER_FAILURE` per failed program in a
        row (to at most `_MAX_REPAIR_TEMPERATURE`): at 0.2 the 1.5B model wrote the same
        failing program again on every turn, whatever the seed."""
        base = _first(settings.temperature, self.spec.temperature, DEFAULT_TEMPERATURE)
        heat = _HEAT_PER_FAILURE * actions.failed_program_streak(messages, tools)
        return max(base, min(base + heat, _MAX_REPAIR_TEMPERATURE))

    def _seed(self, messages: Sequence[Message], settings: ModelSettings) -> int:
        """`settings.seed`, else ``extra_body.seed`` of the spec (0) plus one per tool result;
        plus a stride per `settings.sample`, so independent samples of a node draw apart, and
        one per retry of the node (its attempt) or fix round of the agent.

        The step offset resamples after every tool run, so a failed program is not simply
        written again with the same draw; the attempt offset does the same for a node retry,
        which would otherwise repeat the failed attempt token for token. The sequence stays
        reproducible for a given base.
        """
        if settings.seed is not None:
            base = settings.seed
        else:
            base = int(self.spec.extra_body.get("seed", 0))
            base += sum(1 for m in messages if m.role == "tool")
        call = current_call()
        base += _RETRY_SEED_STRIDE * (call.attempt - 1) + _ROUND_SEED_STRIDE * (call.round - 1)
        return (base + _SAMPLE_SEED_STRIDE * settings.sample) % 2**31

    def _request(self, messages: Sequence[Message], tools: Sequence[ToolSpec],
                 settings: ModelSettings) -> tuple[list[dict[str, str]], str]:
        """Chat messages for the template, and the grammar constraining the reply.

        `final` is not offered after a failed program, nor to a planner (a `PlanToolSpec` among
        the tools: its work ends only with an accepted plan); after a rejected plan the plan
        tool is the only action offered. Those two turn-by-turn limits are the grammar's alone:
        the guide in the system message describes every action the agent has, so the system
        message stays the same on every turn and the decoder reuses the cached prompt (system
        message, task, earlier turns) instead of evaluating it all again after a failure.
        """
        chat = actions.render_history(messages, tools)
        if settings.response_schema is not None:
            grammar = actions.schema_grammar(settings.response_schema, think=self.think)
            guide = ("First think step by step inside <think> ... </think>. Then reply with one "
                     "JSON object." if self.think else "Reply with one JSON object only.")
        elif tools and settings.tool_choice != "none":
            can_end = (settings.tool_choice != "required"
                       and not any(isinstance(t, PlanToolSpec) for t in tools))
            guide = actions.describe_actions(tools, think=self.think, allow_final=can_end)
            offered = actions.after_rejected_plan(messages, tools) or tools
            grammar = actions.action_grammar(
                offered, think=self.think,
                allow_final=can_end and not actions.after_failed_program(messages, tools))
        else:
            grammar = actions.free_text_grammar(think=self.think)
            guide = "First think step by step inside <think> ... </think>, then answer." \
                if self.think else ""
        if guide:
            chat = _with_system_suffix(chat, guide)
        return chat, grammar

    def _turn(self, gen: Generation, tools: Sequence[ToolSpec], settings: ModelSettings) -> Turn:
        call_id = stable_id(current_call().seed())  # the same on a replayed call
        if settings.response_schema is not None or not tools:
            reasoning, rest = actions.split_think(gen.text)
            parts: list[Any] = [actions.reasoning_part(reasoning)] if reasoning else []
            parts.append(TextPart(text=rest.strip()))
        else:
            parts = actions.parse_output(gen.text, tools, call_id=call_id)
        message = Message(role="assistant", parts=tuple(parts) or (TextPart(text=""),))
        finish = "length" if gen.finish_reason == "length" else (
            "tool_calls" if message.tool_calls else "stop")
        return Turn(message=message, finish_reason=finish, model=self.name, provider="local",
                    usage=Usage(input_tokens=gen.prompt_tokens, output_tokens=gen.completion_tokens,
                                cached_tokens=gen.cached_tokens))

    async def aclose(self) -> None:
        """Nothing per instance: the loaded model is shared process-wide (`LOADED_MODELS`)."""


def _with_system_suffix(chat: list[dict[str, str]], text: str) -> list[dict[str, str]]:
    if chat and chat[0]["role"] == "system":
        return [{"role": "system", "content": f"{chat[0]['content']}\n\n{text}"}, *chat[1:]]
    return [{"role": "system", "content": text}, *chat]


def _first(*values: float | None) -> float:
    return next(v for v in values if v is not None)
