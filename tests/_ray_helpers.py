"""A hand-written 12-node DAG for the Ray executor tests, and the scripted model's answers.

Each role talks to the scripted server under its own model name, so the server routes by
name. A worker lists the workspace once, then answers with its node's name (no digits, so the
synthesizer's grounding check has nothing to flag); the writer's answer names the nodes whose
results it was given, so two runs that hand it the same results get the same answer.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from agentkit.task import TaskSpec
from agentkit.testing import RecordedRequest, Reply, call, reply

WORKER, WRITER = "ray-worker-model", "ray-writer-model"
KEY_ENV = "AGENTKIT_RAY_TEST_KEY"
#: node -> its dependencies: four roots, joins of two, a chain to one sink
DAG: dict[str, list[str]] = {
    "alpha": [], "bravo": [], "charlie": [], "delta": [],
    "echo": ["alpha", "bravo"], "foxtrot": ["bravo", "charlie"], "golf": ["charlie", "delta"],
    "hotel": ["alpha"], "india": ["echo", "foxtrot"], "juliet": ["foxtrot", "golf"],
    "kilo": ["hotel", "india"], "lima": ["juliet", "kilo"],
}



def node_of(req: RecordedRequest) -> str:
    """The node a worker request is for: its goal, which this file wrote."""
    users = " ".join(req.texts("user"))
    found = re.search(r"Report on node ([a-z]+)\.", users)
    assert found is not None, users[:300]
    return found[1]


def tool_results(req: RecordedRequest) -> int:
    return sum(1 for m in req.messages if m.get("role") == "tool")


def worker_answer(req: RecordedRequest, *, echo_key: str | None = "alpha",
                  tool: str = "list_files", arguments: dict[str, Any] | None = None) -> Reply:
    """First turn: call `tool` once; second: the node's answer (`echo_key`'s node also quotes
    the API key the request carried, as a careless model might)."""
    node = node_of(req)
    if tool_results(req) == 0:
        return reply(reasoning=f"Look at the workspace for {node}.",
                     tool_calls=[call(tool, arguments or {})])
    answer = f"Node {node} is ready."
    if node == echo_key:
        key = str(req.headers.get("authorization", "")).removeprefix("Bearer ")
        answer += f" The key I was given is {key}."
    return reply(answer, reasoning="Done.")


def writer_answer(req: RecordedRequest) -> Reply:
    users = " ".join(req.texts("user"))
    seen = sorted(set(re.findall(r"Node ([a-z]+) is ready", users)))
    return reply(f"All of {', '.join(seen)} reported ready.", reasoning="Summarise.")


def task(base_url: str, workspace: Path, *, executor: dict[str, Any] | None = None,
         tools: list[str] | None = None, worker_rpm: int | None = None,
         budget: dict[str, Any] | None = None, sandbox: dict[str, Any] | None = None) -> TaskSpec:
    def spec(wire: str, rpm: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"profile": "deepseek", "model": wire, "base_url": base_url,
                               "api_key_env": KEY_ENV, "max_tokens": 256, "stream": False}
        if rpm is not None:
            out["rpm"] = rpm
        return out
    tools = tools or ["list_files"]
    data: dict[str, Any] = {
        "name": "ray-dag", "goal": "Check that every node is ready.", "model": "work",
        "models": {"work": spec(WORKER, worker_rpm), "write": spec(WRITER)},
        "roles": {"worker": "work", "synthesizer": "write", "planner": "work"},
        "tools": tools, "workspace": str(workspace),
        "budget": {"max_agents": 8, "max_nodes": 12, "max_steps": 6, "tokens": 10_000_000,
                   "tool_calls": 1000, "wall_seconds": 600, **(budget or {})},
        "retry": {"node_attempts": 2, "attempts": 2, "base_delay_s": 0.0},
        "plan": {"nodes": [{"id": n, "goal": f"Report on node {n}.", "depends_on": deps,
                            "tools": tools} for n, deps in DAG.items()]},
        "executor": executor or {"kind": "local"},
    }
    if sandbox is not None:
        data["sandbox"] = sandbox
    return TaskSpec.model_validate(data)
