"""`agentkit tools`: every tool a task would offer (built-in, Python, MCP), with its source,
the name a model sees and its argument schema."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentkit.cli._app import app, err_console, load, out, user_errors
from agentkit.cli.tool import default_task
from agentkit.task import TaskSpec

if TYPE_CHECKING:
    from agentkit.tools import Tool


def describe(tool: Tool) -> dict[str, Any]:
    """One tool as `agentkit tools --json` prints it."""
    spec = tool.spec()
    origin = tool.origin
    return {"name": spec.name, "source": origin.get("source", "builtin"),
            **{k: v for k, v in origin.items() if k != "source"},
            "description": spec.description, "side_effects": tool.side_effects,
            "timeout_s": tool.timeout_s, "parameters": spec.parameters}


@app.command("tools")
def tools_cmd(
    task_file: Annotated[Path | None, typer.Option(
        "--task", help="List what this task offers (its MCP servers are started to ask).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """List the tools a task offers (without --task: the built-ins). Exit codes: 0 ok, 2 bad
    input (task file, a tool that cannot be imported, an MCP server that cannot start)."""
    task = load(task_file) if task_file is not None else default_task()
    with user_errors():
        listed, groups = asyncio.run(_list(task))
    if json_out:
        out(json.dumps({"tools": listed, "groups": groups}, ensure_ascii=False))
        return
    console = err_console()
    for item in listed:
        where = {"builtin": "built-in", "python": f"python {item.get('ref')}",
                 "mcp": f"mcp {item.get('server')}.{item.get('remote_tool')}"}[item["source"]]
        first = " ".join(item["description"].split())[:90]
        args = ", ".join(item["parameters"].get("properties", {})) or "-"
        out(f"{item['name']:<32} {where:<34} ({args}) {first}")
    for group, names in groups.items():
        console.print(f"group {group}: {', '.join(names)}", markup=False)


async def _list(task: TaskSpec) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    from agentkit.runtime import Runtime

    async with Runtime(task) as runtime:
        registry = await runtime.prepare_tools()
        return ([describe(t) for t in registry],
                {g: list(names) for g, names in registry.groups.items()})
