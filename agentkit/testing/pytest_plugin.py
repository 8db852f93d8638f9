"""pytest fixtures for testing your own agents offline (loaded automatically once agentkit is
installed, through the ``pytest11`` entry point; no conftest needed).

``scripted_model_server``: a factory. Each call starts a `ScriptedModelServer` on an ephemeral
port, on its own background thread, so it serves sync tests and async tests alike (whatever
async plugin runs them); every server is stopped when the test ends::

    def test_my_agent_uses_the_tool(scripted_model_server):
        srv = scripted_model_server("deepseek", routes={"planner-model": [reply("...")]})
        srv.script(reply(tool_calls=[call("get_weather", {"city": "Oslo"})]), reply("Sunny"))
        ... run your agent with base_url=srv.base_url ...
        assert len(srv.requests) == 2

The factory takes the constructor's arguments (dialect first; `port` too, if you need a fixed
one). ``fake_clock``: a fresh `FakeClock` (virtual time: sleeps return at once, time moves by
the amount slept).

``recorded_run``: record once against a real provider, replay forever (offline, in CI). The
first run (or any run with ``AGENTKIT_RECORD=1``) calls the provider and writes the run's
ledger to the path you give; every later run replays that ledger with no network, no Docker
and no keys, and fails naming the first call the code now makes differently::

    async def test_my_task(recorded_run):
        result = await recorded_run("tests/cassettes/my_task.jsonl", "my_task.yaml")
        assert "Oslo" in result.answer
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from agentkit.testing._recording import record_or_replay
from agentkit.testing.clock import FakeClock
from agentkit.testing.server import ScriptedModelServer

__all__ = ["fake_clock", "recorded_run", "scripted_model_server"]


@pytest.fixture
def scripted_model_server() -> Iterator[Callable[..., ScriptedModelServer]]:
    """A factory: ``scripted_model_server(dialect="generic", **options)`` -> a started server."""
    with ExitStack() as servers:

        def start(dialect: str = "generic", **options: Any) -> ScriptedModelServer:
            return servers.enter_context(ScriptedModelServer(dialect, **options))

        yield start


@pytest.fixture
def fake_clock() -> FakeClock:
    """A `FakeClock` at its default epoch; pass it where agentkit takes a clock."""
    return FakeClock()


@pytest.fixture
def recorded_run() -> Callable[..., Any]:
    """``await recorded_run(ledger, task, **start_options)``: replay `ledger` if it exists,
    else run `task` live and record it there (`agentkit.testing._recording.record_or_replay`)."""
    return record_or_replay
