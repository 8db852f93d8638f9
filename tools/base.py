"""The tool protocol: name, description, pydantic arguments, async `call`, limits.

A tool is a small class: ``args_model`` gives the JSON Schema the model sees; ``call`` does
the work and returns a `ToolOutput` (text for the model plus JSON-safe `data` for the ledger
and the CLI). Failures are raised as `agentkit.errors.ToolError` and become values the model
can read (``invoke_tool`` turns them into error results); they never crash the run.

Three kinds of tools share this protocol: the built-ins, Python functions (`agentkit.tool`)
and the tools of MCP servers. A name a model sees follows every provider's rule
(`TOOL_NAME`: 1-64 letters, digits, ``_`` or ``-``).
"""

from __future__ import annotations

import asyncio
import json
import re
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from agentkit.clock import Clock
from agentkit.errors import ConfigError, ToolError
from agentkit.events import Emitter, Event, EventKind
from agentkit.limits import ResourceLimits
from agentkit.messages import ToolSpec
from agentkit.plan import PlanGraph
from agentkit.resources import Resources
from agentkit.task import TaskSpec

T = TypeVar("T")

__all__ = ["RESERVED_TOOL_NAMES", "TOOL_NAME", "Tool", "ToolArgs", "ToolContext", "ToolOutput",
           "ToolRegistry", "invoke_tool"]

#: what every provider accepts as a tool name (OpenAI, Anthropic and Gemini agree on this)
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
#: names the engine gives its own control tools (the planner's, a node's sub-team)
RESERVED_TOOL_NAMES = frozenset({"submit_plan", "delegate"})


class ToolArgs(BaseModel):
    """Base for argument models: unknown arguments are an error the model is told about."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ToolOutput:
    #: what the model reads
    content: str
    #: JSON-safe structured result (ledger, CLI --json, tests)
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolContext:
    """What a tool may use, handed over explicitly by the run (never looked up globally).

    `task` holds the run's settings (`task.fetch`, `task.sandbox`, `task.files` ...);
    `resources` the objects the run's agents share (an HTTP client, the sandbox pool), made on
    first use with `resource`; `emit` records an event, attributed to the calling node.
    `protected` lists folders no tool may read or write, wherever they are (the ledger and
    its blobs: an agent must never be able to touch the audit trail).
    """

    task: TaskSpec
    workspace: Path
    events: Emitter
    clock: Clock
    limits: ResourceLimits
    resources: Resources
    run_id: str
    protected: tuple[Path, ...] = ()
    node_id: str | None = None
    agent_id: str | None = None
    call_id: str | None = None
    #: the call's deterministic key (``<model call key of the turn>`` with ``/m`` replaced by
    #: ``/t<index>``): what a resumed run looks its recorded result up by
    call_key: str | None = None
    #: set on a resumed run when this side-effecting call was in flight at the crash: its
    #: recorded ``tool.call`` data, and its ``tool.intent`` if the tool journalled one
    in_flight: dict[str, Any] | None = None

    def emit(self, kind: EventKind, data: dict[str, Any]) -> Event:
        return self.events(kind, data, node_id=self.node_id)

    async def resource(self, key: str, factory: Callable[[], Awaitable[T]],
                       close: Callable[[T], Awaitable[None]] | None = None) -> T:
        """A run-scoped shared object (see `agentkit.resources.Resources.get`)."""
        return await self.resources.get(key, factory, close)

    def for_call(self, call_id: str | None, *, node_id: str | None = None,
                 agent_id: str | None = None, call_key: str | None = None) -> ToolContext:
        """The same run, another call (and caller)."""
        return replace(self, call_id=call_id, node_id=node_id or self.node_id,
                       agent_id=agent_id or self.agent_id, call_key=call_key)


class Tool:
    """Base class. Subclasses set the class attributes and implement `call`."""

    name: ClassVar[str]
    description: ClassVar[str]
    args_model: ClassVar[type[ToolArgs]]
    #: seconds before the call is abandoned with a ``timeout`` tool error
    timeout_s: ClassVar[float] = 60.0
    #: calls in the same class share a concurrency limit (``fetch``, ``sandbox``, ``files``...)
    concurrency_class: ClassVar[str] = "default"
    #: True if the tool changes something outside the run (a file, a remote system). Today
    #: this is a declaration only; it is the hook durable runs use to journal a call's intent
    #: before its effect, and approvals to ask a person first.
    side_effects: ClassVar[bool] = False
    #: for a side-effecting tool: True if running a call twice does no more than running it
    #: once. A call that was in flight when a run crashed is re-run on resume only if so
    #: (or if the tool checks its own journalled intent: `checks_intent`)
    idempotent: ClassVar[bool] = False
    #: True if `call` itself decides what to do with ``ctx.in_flight`` (write_file compares
    #: the file with the hashes its intent recorded)
    checks_intent: ClassVar[bool] = False
    #: False for the engine's own control tools (the planner's `submit_plan`): they do not
    #: use the ``tool_calls`` budget
    counts_against_budget: ClassVar[bool] = True
    #: at most this many calls of the tool's `concurrency_class` at once in a run (None: the
    #: run's setting for the class, if any, else unbounded)
    concurrency_limit: ClassVar[int | None] = None

    def spec(self) -> ToolSpec:
        return _spec(self.args_model, self.name, self.description)

    def parse_arguments(self, arguments: dict[str, Any]) -> Any:
        """Validate raw arguments (raise pydantic's ValidationError or a `ToolError`)."""
        return self.args_model.model_validate(arguments)

    @property
    def origin(self) -> dict[str, Any]:
        """Where the tool comes from, recorded with each call (empty for the built-ins;
        ``{"source": "python", "ref": ...}``, ``{"source": "mcp", "server": ..., "remote_tool": ...}``
        for the others)."""
        return {}

    async def call(self, args: Any, ctx: ToolContext) -> ToolOutput:
        raise NotImplementedError

    def timeout_for(self, args: Any) -> float:
        """The deadline for one call (a tool may let the arguments shorten or extend it)."""
        return self.timeout_s

    async def prepare(self, ctx: ToolContext) -> None:
        """Called once when the run starts, before any node: start what the first call would
        otherwise wait for (web_fetch's extraction workers). Must return at once."""

    async def planned(self, plan: PlanGraph, ctx: ToolContext) -> None:
        """Called when a plan is accepted, before any of its nodes starts: the run's plan
        (from the task file or the planner; on a resumed run, the nodes still to run) and
        each sub-team's plan made by ``delegate`` (`ctx.node_id` is then the delegating
        node). Not called for a re-plan of a failed subtree, for nodes run elsewhere (the Ray
        executor's workers run their own tools) or in a strict replay (nothing runs live).
        Start what the plan's nodes will wait for (run_code warms one sandbox per node that
        can run at once). Must return at once, and a failure here must not fail the run:
        keep it for the first call to report."""

    async def replayed(self, arguments: dict[str, Any], ctx: ToolContext) -> None:
        """A resumed run handed back this call's recorded result instead of running it. A tool
        whose later calls depend on state an earlier call left (run_code's sandbox session)
        notes what to rebuild here; it must not act yet (a replay never runs anything)."""


class ToolRegistry:
    """Tools by name. Each agent gets a filtered view (its allow-list).

    `groups` name sets of tools (an MCP server's name stands for all of its tools): an
    allow-list may name a group instead of listing each tool.
    """

    def __init__(self, tools: Iterable[Tool] = (),
                 groups: dict[str, tuple[str, ...]] | None = None) -> None:
        self._tools: dict[str, Tool] = {}
        self.groups: dict[str, tuple[str, ...]] = dict(groups or {})
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool, *, replace: bool = True) -> None:
        """Add `tool`; with ``replace=False`` a name already taken is a `ConfigError`."""
        if not replace and tool.name in self._tools:
            raise ConfigError(f"two tools are named {tool.name!r}: "
                              f"{_describe(self._tools[tool.name])} and {_describe(tool)}; "
                              f"give one another name (@tool(name=...))")
        self._tools[tool.name] = tool

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise ToolError("unknown_tool", f"no tool named {name!r}; available: "
                            f"{sorted(self._tools)}", tool=name) from None

    def names(self) -> list[str]:
        return sorted(self._tools)

    def expand(self, names: Iterable[str]) -> set[str]:
        """Tool names, with each group name replaced by the tools of the group."""
        out: set[str] = set()
        for name in names:
            out.update(self.groups.get(name, (name,)))
        return out

    def only(self, names: Iterable[str]) -> ToolRegistry:
        allowed = self.expand(names)
        return ToolRegistry((t for n, t in self._tools.items() if n in allowed),
                            {g: m for g, m in self.groups.items() if set(m) <= allowed})

    def specs(self) -> list[ToolSpec]:
        return [self._tools[n].spec() for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def __iter__(self) -> Iterator[Tool]:
        return iter([self._tools[n] for n in self.names()])


#: argument model -> its JSON schema, and the specs made with it by (name, description). Every
#: turn lists the tools: generating the schema took a quarter of the engine's CPU in
#: `benchmarks/swarm_scale.py`, and building a `ToolSpec` validates (copies) it. Weak, so models
#: made per run (Python and MCP tools) go with their run. Shared and read-only: the adapters
#: copy a spec onto the wire, never change it.
_SPECS: weakref.WeakKeyDictionary[
    type[BaseModel], tuple[dict[str, Any], dict[tuple[str, str], ToolSpec]]] = \
    weakref.WeakKeyDictionary()


def _spec(args_model: type[BaseModel], name: str, description: str) -> ToolSpec:
    """The (frozen, shared) spec of a tool with these arguments, name and description."""
    entry = _SPECS.get(args_model)
    if entry is None:
        schema = args_model.model_json_schema()
        schema.pop("title", None)
        entry = _SPECS[args_model] = (schema, {})
    schema, specs = entry
    spec = specs.get((name, description))
    if spec is None:
        spec = specs[name, description] = ToolSpec(name=name, description=description,
                                                   parameters=schema)
    return spec


def _describe(tool: Tool) -> str:
    origin = tool.origin
    if origin.get("source") == "python":
        return f"the Python tool {origin.get('ref')}"
    if origin.get("source") == "mcp":
        return f"the tool {origin.get('remote_tool')!r} of MCP server {origin.get('server')!r}"
    return f"the built-in {type(tool).__name__}"


def parse_args(tool: Tool, arguments: dict[str, Any]) -> Any:
    """Validate raw arguments; a bad argument is a ToolError the model can act on."""
    try:
        return tool.parse_arguments(arguments)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or '(arguments)'}: {e['msg']}" for e in exc.errors()
        )
        raise ToolError("invalid_arguments", f"{problems}. Expected JSON schema: "
                        f"{json.dumps(tool.spec().parameters)[:2000]}", tool=tool.name) from None


async def invoke_tool(tool: Tool, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutput:
    """Validate, run under the tool's timeout and concurrency class, record call and result.

    Raises `ToolError` (never anything else for a tool's own failure); the caller decides
    whether to hand it to the model (the agent loop) or print it (the CLI).
    """
    ctx.emit("tool.call", {"tool": tool.name, "call_id": ctx.call_id, "call_key": ctx.call_key,
                           "arguments": arguments,
                           "side_effects": tool.side_effects,  # the ledger writes these through
                           "idempotent": tool.idempotent, **tool.origin})
    started = ctx.clock.monotonic()
    try:
        _check_in_flight(tool, ctx)
        args = parse_args(tool, arguments)
        timeout = tool.timeout_for(args)
        async with ctx.limits.slot(tool.concurrency_class):
            try:
                # a deadline on this task, not wait_for's extra task, future and callbacks
                async with asyncio.timeout(timeout):
                    output = await tool.call(args, ctx)
            except TimeoutError:
                raise ToolError("timeout", f"the call took longer than {timeout:g} s",
                                tool=tool.name, retry_hint="simplify the request or retry once") from None
    except ToolError as err:
        if err.tool is None:
            err.tool = tool.name
        ctx.emit("tool.result", {"tool": tool.name, "call_id": ctx.call_id,
                                 "call_key": ctx.call_key, "ok": False, "error": err.to_dict(),
                                 "content": err.model_text(),
                                 "duration_s": ctx.clock.monotonic() - started})
        raise
    ctx.emit("tool.result", {"tool": tool.name, "call_id": ctx.call_id, "call_key": ctx.call_key,
                             "ok": True, "data": output.data, "content": output.content,
                             "duration_s": ctx.clock.monotonic() - started})
    return output


def unsure_after_crash(tool: Tool, ctx: ToolContext) -> bool:
    """Whether this call was in flight at a crash with an effect that cannot be checked or
    safely repeated (side-effecting, not idempotent, keeping no intent of its own)."""
    return (ctx.in_flight is not None and tool.side_effects and not tool.idempotent
            and not tool.checks_intent)


def _check_in_flight(tool: Tool, ctx: ToolContext) -> None:
    """A side-effecting call that was in flight at a crash is never silently repeated: it is
    re-run only if the tool is idempotent or checks its own journalled intent, or (when the
    task has ``approval``) if a person said yes (`agentkit.agent.Agent` asks, and clears
    ``in_flight``); otherwise it fails with an error the model reads."""
    if not unsure_after_crash(tool, ctx):
        return
    ctx.emit("tool.in_flight", {"tool": tool.name, "call_key": ctx.call_key,
                                "action": "refused", "arguments": ctx.in_flight.get("arguments")
                                if ctx.in_flight else None})
    raise ToolError("in_flight_at_crash", f"this call of {tool.name} was in flight when the run "
                    f"stopped, so whether it took effect is unknown; it is not repeated because "
                    f"{tool.name} is not declared idempotent. Check its effect before calling "
                    f"it again", tool=tool.name)
