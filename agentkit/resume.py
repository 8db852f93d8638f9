"""Durable runs: continue a run from its ledger (`resume`), or re-execute it offline (`replay`).

The audit ledger is the journal (`agentkit.journal`). Both entry points re-execute the task
recorded at ``run.started`` and answer every call that already completed from the ledger:

- `resume` keeps the run id and appends to the same ledger (a torn tail is cut and recorded,
  the hash chain continues, ``run.resumed`` says where it picked up). Finished nodes keep
  their outputs; a model call whose key and request fingerprint match a recorded answer gets
  that answer without a request, and its usage is not counted again (everything the run spent
  is restored from the ledger first); a recorded tool result is handed back without running
  the tool. Only the rest is made live. A request that differs from the recorded one under the
  same key stops the run with a `DivergenceError` (``from_divergence=True`` continues live).
  A side-effecting call that was in flight at the crash is re-run only if its tool is
  idempotent or checks its journalled intent (`write_file`); otherwise, when the task has
  ``approval``, a person is asked (a yes re-runs it), and without it the model reads an
  ``in_flight_at_crash`` tool error.
- `replay` answers *everything* from the ledger: no model request, no tool runs (so no
  network, no Docker, no API keys); the first call without a recorded answer stops it with a
  `ReplayMiss` naming the call and diffing its request against the nearest recorded one. It
  never writes to the original ledger.

Both return the `Run` handle `agentkit.start` returns.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agentkit._preflight import Role, problems, raise_problems
from agentkit.audit import GENESIS, lock_ledger
from agentkit.clock import Clock
from agentkit.errors import ConfigError
from agentkit.events import EventSink
from agentkit.journal import Journal, read_journal
from agentkit.messages import Usage
from agentkit.models import RateLimits, api_key_envs
from agentkit.run import Run, RunError, RunResult
from agentkit.runtime import Runtime
from agentkit.swarm.engine import PlanSource
from agentkit.swarm.scheduler import NodeExecutor, Replanner
from agentkit.swarm.synthesize import Ask
from agentkit.task import ExecutorSpec, TaskSpec
from agentkit.tools import Tool

__all__ = ["recorded_task", "replay", "resume"]


def recorded_task(journal: Journal) -> TaskSpec:
    """The task as the ledger's ``run.started`` recorded it (edits of the file do not count)."""
    if journal.spec is None:
        raise ConfigError(f"{journal.path}: its run.started records no task spec (a ledger "
                          f"written before durable runs); it cannot be resumed or replayed")
    try:
        return TaskSpec.model_validate(journal.spec)
    except ValidationError as exc:
        raise ConfigError(f"{journal.path}: the recorded task no longer validates: "
                          f"{exc.errors()[0]['msg']}") from None


def resume(ledger: str | Path, *, task: TaskSpec | None = None, from_divergence: bool = False,
           sinks: Iterable[EventSink] = (), clock: Clock | None = None,
           environ: dict[str, str] | None = None, workspace: str | Path | None = None,
           rate_limits: RateLimits | None = None, executor: NodeExecutor | None = None,
           replanner: Replanner | None = None, planner: PlanSource | None = None,
           synthesizer: Ask | None = None,
           tools: Iterable[Tool | Callable[..., Any]] = ()) -> Run:
    """Continue the run recorded in `ledger` (see the module docstring); returns its handle.

    `task`: the task to continue with, by default the one recorded at ``run.started``; pass
    a copy with raised limits (``budget.wall_seconds``, ``budget.tokens`` ...) to continue a
    run a budget stopped. A run that already succeeded is not run again: the handle's result
    is the recorded one (its status ``succeeded``). The other arguments are `start`'s.
    """
    _need_loop("resume")
    path = Path(ledger).resolve()
    _check_not_running(path)
    journal = read_journal(path)
    journal.from_divergence = from_divergence
    spec = task if task is not None else recorded_task(journal)
    runtime = Runtime(spec, run_id=journal.run_id, clock=clock, sinks=sinks,
                      ledger_dir=path.parent, workspace=workspace, environ=environ,
                      rate_limits=rate_limits, tools=tools, journal=journal, append_to=path)
    runtime.task_file = _recorded_file(journal)
    overrides = {"executor": executor, "replanner": replanner, "planner": planner,
                 "synthesizer": synthesizer}
    if journal.succeeded:
        return Run(runtime, overrides, recorded=recorded_result(journal))
    found = problems(spec, workspace=runtime.workspace, environ=runtime.environ,
                     replaced=[r for r, part in _roles(overrides).items() if part is not None])
    try:
        runtime.resolve_tools()
    except ConfigError as exc:
        found.append((("tools",), str(exc)))
    raise_problems(found)
    return Run(runtime, overrides)


def replay(ledger: str | Path, *, ledger_dir: str | Path | None = None,
           sinks: Iterable[EventSink] = (), clock: Clock | None = None,
           workspace: str | Path | None = None,
           tools: Iterable[Tool | Callable[..., Any]] = ()) -> Run:
    """Re-execute the run recorded in `ledger` with every call answered from it (see the
    module docstring). `ledger_dir`: where the replay's own ledger goes (default: none; never
    the original file). API keys are neither needed nor read: each key variable the task
    names is given a placeholder, and no request is ever sent. Nodes run in this process."""
    _need_loop("replay")
    journal = read_journal(Path(ledger).resolve())
    journal.strict = True
    spec = recorded_task(journal)
    spec = spec.model_copy(update={"executor": ExecutorSpec(kind="local")})
    environ = {name: "replay-has-no-key" for m in spec.models.values() for name in api_key_envs(m)}
    runtime = Runtime(spec, run_id=journal.run_id, clock=clock, sinks=sinks,
                      ledger_dir=Path(ledger_dir).resolve() if ledger_dir is not None else None,
                      workspace=workspace, environ=environ, tools=tools, journal=journal)
    runtime.task_file = _recorded_file(journal)
    raise_problems([p for p in problems(spec) if p[0][:1] != ("sandbox",)])
    return Run(runtime, {"executor": None, "replanner": None, "planner": None,
                         "synthesizer": None})


def recorded_result(journal: Journal) -> RunResult:
    """The result the ledger's last ``run.finished`` recorded."""
    data = journal.finished or {}
    error = data.get("error")
    return RunResult(run_id=journal.run_id, status=data.get("status") or "failed",
                     answer=data.get("answer"), usage=Usage.model_validate(data.get("usage") or {}),
                     cost_usd=float(data.get("cost_usd") or 0.0), ledger=str(journal.path),
                     ledger_head=_head(journal.path),
                     error=RunError.model_validate(error) if error else None)


def _recorded_file(journal: Journal) -> tuple[str, str] | None:
    if journal.task_file and journal.task_sha256:
        return journal.task_file, journal.task_sha256
    return None


def _roles(parts: dict[str, Any]) -> dict[Role, object]:
    return {"worker": parts["executor"], "planner": parts["planner"],
            "synthesizer": parts["synthesizer"]}


def _head(path: Path) -> str:
    """The hash of the ledger's last complete line."""
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(max(0, size - 65536))
        lines = [ln for ln in fh.read().split(b"\n")[:-1] if ln.endswith(b'"}')]
    return lines[-1][-66:-2].decode() if lines else GENESIS


def _check_not_running(path: Path) -> None:
    """A ledger whose run (or another resume of it) is alive has one writer already."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"cannot read the ledger {path}: {exc.strerror or exc}") from None
    try:
        if not lock_ledger(fd):
            raise ConfigError(f"{path} is being written by a live process (its run, or a resume "
                              f"of it); stop that process first, or let it finish")
    finally:
        os.close(fd)  # releases the probe's lock


def _need_loop(name: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise ConfigError(f"agentkit.{name}() needs a running event loop (call it inside "
                          f"`async def`, e.g. under asyncio.run)") from None
