"""The task specification: what to do, with which models, tools and limits.

A `TaskSpec` is built in Python (``TaskSpec(name=..., goal=...)``) or loaded from YAML with
`load_task` (safe, strict: see `agentkit._yaml`). Both give the same validated value and run
identically. Every model here forbids unknown keys and is strict about types, so YAML 1.1
surprises (``no`` -> False) and typos are errors, not silent defaults.
"""

from __future__ import annotations

import difflib
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

ToolName = Literal["web_search", "web_fetch", "run_code", "read_file", "write_file", "list_files"]
TOOL_NAMES: tuple[str, ...] = ToolName.__args__  # type: ignore[attr-defined]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: an MCP server's name: it prefixes its tools' names, which models restrict to [A-Za-z0-9_-]
_SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
#: "package.module:function" in `tools`: a Python tool imported by the run
_IMPORT_REF = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
                         r":[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


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
    args: list[str] = Field(default_factory=list, max_length=256)
    env: dict[str, str] = Field(default_factory=dict)
    pass_env: list[str] = Field(default_factory=list, max_length=256)
    #: the server's working folder (relative to the task file; default: the run's workspace)
    cwd: str | None = None
    url: str | None = Field(default=None, min_length=1)
    headers_env: dict[str, str] = Field(default_factory=dict)
    allow_hosts: list[str] = Field(default_factory=list, max_length=100)
    allow_private: bool = False
    #: put before each tool's name for the model (default: the server's name; "" for none)
    prefix: str | None = Field(default=None, max_length=32, pattern=r"^[A-Za-z0-9_-]*$")
    #: seconds for one tool call, and for the server to start and list its tools
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    startup_timeout_s: float = Field(default=30.0, gt=0, le=600)
    #: at most this many of its tools are offered when the whole server is named in `tools`
    max_tools: int = Field(default=64, ge=1, le=1000)
    #: a longer result is a ``too_large`` tool error
    max_result_chars: int = Field(default=200_000, ge=1000, le=100_000_000)
    #: at most this many calls at once (None: unbounded)
    max_concurrency: int | None = Field(default=None, ge=1, le=1024)
    #: whether its tools change things outside the run; None: from each tool's readOnlyHint
    side_effects: bool | None = None
    #: show results to the model inside untrusted-content delimiters (they may carry text
    #: written by third parties: pages, issues, commit messages)
    untrusted: bool = True

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
    #: built-in tool names, MCP server names (all their tools) or "server.tool", and Python
    #: tools as import references "package.module:function"
    tools: list[str] = Field(default_factory=list, max_length=1000)
    mcp_servers: dict[str, McpServerSpec] = Field(default_factory=dict, max_length=64)
    #: folder searched for the modules of import references in `tools` when they are not
    #: importable otherwise (set to the task file's folder when loaded from a file)
    tools_path: str | None = None
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


def server_name_problem(name: str) -> str | None:
    """Why `name` cannot name an MCP server, or None."""
    if not _SERVER_NAME.match(name):
        return (f"server name {name!r} must be 1-32 letters, digits, '_' or '-' (it prefixes "
                f"the names of its tools, which models restrict to these characters)")
    if name in TOOL_NAMES:
        return f"server name {name!r} is the name of a built-in tool; choose another"
    return None


def tool_entry_problem(entry: str, servers: Any) -> str | None:
    """Why `entry` cannot be in a task's `tools`, or None."""
    if entry in TOOL_NAMES or entry in servers:
        return None
    if ":" in entry:
        if _IMPORT_REF.match(entry):
            return None
        return (f"{entry!r} is not an import reference of the form 'package.module:function'")
    if "." in entry:
        server, _, name = entry.partition(".")
        if server in servers and name:
            return None
        if server not in servers:
            return (f"{entry!r} names the MCP server {server!r}, which is not defined in "
                    f"mcp_servers (defined: {', '.join(sorted(servers)) or 'none'})")
    defined = ", ".join(sorted(servers)) or "none defined"
    close = difflib.get_close_matches(entry, [*TOOL_NAMES, *servers], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (f"unknown tool {entry!r}{hint}; built-in tools: {', '.join(TOOL_NAMES)}; MCP "
            f"servers of mcp_servers ({defined}), or one tool as 'server.tool'; Python tools as "
            f"'package.module:function'")


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
    _check_tool_entries(src)
    data = dict(src.data)
    for key in ("workspace", "output", "tools_path"):
        if base_dir is not None and isinstance(data.get(key), str) and data[key]:
            data[key] = str((Path(base_dir) / Path(data[key]).expanduser()).resolve())
    if base_dir is not None:
        _resolve_tool_paths(data, Path(base_dir))
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as exc:
        errors = _yaml.validation_errors(exc, src, TaskSpec)
        first = _special_case(errors[0])
        first.others = [_special_case(e) for e in errors[1:]]  # type: ignore[attr-defined]
        raise first from None


def _resolve_tool_paths(data: dict[str, Any], base: Path) -> None:
    """Relative paths that serve tools resolve against the task file's folder: an MCP
    server's `cwd`, and the folder import references are looked for in."""
    tools = data.get("tools")
    if "tools_path" not in data and isinstance(tools, list) and any(
            isinstance(t, str) and ":" in t for t in tools):
        data["tools_path"] = str(base.resolve())
    servers = data.get("mcp_servers")
    if not isinstance(servers, dict):
        return
    resolved = {}
    for name, spec in servers.items():
        if isinstance(spec, dict) and isinstance(spec.get("cwd"), str) and spec["cwd"]:
            spec = {**spec, "cwd": str((base / Path(spec["cwd"]).expanduser()).resolve())}
        resolved[name] = spec
    data["mcp_servers"] = resolved


def _check_inline_secrets(src: _yaml.Located, value: Any, path: tuple[str | int, ...]) -> None:
    """Refuse keys written into the file: by key name under models, by shape anywhere."""
    if isinstance(value, dict):
        for key, child in value.items():
            norm = key.lower().replace("-", "_")
            if path[:1] == ("models",) and norm in _SECRET_KEYS and child not in (None, ""):
                raise src.error((*path, key), _NO_INLINE_KEYS, key=True)
            if _is_server_env(path) and _secret_env_name(key) and child not in (None, ""):
                raise src.error((*path, key), f"{key} looks like a secret: never write it in a "
                                f"task file; set it in the run's environment and list its name "
                                f"in pass_env", key=True)
            _check_inline_secrets(src, child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            _check_inline_secrets(src, child, (*path, i))
    elif isinstance(value, str) and looks_like_secret(value):
        raise src.error(path, _NO_INLINE_KEYS)


_SECRET_ENV_PARTS = frozenset({"KEY", "APIKEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASS",
                               "CREDENTIAL", "CREDENTIALS", "AUTH", "AUTHORIZATION", "PAT"})


def _secret_env_name(name: str) -> bool:
    """``GITHUB_TOKEN``, ``OPENAI_API_KEY``, ``DB_PASSWORD``: a name whose value is a secret."""
    return any(part in _SECRET_ENV_PARTS for part in re.split(r"[_\-]", name.upper()))


def _is_server_env(path: tuple[str | int, ...]) -> bool:
    return len(path) == 3 and path[0] == "mcp_servers" and path[2] == "env"


def _check_tool_entries(src: _yaml.Located) -> None:
    """Each `tools` entry names something that exists (errors point at the entry's line)."""
    data = src.data
    tools, servers = data.get("tools"), data.get("mcp_servers")
    servers = servers if isinstance(servers, dict) else {}
    for name in servers:
        problem = server_name_problem(name) if isinstance(name, str) else None
        if problem:
            raise src.error(("mcp_servers", name), problem, key=True)
    for i, entry in enumerate(tools if isinstance(tools, list) else []):
        problem = tool_entry_problem(entry, servers) if isinstance(entry, str) else None
        if problem:
            raise src.error(("tools", i), problem)


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
    """Clearer words for the mistakes people make most (mode)."""
    if err.field == "mode" and err.message.startswith("expected one of"):
        msg = err.message.replace("expected one of: ", "").split(", got ")
        return TaskFileError(f"unknown mode {msg[-1].removeprefix('string ')}; expected one of: "
                             f"{msg[0]} (swarm = planner + DAG of sub-agents, agent = one agent "
                             "with tools)", file=err.file, line=err.line, column=err.column,
                             field=err.field)
    return err
