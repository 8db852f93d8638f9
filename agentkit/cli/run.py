"""`agentkit run` and `agentkit validate`: run a task with live progress, or only check it.

Every way out of a run goes through one `TextRedactor` built from the run's configured secret
values (the API keys its models read): the live display, the answer, the summary, error
messages and ``--json``. A key the model echoes is thus redacted on stdout and stderr exactly
as it is in the ledger.

Ctrl-C, SIGTERM and SIGHUP stop a run the same way: the run is cancelled (every sub-agent,
HTTP stream and container), its ledger gets ``run.finished`` and is closed, the summary and the
ledger's path are printed, and the exit code is 128 + the signal's number (130, 143, 129). A
second signal while the run closes exits at once (the ledger may then lack ``run.finished``).
A signal the parent set to be ignored (``nohup`` ignores SIGHUP) stays ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from agentkit.cli._app import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    STOP_SIGNALS,
    app,
    err_console,
    exit_code_for_signal,
    load_checked,
    out,
    user_errors,
)
from agentkit.secrets import TextRedactor

if TYPE_CHECKING:
    from agentkit.events import EventSink
    from agentkit.progress import ProgressDisplay
    from agentkit.run import Run, RunResult
    from agentkit.task import TaskSpec

SetOption = Annotated[list[str], typer.Option(
    "--set", metavar="KEY=VALUE", envvar="AGENTKIT_SET",
    help="Override a task field, e.g. --set models.m.base_url=http://127.0.0.1:8000/v1 "
         "(repeatable; also AGENTKIT_SET, space-separated).")]


@app.command()
def run(
    task_file: Annotated[Path, typer.Argument(metavar="TASK.yaml", help="The task file.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    output: Annotated[Path | None, typer.Option(metavar="DIR",
                                                help="Output folder (overrides the task's).")] = None,
    ledger_dir: Annotated[Path | None, typer.Option(
        metavar="DIR", help="Where the audit ledger goes (default: the output folder, or ./runs).")
    ] = None,
    overrides: SetOption = [],  # noqa: B006  typer reads the default; it is never mutated
    otel: Annotated[bool, typer.Option(
        "--otel", help="Export OpenTelemetry traces (set up by the OTEL_* variables; "
                       "needs the otel extra).")] = False,
    report: Annotated[bool, typer.Option(
        "--report", help="Write the run's HTML report beside its ledger.")] = False,
    executor: Annotated[str | None, typer.Option(
        "--executor", metavar="local|ray",
        help="Where the nodes' sub-agents run (overrides the task's executor.kind); ray needs "
             "the ray extra.")] = None,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", metavar="ADDR",
        help="The Ray cluster (HEAD:PORT or auto); implies --executor ray.")] = None,
) -> None:
    """Run a task. Exit codes: 0 succeeded, 1 run failed, 2 bad input (task file, missing API
    key variable, ...), 130 interrupted (Ctrl-C), 143 stopped by SIGTERM, 129 by SIGHUP; the run
    is cancelled cleanly and its ledger closed in every case. On a terminal, each call that
    needs approval is asked about (y approves; Enter, n or a reason denies)."""
    task = _with_options(load_checked(task_file, overrides, environ=dict(os.environ)), output, otel)
    if executor is not None or ray_address is not None:
        task = _with_executor(task, executor, ray_address)
    ledger = (ledger_dir or Path(task.output or "runs")).resolve()
    with user_errors():
        code, payload = asyncio.run(_run(task, ledger, json_out, task_file))
    if report:
        from agentkit.cli.report import report_after_run

        report_after_run(payload)
    if json_out:
        out(json.dumps(payload, ensure_ascii=False))
    raise typer.Exit(code)


async def _run(task: TaskSpec, ledger: Path, json_out: bool,
               task_file: Path) -> tuple[int, dict[str, Any]]:
    from agentkit.run import start

    return await drive(lambda sinks: start(task, ledger_dir=ledger, sinks=sinks,
                                           task_file=task_file), json_out)


async def drive(begin: Callable[[list[EventSink]], Run],
                json_out: bool) -> tuple[int, dict[str, Any]]:
    """Start a run (`begin` gets the sinks) with the progress display as a sink, stop it
    cleanly on a signal, print the human report; the exit code and the (redacted) ``--json``
    object. `agentkit run`, `resume` and `replay` share it."""
    from agentkit.progress import ProgressDisplay

    console = err_console()
    with ProgressDisplay(console) as progress:
        handle = begin([progress])
        redactor = TextRedactor(handle.runtime.secrets())
        progress.redact = redactor.text  # before the run's first event: it has not started yet
        with _stop_on_signals(handle, progress) as stopped_by:
            ask = not json_out and handle.runtime.task.approval is not None and sys.stdin.isatty()
            result = await (_result_asking(handle, progress) if ask else handle.result())
    payload: dict[str, Any] = redactor.value(result_payload(result))
    if not json_out:
        report(console, payload)
    return _exit_code(result, stopped_by), payload


async def _result_asking(handle: Run, progress: ProgressDisplay) -> RunResult:
    """The run's result, asking on the terminal about each call that needs approval."""
    from agentkit.cli._prompt import TerminalApprover

    def write(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    approver = TerminalApprover(handle, progress, fd=sys.stdin.fileno(), write=write)
    handle.runtime.bus.add_sink(approver)
    asking = asyncio.ensure_future(approver.run())
    try:
        return await handle.result()
    finally:
        asking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asking


def _with_options(task: TaskSpec, output: Path | None, otel: bool) -> TaskSpec:
    """The task with --output and --otel applied."""
    if output is not None:
        task = task.model_copy(update={"output": str(output.resolve())})
    if otel:
        task = task.model_copy(update={"telemetry": task.telemetry.model_copy(update={"otel": True})})
    return task


def _with_executor(task: TaskSpec, kind: str | None, address: str | None) -> TaskSpec:
    """The task with --executor/--ray-address applied (checked like the task file's field)."""
    from agentkit.task import ExecutorSpec

    fields: dict[str, Any] = task.executor.model_dump()
    if kind is not None:
        if kind not in ("local", "ray"):
            err_console().print(f"--executor must be local or ray, not {kind!r}", markup=False)
            raise typer.Exit(EXIT_BAD_INPUT)
        fields["kind"] = kind
    if address is not None:
        if kind == "local":
            err_console().print("--ray-address needs --executor ray", markup=False)
            raise typer.Exit(EXIT_BAD_INPUT)
        fields.update(kind="ray", address=address)
    return task.model_copy(update={"executor": ExecutorSpec.model_validate(fields)})


def _exit_code(result: RunResult, stopped_by: list[int]) -> int:
    if result.status == "succeeded":
        return EXIT_OK
    if result.status == "cancelled":
        return exit_code_for_signal(stopped_by[0]) if stopped_by else EXIT_INTERRUPTED
    return EXIT_BAD_INPUT if _is_user_error(result.error.type if result.error else None) \
        else EXIT_FAILED


def _is_user_error(type_name: str | None) -> bool:
    """Whether a run's error names a UserError subclass (the user must act: exit 2)."""
    import agentkit.errors as errors

    cls = getattr(errors, str(type_name), None)
    return isinstance(cls, type) and issubclass(cls, errors.UserError)


@contextmanager
def _stop_on_signals(handle: Run, progress: ProgressDisplay) -> Iterator[list[int]]:
    """SIGINT, SIGTERM and SIGHUP cancel the run (the first one); a second one exits at once.
    Yields the list the first signal's number is put in."""
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        if len(received) == 1:
            progress.note(f"{signal.Signals(signum).name}: cancelling the run (closing its "
                          "sub-agents, containers and ledger); send it again to quit at once")
            handle.cancel(signal.Signals(signum).name)
            return
        progress.stop()
        err_console().print(f"{signal.Signals(signum).name} again: quitting without waiting; "
                            f"the ledger may lack run.finished", markup=False)
        os._exit(exit_code_for_signal(received[0]))

    installed = [sig for sig in STOP_SIGNALS if signal.getsignal(sig) != signal.SIG_IGN]
    for sig in installed:
        loop.add_signal_handler(sig, on_signal, int(sig))
    try:
        yield received
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


# ---------------------------------------------------------------------------------------------
# What a run printed


def result_payload(result: RunResult) -> dict[str, Any]:
    """The ``--json`` object: the result, each node's timings and error, the ledger's head."""
    from agentkit.run import head_file

    full = result.model_dump(mode="json")
    payload = {k: full.get(k) for k in ("run_id", "status", "answer", "ledger", "ledger_head",
                                        "usage", "cost_usd", "ungrounded")}
    head = head_file(result.ledger) if result.ledger else None
    payload["head_file"] = str(head) if head is not None and head.is_file() else None
    payload["citations"] = [{"n": i, **c} for i, c in enumerate(full.get("citations") or [], 1)]
    payload["nodes"] = _nodes(full.get("nodes") or {})
    error = full.get("error")
    if error or result.status != "succeeded":
        # flat, as every other agentkit error dict: {type, message, <facts>}
        payload["error"] = {"type": error["type"], "message": error["message"],
                            **error.get("details", {})} if error else None
    return payload


def _nodes(nodes: dict[str, Any]) -> dict[str, Any]:
    """Each node's status, attempts, start and duration in seconds from the first node's
    start, and its error (type, message, provider, ...) when it did not succeed."""
    starts = [n["started"] for n in nodes.values() if n.get("started") is not None]
    zero = min(starts) if starts else 0.0
    shown: dict[str, Any] = {}
    for node_id, n in nodes.items():
        started, finished = n.get("started"), n.get("finished")
        shown[node_id] = {
            "status": n.get("status"), "attempts": n.get("attempts"),
            "start_s": round(started - zero, 3) if started is not None else None,
            "duration_s": round(finished - started, 3)
            if started is not None and finished is not None else None,
            "usage": n.get("usage"), "cost_usd": n.get("cost_usd")}
        if n.get("error"):
            shown[node_id]["error"] = n["error"]
    return shown


def report(console: Console, payload: dict[str, Any]) -> None:
    """Human output: the answer and its numbered sources on stdout; the DAG with timings and
    errors, and the summary with the ledger's path and head, on stderr."""
    say: Callable[[str], None] = lambda text: console.print(text, markup=False)  # noqa: E731
    for node_id, n in (payload.get("nodes") or {}).items():
        when = (f"start {n['start_s']:7.2f}s  took {n['duration_s']:7.2f}s"
                if n.get("duration_s") is not None else "")
        say(f"  node {node_id:<24} {n.get('status') or '':<10} {when}".rstrip())
        if n.get("error"):
            say(f"       {_error_line(n['error'], n.get('attempts'))}")
    if payload.get("ungrounded"):
        say(f"ungrounded (no tool produced these): {', '.join(payload['ungrounded'])}")
    if payload.get("answer"):
        out(str(payload["answer"]))
    for cite in payload.get("citations") or []:
        title = f"  {cite['title']}" if cite.get("title") else ""
        out(f"  [{cite['n']}] {cite.get('url')}{title}")
    say(_summary(payload))
    if payload.get("error"):
        say(f"error: {_error_line(payload['error'])}")


def _summary(payload: dict[str, Any]) -> str:
    usage = payload.get("usage") or {}
    reasoning = usage.get("reasoning_tokens") or 0
    tokens = (f"{usage.get('input_tokens') or 0:,} in / {usage.get('output_tokens') or 0:,} out "
              f"tokens" + (f" ({reasoning:,} of them reasoning)" if reasoning else ""))
    line = f"{payload['status']}: run {payload['run_id']}, {tokens}, " \
           f"${payload.get('cost_usd') or 0:.4f}"
    if payload.get("ledger"):
        line += f"\nledger {payload['ledger']}"
        if payload.get("ledger_head"):
            saved = f" (saved in {payload['head_file']})" if payload.get("head_file") else ""
            line += f"\nhead {payload['ledger_head']}{saved}"
    return line


def _error_line(error: dict[str, Any], attempts: int | None = None) -> str:
    facts = [f"{k} {error[k]}" for k in ("provider", "status") if error.get(k) is not None]
    if attempts:
        facts.append(f"{attempts} attempt{'s' if attempts != 1 else ''}")
    text = f"{error.get('type', 'Error')}: {error.get('message', '')}"
    return text + (f" ({', '.join(facts)})" if facts else "")


@app.command()
def validate(
    task_file: Annotated[Path, typer.Argument(metavar="TASK.yaml", help="The task file.")],
    overrides: SetOption = [],  # noqa: B006
) -> None:
    """Check a task file without running it: everything `run` would refuse before calling a
    model, every error at once. Exit codes: 0 valid, 2 invalid (FILE:LINE:COL: ...). An API key
    variable that is not set is noted, not an error (the file is valid; the shell is not)."""
    from agentkit._preflight import problems

    task = load_checked(task_file, overrides)
    out(f"{task_file}: valid ({task.mode} task {task.name!r}, {len(task.models)} model(s), "
        f"tools: {', '.join(task.tools) or 'none'})")
    for _, message in problems(task, environ=dict(os.environ)):
        err_console().print(f"note: {message}", markup=False)
