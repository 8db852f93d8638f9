"""The grounding check: numbers and URLs in the final answer that no tool output or fetched
page contains are flagged (`answer.ungrounded`), the synthesizer gets one chance to fix them,
and what is still ungrounded is reported in the result. The check always leaves an
`answer.checked` record, so the ledger proves it ran."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_swarm_e2e import (
    ENV,
    PLANNER,
    WORKER,
    WRITER,
    Planner,
    Workers,
    answer_with,
    events_of,
    nodes,
    task_for,
)

from agentkit.run import arun
from agentkit.swarm.synthesize import find_ungrounded
from agentkit.testing import RecordedRequest, ScriptedModelServer, call, reply


def test_numbers_and_urls_absent_from_every_source_are_flagged() -> None:
    corpus = ["north: 1,234.50\nsouth: 980.25", "see https://example.org/a"]
    answer = ("North 1234.50 and south 980.25 (https://example.org/a); "
              "west 4417.00, see https://invented.example/x")
    assert find_ungrounded(answer, corpus) == ["https://invented.example/x", "4417.00"]


def test_single_digits_and_numbers_inside_urls_are_not_flagged() -> None:
    assert find_ungrounded("There are 3 regions; see https://e.org/2024/x", ["https://e.org/2024/x"]) == []


def test_a_year_standing_alone_is_not_grounded_by_a_date() -> None:
    """Seen with the embedded model: the result said "2024-03, 4204.50", the answer "March
    2024, $4,204.50" (the month rewritten, unchecked). The date itself, quoted, is grounded."""
    corpus = ["highest total revenue: 2024-03, 4204.50"]
    assert find_ungrounded("March 2024, $4,204.50", corpus) == ["2024"]
    assert find_ungrounded("The best month was 2024-03 with 4,204.50.", corpus) == []
    assert find_ungrounded("In 2024 the best month was 2024-03.", ["2024 sales; best 2024-03"]) == []
    assert find_ungrounded("It has 10 pages.", ["pages 10-20"]) == []  # a range is no date


def read_then_answer(path: str, text: str) -> Any:
    """A worker that reads a workspace file with a tool, then answers."""
    def respond(req: RecordedRequest) -> Any:
        if not any(m.get("role") == "tool" for m in req.messages):
            return reply(reasoning="Read it.", tool_calls=[call("read_file", {"path": path})])
        return reply(text, reasoning="Got it.")
    return respond


async def _run(tmp_path: Path, first: str, second: str,
               worker: Any = None) -> tuple[Any, ScriptedModelServer]:
    """One node reads north.txt (a tool output: the only source of grounded numbers). The
    synthesizer first answers `first`, then `second` if it is asked again (the fix round)."""
    (tmp_path / "north.txt").write_text("north total: 1234.50\n")
    async with ScriptedModelServer("deepseek") as srv:
        workers = Workers({"sum north": worker or read_then_answer("north.txt", "north total: 1234.50")})
        srv.route(PLANNER, default=Planner(nodes(("a", "sum north", [], ["read_file"]))))
        srv.route(WORKER, default=workers)
        srv.route(WRITER, reply(first, reasoning="Combine."), reply(second, reasoning="Combine."))
        result = await arun(task_for(srv, tmp_path, tools=["read_file"]),
                            ledger_dir=tmp_path / "l", environ=ENV)
    return result, srv


async def test_an_invented_number_is_flagged_and_fixed_in_one_round(tmp_path: Path) -> None:
    result, srv = await _run(tmp_path, "North sold 9999.99.", "North sold 1234.50.")
    assert result.status == "succeeded", result.error
    assert result.answer == "North sold 1234.50." and result.ungrounded == []
    assert len(srv.requests_for(WRITER)) == 2
    events = events_of(result)
    flagged = [e["data"] for e in events if e["kind"] == "answer.ungrounded"]
    assert flagged == [{"items": ["9999.99"], "round": 1}]
    checks = [e["data"]["ungrounded"] for e in events if e["kind"] == "answer.checked"]
    assert checks == [["9999.99"], []]


async def test_a_number_still_ungrounded_after_the_fix_is_reported(tmp_path: Path) -> None:
    result, _ = await _run(tmp_path, "North sold 9999.99.", "North sold 8888.88.")
    assert result.ungrounded == ["8888.88"]
    final = [e["data"] for e in events_of(result) if e["kind"] == "answer.ungrounded"][-1]
    assert final == {"items": ["8888.88"], "round": 2, "final": True}


async def test_numbers_only_a_worker_wrote_are_not_grounded(tmp_path: Path) -> None:
    """A sub-agent's own words are no source: a number it stated without any tool producing
    it is flagged in the synthesizer's answer too."""
    result, _ = await _run(tmp_path, "North sold 7777.77.", "North sold 7777.77.",
                           worker=answer_with("north total: 7777.77"))
    assert result.ungrounded == ["7777.77"]


async def test_a_grounded_answer_is_checked_once_and_not_rewritten(tmp_path: Path) -> None:
    result, srv = await _run(tmp_path, "North sold 1234.50.", "unused")
    assert result.answer == "North sold 1234.50." and len(srv.requests_for(WRITER)) == 1
    assert [e["kind"] for e in events_of(result)].count("answer.checked") == 1


def test_node_output_carries_the_last_successful_program_output_verbatim() -> None:
    """Issue 7: numbers reach the synthesizer as the sandbox printed them, even when the
    worker's own answer retells them wrongly."""
    from agentkit.agent import AgentResult
    from agentkit.messages import Message, ToolResultPart
    from agentkit.swarm.agents import with_program_output

    def tool(content: str, data: dict[str, object] | None, is_error: bool = False) -> Message:
        return Message(role="tool", parts=(ToolResultPart(call_id="c", name="run_code",
                                                          content=content, is_error=is_error,
                                                          metadata=data),))

    messages = [Message.user("go"),
                tool("exit code 0 (0.01 s)\n--- stdout ---\nNorth 4909.75",
                     {"exit_code": 0, "stdout": "North 4909.75\n"}),
                tool("exit code 1 (0.01 s)\n--- stderr ---\nTraceback",
                     {"exit_code": 1, "stdout": ""}),
                tool("[timeout] too slow", None, is_error=True)]
    result = AgentResult(answer="North is about 4900.", messages=messages, steps=3, tool_calls=3)
    out = with_program_output(result)
    assert out.startswith("North is about 4900.")
    assert out.endswith("exit code 0 (0.01 s)\n--- stdout ---\nNorth 4909.75")
    no_code = result.model_copy(update={"messages": messages[:1]})
    assert with_program_output(no_code) == "North is about 4900."
    quoted = result.model_copy(update={"answer": "Result:\nNorth 4909.75\nDone."})
    assert with_program_output(quoted) == "Result:\nNorth 4909.75\nDone."  # not repeated
