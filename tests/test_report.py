"""The run report: built from real ledgers, rendered in Debian's headless Chromium.

The ledgers come from real runs over HTTP against the scripted model server: the small
planner -> a -> b -> synthesizer run (one 503 retried, an ungrounded "42" in the answer) and a
100-node simulated swarm (a failing node with skipped dependents, fetched and cited pages).
The browser is driven over the DevTools protocol with the network emulated offline; every
request the page makes and every console error is recorded (`_chromium.Browser`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from _observed_run import ANSWER, ENV, PLANNER, SECRET, USAGE, observed_run, script, task_for
from _otlp_receiver import Receiver

from agentkit.report import build_report, write_report
from agentkit.report._model import build_model
from agentkit.testing import ScriptedModelServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _chromium import Browser  # noqa: E402
from _report_sim import simulated_run  # noqa: E402

RENDERED = ("new Promise(r => document.body.dataset.rendered ? r(true) : "
            "document.addEventListener('agentkit:rendered', () => r(true)))")


def ledger_lines(path: str) -> list[str]:
    return Path(path).read_text().splitlines(keepends=True)


def tok(name: str) -> list[int]:
    return [*USAGE[name], 0]


def add(*names: str) -> list[int]:
    return [sum(col) for col in zip(*(tok(n) for n in names), strict=True)]


async def test_report_data_follows_the_ledger(tmp_path: Path) -> None:
    """Proves: rows (planner, nodes, synthesizer) with their tokens; per-model totals; the
    DAG's edges; the answer and its ungrounded number; the chain verified; each node's
    conversation with the tool call's arguments, what the model read, the retry and the
    node's output; and that the secret value a model repeated stays redacted in the page."""
    async with ScriptedModelServer("deepseek") as srv:
        result = await observed_run(srv, tmp_path)
    assert result.ledger is not None
    page, model, verify = build_report(result.ledger)
    summary = model.summary
    rows = {r["id"]: r for r in summary["rows"]}
    assert list(rows) == ["planner", "a", "b", "synthesizer"]
    assert [r["kind"] for r in rows.values()] == ["planner", "node", "node", "synth"]
    assert rows["a"]["tok"] == add("a1", "a2") and rows["b"]["tok"] == tok("b")
    assert rows["synthesizer"]["tok"] == add("write", "fix") and rows["planner"]["tok"] == tok("plan")
    assert rows["b"]["deps"] == ["a"] and rows["a"]["status"] == rows["b"]["status"] == "succeeded"
    assert len(rows["b"]["calls"]) == 1 and len(rows["b"]["marks"]) == 1  # the retry
    models = {m["name"]: m for m in summary["models"]}
    assert models["work"]["calls"] == 3 and models["work"]["tok"] == add("a1", "a2", "b")
    names = [r["id"] for r in summary["rows"]]
    assert sorted((names[a], names[b], k) for a, b, k in summary["edges"]) == [
        ("a", "b", 0), ("b", "synthesizer", 2), ("planner", "a", 2)]
    assert summary["answer"] == ANSWER and summary["ungrounded"] == ["42"]
    lines = ledger_lines(result.ledger)
    assert verify.ok and summary["verify"]["count"] == len(lines) == summary["run"]["events"]
    assert summary["run"]["status"] == "succeeded" and summary["run"]["id"] == result.run_id

    a_items = model.details[names.index("a")]
    assert [d["t"] for d in a_items] == ["attempt", "call", "tool", "call", "output"]
    first, tool = a_items[1], a_items[2]
    assert [m["r"] for m in first["msgs"]] == ["system", "user"] and first["rsn"] == "Look first."
    assert first["tc"] == [{"id": "call_ls", "n": "list_files", "a": "{}"}]
    assert tool["n"] == "list_files" and tool["id"] == "call_ls" and tool["ok"] is True
    assert "notes.txt" in tool["read"] and a_items[3]["msgs"] == []  # only what is new
    assert a_items[4]["x"] == "One file: notes.txt."
    b_call = model.details[names.index("b")][1]
    assert b_call["ev"] and b_call["ev"][0].startswith("retry 1: ProviderHTTPError 503")
    assert SECRET not in page and "[REDACTED]" in page


async def open_report(browser: Browser, path: Path) -> dict[str, float]:
    times = await browser.open(path)
    assert await browser.eval(RENDERED) is True
    return times


async def test_report_renders_offline_in_chromium_and_opens_a_node(tmp_path: Path) -> None:
    """Proves, in a real browser with the network off: the page loads nothing but itself,
    logs no error, shows every node id (timeline, DAG, table), draws one timeline bar per
    row, highlights the ungrounded number; a real mouse click on a DAG node opens that node's
    model and tool calls; closed, a click on a timeline bar opens the other node's calls."""
    async with ScriptedModelServer("deepseek") as srv:
        result = await observed_run(srv, tmp_path)
    assert result.ledger is not None
    made = write_report(result.ledger, tmp_path / "run.html")
    async with Browser() as browser:
        await open_report(browser, made.path)
        ids = ["planner", "a", "b", "synthesizer"]
        assert await browser.eval("[...document.querySelectorAll('.tl-label')]"
                                  ".map(e => e.textContent).filter(Boolean)") == ids
        assert await browser.eval("[...document.querySelectorAll('#timeline .nb')]"
                                  ".map(e => e.dataset.node)") == ids
        assert await browser.eval("[...document.querySelectorAll('svg.dag text')]"
                                  ".map(e => e.textContent)") == ids
        assert await browser.eval("[...document.querySelectorAll('#nodes tbody td.nid')]"
                                  ".map(e => e.textContent)") == ids
        assert await browser.eval("[...document.querySelectorAll('mark.ungrounded')]"
                                  ".map(e => e.textContent)") == ["42"]
        assert await browser.eval("document.getElementById('panel').hidden") is True

        await browser.click("svg.dag g.dn[data-i='1'] rect")
        assert await browser.eval("document.getElementById('panel').hidden") is False
        assert (await browser.eval("document.querySelector('#panel-body h2').textContent")
                ).startswith("a ")
        assert await browser.eval("document.querySelectorAll('#calls .call').length") == 2
        tools = await browser.eval("[...document.querySelectorAll('#calls .tool .ch b')]"
                                   ".map(e => e.textContent)")
        assert tools == ["list_files"]

        await browser.click("#close")  # the panel covers the right of the page
        assert await browser.eval("document.getElementById('panel').hidden") is True
        await browser.click("#timeline .nb[data-node='b']")
        assert (await browser.eval("document.querySelector('#panel-body h2').textContent")
                ).startswith("b ")
        assert "retry 1" in await browser.eval("document.querySelector('#calls .call .ev')"
                                               ".textContent")
        assert browser.requests == [made.path.as_uri()]
        assert browser.errors() == []


async def test_hostile_ledger_text_is_shown_as_text(tmp_path: Path) -> None:
    """Proves: markup in the ledger (an answer that tries to close the data's <script> and
    inject an element with a handler) is displayed as text; nothing is injected or run, and
    the page declares a policy that forbids loading anything."""
    hostile = "Done.</script><img src=x onerror=\"document.title='pwned'\"><b>bold</b>"
    async with ScriptedModelServer("deepseek") as srv:
        result = await observed_run(srv, tmp_path, answer=hostile)
    assert result.ledger is not None and result.answer == hostile
    made = write_report(result.ledger, tmp_path / "run.html")
    page = made.path.read_text()
    assert "default-src 'none'" in page
    assert re.search(r"<(img|iframe|link rel=\"stylesheet\")|\bsrc=\"http", page) is None
    async with Browser() as browser:
        await open_report(browser, made.path)
        assert await browser.eval("document.querySelector('#answer .answer').textContent") == hostile
        assert await browser.eval("document.querySelectorAll('img, #answer b').length") == 0
        assert await browser.eval("document.title") != "pwned"
        assert browser.errors() == [] and browser.requests == [made.path.as_uri()]


async def test_simulated_100_node_run_report(tmp_path: Path) -> None:
    """Proves, on a 100-node run through the real engine: every node id is in the timeline
    and the table, one bar per row, the failed node's attempts are drawn and its error is in
    its panel, skipped nodes are marked, and the fetched pages are listed as cited."""
    result = await simulated_run(tmp_path, nodes=100, calls=1, fail_job=87)
    assert result.ledger is not None
    made = write_report(result.ledger, tmp_path / "run.html")
    statuses = {k: n.status for k, n in result.nodes.items()}
    assert statuses["n87"] == "failed" and len(statuses) == 100
    skipped = sorted(k for k, s in statuses.items() if s == "skipped")
    assert skipped  # n87's dependents
    async with Browser(height=900) as browser:
        await open_report(browser, made.path)
        labels = await browser.eval("[...document.querySelectorAll('.tl-label')]"
                                    ".map(e => e.textContent).filter(Boolean)")
        assert set(labels) == {*statuses, "planner", "synthesizer"} and len(labels) == 102
        assert await browser.eval("document.querySelectorAll('#timeline .nb').length") == 102
        assert sorted(await browser.eval("[...document.querySelectorAll('#timeline .nb.st-skipped')]"
                                         ".map(e => e.dataset.node)")) == skipped
        assert await browser.eval("document.querySelectorAll('#timeline .af').length") == 2
        assert await browser.eval("document.querySelectorAll('#nodes tbody tr').length") == 102
        cited = await browser.eval("[...document.querySelectorAll('#urls tbody tr')]"
                                   ".map(r => r.lastElementChild.textContent)")
        assert cited.count("cited") == 3  # items 0, 10 and 20 are cited in the answer
        await browser.click("#timeline .tl-row:has(.nb[data-node='n87']) .tl-label")
        assert "cannot be measured" in await browser.eval("document.getElementById('panel-body')"
                                                          ".textContent")
        assert browser.errors() == []


async def test_tampered_ledger_report_says_where_the_chain_breaks(tmp_path: Path) -> None:
    """Proves: editing one line of a ledger (the answer in run.finished) makes `agentkit
    report` exit 1 and still write the page, which says TAMPERED at that line's seq, and draws
    the break on the timeline."""
    async with ScriptedModelServer("deepseek") as srv:
        result = await observed_run(srv, tmp_path)
    assert result.ledger is not None
    lines = ledger_lines(result.ledger)
    seq = next(i for i, line in enumerate(lines) if '"kind":"run.finished"' in line)
    lines[seq] = lines[seq].replace("with 42 lines", "with 41 lines")
    forged = tmp_path / "forged.jsonl"
    forged.write_text("".join(lines))
    target = tmp_path / "forged.html"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentkit", "report", str(forged), "-o", str(target),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await proc.communicate()
    assert proc.returncode == 1, stderr.decode()
    assert f"TAMPERED at seq {seq}" in stderr.decode() and str(target) in stdout.decode()
    async with Browser() as browser:
        await open_report(browser, target)
        banner = await browser.eval("document.querySelector('#verify .tampered').textContent")
        assert f"breaks at seq {seq}" in banner and "hash mismatch" in banner
        assert await browser.eval("document.querySelectorAll('#timeline .badline').length") == 1
        assert browser.errors() == []


async def test_cli_run_with_report_and_otel(tmp_path: Path) -> None:
    """Proves: `agentkit run TASK --report --otel` (a real child process) writes the report
    beside the ledger and sends the trace to the OTLP endpoint from OTEL_* variables."""
    async with ScriptedModelServer("deepseek") as srv:
        script(srv)
        workspace = tmp_path / "ws"
        workspace.mkdir()
        spec = task_for(srv, workspace).model_dump(mode="json", exclude_defaults=True)
        task_file = tmp_path / "task.yaml"
        task_file.write_text(yaml.safe_dump(spec))
        with Receiver() as receiver:
            env = {**os.environ, **ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "agentkit", "run", str(task_file), "--report", "--otel",
                "--json", "--ledger-dir", str(tmp_path / "runs"), env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            stdout, stderr = await proc.communicate()
            assert proc.returncode == 0, stderr.decode()[-3000:]
            payload: dict[str, Any] = json.loads(stdout)
            spans = [s.name for _, r in receiver.requests for rs in r.resource_spans
                     for ss in rs.scope_spans for s in ss.spans]
    report = Path(payload["ledger"]).with_suffix(".html")
    assert f"report: {report}" in stderr.decode() and report.is_file()
    model, scan = build_model(payload["ledger"])
    assert scan.verify.ok and model.summary["answer"] == payload["answer"]
    assert "invoke_agent observed" in spans and f"chat {PLANNER}" in spans
