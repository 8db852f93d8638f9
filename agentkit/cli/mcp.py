"""`agentkit mcp serve TASK.yaml`: a task as a tool of an MCP server on stdio.

Any MCP client (an IDE, another agent) can then hand a goal to the swarm and get the cited
answer back, with the run's ledger path. Each call is one run of the task with the given goal
(or the task's own); stdout carries only the MCP protocol, logs go to stderr.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, Field

from agentkit.cli._app import app, fail, load
from agentkit.task import TaskSpec

mcp_app = typer.Typer(no_args_is_help=True, help="Serve a task to MCP clients.")
app.add_typer(mcp_app, name="mcp")


class Citation(BaseModel):
    url: str
    title: str | None = None
    content_hash: str | None = None


class TaskAnswer(BaseModel):
    """What the served tool returns (as structured content, and as JSON text)."""

    status: str
    answer: str | None
    citations: list[Citation] = Field(default_factory=list)
    ledger: str | None
    run_id: str


def tool_name(task_name: str) -> str:
    """A task's name as an MCP tool name (letters, digits, '_', '-'; at most 64)."""
    return (re.sub(r"[^A-Za-z0-9_-]", "_", task_name).strip("_") or "run_task")[:64]


@mcp_app.command("serve")
def serve(
    task_file: Annotated[Path, typer.Argument(metavar="TASK.yaml", help="The task to serve.")],
    name: Annotated[str | None, typer.Option(
        help="The tool's name (default: the task's name).")] = None,
    ledger_dir: Annotated[Path | None, typer.Option(
        help="Where each run's ledger goes (default: <task output or ./runs>/).")] = None,
) -> None:
    """Serve TASK.yaml as one MCP tool over stdio: a call with a goal runs the task and
    returns its answer, citations and ledger path. Exit codes: 0 when the client closes
    the connection, 2 bad input (task file, missing [mcp] extra)."""
    task = load(task_file)
    try:
        server = build_server(task, name or tool_name(task.name),
                              ledger_dir or Path(task.output or "runs"))
    except ImportError as exc:
        fail(f"agentkit mcp serve needs the optional extra [mcp]: pip install 'agentkit-swarm[mcp]' "
             f"({exc})")
    asyncio.run(server.run_stdio_async())


def build_server(task: TaskSpec, name: str, ledger_dir: Path) -> Any:
    """The MCP server with one tool that runs `task`."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.types import ToolAnnotations

    from agentkit._version import __version__
    from agentkit.run import arun

    server: Any = MCPServer(f"agentkit-{name}", version=__version__,
                            instructions=f"Runs the agentkit task {task.name!r}.")
    description = (f"Runs the agentkit task {task.name!r} ({task.mode} mode: "
                   + ("a planner splits the goal into sub-tasks run by parallel agents with "
                      "tools, then writes a cited answer" if task.mode == "swarm" else
                      "one agent with tools") +
                   f"). Give a goal, or none for the task's own: {task.goal[:300]!r}. Returns "
                   f"the answer, its citations and the path of the run's audit ledger.")

    async def run_task(goal: Annotated[str | None, Field(
            description="What to do; omit to run the task's own goal.")] = None) -> TaskAnswer:
        spec = task if not goal else task.model_copy(update={"goal": goal})
        result = await arun(spec, ledger_dir=ledger_dir)
        cites = [Citation(**c.model_dump()) for c in result.citations]
        if result.status != "succeeded":
            error = result.error.message if result.error else result.status
            partial = f"; partial answer: {result.answer}" if result.answer else ""
            raise ToolError(f"the run {result.status}: {error} (ledger: {result.ledger})"
                            f"{partial}")
        return TaskAnswer(status=result.status, answer=result.answer, citations=cites,
                          ledger=result.ledger, run_id=result.run_id)

    server.add_tool(run_task, name=name, description=description, annotations=ToolAnnotations(
        read_only_hint=False, open_world_hint=True))
    return server
