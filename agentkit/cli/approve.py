"""`agentkit approve`: decide a run's waiting tool calls from another process (or list them).

A decision is one line appended to the ledger's sidecar ``<ledger>.approvals``; the run
picks it up while it waits, and a run that opens the ledger later (resumes) honours it. The
key is the ``key`` of the call's ``approval.requested`` event, which the listing prints.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from agentkit.cli._app import EXIT_FAILED, app, fail, out


@app.command()
def approve(
    ledger: Annotated[Path, typer.Argument(metavar="LEDGER.jsonl", help="The run's ledger.")],
    key: Annotated[str | None, typer.Argument(
        metavar="KEY", help="The call to decide (omit to list the calls waiting).")] = None,
    deny: Annotated[str | None, typer.Option(
        "--deny", metavar="REASON", help="Deny the call; the model reads REASON.")] = None,
    who: Annotated[str | None, typer.Option(
        metavar="NAME", help="Who decides (recorded; default: your user name).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="List as one JSON object.")] = False,
) -> None:
    """Approve (or with --deny, deny) the waiting tool call KEY of the run whose ledger is
    LEDGER.jsonl, while the run waits or while it is down (honoured when it resumes). Without
    KEY: list the calls waiting for a decision. Exit codes: 0 decision recorded (or listed),
    1 the call was already decided (the first decision stands), 2 no such ledger, or KEY was
    never requested in it."""
    from agentkit.approvals import (
        Decision,
        append_decision,
        approvals_file,
        pending_requests,
        read_decisions,
    )

    if not ledger.is_file():
        fail(f"{ledger}: no such ledger file (give the .jsonl file a run wrote, e.g. "
             f"runs/RUN_ID.jsonl)")
    sidecar = approvals_file(ledger)
    decided = {d.key: d for d in read_decisions(sidecar)[0]}
    requested = list(_requests(ledger))
    pending = pending_requests(iter(requested), set(decided))
    if key is None:
        _show(pending, json_out)
        return
    _check_undecided(ledger, key, decided.get(key) or _decided_in_ledger(requested, key),
                     requested, pending)
    decision = Decision(key=key, approved=deny is None, reason=deny, via="file",
                        who=who or current_user())
    append_decision(sidecar, decision)
    out(f"{key}: {'approved' if deny is None else 'denied'} (recorded in {sidecar})")


def _check_undecided(ledger: Path, key: str, earlier: object, requested: list[dict[str, Any]],
                     pending: dict[str, Any]) -> None:
    """Exit 1 if `key` was decided already, 2 if it was never requested."""
    if earlier is not None:
        out(f"{key}: already decided ({earlier}); the first decision stands")
        raise typer.Exit(EXIT_FAILED)
    if not any(e.get("kind") == "approval.requested" and (e.get("data") or {}).get("key") == key
               for e in requested):
        fail(f"{key!r} was never requested in {ledger} (waiting now: "
             f"{', '.join(pending) or 'none'}); run `agentkit approve {ledger}` to list them")


def _requests(ledger: Path) -> Iterator[dict[str, Any]]:
    """The approval events of a ledger (a torn last line, as a crash leaves it, is skipped)."""
    with ledger.open("rb") as fh:
        for line in fh:
            if b'"approval.' not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and str(event.get("kind", "")).startswith("approval."):
                yield event


def _decided_in_ledger(events: list[dict[str, Any]], key: str) -> str | None:
    for event in events:
        data = event.get("data") or {}
        if event.get("kind") == "approval.decided" and data.get("key") == key:
            verdict = "approved" if data.get("approved") else "denied"
            return f"{verdict} via {data.get('via')}" + (f": {data['reason']}"
                                                         if data.get("reason") else "")
    return None


def _show(pending: dict[str, dict[str, Any]], json_out: bool) -> None:
    if json_out:
        out(json.dumps({"pending": [{"key": k, "node_id": v.get("node_id"), "tool": v.get("tool"),
                                     "arguments": v.get("arguments")}
                                    for k, v in pending.items()]}, ensure_ascii=False))
        return
    if not pending:
        out("no tool call is waiting for a decision")
        return
    for key, request in pending.items():
        args = json.dumps(request.get("arguments"), ensure_ascii=False, default=str)
        out(f"{key}  node {request.get('node_id') or '-'}  {request.get('tool')}"
            f"({args[:200]})")


def current_user() -> str | None:
    """The name of the person at this account, recorded with a decision."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return None
