"""Shared fixtures.

Docker tests carry the ``docker`` marker. Without a reachable engine they are skipped on a
developer machine, but when ``AGENTKIT_REQUIRE_DOCKER=1`` (set by .ci/run) they fail instead:
a Docker test skipped in CI would hide a broken sandbox.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sandbox_helpers import containers_of, make_runtime

from agentkit.events import Event
from agentkit.runtime import Runtime


@pytest.fixture(autouse=True)
def _own_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own empty folder: a run writes its ledger to ``./runs`` by default
    (as the CLI does), and nothing a test writes may land in the checkout."""
    monkeypatch.chdir(tmp_path)


@functools.cache
def docker_problem() -> str | None:
    """None if a Docker engine answers a ping, else why not."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
        return None
    except Exception as exc:  # any failure to reach the engine
        return f"{type(exc).__name__}: {exc}"


@pytest.fixture(autouse=True)
def _docker_gate(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("docker") is None:
        return
    problem = docker_problem()
    if problem is None:
        return
    if os.environ.get("AGENTKIT_REQUIRE_DOCKER") == "1":
        pytest.fail(f"AGENTKIT_REQUIRE_DOCKER=1 but the Docker engine is unavailable: {problem}")
    pytest.skip(f"Docker engine unavailable: {problem}")


@pytest.fixture
async def rt() -> AsyncIterator[Runtime]:
    """A runtime with a Docker sandbox (8 s per call) for the sandbox tests; on the way out,
    no container of its run may be left behind."""
    events: list[Event] = []
    runtime = make_runtime(events, timeout_s=8.0)
    yield runtime
    await runtime.aclose()
    assert containers_of(runtime.run_id) == [], "a container of the run was left behind"
