"""Shared by the durable-run tests: ledgers cut as a ``kill -9`` leaves them, and small tasks.

A ``kill -9`` right after the ledger's line N leaves exactly lines 0..N on disk: records are
handed to the kernel in order, and the ones a resume relies on (side-effect intents, completed
model and tool calls) are written through before the run goes on. So cutting a finished
ledger after line N is the same crash, at a moment the test chooses exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentkit.task import TaskSpec

KEY_ENV = "DURABLE_TEST_KEY"
ENV = {KEY_ENV: "kq-durable-test-91c2"}


def records(path: Path) -> list[dict[str, Any]]:
    """The ledger's complete lines (a torn last line is not a record)."""
    return [json.loads(line) for line in path.read_bytes().split(b"\n")[:-1]]


def cut_after(path: Path, keep: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Cut the ledger right after the first record `keep` selects, as a ``kill -9`` at that
    moment would leave it; returns that record."""
    lines = path.read_bytes().split(b"\n")[:-1]
    for i, line in enumerate(lines):
        record: dict[str, Any] = json.loads(line)
        if keep(record):
            path.write_bytes(b"\n".join(lines[:i + 1]) + b"\n")
            return record
    raise AssertionError("no record matched")


def agent_task(base_url: str, workspace: Path, *, tools: list[str], goal: str = "Do the work.",
               extra: dict[str, Any] | None = None) -> TaskSpec:
    return TaskSpec.model_validate({
        "name": "durable", "goal": goal, "mode": "agent", "model": "m",
        "models": {"m": {"profile": "deepseek", "model": "deepseek-chat", "base_url": base_url,
                         "api_key_env": KEY_ENV, "stream": False}},
        "tools": tools, "workspace": str(workspace),
        "retry": {"attempts": 1, "node_attempts": 1}, **(extra or {})})


def ledger_in(folder: Path) -> Path:
    found = sorted(folder.glob("*.jsonl"))
    assert len(found) == 1, found
    return found[0]
