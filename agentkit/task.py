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

from agentkit import _taskcheck, _yaml
from agentkit._taskcheck import (
    TOOL_NAMES,
    inline_secrets,
    resolve_tool_paths,
    server_name_problem,
    special_case,
    tool_entries,
    tool_entry_problem,
)
from agentkit.plan import Plan

__all__ = [
    "TOOL_NAMES",
    "ApprovalSpec",
    "BudgetSpec",
    "ChannelSpec",
    "ConsensusSpec",
    "ExecutorSpec",
    "FetchSettings",
    "FilesSettings",
    "McpServerSpec",
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


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True,
                              use_attribute_docstrings=True)


class ReasoningSpec(_Spec):
    """Portable reasoning knob, mapped by each profile to its own parameters."""

    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    """How hard the model thinks; each profile maps it to its provider's parameter
    (reasoning_effort, thinking budget, ...)."""
    budget_tokens: int | None = Field(default=None, ge=0, le=1_000_000)
    """Upper bound on reasoning tokens, for providers that take a thinking budget (Anthropic,
    Gemini, Qwen)."""
    enabled: bool | None = None
    """Ask the model to think at all (null = the profile's default)."""


class ChannelSpec(_Spec):
    """One endpoint/key serving a model. Lower `priority` is tried first."""

    base_url: str
    """The endpoint of this channel (an OpenAI-compatible or Anthropic base URL)."""
    api_key_env: str | None = None
    """Name of the environment variable holding this channel's key (default: the model's
    api_key_env)."""
    priority: int = 0
    """Lower is tried first; a channel that fails over goes to the next one."""
    name: str | None = None
    """A name for events and errors (default: channelN)."""

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        return _check_env_name(v)


class PriceSpec(_Spec):
    """USD per million tokens. Reasoning tokens default to the output price."""

    input: float = Field(ge=0)
    """USD per million input tokens."""
    output: float = Field(ge=0)
    """USD per million output tokens (reasoning tokens included)."""
    reasoning: float | None = Field(default=None, ge=0)
    """USD per million reasoning tokens, if the provider prices them apart (default: the output
    price)."""
    cached_input: float | None = Field(default=None, ge=0)
    """USD per million cached input tokens (default: the input price)."""
    ratio: float = Field(default=1.0, ge=0)
    """Multiplies the whole price (a gateway's channel or group ratio)."""


class ModelSpec(_Spec):
    provider: Literal["openai", "anthropic", "local"] = "openai"
    """The wire API: openai (any OpenAI-compatible Chat Completions endpoint), anthropic, or local
    (the embedded llama.cpp model)."""
    profile: str = "generic"
    """The model family's quirks: which field carries reasoning, what is replayed, what the
    provider refuses (deepseek, kimi, qwen, dashscope, openrouter, openai, gemini, xai,
    anthropic, mistral, groq, zai, vllm, sglang, llamacpp, ollama, local, generic, ...)."""
    base_url: str | None = None
    """The endpoint (default: the profile's official one; required for self-hosted servers)."""
    model: str
    """The provider's model name (for provider: local, a pinned name or a path to a GGUF file)."""
    api_key_env: str | None = None
    """Name of the environment variable holding the API key, never the key itself (default: the
    profile's, e.g. DEEPSEEK_API_KEY, on its official endpoint)."""
    reasoning: ReasoningSpec | None = None
    """The portable reasoning knob, mapped to each profile's own parameters."""
    stream: bool | Literal["auto"] = "auto"
    """true, false, or auto (what the profile needs)."""
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Fields added to every request body unchanged."""
    headers: dict[str, str] = Field(default_factory=dict)
    """HTTP headers added to every request (never a key: use api_key_env)."""
    channels: list[ChannelSpec] = Field(default_factory=list, max_length=32)
    """Several endpoints or keys for this model, tried in priority order (failover)."""
    fallbacks: list[str] = Field(default_factory=list, max_length=8)
    """Other models (names in models) used when this one is unavailable."""
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    """Output token limit per call (reasoning included); also what rate limits reserve up front."""
    temperature: float | None = Field(default=None, ge=0, le=2)
    """Sampling temperature (default: the provider's; the local model uses 0.2)."""
    timeout_s: float = Field(default=600.0, gt=0, le=86_400)
    """The deadline of one attempt of a call, whole: connecting, sending and reading every byte
    of the answer, streamed or not (a server dripping keep-alives cannot extend it)."""
    max_response_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    """The largest answer accepted, in decompressed bytes; a stream counts all its events (about
    230 bytes per streamed token: 32 MiB holds some 140,000 tokens)."""
    max_concurrency: int | None = Field(default=None, ge=1, le=10_000)
    """Calls to this model in flight at once, shared by every agent of the run."""
    rpm: int | None = Field(default=None, ge=1)
    """Requests per minute allowed (null: no limit)."""
    tpm: int | None = Field(default=None, ge=1)
    """Tokens per minute allowed (null: no limit)."""
    price: PriceSpec | None = None
    """Price override (default: the built-in table, else unknown and counted as 0)."""
    threads: int | None = Field(default=None, ge=1, le=256)
    """provider: local only: CPU threads for generation."""
    context_tokens: int | None = Field(default=None, ge=512, le=1_048_576)
    """provider: local only: the context window in tokens (default 8192)."""

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        return _check_env_name(v)


class RolesSpec(_Spec):
    planner: str | None = None
    """The model (a name in models) that plans the DAG (default: the task's model)."""
    worker: str | None = None
    """The model that runs each node (default: the task's model)."""
    synthesizer: str | None = None
    """The model that writes the final answer (default: the task's model)."""


class FetchSettings(_Spec):
    allow_hosts: list[str] = Field(default_factory=list, max_length=1000)
    """Hosts allowed even if they resolve to private addresses (intranet, tests); each use is
    audited."""
    allow_private: bool = False
    """Allow every private, loopback and link-local address (off: the SSRF guard blocks them)."""
    max_bytes: int = Field(default=10_000_000, ge=1024, le=1_000_000_000)
    """Largest response body downloaded, in bytes."""
    max_text_chars: int = Field(default=200_000, ge=1000)
    """Longest extracted page text handed to the model, in characters."""
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    """Total deadline of one fetch, in seconds."""
    connect_timeout_s: float = Field(default=5.0, gt=0, le=120)
    """Deadline to connect, in seconds."""
    read_timeout_s: float = Field(default=15.0, gt=0, le=600)
    """Longest wait for the next bytes, in seconds (a stalled server is cut off)."""
    max_redirects: int = Field(default=5, ge=0, le=10)
    """Redirects followed (each re-checked by the SSRF guard)."""
    max_concurrency: int = Field(default=16, ge=1, le=1024)
    """Fetches in flight at once in the run."""


class SearchSettings(_Spec):
    backend: str = "ddgs"
    """The search backend (ddgs: DuckDuckGo and others through the ddgs package)."""
    region: str = "wt-wt"
    """Search region, e.g. us-en, de-de; wt-wt = no region."""
    timelimit: Literal["d", "w", "m", "y"] | None = None
    """Only results from the last day (d), week (w), month (m) or year (y)."""
    max_results: int = Field(default=8, ge=1, le=50)
    """Results per search."""
    timeout_s: float = Field(default=20.0, gt=0, le=300)
    """Deadline of one search, in seconds."""


class SandboxSettings(_Spec):
    image: str | None = None
    """The Docker image for run_code (default: the one agentkit sandbox build made)."""
    memory_mb: int = Field(default=512, ge=16, le=65_536)
    """Memory limit per container in MB (memory+swap: no swap)."""
    cpus: float = Field(default=1.0, gt=0, le=64)
    """CPU limit per container."""
    pids: int = Field(default=128, ge=8, le=65_536)
    """Process limit per container."""
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    """Deadline of one run_code call, in seconds."""
    output_bytes: int = Field(default=65_536, ge=1024, le=16_000_000)
    """Most stdout/stderr bytes kept per call (the rest is cut, and says so)."""
    pool_size: int = Field(default=2, ge=0, le=256)
    """Containers started ahead of time (warm pool)."""
    max_pool: int = Field(default=16, ge=0, le=256)
    """Most containers pre-warmed once the plan is known: one per run_code agent that can run at
    once, up to this (never fewer than pool_size; 0: no pre-warming)."""
    max_concurrency: int = Field(default=4, ge=1, le=256)
    """run_code calls in flight at once in the run."""
    persistent: bool = False
    """Keep one interpreter per sub-agent, so variables persist across its run_code calls."""
    network: Literal["none", "bridge"] = "none"
    """none (default) or bridge; a relaxation of the hardened defaults, recorded in the ledger."""
    read_only_root: bool = True
    """Read-only root filesystem (default); false is a relaxation recorded in the ledger."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment variables set in the container (a relaxation recorded in the ledger)."""
    inputs: list[str] = Field(default_factory=list, max_length=100)
    """Workspace files (relative to the workspace) copied into each sandbox's /workspace before its
    first run: input data such as a CSV, since the sandbox has no host mounts."""


class FilesSettings(_Spec):
    max_read_bytes: int = Field(default=1_000_000, ge=1, le=100_000_000)
    """Largest file read_file returns, in bytes."""
    max_write_bytes: int = Field(default=1_000_000, ge=1, le=100_000_000)
    """Largest content write_file writes, in bytes."""


class McpServerSpec(_Spec):
    """An MCP server whose tools a run may use: a `command` started as a child process of the
    run (stdio), or a `url` (streamable HTTP). Name it in the task's `tools` to use all of its
    tools, or ``"server.tool"`` for one.

    stdio: only `env` (values written here) and `pass_env` (names of the run's environment
    variables) reach the server, besides the PATH, HOME, LOGNAME, SHELL, TERM and USER the MCP
    SDK passes to every server; no API key does unless listed. HTTP: `headers_env` maps a
    header to the environment variable holding its value (``Authorization: NOTES_TOKEN``); the
    URL passes the same address guard as ``web_fetch``, so a loopback or private address needs
    its host in `allow_hosts`.
    """

    command: str | None = Field(default=None, min_length=1)
    """stdio: the program to start (a child process of the run)."""
    args: list[str] = Field(default_factory=list, max_length=256)
    """stdio: its arguments."""
    env: dict[str, str] = Field(default_factory=dict)
    """stdio: environment values set for the server (never a secret: use pass_env)."""
    pass_env: list[str] = Field(default_factory=list, max_length=256)
    """stdio: names of the run's environment variables passed through to the server."""
    cwd: str | None = None
    """stdio: the server's working folder (relative to the task file; default: the workspace)."""
    url: str | None = Field(default=None, min_length=1)
    """streamable HTTP: the server's endpoint."""
    headers_env: dict[str, str] = Field(default_factory=dict)
    """streamable HTTP: header name -> the environment variable holding its value."""
    allow_hosts: list[str] = Field(default_factory=list, max_length=100)
    """streamable HTTP: hosts allowed even on loopback or private addresses (audited)."""
    allow_private: bool = False
    """streamable HTTP: allow any private address (not loopback unless listed)."""
    prefix: str | None = Field(default=None, max_length=32, pattern=r"^[A-Za-z0-9_-]*$")
    """Put before each tool's name for the model (default: the server's name; "" for none)."""
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    """Seconds for one tool call."""
    startup_timeout_s: float = Field(default=30.0, gt=0, le=600)
    """Seconds for the server to start and list its tools."""
    max_tools: int = Field(default=64, ge=1, le=1000)
    """At most this many of its tools are offered when the whole server is named in tools."""
    max_result_chars: int = Field(default=200_000, ge=1000, le=100_000_000)
    """A longer result is a too_large tool error."""
    max_concurrency: int | None = Field(default=None, ge=1, le=1024)
    """At most this many calls at once (null: unbounded)."""
    side_effects: bool | None = None
    """Whether its tools change things outside the run (null: from each tool's readOnlyHint)."""
    untrusted: bool = True
    """Show results to the model inside untrusted-content delimiters (they may carry text
    written by third parties: pages, issues, commit messages)."""

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerSpec:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either `command` (a local server over stdio) or `url` (a "
                             "streamable HTTP server), not both or neither")
        stdio_only = [k for k in ("args", "env", "pass_env", "cwd") if k in self.model_fields_set]
        http_only = [k for k in ("headers_env", "allow_hosts", "allow_private")
                     if k in self.model_fields_set]
        if self.url is not None and stdio_only:
            raise ValueError(f"{', '.join(stdio_only)} only apply to a `command` server")
        if self.command is not None and http_only:
            raise ValueError(f"{', '.join(http_only)} only apply to a `url` server")
        for name in [*self.env, *self.pass_env, *self.headers_env.values()]:
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        return self


class ApprovalSpec(_Spec):
    """Tool calls that wait for a person's yes (see `agentkit.approvals`).

    ``approval: {tools: [write_file, "git.push_*"], side_effects: true, timeout_s: 600}``: a
    call of a tool named in `tools` (or, with `side_effects`, of any tool that declares side
    effects) waits until a person approves or denies it; only the calling node waits. A denied
    or timed-out call returns a tool error the model reads; it never ends the run."""

    tools: list[str] = Field(default_factory=list, max_length=1000)
    """Tools whose every call needs approval: a tool's name as the model sees it, an MCP
    server's name (all of its tools) or "server.tool"; shell-style patterns (*, ?) allowed."""
    side_effects: bool = False
    """Also ask before each call of any tool that declares side effects (write_file, run_code,
    MCP tools not marked read-only, Python tools declared with side_effects=True)."""
    timeout_s: float | None = Field(default=600.0, gt=0, le=7 * 86_400)
    """Seconds a call waits for a decision before it is denied (null: until the run's own
    wall-clock limit)."""


class BudgetSpec(_Spec):
    tokens: int | None = Field(default=None, ge=1)
    """Tokens (input + output) the whole run may use; reserved before each call (null: no limit)."""
    cost_usd: float | None = Field(default=None, ge=0)
    """USD the whole run may spend; reserved before each call (null: no limit)."""
    wall_seconds: float | None = Field(default=900.0, gt=0)
    """The run's wall-clock limit in seconds: finite by default (15 minutes), raise it for long
    runs."""
    tool_calls: int | None = Field(default=None, ge=0)
    """Tool calls the whole run may make (null: no limit)."""
    max_agents: int = Field(default=8, ge=1, le=1000)
    """Sub-agents running at once."""
    max_depth: int = Field(default=2, ge=0, le=10)
    """How deep sub-agents may delegate to sub-sub-agents (0: no delegation)."""
    max_nodes: int = Field(default=24, ge=1, le=1000)
    """Largest plan, in nodes (re-plans included)."""
    max_steps: int = Field(default=12, ge=1, le=1000)
    """Model turns per agent before it must answer."""


class RetrySpec(_Spec):
    """Retry policy as data (used for model calls and for failed nodes)."""

    attempts: int = Field(default=4, ge=1, le=20)
    """Tries per model call (retryable errors: 408/409/429/5xx, resets, timeouts)."""
    base_delay_s: float = Field(default=0.5, ge=0, le=600)
    """First backoff delay in seconds (full jitter, doubling)."""
    max_delay_s: float = Field(default=30.0, ge=0, le=3600)
    """Longest backoff delay in seconds."""
    node_attempts: int = Field(default=2, ge=1, le=10)
    """Tries per plan node before its subtree is re-planned."""
    replans: int = Field(default=1, ge=0, le=10)
    """Re-plans of failed subtrees allowed in the run."""
    plan_attempts: int = Field(default=3, ge=1, le=10)
    """Plans the planner may submit before the run fails (a rejected plan goes back to it with
    every problem listed)."""


class ConsensusSpec(_Spec):
    """Self-consistency for nodes (see `agentkit.swarm.consensus`): each node runs up to
    `samples` independent agent runs and stops once `agree` of them printed the same numbers.
    Costs up to `samples` times a node's tokens; 1 (the default) turns it off."""

    samples: int = Field(default=1, ge=1, le=9)
    """Independent runs per node (1: off)."""
    agree: int = Field(default=2, ge=1, le=9)
    """How many samples must print the same numbers for a node to be done."""

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
    """Export the run's traces over OpenTelemetry (where to: the OTEL_* variables)."""
    capture_content: bool = False
    """Add messages, reasoning and tool arguments/results to the spans (redacted)."""


class ExecutorSpec(_Spec):
    """Where a swarm's nodes run: in this process (``local``, the default) or on a Ray
    cluster (``ray``, the ``[ray]`` extra). The planner, the scheduler, the synthesizer and the
    ledger stay in this process either way; budgets and rate limits stay global."""

    kind: Literal["local", "ray"] = "local"
    """local: every sub-agent in this process; ray: each node's sub-agent on a Ray worker."""
    address: str = Field(default="auto", min_length=1, max_length=500)
    """The Ray cluster: auto (RAY_ADDRESS, or the cluster started on this machine with ray
    start) or HOST:PORT of its head node."""
    workers_per_node: int = Field(default=1, ge=1, le=64)
    """Worker processes per Ray node; each holds its own model clients, tools and sandboxes
    and runs many nodes at once."""


#: the model a task uses when it names none: the embedded local model (the [local] extra)
DEFAULT_MODEL = "local"
LOCAL_MODEL = ModelSpec(provider="local", profile="local", model="qwen2.5-coder-1.5b-instruct")


class TaskSpec(_Spec):
    name: str = Field(min_length=1, max_length=200)
    """A short name for the task (in the ledger and the output)."""
    goal: str = Field(min_length=1, max_length=100_000)
    """What to do, in plain words."""
    mode: Literal["swarm", "agent"] = "swarm"
    """swarm: a planner splits the goal into a DAG of sub-agents; agent: one agent with tools."""
    model: str = DEFAULT_MODEL
    """The default model: a name in models (default: the only model, or the embedded local model)."""
    models: dict[str, ModelSpec] = Field(default_factory=lambda: {DEFAULT_MODEL: LOCAL_MODEL},
                                         min_length=1)
    """The models the task may use, by name (default: the embedded local model, named local)."""
    roles: RolesSpec = Field(default_factory=RolesSpec)
    """A model per role (planner, worker, synthesizer); unset roles use model."""
    tools: list[str] = Field(default_factory=list, max_length=1000)
    """The tools agents may call: built-in names, MCP server names (all their tools) or
    "server.tool", and Python tools as import references "package.module:function"."""
    mcp_servers: dict[str, McpServerSpec] = Field(default_factory=dict, max_length=64)
    """MCP servers by name: stdio (command, args, env, pass_env) or streamable HTTP (url,
    headers_env); one session per server per run."""
    tools_path: str | None = None
    """Folder searched for the modules of import references in tools when they are not
    importable otherwise (set to the task file's folder when loaded from a file)."""
    fetch: FetchSettings = Field(default_factory=FetchSettings)
    """web_fetch settings."""
    search: SearchSettings = Field(default_factory=SearchSettings)
    """web_search settings."""
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    """run_code sandbox settings."""
    files: FilesSettings = Field(default_factory=FilesSettings)
    """read_file/write_file settings."""
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    """Limits of the whole run."""
    retry: RetrySpec = Field(default_factory=RetrySpec)
    """Retry and recovery policy."""
    consensus: ConsensusSpec = Field(default_factory=ConsensusSpec)
    """Self-consistency for nodes (costs up to samples times a node's tokens)."""
    workspace: str | None = None
    """The folder the file tools may read and write (relative to the task file; default: the
    current directory)."""
    output: str | None = None
    """Where the audit ledger (and its .head file) goes (relative to the task file; default:
    ./runs)."""
    plan: Plan | None = None
    """A hand-written plan: the planner is skipped (it still re-plans a failed subtree)."""
    prompts: dict[str, str] = Field(default_factory=dict)
    """Prompt overrides by name (planner, worker, synthesizer, agent, replanner, or family.part
    such as worker.user); $placeholders are checked."""
    think: bool = False
    """Ask models to show their reasoning in <think> tags where they do not do so natively."""
    prices: dict[str, PriceSpec] = Field(default_factory=dict)
    """Price overrides, by model name in models."""
    telemetry: TelemetrySpec = Field(default_factory=TelemetrySpec)
    """Trace export (OpenTelemetry; off by default)."""
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
    """Where the nodes' sub-agents run: local (this process) or ray (a Ray cluster)."""
    approval: ApprovalSpec | None = None
    """Tool calls that wait for a person's yes: tools (names, MCP servers, "server.tool",
    patterns), side_effects: true for every side-effecting tool, timeout_s (then denied)."""

    @model_validator(mode="before")
    @classmethod
    def _default_model(cls, data: Any) -> Any:
        """With one model and no `model`, that one is the default."""
        if isinstance(data, dict) and "model" not in data and isinstance(data.get("models"), dict) \
                and len(data["models"]) == 1:
            return {**data, "model": next(iter(data["models"]))}
        return data

    @model_validator(mode="after")
    def _check_names(self) -> TaskSpec:
        known = sorted(self.models)
        if "model" not in self.model_fields_set and self.model not in self.models:
            raise ValueError(f"name the default model in `model` (one of {known})")
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
        for server in self.mcp_servers:
            problem = server_name_problem(server)
            if problem:
                raise ValueError(f"mcp_servers: {problem}")
        for entry in self.tools:
            problem = tool_entry_problem(entry, self.mcp_servers)
            if problem:
                raise ValueError(f"tools: {problem}")
        return self

    def mcp_references(self) -> dict[str, set[str] | None]:
        """Servers the task's `tools` use: name -> the tools picked (None: all of them)."""
        out: dict[str, set[str] | None] = {}
        for entry in self.tools:
            if entry in self.mcp_servers:
                out[entry] = None
            elif "." in entry and ":" not in entry:
                server, _, name = entry.partition(".")
                picked = out.setdefault(server, set())
                if picked is not None:
                    picked.add(name)
        return out

    def model_for(self, role: Literal["planner", "worker", "synthesizer"]) -> str:
        """The model name used for a role (the task's `model` unless a role overrides it)."""
        return getattr(self.roles, role) or self.model


def _check_env_name(v: str | None) -> str | None:
    if v is not None and not _ENV_NAME.match(v):
        raise ValueError("api_key_env must be the NAME of an environment variable (like "
                         "DEEPSEEK_API_KEY), never the key itself")
    return v


# ---------------------------------------------------------------------------------------------
# Loading task files (safe, strict YAML; every error names FILE:LINE:COL and the field;
# the checks on the parsed file itself are in `agentkit._taskcheck`)


def load_task(path: str | Path) -> TaskSpec:
    """Load and validate a YAML task file. Raises `TaskFileError` (FILE:LINE:COL: ...)."""
    path = Path(path)
    name = str(path)
    raw = _yaml.read_task_file(name, name)  # a regular file only, never more than the cap
    return load_task_text(_yaml.decode(raw, name), name, base_dir=path.parent)


def load_task_text(text: str, filename: str = "<task>", *,
                   base_dir: str | Path | None = None) -> TaskSpec:
    """Validate YAML text as a task. Relative `workspace`/`output` resolve against `base_dir`
    (the file's folder), so a task runs the same from any current directory. Every error of
    the file is reported at once: the first is raised, the others ride on its ``others``."""
    src = _yaml.load_yaml(text, filename)
    found = inline_secrets(src, src.data, ())
    references = _taskcheck.references(src, RolesSpec.model_fields) + tool_entries(src)
    data = dict(src.data)
    for key in ("workspace", "output", "tools_path"):
        if base_dir is not None and isinstance(data.get(key), str) and data[key]:
            data[key] = str((Path(base_dir) / Path(data[key]).expanduser()).resolve())
    if base_dir is not None:
        resolve_tool_paths(data, Path(base_dir))
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as exc:
        reported = {e.field for e in found + references}
        found += references + [
            special_case(e) for e in _yaml.validation_errors(exc, src, TaskSpec)
            # a reference error is also the root validator's; an inline key an unknown field
            if e.field not in reported and not (references and e.field is None)]
    else:
        found += references
    if found:
        first = found[0]
        first.others = found[1:]  # type: ignore[attr-defined]
        raise first
    return spec
