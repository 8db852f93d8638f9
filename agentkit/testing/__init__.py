"""Test doubles that are public API: use them to test your own agents offline.

- `ScriptedModelServer`: a model server on 127.0.0.1 that speaks a chosen provider dialect
  over real HTTP (JSON and SSE), scripted turn by turn, enforcing that provider's replay rules.
  Replies can be routed by the request's model name (one per role of a task), and it also
  runs from the command line: ``python -m agentkit.testing.server --help``.
- `FakeClock`: deterministic time for backoff and deadline tests.
- `EventCapture`: collects a run's events for assertions.
- `FakeSandboxClient`: an in-process stand-in for the Docker sandbox (code runs as a plain
  subprocess in a temporary folder: a test double, NOT a security boundary), so `run_code`,
  consensus and whole runs can be tested without Docker:
  ``FakeSandboxClient(task.sandbox).install(runtime)``.
- `agentkit.testing.ray_cluster.LocalRayCluster` (the ``[ray]`` extra): a real Ray cluster of
  several raylet nodes on this machine's loopback addresses, for tests of ``executor: ray``.

With agentkit installed, pytest offers the fixtures ``scripted_model_server`` (a factory that
starts servers and stops them after the test) and ``fake_clock``
(`agentkit.testing.pytest_plugin`).
"""

from __future__ import annotations

from agentkit.testing._script import (
    ErrorReply,
    Raw,
    RecordedRequest,
    Reply,
    Reset,
    ScriptedCall,
    call,
    error,
    message_text,
    raw,
    reply,
    reset,
)
from agentkit.testing.clock import FakeClock
from agentkit.testing.events import EventCapture
from agentkit.testing.fake_sandbox import FakeSandboxClient
from agentkit.testing.server import ScriptedModelServer, ServerStats

__all__: list[str] = [
    "ErrorReply",
    "EventCapture",
    "FakeClock",
    "FakeSandboxClient",
    "Raw",
    "RecordedRequest",
    "Reply",
    "Reset",
    "ScriptedCall",
    "ScriptedModelServer",
    "ServerStats",
    "call",
    "error",
    "message_text",
    "raw",
    "reply",
    "reset",
]
