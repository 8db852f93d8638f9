"""Self-consistency for nodes: run a node's agent several times, keep the answer runs agree on.

A small model gets a computation right most of the time, not every time, and its mistakes
differ from draw to draw (a wrong grouping once, a single row instead of a total another
time). Independent samples that print the *same numbers* are very unlikely to be wrong the same
way, so a node with ``consensus.samples > 1`` runs up to that many samples and stops as soon as
``consensus.agree`` of them agree. The vote is on execution results (what the sample's last
successful program printed); a sample with no successful program votes with the numbers of its
answer only when no sample has program output, since numbers no program printed are guesses.
Among samples tied on votes, one whose answer states only numbers its own program printed is
chosen before one that answers with numbers of its own, then one whose programs failed fewer
times (a program patched around its own error, ``if 'city' in row``, is often patched into a
wrong answer).

Samples run ``agree`` at a time first (the common case ends there), then one by one. Each
sample's outcome and the vote are recorded as ``node.sample`` and ``node.consensus`` events.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from agentkit.agent import AgentResult
from agentkit.errors import AgentkitError
from agentkit.events import EventKind
from agentkit.messages import ToolResultPart
from agentkit.task import ConsensusSpec

__all__ = ["Sample", "Vote", "answer_key", "last_program_stdout", "vote"]

_NUMBER = re.compile(r"(?:(?<![\w.])-)?\d[\d,]*(?:\.\d+)?")  # "2024-03" is 2024 and 03
Evidence = Literal["program", "answer", "none"]


def last_program_stdout(result: AgentResult) -> tuple[str, str] | None:
    """(rendered tool result, stdout) of the last program that exited 0, if any: read from the
    tool's structured result (``exit_code``, ``stdout``), never parsed back from its text."""
    for message in reversed(result.messages):
        for part in reversed(message.parts):
            if not isinstance(part, ToolResultPart) or part.is_error or not part.metadata:
                continue
            if part.metadata.get("exit_code") == 0 and "stdout" in part.metadata:
                return part.content, str(part.metadata["stdout"])
    return None


def _failed_programs(result: AgentResult) -> int:
    """How many programs the sample ran that exited non-zero (from the structured results)."""
    return sum(1 for message in result.messages for part in message.parts
               if isinstance(part, ToolResultPart) and part.program_failed)


def _normalise(text: str) -> tuple[str, ...]:
    """The numbers of `text`, rounded to cents and sorted (labels and order do not vote);
    for text without numbers, its words."""
    numbers = []
    for raw in _NUMBER.findall(text):
        try:
            numbers.append(f"{round(float(raw.replace(',', '')), 2):.2f}")
        except ValueError:
            continue
    if numbers:
        return tuple(sorted(numbers))
    return tuple(text.lower().split())


def answer_key(result: AgentResult) -> tuple[Evidence, tuple[str, ...]]:
    """What a sample votes with: its program's printed numbers, else its answer's."""
    if not result.ok:
        return "none", ()
    program = last_program_stdout(result)
    if program is not None and program[1].strip():
        return "program", _normalise(program[1])
    return ("answer", _normalise(result.answer)) if result.answer.strip() else ("none", ())


@dataclass
class Sample:
    index: int
    result: AgentResult | None
    error: AgentkitError | None
    evidence: Evidence
    key: tuple[str, ...]
    #: how many of the sample's programs ran and failed before its answer
    failed_programs: int = 0


@dataclass
class Vote:
    """The chosen sample and its votes (what every sample used is in the run's usage owner)."""

    chosen: Sample
    votes: int


async def vote(run_sample: Callable[[int], Awaitable[AgentResult]], spec: ConsensusSpec,
               emit: Callable[[EventKind, dict[str, Any]], Any]) -> Vote:
    """Run samples until `spec.agree` agree or `spec.samples` ran; return the plurality.

    A sample that raises an agentkit error (a budget, a failed model) counts as a failed
    sample; if every sample failed, the first error is raised.
    """
    samples: list[Sample] = []

    async def one(i: int) -> Sample:
        try:
            result = await run_sample(i)
        except AgentkitError as err:
            sample = Sample(i, None, err, "none", ())
        else:
            evidence, key = answer_key(result)
            sample = Sample(i, result, None, evidence, key, _failed_programs(result))
        emit("node.sample", {"sample": i, "ok": sample.result is not None and sample.result.ok,
                             "evidence": sample.evidence, "key": list(sample.key)[:20],
                             "failed_programs": sample.failed_programs,
                             "error": sample.error.to_dict() if sample.error else None})
        return sample

    async with asyncio.TaskGroup() as group:  # a crash in one sample cancels the others
        started = [group.create_task(one(i)) for i in range(min(spec.agree, spec.samples))]
    samples += [t.result() for t in started]
    while _leader(samples)[1] < spec.agree and len(samples) < spec.samples:
        samples.append(await one(len(samples)))

    chosen, votes = _leader(samples)
    emit("node.consensus", {"samples": len(samples), "chosen": chosen.index if chosen else None,
                            "votes": votes, "agree": spec.agree,
                            "evidence": chosen.evidence if chosen else "none"})
    if chosen is None:
        failed = next((s.error for s in samples if s.error is not None), None)
        if failed is not None:
            raise failed
        chosen = samples[0]  # no sample answered: the caller reports the first one's failure
    return Vote(chosen=chosen, votes=votes)


def _leader(samples: list[Sample]) -> tuple[Sample | None, int]:
    """A sample of the most common key, among the best evidence any sample has.

    Among tied samples, one whose answer states only numbers its program printed comes
    first (an answer that drops its program's output for numbers of its own is a guess),
    then the one whose programs failed fewest times, then the earliest.
    """
    for evidence in ("program", "answer"):
        voters = [s for s in samples if s.evidence == evidence]
        if voters:
            counts = Counter(s.key for s in voters)
            top = max(counts.values())
            tied = [s for s in voters if counts[s.key] == top]
            return min(tied, key=lambda s: (not _answer_from_program(s), s.failed_programs,
                                            s.index)), top
    return None, 0


def _answer_from_program(sample: Sample) -> bool:
    """Whether every number in the sample's answer is one its program printed."""
    if sample.evidence != "program" or sample.result is None:
        return True
    stated = {k for k in _normalise(sample.result.answer) if _NUMBER.fullmatch(k)}
    return stated <= set(sample.key)
