"""The live display tells the truth about a real run: the events of a scripted swarm (planner,
two nodes, synthesizer over real HTTP) are replayed into a display one by one, on a clock the
test moves, and what a user would see is checked after each step that matters."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from rich.console import Console

from agentkit import arun
from agentkit.cli.run import report, result_payload
from agentkit.events import Event, EventBus
from agentkit.progress import ProgressDisplay
from agentkit.run import RunResult
from agentkit.swarm.synthesize import Citation
from agentkit.task import TaskSpec
from agentkit.testing import EventCapture, ScriptedModelServer, call, reply

PLAN = {"nodes": [{"id": "a", "goal": "count the apples"},
                  {"id": "b", "goal": "count the pears", "depends_on": ["a"]}]}


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def swarm_events() -> tuple[list[Event], RunResult]:
    with ScriptedModelServer("deepseek") as srv:
        srv.route("planner-model", reply(reasoning="Split it.", tool_calls=[call("submit_plan", PLAN)]),
                  reply("Planned."))
        srv.route("worker-model", default=lambda req: reply("7 fruit", reasoning="Counted them."))
        srv.route("writer-model", default=lambda req: reply("7 apples, 7 pears.", reasoning="Sum."))

        def model(name: str) -> dict[str, Any]:
            return {"profile": "deepseek", "model": name, "base_url": srv.base_url,
                    "api_key_env": "PROGRESS_KEY", "stream": False}

        task = TaskSpec.model_validate({
            "name": "fruit", "goal": "count the fruit", "model": "work",
            "models": {"plan": model("planner-model"), "work": model("worker-model"),
                       "write": model("writer-model")},
            "roles": {"planner": "plan", "synthesizer": "write"}})
        capture = EventCapture()
        result = await arun(task, sinks=[capture], ledger_dir=None,
                            environ={"PROGRESS_KEY": "pk-progress"})
    return list(capture.events), result


def replay(events: list[Event], display: ProgressDisplay, ticks: Ticks,
           until: Any = None) -> list[Event]:
    """Feed events until `until(event)` is true (that event included); the rest."""
    for i, event in enumerate(events):
        ticks.now += 1.0
        display(event)
        if until is not None and until(event):
            return events[i + 1:]
    return []


async def test_planner_and_synthesizer_rows_show_when_they_work() -> None:
    """Before, the planner and synthesizer rows said `waiting 0.0s` for the whole run."""
    events, result = await swarm_events()
    assert result.status == "succeeded"
    ticks = Ticks()
    display = ProgressDisplay(Console(file=io.StringIO()), live=False, monotonic=ticks)
    rest = replay(events, display, ticks,
                  until=lambda e: e.kind == "model.request" and e.node_id == "planner")
    assert display.nodes["planner"].state == "running"
    rest = replay(rest, display, ticks, until=lambda e: e.kind == "plan.created")
    planner = display.nodes["planner"]
    assert planner.state == "done" and planner.elapsed(ticks.now) > 0 and planner.tokens > 0
    assert display.nodes["a"].state == "waiting" and display.nodes["b"].state == "waiting"
    rest = replay(rest, display, ticks,
                  until=lambda e: e.kind == "model.request" and e.node_id == "synthesizer")
    assert display.nodes["synthesizer"].state == "running"
    assert (display.nodes["a"].state, display.nodes["b"].state) == ("done", "done")
    replay(rest, display, ticks)
    synth = display.nodes["synthesizer"]
    assert synth.state == "done" and synth.elapsed(ticks.now) > 0 and display.status == "succeeded"
    assert [name for name, _ in display._ordered()] == ["planner", "a", "b", "synthesizer"]


async def test_token_totals_match_the_summary() -> None:
    """Reasoning tokens are part of the output tokens: the table's total is input + output,
    the same figure as the run's summary (before, reasoning was added a second time)."""
    events, result = await swarm_events()
    ticks = Ticks()
    display = ProgressDisplay(Console(file=io.StringIO()), live=False, monotonic=ticks)
    replay(events, display, ticks)
    expected = result.usage.input_tokens + result.usage.output_tokens
    assert result.usage.reasoning_tokens > 0  # the case that was counted twice
    assert display.total_tokens == expected == sum(v.tokens for v in display.nodes.values())
    shown = Console(file=io.StringIO(), width=160)
    shown.print(display.render())
    assert f"{expected:,}" in shown.file.getvalue()  # type: ignore[attr-defined]


def test_a_cancelled_run_shows_cancelled_not_failed() -> None:
    """Ctrl-C ends with run.finished(cancelled): the title and the rows still working say
    `cancelled` (before: `failed`); finished rows keep their state."""
    ticks = Ticks()
    display = ProgressDisplay(Console(file=io.StringIO()), live=False, monotonic=ticks)
    bus = EventBus("r", sinks=[display])
    bus.emit("run.started", {"mode": "swarm"})
    bus.emit("plan.created", {"nodes": [{"id": "a", "goal": "x"}, {"id": "b", "goal": "y"}]})
    bus.emit("node.started", {}, node_id="a")
    bus.emit("node.finished", {}, node_id="a")
    bus.emit("node.started", {}, node_id="b")
    bus.emit("model.request", {}, node_id="b")
    bus.emit("run.finished", {"status": "cancelled"})
    assert display.status == "cancelled"
    assert (display.nodes["a"].state, display.nodes["b"].state) == ("done", "cancelled")
    shown = Console(file=io.StringIO(), width=160)
    shown.print(display.render())
    assert "cancelled" in shown.file.getvalue() and "failed" not in shown.file.getvalue()  # type: ignore[attr-defined]


def test_agent_mode_tool_calls_are_printed_as_they_happen() -> None:
    """In agent mode the one agent's tool calls are the run's progress: each is a plain line
    (swarm mode keeps to milestones); arguments pass through the redactor."""
    out = io.StringIO()
    display = ProgressDisplay(Console(file=out, width=160), monotonic=Ticks(),
                              redact=lambda text: text.replace("hunter2", "[REDACTED]"))
    bus = EventBus("r", sinks=[display])
    bus.emit("run.started", {"mode": "agent"})
    bus.emit("tool.call", {"tool": "read_file", "arguments": {"path": "hunter2.txt"}},
             node_id="agent")
    assert 'tool.call agent read_file({"path": "[REDACTED].txt"})' in out.getvalue()
    assert display.nodes["agent"].state == "running"
    assert display.nodes["agent"].step.startswith("read_file(")


def test_citations_print_their_number(tmp_path: Path) -> None:
    """Each source is printed with the number the answer can refer to (before: `[-]`)."""
    result = RunResult(run_id="r", status="succeeded", answer="Deep [1], long [2].",
                       citations=[Citation(url="https://a.example/fjord", title="Fjord"),
                                  Citation(url="https://b.example/depth")])
    payload = result_payload(result)
    assert [c["n"] for c in payload["citations"]] == [1, 2]
    console = Console(file=io.StringIO(), width=160)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        report(console, payload)
    assert "[1] https://a.example/fjord  Fjord" in stdout.getvalue()
    assert "[2] https://b.example/depth" in stdout.getvalue()


def test_nodes_cut_by_a_failed_run_show_cancelled() -> None:
    """A run that fails on its wall clock cancels the nodes still working: they say
    `cancelled`, as the summary does; the role that was working when it failed says `failed`."""
    display = ProgressDisplay(Console(file=io.StringIO()), live=False, monotonic=Ticks())
    bus = EventBus("r", sinks=[display])
    bus.emit("plan.created", {"nodes": [{"id": "a", "goal": "x"}]})
    bus.emit("node.started", {}, node_id="a")
    bus.emit("model.request", {}, node_id="synthesizer")
    bus.emit("run.finished", {"status": "failed"})
    assert display.nodes["a"].state == "cancelled"
    assert display.nodes["synthesizer"].state == "failed"
