"""Containers live and die with their run, on the real engine: a run killed with SIGKILL
leaves no container behind, and concurrent runs sharing the engine do not trip over each
other's removals in the start-up sweep."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker
import pytest
from sandbox_helpers import containers_of

from agentkit.events import Event, EventBus
from agentkit.sandboxes.docker import CREATED_LABEL, OWNER_LABEL, RUN_LABEL, DockerSandboxClient
from agentkit.sandboxes.image import IMAGE_REPO
from agentkit.task import SandboxSettings

pytestmark = pytest.mark.docker

HERE = Path(__file__).resolve().parent
#: a hang guard for waits on the engine's event stream, never the figure a test checks
GUARD_S = 60


def wait_until_removed(client: Any, ids: set[str], since: float) -> dict[str, float]:
    """Block on the engine's events until every container in `ids` is destroyed (or the guard
    passes); returns those that were, with the engine's time of the destroy."""
    gone: dict[str, float] = {}
    for event in client.events(decode=True, since=since, until=since + GUARD_S,
                               filters={"type": "container", "event": "destroy"}):
        if event.get("id") in ids:
            gone[event["id"]] = event["timeNano"] / 1e9
            if set(gone) == ids:
                break
    return gone


def test_containers_of_a_killed_run_are_gone_within_seconds() -> None:
    """Proves: after SIGKILL of a process holding two sandboxes (one used by a real run_code
    call, one warm), both containers are destroyed by the engine on its own: 2 of 2
    ``destroy`` events arrive and no container with the run's label remains. No later sweep
    runs in between."""
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    child = subprocess.Popen([sys.executable, str(HERE / "_sandbox_child.py")], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    client = docker.from_env()
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("ready "), line
        run_id = line.split()[1]
        ids = set(containers_of(run_id))
        running = {c.id for c in client.containers.list(filters={"label": f"{RUN_LABEL}={run_id}"})}
        assert len(ids) == 2 and running == ids
        since = time.time() - 1
        killed_at = time.time()
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        gone = wait_until_removed(client, ids, since)
        print(f"destroyed {len(gone)} of {len(ids)}; last {max(gone.values(), default=0) - killed_at:.2f} s "
              "after the kill (engine clock)")
        assert set(gone) == ids, f"{len(ids - set(gone))} of {len(ids)} containers outlived their run"
        assert containers_of(run_id) == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        client.close()


class RemovesAfterListing:
    """Wraps the engine client's container listing: right after the engine answers, one of the
    listed containers is removed for real through a second connection, as a concurrent run
    does. That puts the removal exactly between the sweep's list and its next call."""

    def __init__(self, client: Any, victim: str) -> None:
        self.client, self.victim, self.removed = client, victim, False
        self.other = docker.from_env()
        self.original = client.api.containers
        client.api.containers = self.containers

    def containers(self, *args: Any, **kwargs: Any) -> Any:
        listed = self.original(*args, **kwargs)
        if not self.removed and any(c["Id"] == self.victim for c in listed):
            self.other.api.remove_container(self.victim, force=True, v=True)
            self.removed = True
        return listed


async def test_a_container_removed_during_the_start_up_sweep_is_not_an_error() -> None:
    """Proves: a run whose sweep lists an orphan that another run removes before this one gets
    to it starts normally (no ``engine_error ... No such container``), the vanished container
    is not reported as removed by this run, and the other orphan is swept too."""
    client = docker.from_env()
    host = socket.gethostname()
    made = []
    for name in ("vanishes", "stays"):
        labels = {RUN_LABEL: f"sweep-race-{name}", OWNER_LABEL: f"{host}:999999:12345",
                  CREATED_LABEL: f"{time.time():.0f}"}
        made.append(client.containers.create(f"{IMAGE_REPO}:latest", ["true"], labels=labels).id)
    race = RemovesAfterListing(client, victim=made[0])
    events: list[Event] = []
    try:
        sandbox = DockerSandboxClient(SandboxSettings(), run_id="sweep-race",
                                      emit=EventBus("sweep-race", sinks=[events.append]).emit,
                                      docker_client=client)
        async with sandbox:
            assert sandbox.started
        assert race.removed
        removed = {cid for e in events for cid in e.data.get("containers", [])}
        assert made[0] not in removed  # (another run's sweep may take `stays` first)
        assert containers_of("sweep-race-vanishes") == containers_of("sweep-race-stays") == []
    finally:
        for cid in made:
            try:
                client.api.remove_container(cid, force=True)
            except docker.errors.NotFound:
                pass
        race.other.close()
        client.close()
