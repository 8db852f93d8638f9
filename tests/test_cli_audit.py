"""`agentkit audit show`: the timeline shows what each record holds, whole values only, with
filters; a file that is not a ledger is refused."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from agentkit.audit import Ledger
from agentkit.cli import app

runner = CliRunner()
HASH = "9f2c" * 16
LONG_GOAL = "Compare the seasonal efficiency of air-source heat pumps across " + "five climates " * 6


def ledger(tmp_path: Path) -> Path:
    path = tmp_path / "run.jsonl"
    records: list[tuple[str, str | None, dict[str, Any]]] = [
        ("run.started", None, {"task": "t", "mode": "swarm", "goal": LONG_GOAL}),
        ("node.started", "a", {"attempt": 1, "depends_on": []}),
        ("url.fetched", "a", {"url": "https://example.org/cop", "status": 200,
                              "content_hash": HASH, "chars": 5120}),
        ("model.response", "a", {"model": "m", "usage": {"input_tokens": 1000,
                                                         "output_tokens": 200,
                                                         "reasoning_tokens": 50},
                                 "cost_usd": 0.1 + 0.2, "reasoning": "x" * 5000}),
        ("node.finished", "a", {"attempt": 1, "output_chars": 120, "duration_s": 2.0000001}),
        ("node.started", "b", {"attempt": 1, "depends_on": ["a"]}),
        ("run.finished", None, {"status": "succeeded"}),
    ]
    with Ledger(path) as led:
        for kind, node, data in records:
            led.record(kind, data, run_id="r", node_id=node, ts=1000.0)
    return path


def show(*args: str) -> tuple[int, list[str], str]:
    result = runner.invoke(app, ["audit", "show", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.stdout.splitlines(), result.stderr


def test_show_prints_what_each_record_holds(tmp_path: Path) -> None:
    """Node events show their fields (before: `{}`), url.fetched its whole content hash
    (before: never), costs without float noise (0.1 + 0.2 is $0.300000), usage compactly,
    bulky fields by their size."""
    code, lines, _ = show(str(ledger(tmp_path)))
    assert code == 0 and len(lines) == 7
    assert "node.started" in lines[1] and "attempt=1" in lines[1] and "depends_on=[]" in lines[1]
    assert f"content_hash={json.dumps(HASH)}" in lines[2]
    assert "cost_usd=$0.300000" in lines[3] and "0.30000000000000004" not in lines[3]
    assert "usage=1000in/200out(50reasoning)" in lines[3] and "reasoning=<5000 chars>" in lines[3]
    assert "duration_s=2" in lines[4] and "output_chars=120" in lines[4]


def test_show_never_cuts_a_value(tmp_path: Path) -> None:
    """A long string ends at a word with an ellipsis inside its quotes; a field that does not
    fit the line is counted (`+N more`), never cut in the middle (before: the line was cut at
    a fixed width, mid-token)."""
    code, lines, _ = show(str(ledger(tmp_path)))
    goal = re.search(r'goal="([^"]*)"', lines[0])
    assert goal is not None and goal.group(1).endswith("…")
    assert LONG_GOAL.startswith(goal.group(1).removesuffix("…"))
    narrow = runner.invoke(app, ["audit", "show", str(ledger(tmp_path / "n"))],
                           env={"COLUMNS": "100"}).stdout.splitlines()
    for line in narrow:
        tail = line.split("  ")[-1]
        assert re.fullmatch(r'\+\d+ more|[\w.]+=.*', tail), line
        assert tail.count('"') % 2 == 0, line  # no string cut open


def test_show_filters_by_kind_and_node_and_shows_everything_with_full(tmp_path: Path) -> None:
    path = str(ledger(tmp_path))
    _, lines, _ = show(path, "--kind", "node")
    assert [line.split()[3] for line in lines] == ["node.started", "node.finished", "node.started"]
    _, lines, _ = show(path, "--node", "b")
    assert len(lines) == 1 and " b " in lines[0]
    _, lines, _ = show(path, "--kind", "model.response", "--full")
    body = json.loads("\n".join(lines[1:]))
    assert body["reasoning"] == "x" * 5000 and body["cost_usd"] == 0.1 + 0.2


def test_show_refuses_a_file_that_is_not_a_ledger(tmp_path: Path) -> None:
    task = tmp_path / "task.yaml"
    task.write_text("name: x\ngoal: y\n")
    code, lines, err = show(str(task))
    assert code == 2 and lines == [] and "not an agentkit ledger" in err
