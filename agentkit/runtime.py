"""The Runtime: one explicit object holding everything a run uses.

Models, tools, shared resources (sandbox pool, HTTP clients), concurrency and rate limits, the
usage owner, the clock and the event sinks all hang off a `Runtime`; nothing is module-global,
so several runs can share a process without interfering. The Runtime hands each part only what
it needs: a model gets its spec, clock, emitter, limits and the usage owner (`build_model`); a
tool gets a `ToolContext`. The constructor does no I/O; resources (ledger file, HTTP clients,
containers) are opened on first use or in ``async with runtime`` and released by `aclose`.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, cast

from agentkit._extras import require
from agentkit.approvals import Approvals, approvals_file, unmatched_entries
from agentkit.audit import Ledger
from agentkit.clock import Clock, SystemClock
from agentkit.errors import ConfigError
from agentkit.events import Event, EventBus, EventKind, EventSink
from agentkit.journal import Journal
from agentkit.limits import ResourceLimits
from agentkit.models import ManagedModel, RateLimits, api_key_envs, build_model, price_for
from agentkit.plan import PlanGraph
from agentkit.prompting import Prompts
from agentkit.resources import Resources
from agentkit.retry import RetryPolicy
from agentkit.task import TaskSpec
from agentkit.tools import (
    BUILTIN_TOOLS,
    Tool,
    ToolContext,
    ToolRegistry,
    build_registry,
    load_reference,
)
from agentkit.tools.base import RESERVED_TOOL_NAMES
from agentkit.tools.function import iter_tools
from agentkit.usage import RunUsage

__all__ = ["RUN_ID_PATTERN", "Runtime", "new_run_id"]

#: what a run id may look like: it names the ledger file, so no separators, no dot-dot
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class _McpLoader(Protocol):
    """`agentkit.tools.mcp.load_mcp_tools` (imported only when a task uses MCP servers)."""

    async def __call__(self, task: TaskSpec, *, taken: Iterable[str], resources: Resources,
                       emit: Any, environ: Mapping[str, str], workspace: Path,
                       ) -> tuple[list[Tool], dict[str, tuple[str, ...]]]: ...


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


def check_run_id(run_id: str) -> str:
    if not RUN_ID_PATTERN.match(run_id) or ".." in run_id:
        raise ConfigError(f"run id {run_id!r} is not allowed: use 1-128 letters, digits, '_', "
                          f"'-' or '.', starting with a letter or digit (it names the ledger file)")
    return run_id


class Runtime:
    """Everything one run needs, passed explicitly.

    Parameters: the validated `task`; an optional `run_id`; `clock` (a fake one in tests);
    extra event `sinks`; `ledger_dir` where the audit ledger is written (``None``: no ledger
    file, events still flow to the sinks); `workspace` for the file tools (default: the
    task's); `environ` for API keys (default ``os.environ``, read only when a model is built);
    `rate_limits` to share RPM/TPM limits with other runs (default: this run's own); `tools`:
    your own tools (`agentkit.tool` functions, `Tool` objects, or plain functions), offered
    besides those the task names.
    """

    def __init__(self, task: TaskSpec, *, run_id: str | None = None, clock: Clock | None = None,
                 sinks: Iterable[EventSink] = (), ledger_dir: str | Path | None = None,
                 workspace: str | Path | None = None, environ: Mapping[str, str] | None = None,
                 fsync: str = "close", rate_limits: RateLimits | None = None,
                 tools: Iterable[Tool | Callable[..., Any]] | None = None,
                 journal: Journal | None = None, append_to: Path | None = None) -> None:
        self.task = task
        #: a resumed or replayed run's journal (`agentkit.journal`): calls it holds answers
        #: for are answered from it; `append_to`: the existing ledger a resumed run continues
        self.journal = journal
        if journal is not None:
            journal.emit = self.emit
        self.append_to = append_to
        #: (path, sha256) of the task file the task was read from, recorded at run.started
        self.task_file: tuple[str, str] | None = None
        self.run_id = check_run_id(run_id) if run_id is not None else new_run_id()
        self.clock: Clock = clock or SystemClock()
        self.bus = EventBus(self.run_id, clock=self.clock, sinks=sinks)
        self.environ: Mapping[str, str] = environ if environ is not None else os.environ
        self.ledger_dir = Path(ledger_dir) if ledger_dir is not None else None
        #: the ledger folder, resolved on first use (one path walk a run, not one a tool call)
        self._protected: tuple[Path, ...] | None = None
        self.ledger_path: Path | None = None
        self.fsync = fsync
        self.workspace = Path(workspace or task.workspace or ".").resolve()
        self.limits = ResourceLimits({"sandbox": task.sandbox.max_concurrency,
                                      "fetch": task.fetch.max_concurrency,
                                      "agents": task.budget.max_agents})
        self.rate_limits = rate_limits or RateLimits(self.clock)
        self.usage = RunUsage()
        self.resources = Resources()
        self._policy = RetryPolicy.from_spec(task.retry)
        self._own_tools = list(tools or ())
        self._tools: ToolRegistry | None = None
        self._tools_ready = False
        self._ledger: Ledger | None = None
        self._prompts: Prompts | None = None
        self._rounds: dict[tuple[str | None, int, str | None], int] = {}
        #: tool calls that wait for a person's yes (the task's ``approval``)
        self.approvals = Approvals(task.approval, clock=self.clock, emit=self.emit)
        self.closed = False

    # -- events -------------------------------------------------------------------------------

    def emit(self, kind: EventKind, data: dict[str, Any] | None = None, *,
             node_id: str | None = None) -> Event:
        return self.bus.emit(kind, data, node_id=node_id)

    def secrets(self) -> list[str]:
        """Values of every environment variable a model reads a key from, or an MCP server
        gets (passed through or sent as a header), for redaction."""
        names = set().union(*(api_key_envs(m) for m in self.task.models.values()))
        for server in self.task.mcp_servers.values():
            names |= {*server.pass_env, *server.headers_env.values()}
        return [self.environ[n] for n in sorted(names) if self.environ.get(n)]

    def open_ledger(self) -> Path | None:
        """Create the run's audit ledger (idempotent). Called by ``async with runtime``.

        A run never writes into an existing ledger: a repeated run id is a `ConfigError`.
        """
        if self._ledger is None and self.append_to is not None:  # a resumed run: same file
            self._use_ledger(self.append_to)
        if self._ledger is not None or self.ledger_dir is None:
            return self.ledger_path
        self.ledger_dir.mkdir(parents=True, exist_ok=True)
        path = self.ledger_dir / f"{self.run_id}.jsonl"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            raise ConfigError(f"run id {self.run_id!r} already has a ledger at {path}: a run id "
                              f"is used once; start a new run without run_id, or resume that "
                              f"one") from None
        self._use_ledger(path)
        return path

    def _use_ledger(self, path: Path) -> None:
        """Write the run's events to the ledger at `path` (a new one, or the one a resumed run
        continues) and take the approval decisions beside it."""
        self.ledger_path = path
        self._ledger = Ledger(path, secrets=self.secrets(), fsync=self.fsync)
        # first, and approval requests are written through: a request is on disk before any
        # other consumer (the terminal prompt, `agentkit approve`) sees it, so it outlives a crash
        self.bus.add_sink(self._ledger.append, first=True)
        # decisions already there (made while the run was down) count at once
        self.approvals.attach(approvals_file(path))

    @property
    def ledger(self) -> Ledger | None:
        return self._ledger

    @property
    def prompts(self) -> Prompts:
        """The run's prompt templates (package defaults with the task's overrides)."""
        if self._prompts is None:
            self._prompts = Prompts.for_task(self.task)
        return self._prompts

    # -- tools and models ---------------------------------------------------------------------

    @property
    def tools(self) -> ToolRegistry:
        """The run's tools: the task's built-ins and Python tools, those given to the
        constructor, and the tools of the task's MCP servers (after `prepare_tools`, which the
        run lifecycle calls before any agent starts)."""
        registry = self.resolve_tools()
        if not self._tools_ready and self.task.mcp_references():
            raise ConfigError("this task uses MCP servers: `await runtime.prepare_tools()` "
                              "starts them and lists their tools first")
        return registry

    def resolve_tools(self) -> ToolRegistry:
        """The tools known without starting anything: built-ins, Python tools (import
        references of the task, and those given to the constructor). Raises `ConfigError` for
        a reference that cannot be imported or two tools with one name."""
        if self._tools is not None:
            return self._tools
        registry = build_registry(n for n in self.task.tools if n in BUILTIN_TOOLS)
        own = [t for e in self.task.tools if ":" in e
               for t in load_reference(e, self.task.tools_path)]
        for tool in [*own, *iter_tools(self._own_tools, "tools=")]:
            self._check_name(tool)
            registry.add(tool, replace=False)
        self._apply_limits(registry)
        self._tools = registry
        return registry

    async def prepare_tools(self) -> ToolRegistry:
        """All of the run's tools, starting the MCP servers the task names (once; their
        sessions are run resources, closed with the run). A server that cannot start is a
        `SetupError`, a refused address or missing variable a `ConfigError`."""
        registry = self.resolve_tools()
        if self._tools_ready or not self.task.mcp_references():
            return await self._ready(registry)
        clash = sorted(set(self.task.mcp_references()) & set(registry.names()))
        if clash:
            raise ConfigError(f"{', '.join(map(repr, clash))} names both an MCP server and a "
                              f"tool; rename the server or the tool")
        module = require("agentkit.tools.mcp", "mcp", feature="MCP servers (mcp_servers)")
        loader = cast(_McpLoader, module.load_mcp_tools)
        tools, groups = await loader(
            self.task, taken={*registry.names(), *RESERVED_TOOL_NAMES, *BUILTIN_TOOLS},
            resources=self.resources, emit=self.emit, environ=self.environ,
            workspace=self.workspace)
        for tool in tools:
            registry.add(tool, replace=False)
        registry.groups.update(groups)
        self._apply_limits(registry)
        return await self._ready(registry)

    async def _ready(self, registry: ToolRegistry) -> ToolRegistry:
        """Check the approvals against the tools, and let each tool start what its first call
        would wait for (once per run)."""
        self._check_approvals(registry)
        if not self._tools_ready:
            self._tools_ready = True
            ctx = self.tool_context()
            for tool in registry:
                await tool.prepare(ctx)
        return registry

    async def planned(self, plan: PlanGraph, *, node_id: str | None = None) -> None:
        """Tell every tool of the run that `plan`'s nodes are about to start (`Tool.planned`;
        `node_id`: the node that delegated it). A strict replay runs nothing live: no tool
        is told."""
        if self.journal is not None and self.journal.strict:
            return
        ctx = self.tool_context(node_id=node_id)
        for tool in self.tools:
            await tool.planned(plan, ctx)

    def _check_approvals(self, registry: ToolRegistry) -> ToolRegistry:
        """Every entry of ``approval.tools`` names a tool of the run (else a `ConfigError`)."""
        unknown = unmatched_entries(self.task.approval, registry)
        if unknown:
            raise ConfigError(f"approval.tools: {', '.join(map(repr, unknown))} matches no tool "
                              f"of the run (tools: {', '.join(registry.names()) or 'none'}); "
                              f"name a tool, an MCP server or 'server.tool'")
        return registry

    @staticmethod
    def _check_name(tool: Tool) -> None:
        if tool.name in RESERVED_TOOL_NAMES:
            raise ConfigError(f"the tool name {tool.name!r} ({tool!r}) is reserved for the "
                              f"engine's own tool; give it another name (@tool(name=...))")

    def _apply_limits(self, registry: ToolRegistry) -> None:
        for tool in registry:
            if tool.concurrency_limit is not None and \
                    self.limits.limit(tool.concurrency_class) is None:
                self.limits.set(tool.concurrency_class, tool.concurrency_limit)

    def tool_context(self, *, node_id: str | None = None, agent_id: str | None = None,
                     call_id: str | None = None, call_key: str | None = None) -> ToolContext:
        """What a tool call made by `node_id`/`agent_id` may use (on a resumed run, with what
        the ledger says of the call if it was in flight at the crash)."""
        if self._protected is None:
            self._protected = (self.ledger_dir.resolve(),) if self.ledger_dir is not None else ()
        in_flight = None
        if self.journal is not None and call_key is not None:
            in_flight = self.journal.in_flight_call(call_key)
        return ToolContext(task=self.task, workspace=self.workspace, events=self.emit,
                           clock=self.clock, limits=self.limits, resources=self.resources,
                           run_id=self.run_id, protected=self._protected, node_id=node_id,
                           agent_id=agent_id, call_id=call_id, call_key=call_key,
                           in_flight=in_flight)

    async def model(self, name: str) -> ManagedModel:
        """The model `name` of ``task.models`` (built once, with budgets, retries, limits)."""
        spec = self.task.models.get(name)
        if spec is None:
            raise ConfigError(f"model {name!r} is not defined in the task's models "
                              f"(defined: {sorted(self.task.models)})")

        async def make() -> ManagedModel:
            model = build_model(name, spec, clock=self.clock, events=self.emit, usage=self.usage,
                                policy=self._policy, price=price_for(name, spec, self.task),
                                rate_limits=self.rate_limits, resolve=self.model,
                                environ=self.environ, think=self.task.think)
            model.journal = self.journal
            return model

        async def close(model: ManagedModel) -> None:
            await model.aclose()

        return await self.resources.get(f"model:{name}", make, close)

    def next_round(self, node_id: str | None, attempt: int, agent_id: str | None) -> int:
        """The number of this agent run among those of `agent_id` in a node's attempt (1, 2 ...):
        part of each call's key, so a second round (a synthesizer's fix) has keys of its own."""
        key = (node_id, attempt, agent_id)
        self._rounds[key] = self._rounds.get(key, 0) + 1
        return self._rounds[key]

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        self.open_ledger()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release every resource (containers, connections, models) and close the ledger."""
        if self.closed:
            return
        self.closed = True
        try:
            await self.resources.aclose()
        finally:
            if self._ledger is not None:
                self._ledger.close()
