"""`agentkit tool`: run one tool directly (built-in, Python or MCP), with a task's settings or
the defaults."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentkit.cli._app import EXIT_BAD_INPUT, EXIT_FAILED, app, fail, load, out, user_errors
from agentkit.errors import SetupError, ToolError
from agentkit.task import TOOL_NAMES, TaskSpec

if TYPE_CHECKING:
    from agentkit.tools import Tool, ToolRegistry


def default_task() -> TaskSpec:
    """The task used by `agentkit tool` without --task: every tool (no model is called)."""
    return TaskSpec(name="cli-tool", goal="run one tool from the command line",
                    tools=list(TOOL_NAMES))


def parse_args(text: str) -> dict[str, Any]:
    """`--args` as a JSON object, or exit 2 saying what is wrong with it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        fail(f"--args is not valid UTF-8 (character {exc.start + 1} is a lone surrogate, as from "
             f"an undecodable byte); pass the arguments as UTF-8 text")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"--args is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}; "
             "example: --args '{\"path\": \"notes.txt\"}'")
    if not isinstance(value, dict):
        fail("--args must be a JSON object of argument names to values")
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        fail("--args holds a lone surrogate escape (like \\ud800) that is no character; "
             "use the character itself or a valid surrogate pair")
    return value


def narrowed(task: TaskSpec, name: str) -> TaskSpec:
    """The task with only the `tools` entries that can provide `name`: a built-in imports
    only its own module (no docker for a file tool), "server.tool" starts only its server."""

    if name in TOOL_NAMES:
        keep = [name]
    elif "." in name and name.split(".", 1)[0] in task.mcp_servers:
        keep = [name]
    else:
        keep = [e for e in task.tools if e not in TOOL_NAMES]
    return task.model_copy(update={"tools": keep})


def find_tool(registry: ToolRegistry, name: str) -> Tool | None:
    """The tool `name` (model-facing name, or "server.tool"), or None."""
    if name in registry:
        return registry.get(name)
    server, _, remote = name.partition(".")
    for tool in registry:
        origin = tool.origin
        if origin.get("server") == server and origin.get("remote_tool") == remote:
            return tool
    return None


@app.command("tool")
def tool_cmd(
    name: Annotated[str, typer.Argument(
        metavar="NAME",
        help=f"A built-in ({', '.join(TOOL_NAMES)}), a Python tool or an MCP tool of the "
             f"task as a model sees it (time_get_current_time) or as 'server.tool'; "
             f"`agentkit tools --task TASK.yaml` lists them all.")],
    args: Annotated[str, typer.Option("--args", metavar="JSON",
                                      help="Arguments as a JSON object.")] = "{}",
    task_file: Annotated[Path | None, typer.Option("--task", metavar="TASK.yaml",
                                                   help="Use this task's settings.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the tool's data as JSON.")] = False,
    ledger_dir: Annotated[Path | None, typer.Option(metavar="DIR",
                                                    help="Write an audit ledger here.")] = None,
    workspace: Annotated[Path | None, typer.Option(metavar="DIR",
                                                   help="Workspace folder for file tools.")] = None,
) -> None:
    """Run one tool directly: a built-in, a Python tool or an MCP server's tool of the task,
    e.g. `agentkit tool read_file --args '{"path": "notes.txt"}'`. Exit codes: 0 ok, 1 tool
    error (printed as {"error": {...}}), 2 bad input (unknown tool, invalid JSON or arguments,
    bad task file, a server that cannot start)."""

    task = load(task_file) if task_file is not None else default_task()
    if name in TOOL_NAMES and name not in task.tools:
        fail(f"tool {name!r} is not enabled in {task_file} (its tools: "
             f"{', '.join(task.tools) or 'none'}); add it to the task's `tools` list")
    arguments = parse_args(args)
    try:
        with user_errors():
            output = asyncio.run(_call_tool(narrowed(task, name), name, arguments, ledger_dir,
                                            workspace))
    except ToolError as err:
        out(json.dumps({"error": err.to_dict()}, ensure_ascii=False))
        bad_args = err.code in ("invalid_arguments", "unknown_tool")
        raise typer.Exit(EXIT_BAD_INPUT if bad_args else EXIT_FAILED) from None
    if output is None:
        fail(f"unknown tool {name!r}; available: {', '.join(_available(task))}")
    out(json.dumps(output.data, ensure_ascii=False, default=str) if json_out else output.content)


def _available(task: TaskSpec) -> list[str]:
    from agentkit.tools import BUILTIN_TOOLS

    return sorted({*BUILTIN_TOOLS, *(e for e in task.tools if e not in BUILTIN_TOOLS)})


async def _call_tool(task: TaskSpec, name: str, arguments: dict[str, Any], ledger_dir: Path | None,
                     workspace: Path | None) -> Any:
    from agentkit.runtime import Runtime
    from agentkit.tools import invoke_tool

    async with Runtime(task, ledger_dir=ledger_dir, workspace=workspace) as runtime:
        try:
            registry = await runtime.prepare_tools()
        except ImportError as exc:
            raise SetupError(f"tool {name!r} is not available in this install ({exc})") from None
        tool = find_tool(registry, name)
        if tool is None:
            return None
        ctx = runtime.tool_context(node_id="cli", agent_id="cli", call_id="cli-1")
        return await invoke_tool(tool, arguments, ctx)
