"""MCP servers' tools as agentkit tools (needs the ``[mcp]`` extra: the official ``mcp`` SDK).

A task declares servers in ``mcp_servers`` and names them in ``tools`` (a server's name brings
its tools, ``"server.tool"`` one of them). `load_mcp_tools` starts each named server once per
run (one session, shared by every agent of the run, closed with the run's resources), reads its
tool list once, and makes one `McpTool` per tool:

- the name the model sees is ``<prefix>_<tool>`` (prefix: the server's name by default), made
  safe for every provider (``^[a-zA-Z0-9_-]{1,64}$``: other characters become ``_``, a long
  name is cut and given a hash) and unique: a name already taken by a built-in, a Python tool,
  a server or another server's tool gets a short hash suffix (recorded in ``mcp.tools``);
- the argument schema is the server's, and arguments are checked against it before the call
  (a bad argument is an ``invalid_arguments`` error the model can act on);
- ``side_effects`` follows the server's ``readOnlyHint`` unless the task says otherwise, and
  ``idempotent`` its ``idempotentHint`` (a durable run re-runs a side-effecting call that was
  in flight at a crash only if the tool is idempotent);
- results are mapped by `agentkit.tools._mcp_content` (``isError`` is a tool error), bounded by
  ``max_result_chars``; per-call timeouts and the concurrency limit come from the server's
  settings.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import mcp_types as types

from agentkit.errors import ConfigError, ToolError
from agentkit.events import Emitter
from agentkit.messages import ToolSpec
from agentkit.resources import Resources
from agentkit.task import McpServerSpec, TaskSpec
from agentkit.tools._mcp_content import render_result
from agentkit.tools._mcp_session import McpServer
from agentkit.tools._ssrf import Resolver
from agentkit.tools.base import TOOL_NAME, Tool, ToolArgs, ToolContext, ToolOutput

__all__ = ["McpTool", "load_mcp_tools", "model_name"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_MAX_DESCRIPTION = 2000


def model_name(prefix: str, remote: str, server: str, taken: set[str]) -> str:
    """The provider-safe, unique name the model sees for tool `remote` of `server`."""
    base = _UNSAFE.sub("_", f"{prefix}_{remote}" if prefix else remote) or "tool"

    def hashed(salt: str) -> str:
        digest = hashlib.sha256(f"{server}/{remote}{salt}".encode()).hexdigest()[:8]
        return f"{base[:55]}_{digest}"

    name = base if len(base) <= 64 else hashed("")
    n = 0
    while name in taken:
        n += 1
        name = hashed(f"#{n}" if n > 1 else "")
    assert TOOL_NAME.match(name), name
    return name


class McpTool(Tool):
    """One tool of an MCP server (a subclass is made per tool by `load_mcp_tools`)."""

    server: ClassVar[McpServer]
    remote_name: ClassVar[str]
    input_schema: ClassVar[dict[str, Any]]
    max_result_chars: ClassVar[int]
    untrusted: ClassVar[bool]
    args_model: ClassVar[type[ToolArgs]] = ToolArgs

    def __init__(self) -> None:
        self._validator: Any = None

    @property
    def origin(self) -> dict[str, Any]:
        return {"source": "mcp", "server": self.server.name, "remote_tool": self.remote_name}

    def spec(self) -> ToolSpec:
        return ToolSpec(name=self.name, description=self.description,
                        parameters=self.input_schema)

    def parse_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Check the arguments against the server's schema (a server with a schema that is no
        valid JSON Schema gets them unchecked: it validates them itself)."""
        if self._validator is None:
            try:
                cls = jsonschema.validators.validator_for(self.input_schema)
                cls.check_schema(self.input_schema)
                self._validator = cls(self.input_schema)
            except (jsonschema.SchemaError, TypeError):
                self._validator = False
        if self._validator:
            problems = [f"{'.'.join(str(p) for p in e.absolute_path) or '(arguments)'}: "
                        f"{e.message}" for e in self._validator.iter_errors(arguments)]
            if problems:
                raise ToolError("invalid_arguments", "; ".join(problems[:10])[:2000] +
                                f". Expected JSON schema: {_schema_text(self.input_schema)}",
                                tool=self.name)
        return dict(arguments)

    def timeout_for(self, args: Any) -> float:
        """The call's deadline, plus the start-up time when the server must (re)start first."""
        startup = self.server.spec.startup_timeout_s if self.server.needs_start else 0.0
        return self.timeout_s + startup

    async def call(self, args: Any, ctx: ToolContext) -> ToolOutput:
        result = await self.server.call(self.remote_name, args)
        return render_result(result, server=self.server.name, tool=self.remote_name,
                             untrusted=self.untrusted, limit=self.max_result_chars)


def _schema_text(schema: dict[str, Any]) -> str:
    return json.dumps(schema)[:2000]


def _input_schema(tool: types.Tool) -> dict[str, Any]:
    """The server's argument schema in the shape every provider accepts (an object)."""
    schema = dict(tool.input_schema or {})
    for key in ("$schema", "title"):
        schema.pop(key, None)
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    return schema


def _side_effects(tool: types.Tool, spec: McpServerSpec) -> bool:
    if spec.side_effects is not None:
        return spec.side_effects
    hints = tool.annotations
    return not (hints is not None and hints.read_only_hint is True)


def _idempotent(tool: types.Tool) -> bool:
    return tool.annotations is not None and tool.annotations.idempotent_hint is True


def _make_tool(server: McpServer, spec: McpServerSpec, tool: types.Tool, name: str) -> McpTool:
    title = tool.title or (tool.annotations.title if tool.annotations else None)
    text = (tool.description or title or f"The {tool.name} tool of the MCP server "
            f"{server.name}.")[:_MAX_DESCRIPTION]
    attrs = {"name": name, "description": text, "server": server, "remote_name": tool.name,
             "input_schema": _input_schema(tool), "side_effects": _side_effects(tool, spec),
             "idempotent": _idempotent(tool),
             "timeout_s": spec.timeout_s, "max_result_chars": spec.max_result_chars,
             "untrusted": spec.untrusted, "concurrency_class": f"mcp:{server.name}",
             "concurrency_limit": spec.max_concurrency}
    cls = type(f"McpTool[{server.name}.{tool.name}]", (McpTool,), attrs)
    made: McpTool = cls()
    return made


async def load_mcp_tools(task: TaskSpec, *, taken: Iterable[str], resources: Resources,
                         emit: Emitter, environ: Mapping[str, str], workspace: Path,
                         resolver: Resolver | None = None,
                         ) -> tuple[list[Tool], dict[str, tuple[str, ...]]]:
    """The tools of every MCP server the task's `tools` names, and the groups (server name ->
    its tools' names). Starts those servers (in declaration order) as run resources."""
    used = set(taken) | set(task.mcp_servers)
    tools: list[Tool] = []
    groups: dict[str, tuple[str, ...]] = {}
    refs = task.mcp_references()
    for server_name, spec in task.mcp_servers.items():
        if server_name not in refs:
            continue  # declared but not used: never started

        async def make(n: str = server_name, s: McpServerSpec = spec) -> McpServer:
            return McpServer(n, s, emit=emit, environ=environ, workspace=workspace,
                             resolver=resolver)

        async def close(server: McpServer) -> None:
            await server.aclose()

        server = await resources.get(f"mcp:{server_name}", make, close)
        listed = await server.list_tools()
        chosen = _choose(server_name, spec, listed, refs[server_name])
        prefix = server_name if spec.prefix is None else spec.prefix
        names, renamed = [], {}
        for tool in chosen:
            name = model_name(prefix, tool.name, server_name, used)
            used.add(name)
            names.append(name)
            if name != _UNSAFE.sub("_", f"{prefix}_{tool.name}" if prefix else tool.name):
                renamed[name] = tool.name
            tools.append(_make_tool(server, spec, tool, name))
        groups[server_name] = tuple(names)
        emit("mcp.tools", {"server": server_name, "listed": len(listed), "offered": names,
                           "renamed": renamed, "truncated": len(chosen) < len(listed)
                           and refs[server_name] is None})
    return tools, groups


def _choose(server: str, spec: McpServerSpec, listed: list[types.Tool],
            picked: set[str] | None) -> list[types.Tool]:
    """The listed tools the task uses: those picked by name, or the first `max_tools`."""
    unique: dict[str, types.Tool] = {}
    for tool in listed:
        unique.setdefault(tool.name, tool)  # a name listed twice: the first counts
    if picked is not None:
        missing = sorted(picked - set(unique))
        if missing:
            have = ", ".join(list(unique)[:50]) or "none"
            raise ConfigError(f"tools: the MCP server {server!r} has no tool "
                              f"{', '.join(map(repr, missing))} (it has: {have})")
        return [unique[n] for n in unique if n in picked]
    return list(unique.values())[:spec.max_tools]
