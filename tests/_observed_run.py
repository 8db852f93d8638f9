"""A small swarm run over real HTTP for the telemetry and report tests.

The planner model submits a two-node plan (``a`` lists the workspace files, then ``b``, which
depends on it, answers after one 503 the resilience layer retries); the synthesizer writes the
answer. Each role has its own model name on one `ScriptedModelServer` (DeepSeek dialect), and
every reply carries exact usage, so spans and reports can be checked against known numbers.
The answer's "42" is in no tool output: the grounding check flags it, the synthesizer's fix
round keeps it, and it stays ungrounded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from agentkit import RunResult, arun
from agentkit.events import EventSink
from agentkit.task import TaskSpec
from agentkit.testing import ScriptedModelServer, call, error, reply

PLANNER, WORKER, WRITER = "planner-model", "worker-model", "writer-model"
#: the API key the task's models read; a worker repeats it, so content capture must redact it
SECRET = "plainsecretvalue42"
ENV = {"OBS_KEY": SECRET}
PLAN = {"nodes": [
    {"id": "a", "goal": "List the files.", "depends_on": [], "tools": ["list_files"]},
    {"id": "b", "goal": "Describe the files.", "depends_on": ["a"], "tools": []}]}
ANSWER = "There is 1 file, notes.txt, with 42 lines."
#: usage of each scripted reply: (input, output, reasoning)
USAGE = {
    "plan": (100, 20, 5), "a1": (50, 10, 3), "a2": (70, 12, 4), "b": (60, 15, 6),
    "write": (80, 25, 7), "fix": (90, 25, 2)}


def _usage(name: str) -> dict[str, int]:
    inp, out, rs = USAGE[name]
    return {"input_tokens": inp, "output_tokens": out, "reasoning_tokens": rs}


def script(srv: ScriptedModelServer, answer: str = ANSWER) -> None:
    """Queue every reply of the run (the two nodes run one after the other: b needs a)."""
    srv.route(PLANNER, reply(reasoning="Two steps.", usage=_usage("plan"),
                             tool_calls=[call("submit_plan", PLAN, id="call_plan")]))
    srv.route(WORKER,
              reply(reasoning="Look first.", usage=_usage("a1"),
                    tool_calls=[call("list_files", {}, id="call_ls")]),
              reply("One file: notes.txt.", reasoning="Seen it.", usage=_usage("a2")),
              error(503, "overloaded"),
              reply(f"notes.txt has 42 lines (key {SECRET}).", reasoning="Count.",
                    usage=_usage("b")))
    srv.route(WRITER, reply(answer, reasoning="Combine.", usage=_usage("write")),
              reply(answer, reasoning="I stand by it.", usage=_usage("fix")))


def task_for(srv: ScriptedModelServer, workspace: Path, **extra: Any) -> TaskSpec:
    def model(wire_name: str) -> dict[str, Any]:
        return {"profile": "deepseek", "model": wire_name, "base_url": srv.base_url,
                "api_key_env": "OBS_KEY", "max_tokens": 256, "stream": False}

    (workspace / "notes.txt").write_text("\n".join(f"line {i}" for i in range(42)) + "\n")
    spec: dict[str, Any] = {
        "name": "observed", "goal": "How many files are there and what is in them?",
        "model": "work",
        "models": {"plan": model(PLANNER), "work": model(WORKER), "write": model(WRITER)},
        "roles": {"planner": "plan", "worker": "work", "synthesizer": "write"},
        "tools": ["list_files"], "workspace": str(workspace),
        "retry": {"attempts": 2, "base_delay_s": 0.0, "node_attempts": 1},
        **extra}
    return TaskSpec.model_validate(spec)


async def observed_run(srv: ScriptedModelServer, tmp_path: Path, *,
                       sinks: Iterable[EventSink] = (), environ: Mapping[str, str] | None = None,
                       answer: str = ANSWER, **extra: Any) -> RunResult:
    """Run the scenario to the end (the caller owns the server)."""
    script(srv, answer)
    workspace = tmp_path / "ws"
    workspace.mkdir(exist_ok=True)
    return await arun(task_for(srv, workspace, **extra), ledger_dir=tmp_path / "ledger",
                      environ={**ENV, **(environ or {})}, sinks=sinks)
