"""`agentkit report`: a run's ledger as one self-contained HTML page (and `run --report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from agentkit.cli._app import EXIT_FAILED, app, err_console, out, user_errors


def write_and_tell(ledger: Path, output: Path | None) -> bool:
    """Write the report; print where it is. False if the ledger's hash chain is broken (the
    report is written all the same, and says where it breaks)."""
    from agentkit.report import write_report

    with user_errors():
        made = write_report(ledger, output)
    out(f"{made.path}: report of {made.nodes} node(s), {made.bytes:,} bytes")
    if not made.verify.ok:
        err_console().print(f"{ledger}: TAMPERED at seq {made.verify.first_bad_seq}: "
                            f"{made.verify.reason} (the report shows where)", markup=False)
    return made.verify.ok


@app.command()
def report(
    ledger: Annotated[Path, typer.Argument(metavar="LEDGER.jsonl", help="A run's audit ledger.")],
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Where to write the page (default: the ledger's name, .html).")
    ] = None,
) -> None:
    """Write a run's report: one HTML file (no network needed) with the DAG, a timeline of
    nodes, model and tool calls, tokens and cost, each node's conversation, cited pages, the
    answer and the ledger's verification. Exit codes: 0 written, 1 written but the ledger is
    tampered, 2 no such ledger."""
    if not write_and_tell(ledger, output):
        raise typer.Exit(EXIT_FAILED)


def report_after_run(payload: dict[str, Any]) -> None:
    """`agentkit run --report`: the report beside the run's ledger, path on stderr."""
    ledger = payload.get("ledger")
    if not ledger:
        err_console().print("no report: the run wrote no ledger", markup=False)
        return
    from agentkit.report import write_report

    with user_errors():
        made = write_report(ledger)
    err_console().print(f"report: {made.path}", markup=False)
