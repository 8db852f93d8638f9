"""The run report: one self-contained HTML file made from a run's audit ledger.

    agentkit report runs/<run id>.jsonl -o run.html      (or: agentkit run task.yaml --report)

It shows the plan as a DAG with each node's state; a timeline of nodes, model calls, tool
calls, retry waits and marks (retries, fallbacks, budget stops, approvals) on one time axis;
tokens, reasoning tokens and cost per node and per model; each node's conversation (reasoning
folded, tool calls with their arguments, results and what the model read, file diffs); the
pages fetched with their hash and whether the answer cites them; the answer with the numbers
no tool produced highlighted; and whether the ledger's hash chain holds (where it breaks, if
it was edited).

The file needs nothing else: no network, no CDN (its Content-Security-Policy forbids loading
anything), so it opens from disk or as an e-mail attachment. It stays quick on a 1,000-node
run: the first paint draws only the summary (a compact JSON of rows and bars); each node's
conversation is a separate JSON block parsed when the node is opened, and long texts are cut
(the ledger keeps them whole).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agentkit.audit import VerifyResult
from agentkit.report._model import RunModel, build_model
from agentkit.report._page import render_page

__all__ = ["ReportFile", "build_report", "write_report"]


@dataclass(frozen=True)
class ReportFile:
    path: Path
    bytes: int
    #: the ledger's hash-chain check (shown in the report too)
    verify: VerifyResult
    nodes: int


def build_report(ledger: str | Path) -> tuple[str, RunModel, VerifyResult]:
    """The report page of `ledger`, the data it shows, and the ledger's verification."""
    model, scan = build_model(ledger)
    return render_page(model), model, scan.verify


def write_report(ledger: str | Path, output: str | Path | None = None) -> ReportFile:
    """Write the report of `ledger` to `output` (default: beside the ledger, ``.html``)."""
    page, model, verify = build_report(ledger)
    target = Path(output) if output is not None else Path(ledger).with_suffix(".html")
    data = page.encode("utf-8")
    target.write_bytes(data)
    nodes = sum(1 for row in model.summary["rows"] if row["kind"] == "node")
    return ReportFile(path=target, bytes=len(data), verify=verify, nodes=nodes)
