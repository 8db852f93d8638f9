"""`agentkit audit verify` and `agentkit audit show`: check and read ledgers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from agentkit.cli._app import EXIT_FAILED, audit_app, fail, out, user_errors

_HEAD = re.compile(r"[0-9a-f]{64}")

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
        metavar="HASH|FILE",
        help="The head hash kept elsewhere, or the .head file a run wrote (a copy kept where "
             "the run cannot write); detects lines cut from the end.")] = None,
) -> None:
    """Recompute the hash chain. Exit codes: 0 intact, 1 tampered (names the first bad seq),
    2 no such file, 3 incomplete (only the last line is torn, as a crash or a full disk leaves
    it; every line before it verified)."""
    from agentkit.audit import verify_ledger

    result = verify_ledger(_ledger_file(ledger), expected_head=_expected_head(expect_head))
    if result.ok:
        unfinished = ("" if result.finished else "; the run has not finished (no run.finished: "
                      "still running, or stopped; `agentkit resume` continues it)")
        out(f"{ledger}: intact, {result.count} records, head {result.head}{unfinished}")
        return
    if result.state == "incomplete":
        out(f"{ledger}: INCOMPLETE (torn last line at seq {result.first_bad_seq}): "
            f"{result.count} records intact, head {result.head}; {result.reason}. Reopening "
            f"the ledger cuts the torn bytes and records them")
        raise typer.Exit(EXIT_INCOMPLETE)
    out(f"{ledger}: TAMPERED at seq {result.first_bad_seq}: {result.reason} "
         f"({result.count} records verified before it)")
    raise typer.Exit(EXIT_FAILED)


def _expected_head(value: str | None) -> str | None:
    """A head hash, or the path of a ``.head`` sidecar (``HASH  FILENAME``) holding one."""
    if value is None or _HEAD.fullmatch(value.strip().lower()):
        return value.strip().lower() if value is not None else None
    path = Path(value)
    if path.is_file():
        words = path.read_text(encoding="utf-8", errors="replace").split()
        if words and _HEAD.fullmatch(words[0].lower()):
            return words[0].lower()
        fail(f"--expect-head {value}: the file does not start with a head hash (64 hex digits)")
    fail(f"--expect-head {value!r} is neither a head hash (64 hex digits) nor a .head file")


@audit_app.command("show")
def audit_show(
    ledger: Annotated[Path, typer.Argument(metavar="LEDGER.jsonl")],
    kind: Annotated[list[str], typer.Option(
        metavar="KIND", help="Only this kind (repeatable; `node` matches every node.* kind).")
    ] = [],  # noqa: B006  typer reads the default; it is never mutated
    node: Annotated[list[str], typer.Option(metavar="ID", help="Only this node (repeatable).")
                    ] = [],  # noqa: B006
    full: Annotated[bool, typer.Option("--full", help="Every field of each record, as JSON.")
                    ] = False,
) -> None:
    """Print a ledger as a readable timeline: time, seq, kind, node and the record's fields.
    Exit codes: 0 ok, 2 no such file or not a ledger."""
    from agentkit._timeline import timeline

    with user_errors():
        for line in timeline(_ledger_file(ledger), kinds=kind, nodes=node, full=full):
            out(line)
