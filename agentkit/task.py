"""The task specification: what to do, with which models, tools and limits.

A `TaskSpec` is built in Python (``TaskSpec(name=..., goal=...)``) or loaded from YAML with
`load_task` (safe, strict: see `agentkit._yaml`). Both give the same validated value and run
identically. Every model here forbids unknown keys and is strict about types, so YAML 1.1
surprises (``no`` -> False) and typos are errors, not silent defaults.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agentkit import _yaml
from agentkit.errors import TaskFileError
from agentkit.plan import Plan
from agentkit.secrets import looks_like_secret

__all__ = [
    "TOOL_NAMES",
    "BudgetSpec",
    "ChannelSpec",
    "ConsensusSpec",
    "FetchSettings",
    "FilesSettings",
    "ModelSpec",
    "PriceSpec",
    "ReasoningSpec",
    "RetrySpec",
    "RolesSpec",
    "SandboxSettings",
    "SearchSettings",
    "TaskSpec",
    "TelemetrySpec",
    "load_task",
    "load_task_text",
]

ToolName = Literal["web_search", "web_fetch", "run_code", "read_file", "write_file", "list_files"]
TOOL_NAMES: tuple[str, ...] = ToolName.__args__  # type: ignore[attr-defined]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ReasoningSpec(_Spec):
    """Portable reasoning knob, mapped by each profile to its own parameters."""

    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    budget_tokens: int | None = Field(default=None, ge=0, le=1_000_000)
    #: ask the model to think at all (None = the profile's default)
    enabled: bool | None = None


class ChannelSpec(_Spec):
    """One endpoint/key serving a model. Lower `priority` is tried first."""

    base_url: str
    api_key_env: str | None = None
    priority: int = 0
    name: str | None = None

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        return _check_env_name(v)


class PriceSpec(_Spec):
    """USD per million tokens. Reasoning tokens default to the output price."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    reasoning: float | None = Field(default=None, ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    ratio: float = Field(default=1.0, ge=0)


class ModelSpec(_Spec):
    provider: Literal["openai", "anthropic", "local"] = "openai"
    #: provider-family quirks: deepseek, deepseek-reasoner, deepseek-hybrid, kimi, qwen,
    #: dashscope, openrouter, vllm, sglang, llamacpp, ollama, openai, gemini, xai, anthropic,
    #: local, generic
    profile: str = "generic"
    base_url: str | None = None
    model: str
    api_key_env: str | None = None
    reasoning: ReasoningSpec | None = None
    stream: bool | Literal["auto"] = "auto"
    extra_body: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    channels: list[ChannelSpec] = Field(default_factory=list, max_length=32)
    fallbacks: list[str] = Field(default_factory=list, max_length=8)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    timeout_s: float = Field(default=600.0, gt=0, le=86_400)
    max_concurrency: int | None = Field(default=None, ge=1, le=10_000)
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    price: PriceSpec | None = None
    #: local provider only: CPU threads and context size
    threads: int | None = Field(default=None, ge=1, le=256)
    context_tokens: int | None = Field(default=None, ge=512, le=1_048_576)

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        return _check_env_name(v)


class RolesSpec(_Spec):
    planner: str | None = None
    worker: str | None = None
    synthesizer: str | None = None


class FetchSettings(_Spec):
    #: hosts allowed even if they resolve to private addresses (intranet, tests); audited
    allow_hosts: list[str] = Field(default_factory=list, max_length=1000)
    allow_private: bool = False
    max_bytes: int = Field(default=10_000_000, ge=1024, le=1_000_000_000)
    max_text_chars: int = Field(default=200_000, ge=1000)
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    connect_timeout_s: float = Field(default=5.0, gt=0, le=120)
    read_timeout_s: float = Field(default=15.0, gt=0, le=600)
    max_redirects: int = Field(default=5, ge=0, le=10)
    max_concurrency: int = Field(default=16, ge=1, le=1024)


class SearchSettings(_Spec):
    backend: str = "ddgs"
    region: str = "wt-wt"
    timelimit: Literal["d", "w", "m", "y"] | None = None
    max_results: int = Field(default=8, ge=1, le=50)
    timeout_s: float = Field(default=20.0, gt=0, le=300)


class SandboxSettings(_Spec):
    image: str | None = None
    memory_mb: int = Field(default=512, ge=16, le=65_536)
    cpus: float = Field(default=1.0, gt=0, le=64)
    pids: int = Field(default=128, ge=8, le=65_536)
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    output_bytes: int = Field(default=65_536, ge=1024, le=16_000_000)
    pool_size: int = Field(default=2, ge=0, le=256)
    max_concurrency: int = Field(default=4, ge=1, le=256)
    #: keep one interpreter per sub-agent so state persists across run_code calls
    persistent: bool = False
    #: relaxations of the hardened defaults; each one is recorded in the ledger
    network: Literal["none", "bridge"] = "none"
    read_only_root: bool = True
    env: dict[str, str] = Field(default_factory=dict)
    #: workspace files (relative to the workspace) copied into each sandbox's /workspace before
    #: its first run: input data such as a CSV, since the sandbox has no host mounts
    inputs: list[str] = Field(default_factory=list, max_length=100)


class FilesSettings(_Spec):
    max_read_bytes: int = Field(default=1_000_000, ge=1, le=100_000_000)
    max_write_bytes: int = Field(default=1_000_000, ge=1, le=100_000_000)


class BudgetSpec(_Spec):
    tokens: int | None = Field(default=None, ge=1)
    cost_usd: float | None = Field(default=None, ge=0)
    #: the run's wall-clock limit: finite by default (15 minutes), raise it for long runs
    wall_seconds: float | None = Field(default=900.0, gt=0)
    tool_calls: int | None = Field(default=None, ge=0)
    max_agents: int = Field(default=8, ge=1, le=1000)
    max_depth: int = Field(default=2, ge=0, le=10)
    max_nodes: int = Field(default=24, ge=1, le=1000)
    max_steps: int = Field(default=12, ge=1, le=1000)


class RetrySpec(_Spec):
    """Retry policy as data (used for model calls and for failed nodes)."""

    attempts: int = Field(default=4, ge=1, le=20)
    base_delay_s: float = Field(default=0.5, ge=0, le=600)
    max_delay_s: float = Field(default=30.0, ge=0, le=3600)
    node_attempts: int = Field(default=2, ge=1, le=10)
    replans: int = Field(default=1, ge=0, le=10)
    plan_attempts: int = Field(default=3, ge=1, le=10)


class ConsensusSpec(_Spec):
    """Self-consistency for nodes (see `agentkit.swarm.consensus`): each node runs up to
    `samples` independent agent runs and stops once `agree` of them printed the same numbers.
    Costs up to `samples` times a node's tokens; 1 (the default) turns it off."""

    samples: int = Field(default=1, ge=1, le=9)
    agree: int = Field(default=2, ge=1, le=9)

    @model_validator(mode="after")
    def _agree_within_samples(self) -> ConsensusSpec:
        if self.samples > 1 and self.agree > self.samples:
            raise ValueError(f"agree ({self.agree}) cannot exceed samples ({self.samples})")
        return self


class TelemetrySpec(_Spec):
    """OpenTelemetry export of the run's traces (the ``[otel]`` extra; off by default).

    `otel` turns it on (``agentkit run --otel`` does too); where spans go is configured by the
    standard ``OTEL_*`` environment variables. `capture_content` adds messages, reasoning and
    tool arguments/results to the spans (redacted like the ledger); also turned on by
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``."""

    otel: bool = False
    capture_content: bool = False


class TaskSpec(_Spec):
    name: str = Field(min_length=1, max_length=200)
    goal: str = Field(min_length=1, max_length=100_000)
    mode: Literal["swarm", "agent"] = "swarm"
    model: str
    models: dict[str, ModelSpec] = Field(min_length=1)
    roles: RolesSpec = Field(default_factory=RolesSpec)
    tools: list[ToolName] = Field(default_factory=list)
    fetch: FetchSettings = Field(default_factory=FetchSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    files: FilesSettings = Field(default_factory=FilesSettings)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    consensus: ConsensusSpec = Field(default_factory=ConsensusSpec)
    workspace: str | None = None
    output: str | None = None
    #: a hand-written plan: the planner is skipped (still used to re-plan a failed subtree)
    plan: Plan | None = None
    #: prompt overrides, by prompt name (planner, worker, synthesizer, ...)
    prompts: dict[str, str] = Field(default_factory=dict)
    #: ask models to show their reasoning in <think> tags where they do not do so natively
    think: bool = False
    #: price overrides, by model name in `models`
    prices: dict[str, PriceSpec] = Field(default_factory=dict)
    #: trace export (OpenTelemetry)
    telemetry: TelemetrySpec = Field(default_factory=TelemetrySpec)

    @model_validator(mode="after")
    def _check_names(self) -> TaskSpec:
        known = sorted(self.models)
        if self.model not in self.models:
            raise ValueError(f"model {self.model!r} is not defined in models (defined: {known})")
        for role in ("planner", "worker", "synthesizer"):
            name = getattr(self.roles, role)
            if name is not None and name not in self.models:
                raise ValueError(f"roles.{role} names {name!r}, which is not in models "
                                 f"(defined: {known})")
        for mname, spec in self.models.items():
            for fb in spec.fallbacks:
                if fb not in self.models:
                    raise ValueError(f"models.{mname}.fallbacks names {fb!r}, which is not in "
                                     f"models (defined: {known})")
        return self

    def model_for(self, role: Literal["planner", "worker", "synthesizer"]) -> str:
        """The model name used for a role (the task's `model` unless a role overrides it)."""
        return getattr(self.roles, role) or self.model


def _check_env_name(v: str | None) -> str | None:
    if v is not None and not _ENV_NAME.match(v):
        raise ValueError("api_key_env must be the NAME of an environment variable (like "
                         "DEEPSEEK_API_KEY), never the key itself")
    return v


# ---------------------------------------------------------------------------------------------
# Loading task files (safe, strict YAML; every error names FILE:LINE:COL and the field)

_SECRET_KEYS = frozenset({"api_key", "apikey", "key", "token", "password", "secret",
                          "access_token", "auth_token", "authorization", "x_api_key"})
_NO_INLINE_KEYS = ("API keys may not be written in task files; put the key in an environment "
                   "variable and name it in api_key_env")


def load_task(path: str | Path) -> TaskSpec:
    """Load and validate a YAML task file. Raises `TaskFileError` (FILE:LINE:COL: ...)."""
    path = Path(path)
    name = str(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(_yaml.MAX_BYTES + 1)  # never read more than the cap
    except OSError as exc:
        raise TaskFileError(f"cannot read the task file: {exc.strerror or exc}", file=name) from None
    return load_task_text(_yaml.decode(raw, name), name, base_dir=path.parent)


def load_task_text(text: str, filename: str = "<task>", *,
                   base_dir: str | Path | None = None) -> TaskSpec:
    """Validate YAML text as a task. Relative `workspace`/`output` resolve against `base_dir`
    (the file's folder), so a task runs the same from any current directory."""
    src = _yaml.load_yaml(text, filename)
    _check_inline_secrets(src, src.data, ())
    _check_references(src)
    data = dict(src.data)
    for key in ("workspace", "output"):
        if base_dir is not None and isinstance(data.get(key), str) and data[key]:
            data[key] = str((Path(base_dir) / Path(data[key]).expanduser()).resolve())
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as exc:
        errors = _yaml.validation_errors(exc, src, TaskSpec)
        first = _special_case(errors[0])
        first.others = [_special_case(e) for e in errors[1:]]  # type: ignore[attr-defined]
        raise first from None


def _check_inline_secrets(src: _yaml.Located, value: Any, path: tuple[str | int, ...]) -> None:
    """Refuse keys written into the file: by key name under models, by shape anywhere."""
    if isinstance(value, dict):
        for key, child in value.items():
            norm = key.lower().replace("-", "_")
            if path[:1] == ("models",) and norm in _SECRET_KEYS and child not in (None, ""):
                raise src.error((*path, key), _NO_INLINE_KEYS, key=True)
            _check_inline_secrets(src, child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            _check_inline_secrets(src, child, (*path, i))
    elif isinstance(value, str) and looks_like_secret(value):
        raise src.error(path, _NO_INLINE_KEYS)


def _check_references(src: _yaml.Located) -> None:
    """`model`, `roles.*` and `fallbacks` must name a model defined in `models`."""
    data = src.data
    models = data.get("models")
    if not isinstance(models, dict):
        return
    known = ", ".join(sorted(models)) or "(none)"
    refs: list[tuple[tuple[str | int, ...], Any]] = [(("model",), data.get("model"))]
    roles = data.get("roles")
    if isinstance(roles, dict):
        refs += [(("roles", r), n) for r, n in roles.items() if r in RolesSpec.model_fields]
    for mname, spec in models.items():
        fallbacks = spec.get("fallbacks") if isinstance(spec, dict) else None
        if isinstance(fallbacks, list):
            refs += [(("models", mname, "fallbacks", i), n) for i, n in enumerate(fallbacks)]
    for path, name in refs:
        if isinstance(name, str) and name not in models:
            raise src.error(path, f"model {name!r} is not defined in models; defined: {known}")


def _special_case(err: TaskFileError) -> TaskFileError:
    """Clearer words for the mistakes people make most (mode, tools)."""
    if err.field == "mode" and err.message.startswith("expected one of"):
        msg = err.message.replace("expected one of: ", "").split(", got ")
        return TaskFileError(f"unknown mode {msg[-1].removeprefix('string ')}; expected one of: "
                             f"{msg[0]} (swarm = planner + DAG of sub-agents, agent = one agent "
                             "with tools)", file=err.file, line=err.line, column=err.column,
                             field=err.field)
    if (err.field or "").startswith("tools[") and err.message.startswith("expected one of"):
        got = err.message.split(", got ")[-1].removeprefix("string ")
        return TaskFileError(f"unknown tool {got}; allowed tools: {', '.join(TOOL_NAMES)}",
                             file=err.file, line=err.line, column=err.column, field=err.field)
    return err
