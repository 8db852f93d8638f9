"""The event stream's other consumers: the progress display (live table on a terminal, plain
lines elsewhere), the structlog sink, and EventCapture."""

from __future__ import annotations

import io

import structlog
from rich.console import Console

from agentkit.events import EventBus
from agentkit.logging import structlog_sink
from agentkit.progress import ProgressDisplay
from agentkit.testing import EventCapture


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def drive(bus: EventBus, ticks: Ticks) -> None:
    bus.emit("run.started", {"goal": "compare heat pumps"})
    bus.emit("plan.created", {"plan": {"nodes": [{"id": "a", "goal": "search"},
                                                 {"id": "b", "goal": "fetch"},
                                                 {"id": "c", "goal": "write"}]}})
    bus.emit("node.started", {"goal": "search"}, node_id="a")
    ticks.now += 2.5
    bus.emit("tool.call", {"tool": "web_search", "arguments": {"query": "heat pump COP"}},
             node_id="a")
    bus.emit("model.response", {"usage": {"input_tokens": 1000, "output_tokens": 200,
                                          "reasoning_tokens": 50}, "cost_usd": 0.0125},
             node_id="a")
    bus.emit("model.response", {"usage": {"input_tokens": 10, "output_tokens": 5},
                                "cost_usd": 0.0005}, node_id="a")
    bus.emit("node.finished", {"status": "succeeded"}, node_id="a")
    bus.emit("node.started", {}, node_id="b")
    bus.emit("node.failed", {"error": "timeout"}, node_id="b")
    bus.emit("node.skipped", {"reason": "dependency b failed"}, node_id="c")


def test_progress_tracks_state_step_tokens_cost_and_time() -> None:
    ticks = Ticks()
    console = Console(file=io.StringIO(), width=160, force_terminal=False)
    display = ProgressDisplay(console, live=False, monotonic=ticks)
    drive(EventBus("r", sinks=[display]), ticks)
    a, b, c = display.nodes["a"], display.nodes["b"], display.nodes["c"]
    assert (a.state, b.state, c.state) == ("done", "failed", "skipped")
    assert a.step.startswith("web_search(") and "heat pump COP" in a.step
    # input + output: the 50 reasoning tokens are part of the 200 output tokens
    assert a.tokens == 1215 and abs(a.cost_usd - 0.013) < 1e-9
    assert a.elapsed(ticks.now) == 2.5 and c.step == "dependency b failed"
    render = Console(file=io.StringIO(), width=160)
    render.print(display.render())
    table = render.file.getvalue()  # type: ignore[attr-defined]
    assert "web_search" in table and "1,215" in table and "0.0130" in table and "skipped" in table


def test_progress_prints_plain_milestones_when_not_a_terminal() -> None:
    ticks = Ticks()
    out = io.StringIO()
    display = ProgressDisplay(Console(file=out, width=160), monotonic=ticks)
    assert display.live_mode is False  # a StringIO is not a terminal
    with display:
        drive(EventBus("r", sinks=[display]), ticks)
    lines = out.getvalue().splitlines()
    assert any("plan.created 3 nodes" in line for line in lines)
    assert any("node.failed b" in line for line in lines)
    assert not any("tool.call" in line for line in lines)  # only milestones, not every step
    assert "\x1b[" not in out.getvalue()  # no terminal control codes in logs


def test_progress_live_table_on_a_terminal() -> None:
    ticks = Ticks()
    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=True)
    with ProgressDisplay(console, monotonic=ticks) as display:
        assert display.live_mode is True
        drive(EventBus("r", sinks=[display]), ticks)
    text = out.getvalue()
    assert "node" in text and "state" in text and "failed" in text


def test_structlog_sink_logs_kind_node_and_seq_without_payload() -> None:
    captured = structlog.testing.CapturingLogger()
    sink = structlog_sink(structlog.wrap_logger(captured, processors=[]))
    bus = EventBus("r", sinks=[sink])
    bus.emit("node.started", {"goal": "x", "secret_text": "do not log me"}, node_id="n1")
    bus.emit("retry", {"attempt": 2})
    first, second = captured.calls
    assert first.method_name == "info" and first.kwargs["kind"] == "node.started"
    assert first.kwargs["node"] == "n1" and first.kwargs["seq"] == 0
    assert first.kwargs["keys"] == ["goal", "secret_text"]
    assert "do not log me" not in repr(first)
    assert second.method_name == "warning" and second.kwargs["seq"] == 1


def test_structlog_sink_default_logger_needs_no_global_configuration() -> None:
    before = structlog.get_config()
    sink = structlog_sink()
    EventBus("r", sinks=[sink]).emit("run.started", {})
    assert structlog.get_config() == before


def test_event_capture_collects_in_order() -> None:
    capture = EventCapture()
    bus = EventBus("r", sinks=[capture])
    bus.emit("run.started", {})
    bus.emit("tool.call", {"tool": "a"})
    bus.emit("tool.call", {"tool": "b"})
    assert capture.kinds() == ["run.started", "tool.call", "tool.call"]
    assert [e.data["tool"] for e in capture.of("tool.call")] == ["a", "b"]
    assert capture.first("tool.call").seq == 1 and len(capture) == 3


def test_progress_shows_a_nodes_consensus_vote() -> None:
    ticks = Ticks()
    out = io.StringIO()
    display = ProgressDisplay(Console(file=out, width=160), monotonic=ticks)
    bus = EventBus("r", sinks=[display])
    bus.emit("node.started", {}, node_id="a")
    bus.emit("node.sample", {"sample": 1}, node_id="a")
    assert display.nodes["a"].step == "sample 2 done"
    bus.emit("node.consensus", {"samples": 3, "votes": 2, "evidence": "program"}, node_id="a")
    assert display.nodes["a"].step == "2 of 3 samples agree (on program output)"
    assert "node.consensus a 2 of 3 samples agree (on program output)" in out.getvalue()


def test_structlog_sink_redacts_a_logged_payload() -> None:
    """Logs are one more way out of a run: a logged payload hides the run's secret values,
    credential keys and credential shapes, as the ledger and the CLI do (before: in clear)."""
    captured = structlog.testing.CapturingLogger()
    sink = structlog_sink(structlog.wrap_logger(captured, processors=[]), include_data=True,
                          secrets=["kv-9f8e7d6c5b4a"])
    bus = EventBus("r", sinks=[sink])
    bus.emit("model.response", {"text": "the key is kv-9f8e7d6c5b4a",
                                "headers": {"Authorization": "whatever"},
                                "echo": "Bearer abcdefghijkl"}, node_id="n1")
    logged = repr(captured.calls[0].kwargs["data"])
    assert "kv-9f8e7d6c5b4a" not in logged and "whatever" not in logged
    assert "abcdefghijkl" not in logged and "[REDACTED]" in logged


def test_progress_survives_a_reader_that_went_away() -> None:
    """`agentkit run ... 2>&1 | head`: once the pipe is closed, writing the next milestone
    fails; the display stops writing instead of raising into the run (a sink that raises
    stops the run)."""

    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    display = ProgressDisplay(Console(file=Closed()), live=False)
    bus = EventBus("r", sinks=[display])
    bus.emit("run.started", {"mode": "swarm"})
    bus.emit("node.started", {}, node_id="a")  # no exception reaches the bus
    assert display.nodes["a"].state == "running"
