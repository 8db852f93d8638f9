"""The ``agentkit`` command line: run, validate, audit, tool, sandbox.

Exit codes, the same for every command:

    0    success (run succeeded, file valid, ledger intact, tool ok)
    1    the work failed (run failed, ledger tampered, tool returned an error)
    2    bad input (task file, arguments, unknown tool, missing setup): the message says what
    130  interrupted (Ctrl-C); the run is cancelled cleanly and its ledger closed

Machine-readable output (``--json``) goes to stdout as one JSON object; progress and human
messages go to stderr, so ``agentkit run task.yaml --json | jq`` works.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from agentkit.errors import AgentkitError, SetupError, ToolError, UserError

__all__ = ["app", "main"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
_EXIT_HELP = "Exit codes: 0 ok, 1 failed, 2 bad input, 130 interrupted."

app = typer.Typer(name="agentkit", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False,
                  help="Planner + parallel sub-agents with tools, sandboxes and an audit ledger. "
                       + _EXIT_HELP)
audit_app = typer.Typer(no_args_is_help=True, help="Check and read audit ledgers.")
sandbox_app = typer.Typer(no_args_is_help=True, help="Build the code sandbox image.")
app.add_typer(audit_app, name="audit")
app.add_typer(sandbox_app, name="sandbox")


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    _err().print(f"error: {message}", markup=False)
    raise typer.Exit(code)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Every UserError becomes its message on stderr and exit 2 (all of a file's errors)."""
    try:
        yield
    except UserError as exc:
        console = _err()
        console.print(f"error: {exc}", markup=False)
        for other in getattr(exc, "others", []):
            console.print(f"error: {other}", markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _load(task_file: Path) -> Any:
    from agentkit.task import load_task

    with _user_errors():
        return load_task(task_file)


# ---------------------------------------------------------------------------------------------
# agentkit run


@app.command()
def run(
    task_file: Annotated[Path, typer.Argument(metavar="TASK.yaml", help="The task file.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    output: Annotated[Path | None, typer.Option(help="Output folder (overrides the task's).")] = None,
    ledger_dir: Annotated[Path | None, typer.Option(
        help="Where the audit ledger goes (default: <output or ./runs>/).")] = None,
) -> None:
    """Run a task. Exit codes: 0 succeeded, 1 run failed, 2 bad input (task file, missing API
    key variable, ...), 130 interrupted."""
    task = _load(task_file)
    if output is not None:
        task = task.model_copy(update={"output": str(output.resolve())})
    ledger = ledger_dir or Path(task.output or "runs")
    try:
        from agentkit.run import start
    except ImportError as exc:
        _fail(f"the run engine is not available in this install ({exc})")
    with _user_errors():
        code, payload = asyncio.run(_run(start, task, ledger, json_out))
    if json_out:
        _out(json.dumps(payload, ensure_ascii=False))
    raise typer.Exit(code)


async def _run(start: Any, task: Any, ledger: Path, json_out: bool) -> tuple[int, dict[str, Any]]:
    """Start the run with the progress display as a sink; Ctrl-C cancels it cleanly (asyncio
    cancels this coroutine; we cancel the run and wait for its ledger to close)."""
    from agentkit.progress import ProgressDisplay

    console = _err()
    with ProgressDisplay(console) as progress:
        handle = start(task, ledger_dir=ledger, sinks=[progress])
        try:
            result = await handle.result()
        except asyncio.CancelledError:
            handle.cancel()
            result = await _after_cancel(handle)
            return EXIT_INTERRUPTED, _payload(result, handle, "cancelled")
        except UserError:
            raise
        except AgentkitError as exc:
            ledger_path = getattr(handle.runtime, "ledger_path", None)
            payload = {"run_id": handle.run_id, "status": "failed", "answer": None,
                       "citations": [], "ledger": str(ledger_path) if ledger_path else None,
                       "usage": {}, "cost_usd": 0.0, "error": exc.to_dict()}
            console.print(f"run failed: {exc}", markup=False)
            return EXIT_FAILED, payload
    payload = _payload(result, handle, result.status)
    if not json_out:
        _report(console, payload)
    code = {"succeeded": EXIT_OK, "cancelled": EXIT_INTERRUPTED}.get(result.status, EXIT_FAILED)
    if code == EXIT_FAILED and _is_user_error(payload.get("error")):
        code = EXIT_BAD_INPUT  # e.g. the API key variable is not set: the user must act
    return code, payload


def _is_user_error(error: Any) -> bool:
    """Whether a run's error dict names a UserError subclass (exit 2 rather than 1)."""
    import agentkit.errors as errors

    cls = getattr(errors, str((error or {}).get("type")), None) if isinstance(error, dict) else None
    return isinstance(cls, type) and issubclass(cls, UserError)


async def _after_cancel(handle: Any) -> Any:
    """Wait (at most 30 s) for the cancelled run to close its resources and its ledger. The
    cancellation is issued once: a second one would land in the run's own clean-up."""
    try:
        return await asyncio.wait_for(handle.result(), timeout=30)
    except (asyncio.CancelledError, TimeoutError, AgentkitError):
        return None


def _payload(result: Any, handle: Any, status: str) -> dict[str, Any]:
    if result is None:
        ledger_path = getattr(handle.runtime, "ledger_path", None)
        return {"run_id": handle.run_id, "status": status, "answer": None, "citations": [],
                "ledger": str(ledger_path) if ledger_path else None, "usage": {}, "cost_usd": 0.0}
    full = result.model_dump(mode="json")
    payload = {k: full.get(k) for k in ("run_id", "status", "answer", "citations", "ledger",
                                        "usage", "cost_usd", "ungrounded")}
    payload["nodes"] = _node_timings(full.get("nodes") or {})
    payload["ledger_head"] = full.get("ledger_head")
    error = full.get("error")
    if error or full.get("status") != "succeeded":
        # flat in JSON, as every other agentkit error dict: {type, message, <facts>}
        payload["error"] = {"type": error["type"], "message": error["message"],
                            **error.get("details", {})} if error else None
    return payload


def _node_timings(nodes: dict[str, Any]) -> dict[str, Any]:
    """Each node's status, start and duration in seconds from the first node's start."""
    starts = [n["started"] for n in nodes.values() if n.get("started") is not None]
    zero = min(starts) if starts else 0.0
    out: dict[str, Any] = {}
    for node_id, n in nodes.items():
        started, finished = n.get("started"), n.get("finished")
        out[node_id] = {
            "status": n.get("status"), "attempts": n.get("attempts"),
            "start_s": round(started - zero, 3) if started is not None else None,
            "duration_s": round(finished - started, 3)
            if started is not None and finished is not None else None}
    return out


def _report(console: Console, payload: dict[str, Any]) -> None:
    """Human output: the answer on stdout; the DAG with timings and the summary on stderr."""
    for node_id, n in (payload.get("nodes") or {}).items():
        when = (f"start {n['start_s']:7.2f}s  took {n['duration_s']:7.2f}s"
                if n.get("duration_s") is not None else "")
        console.print(f"  node {node_id:<24} {n.get('status') or '':<10} {when}", markup=False)
    if payload.get("ungrounded"):
        console.print(f"ungrounded (no tool produced these): {', '.join(payload['ungrounded'])}",
                      markup=False)
    if payload.get("answer"):
        _out(str(payload["answer"]))
    for cite in payload.get("citations") or []:
        _out(f"  [{cite.get('n', '-')}] {cite.get('url')}")
    usage = payload.get("usage") or {}
    console.print(f"{payload['status']}: run {payload['run_id']}, "
                  f"{usage.get('input_tokens', 0):,} in / {usage.get('output_tokens', 0):,} out "
                  f"tokens, ${payload.get('cost_usd') or 0:.4f}; ledger {payload.get('ledger')}",
                  markup=False)
    if payload.get("error"):
        console.print(f"error: {payload['error'].get('message', payload['error'])}", markup=False)


# ---------------------------------------------------------------------------------------------
# agentkit validate


@app.command()
def validate(
    task_file: Annotated[Path, typer.Argument(metavar="TASK.yaml", help="The task file.")],
) -> None:
    """Check a task file without running it. Exit codes: 0 valid, 2 invalid (FILE:LINE:COL)."""
    task = _load(task_file)
    _out(f"{task_file}: valid ({task.mode} task {task.name!r}, {len(task.models)} model(s), "
         f"tools: {', '.join(task.tools) or 'none'})")


# ---------------------------------------------------------------------------------------------
# agentkit audit verify / show


def _ledger_file(path: Path) -> Path:
    if not path.is_file():
        _fail(f"{path}: no such ledger file")
    return path


@audit_app.command("verify")
def audit_verify(
    ledger: Annotated[Path, typer.Argument(metavar="LEDGER.jsonl")],
    expect_head: Annotated[str | None, typer.Option(
        help="The head hash recorded elsewhere; detects lines cut from the end.")] = None,
) -> None:
    """Recompute the hash chain. Exit codes: 0 intact, 1 tampered (names the first bad seq),
    2 no such file."""
    from agentkit.audit import verify_ledger

    result = verify_ledger(_ledger_file(ledger), expected_head=expect_head)
    if result.ok:
        _out(f"{ledger}: intact, {result.count} records, head {result.head}")
        return
    _out(f"{ledger}: TAMPERED at seq {result.first_bad_seq}: {result.reason} "
         f"({result.count} records verified before it)")
    raise typer.Exit(EXIT_FAILED)


@audit_app.command("show")
def audit_show(ledger: Annotated[Path, typer.Argument(metavar="LEDGER.jsonl")]) -> None:
    """Print a ledger as a readable timeline. Exit codes: 0 ok, 2 no such file."""
    from agentkit.audit import show_ledger

    for line in show_ledger(_ledger_file(ledger)):
        _out(line)


# ---------------------------------------------------------------------------------------------
# agentkit tool


def default_task() -> Any:
    """The task used by `agentkit tool` without --task: every tool, a placeholder model."""
    from agentkit.task import TOOL_NAMES, ModelSpec, TaskSpec

    return TaskSpec(name="cli-tool", goal="run one tool from the command line", model="none",
                    models={"none": ModelSpec(model="placeholder")},
                    tools=list(TOOL_NAMES))  # type: ignore[arg-type]


def _parse_args(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f"--args is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}; "
              "example: --args '{\"path\": \"notes.txt\"}'")
    if not isinstance(value, dict):
        _fail("--args must be a JSON object of argument names to values")
    return value


@app.command("tool")
def tool_cmd(
    name: Annotated[str, typer.Argument(help="Tool name, e.g. web_fetch, read_file.")],
    args: Annotated[str, typer.Option("--args", help="Arguments as a JSON object.")] = "{}",
    task_file: Annotated[Path | None, typer.Option("--task", help="Use this task's settings.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the tool's data as JSON.")] = False,
    ledger_dir: Annotated[Path | None, typer.Option(help="Write an audit ledger here.")] = None,
    workspace: Annotated[Path | None, typer.Option(help="Workspace folder for file tools.")] = None,
) -> None:
    """Run one tool directly. Exit codes: 0 ok, 1 tool error (printed as {"error": {...}}),
    2 bad input (unknown tool, invalid JSON or arguments, bad task file)."""
    from agentkit.tools import BUILTIN_TOOLS

    task = _load(task_file) if task_file is not None else default_task()
    if name not in BUILTIN_TOOLS:
        _fail(f"unknown tool {name!r}; available: {', '.join(sorted(BUILTIN_TOOLS))}")
    if name not in task.tools:
        _fail(f"tool {name!r} is not enabled in {task_file} (its tools: "
              f"{', '.join(task.tools) or 'none'}); add it to the task's `tools` list")
    arguments = _parse_args(args)
    try:
        with _user_errors():
            output = asyncio.run(_call_tool(task, name, arguments, ledger_dir, workspace))
    except ToolError as err:
        _out(json.dumps({"error": err.to_dict()}, ensure_ascii=False))
        bad_args = err.code in ("invalid_arguments", "unknown_tool")
        raise typer.Exit(EXIT_BAD_INPUT if bad_args else EXIT_FAILED) from None
    _out(json.dumps(output.data, ensure_ascii=False, default=str) if json_out else output.content)


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


# ---------------------------------------------------------------------------------------------
# agentkit sandbox build


@sandbox_app.command("build")
def sandbox_build(
    python_packages: Annotated[str, typer.Option(
        help="Extra Python packages for the image, comma-separated (e.g. numpy,pandas).")] = "",
    force: Annotated[bool, typer.Option(help="Rebuild even if the image exists.")] = False,
) -> None:
    """Build the sandbox image locally and print its tag. Exit codes: 0 built, 1 build failed,
    2 missing prerequisite (the message says what to install)."""
    try:
        from agentkit.sandboxes.image import build_image
    except ImportError as exc:
        _fail(f"the sandbox image builder is not available in this install ({exc})")
    console = _err()
    packages = [p.strip() for p in python_packages.split(",") if p.strip()]
    try:
        with _user_errors():
            tag = build_image(extra_packages=packages, force=force,
                              log=lambda line: console.print(line, markup=False))
    except AgentkitError as exc:
        _fail(str(exc), EXIT_FAILED)
    _out(str(tag))


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        _err().print("interrupted", markup=False)
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
