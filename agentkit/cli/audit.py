"""`agentkit audit verify` and `agentkit audit show`: check and read ledgers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agentkit.cli._app import EXIT_FAILED, audit_app, fail, out

#: `audit verify`: the ledger is whole up to a torn last line (a crash, not tampering)
EXIT_INCOMPLETE = 3


def _ledger_file(path: Path) -> Path:
    if not path.is_file():
        fail(f"{path}: no such ledger file")
    return path


@audit_app.command("verify")
def audit_verify(
    ledger: Annotated[Path, typer.Argument(metavar="LEDGER.jsonl")],
    expect_head: Annotated[str | None, typer.Option(
        help="The head hash recorded elsewhere; detects lines cut from the end.")] = None,
) -> None:
    """Recompute the hash chain. Exit codes: 0 intact, 1 tampered (names the first bad seq),
    2 no such file, 3 incomplete (only the last line is torn, as a crash or a full disk leaves
    it; every line before it verified)."""
    from agentkit.audit import verify_ledger

    result = verify_ledger(_ledger_file(ledger), expected_head=expect_head)
    if result.ok:
        out(f"{ledger}: intact, {result.count} records, head {result.head}")
        return
    if result.state == "incomplete":
        out(f"{ledger}: INCOMPLETE (torn last line at seq {result.first_bad_seq}): "
            f"{result.count} records intact, head {result.head}; {result.reason}. Reopening "
            f"the ledger cuts the torn bytes and records them")
        raise typer.Exit(EXIT_INCOMPLETE)
    out(f"{ledger}: TAMPERED at seq {result.first_bad_seq}: {result.reason} "
         f"({result.count} records verified before it)")
    raise typer.Exit(EXIT_FAILED)


@audit_app.command("show")
def audit_show(ledger: Annotated[Path, typer.Argument(metavar="LEDGER.jsonl")]) -> None:
    """Print a ledger as a readable timeline. Exit codes: 0 ok, 2 no such file."""
    from agentkit.audit import show_ledger

    for line in show_ledger(_ledger_file(ledger)):
        out(line)


