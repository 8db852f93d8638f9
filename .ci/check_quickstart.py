"""CI gate for the offline quickstart: run it exactly as the README does, then check its shape.

From the audit ledger it checks structure: the run ended (succeeded or failed, never crashed or
bad input), the planner made a valid plan of >= 3 nodes, at least two nodes overlapped in time,
code ran in the Docker sandbox, every finished node's samples voted (`consensus`), the grounding
check ran, and the ledger verifies.

It also checks the answer's numbers against those computed from the CSV here, without a model.
That is a gate, not luck: the local model resets its state per request and derives every seed
from the request, so a run is reproducible on a machine (two runs of the default seed gave
identical model outputs, call for call), and `benchmarks/local_model.py` measured 10 of 10
seeds correct, the default seed among them. A wrong answer here means the pipeline changed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from agentkit.audit import verify_ledger

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from local_model import check_answer, expected_facts  # noqa: E402  (ground truth, one copy)


def overlapping_pairs(events: list[dict[str, Any]]) -> int:
    spans: dict[str, list[float]] = {}
    for e in events:
        if e["kind"] == "node.started" and e["node_id"]:
            spans[e["node_id"]] = [e["ts"], float("inf")]
        elif e["kind"] in ("node.finished", "node.failed") and e["node_id"] in spans:
            spans[e["node_id"]][1] = e["ts"]
    items = list(spans.values())
    return sum(1 for i, a in enumerate(items) for b in items[i + 1:]
               if a[0] < b[1] and b[0] < a[1])


def main() -> int:
    ledger_dir = Path(tempfile.mkdtemp(prefix="quickstart-"))
    proc = subprocess.run(
        ["agentkit", "run", "examples/quickstart.yaml", "--json", "--ledger-dir", str(ledger_dir)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, timeout=2400)
    problems: list[str] = []
    if proc.returncode not in (0, 1):
        print(proc.stdout)
        print(f"FAIL: agentkit run exited {proc.returncode} (expected 0 or 1)")
        return 1
    result = json.loads(proc.stdout)
    ledger = Path(result["ledger"])
    events = [json.loads(line) for line in ledger.read_text().splitlines()]
    kinds = [e["kind"] for e in events]

    plans = [e["data"] for e in events if e["kind"] == "plan.created"]
    if not plans or len(plans[0]["nodes"]) < 3:
        problems.append(f"expected a plan of >= 3 nodes, got {[len(p['nodes']) for p in plans]}")
    if overlapping_pairs(events) < 1:
        problems.append("no two nodes overlapped in time")
    execs = [e["data"] for e in events if e["kind"] == "sandbox.exec"]
    if not execs:
        problems.append("no code ran in the sandbox (no sandbox.exec event)")
    voted = {e["node_id"] for e in events if e["kind"] == "node.consensus"}
    finished = {e["node_id"] for e in events if e["kind"] == "node.finished"}
    if finished - voted:
        problems.append(f"nodes finished without a consensus vote: {sorted(finished - voted)}")
    if "answer.checked" not in kinds:
        problems.append("the grounding check did not run (no answer.checked event)")
    check = verify_ledger(ledger)
    if not check.ok:
        problems.append(f"ledger does not verify: {check}")

    print(f"status: {result['status']}   run_id: {result['run_id']}   ledger: {ledger}")
    print(f"plan: {[n['id'] for n in plans[0]['nodes']] if plans else None}")
    print(f"overlapping node pairs: {overlapping_pairs(events)}   sandbox execs: {len(execs)}   "
          f"ungrounded: {result.get('ungrounded')}")
    for e in events:
        if e["kind"] == "node.consensus":
            d = e["data"]
            print(f"consensus {e['node_id']}: {d['votes']} of {d['samples']} samples agree")
    print("answer:\n" + (result.get("answer") or "(none)"))
    facts = expected_facts()
    print(f"expected (computed from the CSV without a model): {facts}")
    wrong = check_answer(result.get("answer") or "", facts)
    print("answer numbers: " + ("correct" if not wrong else f"not correct ({'; '.join(wrong)})"))
    if wrong:
        problems.append("the answer's numbers differ from the CSV's (missing or wrong: "
                        f"{'; '.join(wrong)}); the default seed answered correctly when measured, "
                        "so compare this run's ledger with `python benchmarks/local_model.py`")
    for p in problems:
        print(f"FAIL: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
