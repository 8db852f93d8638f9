"""Checks of a task file beyond its schema, and the names both share.

`agentkit.task` holds the schema (`TaskSpec` and its parts) and loads files; what is here
looks at the parsed YAML itself, so that every error points at the line of the file it is
about: keys written inline, references to undefined models, `tools` entries that name nothing,
MCP server names. It imports nothing of the schema, so the schema's validators can use it too.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from agentkit import _yaml
from agentkit.errors import TaskFileError
from agentkit.secrets import looks_like_secret

ToolName = Literal["web_search", "web_fetch", "run_code", "read_file", "write_file", "list_files"]
TOOL_NAMES: tuple[str, ...] = ToolName.__args__  # type: ignore[attr-defined]

#: an MCP server's name: it prefixes its tools' names, which models restrict to [A-Za-z0-9_-]
_SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
#: "package.module:function" in `tools`: a Python tool imported by the run
_IMPORT_REF = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
                         r":[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


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


_SECRET_KEYS = frozenset({"api_key", "apikey", "key", "token", "password", "secret",
                          "access_token", "auth_token", "authorization", "x_api_key"})
_NO_INLINE_KEYS = ("API keys may not be written in task files; put the key in an environment "
                   "variable and name it in api_key_env")


def resolve_tool_paths(data: dict[str, Any], base: Path) -> None:
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


def inline_secrets(src: _yaml.Located, value: Any,
                    path: tuple[str | int, ...]) -> list[TaskFileError]:
    """Keys written into the file: by key name under models (and secret-named variables in an
    MCP server's env), by shape anywhere."""
    found: list[TaskFileError] = []
    if isinstance(value, dict):
        for key, child in value.items():
            norm = key.lower().replace("-", "_")
            if path[:1] == ("models",) and norm in _SECRET_KEYS and child not in (None, ""):
                found.append(src.error((*path, key), _NO_INLINE_KEYS, key=True))
                continue
            if _is_server_env(path) and _secret_env_name(key) and child not in (None, ""):
                found.append(src.error((*path, key), f"{key} looks like a secret: never write "
                                       f"it in a task file; set it in the run's environment and "
                                       f"list its name in pass_env", key=True))
                continue
            found += inline_secrets(src, child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += inline_secrets(src, child, (*path, i))
    elif isinstance(value, str) and looks_like_secret(value):
        found.append(src.error(path, _NO_INLINE_KEYS))
    return found


_SECRET_ENV_PARTS = frozenset({"KEY", "APIKEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASS",
                               "CREDENTIAL", "CREDENTIALS", "AUTH", "AUTHORIZATION", "PAT"})


def _secret_env_name(name: str) -> bool:
    """``GITHUB_TOKEN``, ``OPENAI_API_KEY``, ``DB_PASSWORD``: a name whose value is a secret."""
    return any(part in _SECRET_ENV_PARTS for part in re.split(r"[_\-]", name.upper()))


def _is_server_env(path: tuple[str | int, ...]) -> bool:
    return len(path) == 3 and path[0] == "mcp_servers" and path[2] == "env"


def tool_entries(src: _yaml.Located) -> list[TaskFileError]:
    """Each `tools` entry names something that exists (errors point at the entry's line)."""
    data = src.data
    tools, servers = data.get("tools"), data.get("mcp_servers")
    servers = servers if isinstance(servers, dict) else {}
    found = [src.error(("mcp_servers", name), problem, key=True) for name in servers
             if isinstance(name, str) and (problem := server_name_problem(name))]
    found += [src.error(("tools", i), problem)
              for i, entry in enumerate(tools if isinstance(tools, list) else [])
              if isinstance(entry, str) and (problem := tool_entry_problem(entry, servers))]
    return found


def references(src: _yaml.Located, role_names: Iterable[str]) -> list[TaskFileError]:
    """`model`, `roles.*` and `fallbacks` must name a model defined in `models`."""
    data = src.data
    models = data.get("models")
    if not isinstance(models, dict):
        return []
    known = ", ".join(sorted(models)) or "(none)"
    refs: list[tuple[tuple[str | int, ...], Any]] = [(("model",), data.get("model"))]
    roles = data.get("roles")
    if isinstance(roles, dict):
        refs += [(("roles", r), n) for r, n in roles.items() if r in role_names]
    for mname, spec in models.items():
        fallbacks = spec.get("fallbacks") if isinstance(spec, dict) else None
        if isinstance(fallbacks, list):
            refs += [(("models", mname, "fallbacks", i), n) for i, n in enumerate(fallbacks)]
    return [src.error(path, f"model {name!r} is not defined in models; defined: {known}")
            for path, name in refs if isinstance(name, str) and name not in models]


def special_case(err: TaskFileError) -> TaskFileError:
    """Clearer words for the mistakes people make most (mode)."""
    if err.field == "mode" and err.message.startswith("expected one of"):
        msg = err.message.replace("expected one of: ", "").split(", got ")
        return TaskFileError(f"unknown mode {msg[-1].removeprefix('string ')}; expected one of: "
                             f"{msg[0]} (swarm = planner + DAG of sub-agents, agent = one agent "
                             "with tools)", file=err.file, line=err.line, column=err.column,
                             field=err.field)
    return err
