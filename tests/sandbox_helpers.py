"""Shared helpers for the sandbox tests: a runtime with run_code, and a leftover check."""

from __future__ import annotations

from typing import Any

import docker

from agentkit.events import Event
from agentkit.runtime import Runtime
from agentkit.task import ModelSpec, SandboxSettings, TaskSpec
from agentkit.tools.base import ToolOutput, invoke_tool


def make_runtime(events: list[Event], **sandbox: Any) -> Runtime:
    """A runtime whose only tool is run_code; short deadlines keep the suite fast."""
    settings = {"timeout_s": 10.0, "pool_size": 0, **sandbox}
    task = TaskSpec(name="sandbox-test", goal="exercise the sandbox", model="m",
                    models={"m": ModelSpec(model="unused")}, tools=["run_code"],
                    sandbox=SandboxSettings(**settings))
    return Runtime(task, sinks=[events.append])


async def run_code(rt: Runtime, agent: str = "agent-1", **args: Any) -> ToolOutput:
    ctx = rt.tool_context(node_id="node-1", agent_id=agent, call_id="c1")
    return await invoke_tool(rt.tools.get("run_code"), args, ctx)


def containers_of(run_id: str) -> list[str]:
    client = docker.from_env()
    try:
        return [c.id for c in client.containers.list(all=True, filters={"label": f"agentkit.run={run_id}"})]
    finally:
        client.close()
