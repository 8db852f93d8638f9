"""`agentkit resume` and `agentkit replay`: continue a run from its ledger, or re-execute it
offline with every call answered from the ledger (see `agentkit.resume`)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentkit.cli._app import (
    EXIT_FAILED,
    EXIT_OK,
    app,
    apply_overrides,
    err_console,
    out,
    user_errors,
)
from agentkit.cli.run import SetOption, drive

if TYPE_CHECKING:
    from agentkit.journal import Journal

LedgerArg = Annotated[Path, typer.Argument(metavar="LEDGER.jsonl",
                                           help="The run's audit ledger (runs/<run id>.jsonl).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


@app.command()
def resume(
    ledger: LedgerArg,
    json_out: JsonOption = False,
    overrides: SetOption = [],  # noqa: B006  typer reads the default; it is never mutated
    from_divergence: Annotated[bool, typer.Option(
        "--from-divergence",
        help="Where a call's request differs from the recorded one, continue live from there "
             "instead of stopping.")] = False,
) -> None:
    """Continue a run that stopped (kill -9, OOM, reboot, Ctrl-C, a budget): same run id, same
    ledger; completed calls are answered from the ledger, only the rest is made live. The task
    is the one recorded at run.started; --set raises limits (--set budget.wall_seconds=600).
    Exit codes as `agentkit run` (0 also when the run had already succeeded: nothing runs)."""
    from agentkit.journal import read_journal
    from agentkit.resume import recorded_task
    from agentkit.resume import resume as resume_run

    with user_errors():
        journal = read_journal(ledger)
        if journal.succeeded:
            _already_finished(journal, json_out)
        task = apply_overrides(recorded_task(journal), overrides)
        code, payload = asyncio.run(drive(
            lambda sinks: resume_run(ledger, task=task, from_divergence=from_divergence,
                                     sinks=sinks), json_out))
    if json_out:
        out(json.dumps(payload, ensure_ascii=False))
    raise typer.Exit(code)


def _already_finished(journal: Journal, json_out: bool) -> None:
    from agentkit.cli.run import result_payload
    from agentkit.resume import recorded_result

    payload = result_payload(recorded_result(journal))
    payload["already_finished"] = True
    err_console().print(f"run {journal.run_id} already finished (succeeded); nothing to resume. "
                        f"Ledger {journal.path}", markup=False)
    if json_out:
        out(json.dumps(payload, ensure_ascii=False))
    raise typer.Exit(EXIT_OK)


@app.command()
def replay(
    ledger: LedgerArg,
    json_out: JsonOption = False,
    ledger_dir: Annotated[Path | None, typer.Option(
        metavar="DIR", help="Write the replay's own ledger here (default: none; the original "
                            "ledger is never written).")] = None,
) -> None:
    """Re-execute a recorded run with every model and tool call answered from its ledger: no
    network, no Docker, no API keys. Exit codes: 0 the replay reached the recorded answer, 1 it
    did not (the first call with no recorded answer is named, with a diff of its request
    against the nearest recorded one), 2 bad input (not a ledger, no recorded task)."""
    from agentkit.resume import replay as replay_run

    with user_errors():
        code, payload = asyncio.run(drive(
            lambda sinks: replay_run(ledger, ledger_dir=ledger_dir, sinks=sinks), True))
    code, verdict = _verdict(ledger, payload, code)
    payload["replay"] = verdict
    if json_out:
        out(json.dumps(payload, ensure_ascii=False))
    else:
        _say_verdict(verdict, payload)
    raise typer.Exit(code)


def _verdict(ledger: Path, payload: dict[str, Any], code: int) -> tuple[int, dict[str, Any]]:
    """Whether the replay reached the recorded answer, and else the first call it missed."""
    from agentkit.journal import read_journal

    recorded = read_journal(ledger).finished or {}
    error = payload.get("error") or {}
    verdict: dict[str, Any] = {
        "matches": payload.get("answer") == recorded.get("answer")
        and payload.get("status") == recorded.get("status"),
        "recorded_status": recorded.get("status"), "recorded_answer": recorded.get("answer"),
        "first_miss": {"call_key": error.get("call_key"), "diff": error.get("diff")}
        if error.get("type") == "ReplayMiss" else None}
    if verdict["first_miss"] is not None or not verdict["matches"]:
        return EXIT_FAILED, verdict
    return (EXIT_OK if code in (EXIT_OK, EXIT_FAILED) else code), verdict


def _say_verdict(verdict: dict[str, Any], payload: dict[str, Any]) -> None:
    say = err_console()
    if verdict["matches"] and verdict["first_miss"] is None:
        out(str(payload.get("answer") or ""))
        say.print("replay: reached the recorded answer", markup=False)
        return
    miss = verdict["first_miss"]
    if miss is not None:
        say.print(f"replay: no recorded answer for call {miss['call_key']}\n{miss['diff']}",
                  markup=False)
    else:
        say.print(f"replay: the answer differs from the recorded one\n  recorded: "
                  f"{verdict['recorded_answer']!r}\n  replayed: {payload.get('answer')!r}",
                  markup=False)
