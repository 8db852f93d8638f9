"""Node self-consistency (`consensus:`): samples vote with what their programs printed.

The vote itself is tested on agent results built by hand (it is a pure function of them);
the wiring is tested end to end over real HTTP with the scripted DeepSeek server.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from test_swarm_e2e import ENV, PLANNER, Planner, Workers, events_of, nodes, serve, task_for

from agentkit.agent import AgentResult
from agentkit.errors import BudgetExceeded, TaskFileError
from agentkit.messages import Message, ToolResultPart
from agentkit.run import arun
from agentkit.swarm.consensus import answer_key, vote
from agentkit.task import ConsensusSpec, load_task_text
from agentkit.testing import RecordedRequest, Reply, ScriptedModelServer, reply


def result(answer: str, stdout: str | None = None, *, ok: bool = True,
           failed: int = 0) -> AgentResult:
    """An agent's result: `failed` programs that exited 1, then one that printed `stdout`."""
    messages = [Message.user("go")]
    messages += [Message(role="tool", parts=(ToolResultPart(
        call_id=f"f{n}", name="run_code", content="exit code 1 (0.01 s)\n--- stderr ---\nKeyError",
        is_error=True, metadata={"exit_code": 1, "stdout": ""}),)) for n in range(failed)]
    if stdout is not None:
        messages.append(Message(role="tool", parts=(ToolResultPart(
            call_id="c", name="run_code", content=f"exit code 0 (0.01 s)\n--- stdout ---\n{stdout}",
            metadata={"exit_code": 0, "stdout": stdout}),)))
    return AgentResult(answer=answer, messages=messages, steps=2, tool_calls=1 if stdout else 0,
                       stop_reason="answer" if ok else "max_steps")


async def run_vote(results: list[AgentResult | Exception], samples: int = 3,
                   agree: int = 2) -> tuple[Any, list[int], list[tuple[str, dict[str, Any]]]]:
    asked: list[int] = []
    events: list[tuple[str, dict[str, Any]]] = []

    async def sample(i: int) -> AgentResult:
        asked.append(i)
        r = results[i]
        if isinstance(r, Exception):
            raise r
        return r

    voted = await vote(sample, ConsensusSpec(samples=samples, agree=agree),
                       lambda kind, data: events.append((kind, data)))
    return voted, sorted(asked), events


def test_the_key_is_the_programs_numbers_whatever_the_labels_and_order() -> None:
    a = result("done", "North: 1,234.5\nSouth: 10")
    b = result("done", "South total 10.00\nNorth total 1234.50")
    assert answer_key(a) == answer_key(b) == ("program", ("10.00", "1234.50"))
    assert answer_key(result("North sold 12.")) == ("answer", ("12.00",))
    assert answer_key(result("x", "2024-03: -4.5")) == ("program", ("-4.50", "2024.00", "3.00"))
    assert answer_key(result("x", "1", ok=False)) == ("none", ())


async def test_two_agreeing_samples_end_the_vote_without_a_third() -> None:
    voted, asked, events = await run_vote([result("A", "total 42"), result("B", "42.00"),
                                           result("C", "41")])
    assert asked == [0, 1] and voted.votes == 2 and voted.chosen.index == 0
    assert [k for k, _ in events].count("node.sample") == 2
    assert events[-1] == ("node.consensus", {"samples": 2, "chosen": 0, "votes": 2, "agree": 2,
                                             "evidence": "program"})


async def test_a_third_sample_breaks_a_disagreement() -> None:
    voted, asked, _ = await run_vote([result("A", "41"), result("B", "42"), result("C", "42")])
    assert asked == [0, 1, 2] and voted.chosen.index == 1 and voted.votes == 2


async def test_program_output_outvotes_numbers_no_program_printed() -> None:
    """Two samples that state the same invented number lose to one that ran a program."""
    voted, _, _ = await run_vote([result("It is 99."), result("It is 99."), result("ok", "42")],
                                 samples=3, agree=3)
    assert voted.chosen.index == 2 and voted.chosen.evidence == "program" and voted.votes == 1


async def test_without_agreement_the_earliest_of_the_most_common_answer_wins() -> None:
    voted, asked, _ = await run_vote([result("A", "1"), result("B", "2"), result("C", "3")])
    assert asked == [0, 1, 2] and voted.chosen.index == 0 and voted.votes == 1


async def test_in_a_tie_an_answer_stating_its_programs_numbers_beats_an_invented_one() -> None:
    """Seen with the embedded model: two samples printed rainfall totals, then answered a
    frost-days question with "0"; the third printed and answered 10."""
    voted, _, events = await run_vote([
        result("Days below 0 degrees in Oslo: 0.", "Bergen: 135.30\nOslo: 65.00"),
        result("It was below 0 degrees on 0 days.", "Oslo rainfall: 65.0"),
        result("Days below 0 degrees in Oslo: 10", "Days below 0 degrees in Oslo: 10")])
    assert voted.chosen.index == 2 and voted.votes == 1
    assert events[-1][1]["chosen"] == 2


async def test_in_a_tie_a_program_that_ran_clean_beats_one_patched_around_its_error() -> None:
    """Seen with the embedded model (family staff, seed 0): one sample hit KeyError 'city',
    "fixed" it with ``if 'city' in employee`` and printed 0; another printed 13 on its first
    run; the third never got a program through."""
    voted, _, events = await run_vote([
        result("Number of employees in Oslo: 0", "Number of employees in Oslo: 0", failed=1),
        result("Number of employees in Oslo: 13", "Number of employees in Oslo: 13"),
        result("", failed=4, ok=False)])
    assert voted.chosen.index == 1 and voted.votes == 1
    assert [d["failed_programs"] for k, d in events if k == "node.sample"] == [1, 0, 4]


async def test_a_failed_sample_does_not_vote_and_all_failed_raises_the_first_error() -> None:
    over = BudgetExceeded("tokens", 100, 120)
    voted, _, events = await run_vote([over, result("A", "7"), result("B", "7")])
    assert voted.chosen.index == 1 and voted.votes == 2
    assert events[0][1]["error"] == over.to_dict()
    with pytest.raises(BudgetExceeded):
        await run_vote([over, over, over])


def test_agree_above_samples_is_a_task_file_error_naming_the_field() -> None:
    text = ("name: t\ngoal: g\nmodel: m\nmodels:\n  m: {provider: local, model: x}\n"
            "consensus:\n  samples: 2\n  agree: 3\n")
    with pytest.raises(TaskFileError) as info:
        load_task_text(text, "task.yaml")
    assert "task.yaml" in str(info.value) and "agree (3) cannot exceed samples (2)" in str(info.value)


async def test_a_node_runs_samples_until_two_agree_and_keeps_the_majority(tmp_path: Path) -> None:
    """Over HTTP: the worker's first draw is wrong, the next two agree; the node's output is
    the agreed answer, every sample is in the ledger, and the planner made one request."""
    draws = itertools.count()
    answers = ["The total is 41.", "The total is 42.", "Total: 42"]

    def worker(req: RecordedRequest) -> Reply:
        return reply(answers[next(draws)], reasoning="Add them up.")

    async with ScriptedModelServer("deepseek") as srv:
        workers = Workers({"add the numbers": worker})
        serve(srv, Planner(nodes(("t", "add the numbers", [], []))), workers, "The total is 42.")
        task = task_for(srv, tmp_path, consensus={"samples": 3, "agree": 2})
        res = await arun(task, ledger_dir=tmp_path / "ledger", environ=ENV)

    assert res.status == "succeeded", res.error
    assert workers.calls["add the numbers"] == 3
    output = res.nodes["t"].output or ""
    assert "42" in output and "41" not in output
    events = events_of(res)
    samples = [e["data"] for e in events if e["kind"] == "node.sample"]
    assert sorted(s["sample"] for s in samples) == [0, 1, 2]
    (consensus,) = [e["data"] for e in events if e["kind"] == "node.consensus"]
    assert consensus["votes"] == 2 and consensus["samples"] == 3
    # the planner stopped as soon as its plan was accepted: one request, no closing sentence
    assert len(srv.requests_for(PLANNER)) == 1
