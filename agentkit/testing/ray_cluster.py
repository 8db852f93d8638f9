"""`LocalRayCluster`: a real Ray cluster of several raylet nodes on this machine's loopback.

For tests and benchmarks of the Ray executor (``executor: {kind: ray}``)::

    with LocalRayCluster(nodes=2, env={"MY_KEY": "sk-..."}) as cluster:
        ray.init(address=cluster.address)
        ...

Each node is one ``ray start --block`` process with its own loopback address (127.0.0.2,
127.0.0.3, ...), ports and temporary folder, so its traffic stays on loopback: Ray replaces
127.0.0.1 by the machine's own address, but keeps the rest of 127.0.0.0/8. Ephemeral ports are
used throughout (the default dashboard ports would clash between two nodes on one machine, or
with another cluster on it). `stop` ends exactly the processes this object started, by their
process ids (a bare ``ray stop`` would stop every cluster on the machine). `env` is added to
the nodes' environment: Ray workers inherit it, which is how API keys reach them. Needs the
``[ray]`` extra (the ``ray`` command next to this Python).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from agentkit.errors import SetupError

__all__ = ["LocalRayCluster"]

#: what ``ray start --block`` prints once its node runs
_STARTED = "Ray runtime started"


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalRayCluster:
    """`nodes` raylets (the first is the head) with `cpus` CPUs each, on 127.0.0.2 upwards."""

    def __init__(self, nodes: int = 2, *, cpus: int = 2, env: Mapping[str, str] | None = None,
                 first_address: int = 2, start_timeout_s: float = 120.0) -> None:
        if not 1 <= nodes <= 50:
            raise ValueError("nodes must be 1-50")
        self.ips = [f"127.0.0.{first_address + i}" for i in range(nodes)]
        self.cpus, self.timeout = cpus, start_timeout_s
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
        self.port = 0
        self.processes: list[subprocess.Popen[bytes]] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._ray = Path(sys.executable).with_name("ray")

    @property
    def address(self) -> str:
        """The head's ``HOST:PORT`` (what ``ray.init(address=...)`` and ``executor.address``
        take)."""
        return f"{self.ips[0]}:{self.port}"

    def start(self) -> LocalRayCluster:
        """Start every node; return once each says it runs (raises `SetupError` if one
        does not within `start_timeout_s`)."""
        if not self._ray.is_file():
            raise SetupError(f"no ray command at {self._ray}: pip install 'agentkit-swarm[ray]'")
        # short: Ray's socket paths live in it and a Unix socket path is limited to 107 bytes
        self._tmp = tempfile.TemporaryDirectory(prefix="akray", dir="/tmp", ignore_cleanup_errors=True)
        self.port = _free_port(self.ips[0])
        try:
            for i, ip in enumerate(self.ips):
                self._start_node(i, ip)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, i: int, ip: str) -> None:
        assert self._tmp is not None
        folder = Path(self._tmp.name) / f"n{i}"
        folder.mkdir()
        args = [str(self._ray), "start", "--block", "--node-ip-address", ip,
                "--num-cpus", str(self.cpus), "--disable-usage-stats",
                "--dashboard-agent-listen-port", str(_free_port(ip)),
                "--min-worker-port", "0", "--max-worker-port", "0", "--temp-dir", str(folder)]
        if i == 0:
            args += ["--head", "--port", str(self.port), "--include-dashboard", "false",
                     "--dashboard-port", str(_free_port(ip))]
        else:
            args += ["--address", self.address]
        log = folder / "start.log"
        with log.open("wb") as out:
            process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                       env=self.env, start_new_session=True)
        self.processes.append(process)
        deadline = time.monotonic() + self.timeout
        while _STARTED not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise SetupError(f"ray start for {ip} did not come up (exit {process.poll()}):\n"
                                 f"{tail}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM each node this object started (it stops its own raylet, workers and, for
        the head, the GCS), wait for it, SIGKILL its process group if it lingers."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        self.processes.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
