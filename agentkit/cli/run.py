"""`agentkit run` and `agentkit validate`: run a task with live progress, or only check it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from agentkit.cli._app import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    app,
    err_console,
    load,
    out,
    user_errors,
)
from agentkit.errors import AgentkitError, UserError


@app.command()
def run(
    task_file: Annotated[Path, typer.Argument(metavar="TASK.yaml", help="The task file.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    output: Annotated[Path | None, typer.Option(help="Output folder (overrides the task's).")] = None,
    ledger_dir: Annotated[Path | None, typer.Option(
        help="Where the audit ledger goes (default: <output or ./runs>/).")] = None,
    otel: Annotated[bool, typer.Option(
        "--otel", help="Export OpenTelemetry traces (set up by the OTEL_* variables; "
                       "needs the otel extra).")] = False,
    report: Annotated[bool, typer.Option(
        "--report", help="Write the run's HTML report beside its ledger.")] = False,
) -> None:
    """Run a task. Exit codes: 0 succeeded, 1 run failed, 2 bad input (task file, missing API
    key variable, ...), 130 interrupted."""
    task = load(task_file)
    if output is not None:
        task = task.model_copy(update={"output": str(output.resolve())})
    if otel:
        task = task.model_copy(update={"telemetry": task.telemetry.model_copy(update={"otel": True})})
    ledger = ledger_dir or Path(task.output or "runs")
    from agentkit.run import start

    with user_errors():
        code, payload = asyncio.run(_run(start, task, ledger, json_out))
    if report:
        from agentkit.cli.report import report_after_run

        report_after_run(payload)
    if json_out:
        out(json.dumps(payload, ensure_ascii=False))
    raise typer.Exit(code)


async def _run(start: Any, task: Any, ledger: Path, json_out: bool) -> tuple[int, dict[str, Any]]:
    """Start the run with the progress display as a sink; Ctrl-C cancels it cleanly (asyncio
    cancels this coroutine; we cancel the run and wait for its ledger to close)."""
    from agentkit.progress import ProgressDisplay

    console = err_console()
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
        out(str(payload["answer"]))
    for cite in payload.get("citations") or []:
        out(f"  [{cite.get('n', '-')}] {cite.get('url')}")
    usage = payload.get("usage") or {}
    console.print(f"{payload['status']}: run {payload['run_id']}, "
                  f"{usage.get('input_tokens', 0):,} in / {usage.get('output_tokens', 0):,} out "
                  f"tokens, ${payload.get('cost_usd') or 0:.4f}; ledger {payload.get('ledger')}",
                  markup=False)
    if payload.get("error"):
        console.print(f"error: {payload['error'].get('message', payload['error'])}", markup=False)






@app.command()
def validate(
    task_file: Annotated[Path, typer.Argument(metavar="TASK.yaml", help="The task file.")],
) -> None:
    """Check a task file without running it. Exit codes: 0 valid, 2 invalid (FILE:LINE:COL)."""
    task = load(task_file)
    out(f"{task_file}: valid ({task.mode} task {task.name!r}, {len(task.models)} model(s), "
         f"tools: {', '.join(task.tools) or 'none'})")


