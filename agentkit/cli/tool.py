"""`agentkit tool`: run one tool directly, with a task's settings or the defaults."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from agentkit.cli._app import EXIT_BAD_INPUT, EXIT_FAILED, app, fail, load, out, user_errors
from agentkit.errors import SetupError, ToolError
from agentkit.task import TOOL_NAMES


def default_task() -> Any:
    """The task used by `agentkit tool` without --task: every tool (no model is called)."""
    from agentkit.task import TOOL_NAMES, TaskSpec

    return TaskSpec(name="cli-tool", goal="run one tool from the command line",
                    tools=list(TOOL_NAMES))  # type: ignore[arg-type]


def _parse_args(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"--args is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}; "
              "example: --args '{\"path\": \"notes.txt\"}'")
    if not isinstance(value, dict):
        fail("--args must be a JSON object of argument names to values")
    return value


@app.command("tool")
def tool_cmd(
    name: Annotated[str, typer.Argument(metavar="NAME",
                                        help=f"The tool: {', '.join(TOOL_NAMES)}.")],
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
    """Run one tool directly, e.g. `agentkit tool read_file --args '{"path": "notes.txt"}'`.
    Exit codes: 0 ok, 1 tool error (printed as {"error": {...}}), 2 bad input (unknown tool,
    invalid JSON or arguments, bad task file)."""
    from agentkit.tools import BUILTIN_TOOLS

    task = load(task_file) if task_file is not None else default_task()
    if name not in BUILTIN_TOOLS:
        fail(f"unknown tool {name!r}; available: {', '.join(sorted(BUILTIN_TOOLS))}")
    if name not in task.tools:
        fail(f"tool {name!r} is not enabled in {task_file} (its tools: "
              f"{', '.join(task.tools) or 'none'}); add it to the task's `tools` list")
    arguments = _parse_args(args)
    try:
        with user_errors():
            output = asyncio.run(_call_tool(task, name, arguments, ledger_dir, workspace))
    except ToolError as err:
        out(json.dumps({"error": err.to_dict()}, ensure_ascii=False))
        bad_args = err.code in ("invalid_arguments", "unknown_tool")
        raise typer.Exit(EXIT_BAD_INPUT if bad_args else EXIT_FAILED) from None
    out(json.dumps(output.data, ensure_ascii=False, default=str) if json_out else output.content)


async def _call_tool(task: Any, name: str, arguments: dict[str, Any], ledger_dir: Path | None,
                     workspace: Path | None) -> Any:
    from agentkit.runtime import Runtime
    from agentkit.tools import build_registry, invoke_tool

    async with Runtime(task, ledger_dir=ledger_dir, workspace=workspace) as runtime:
        try:  # only this tool's module is imported (not docker for a file tool)
            tool = build_registry([name]).get(name)
        except ImportError as exc:
            raise SetupError(f"tool {name!r} is not available in this install ({exc})") from None
        ctx = runtime.tool_context(node_id="cli", agent_id="cli", call_id="cli-1")
        return await invoke_tool(tool, arguments, ctx)


