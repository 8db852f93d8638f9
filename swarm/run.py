"""The Python API: start a run, stream its events, cancel it, get a typed `RunResult`.

    run = start(task)                     # inside a running event loop
    async for event in run.events(): ...  # every event from run.started to run.finished
    result = await run.result()           # RunResult; run.cancel() stops it cleanly

`arun` is ``await start(...).result()``; `run_sync` is the one-line sync wrapper for scripts
(it refuses to run inside an event loop rather than nesting one). Each run owns its Runtime:
nothing is shared between runs, so a backend can run many at once in one process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from agentkit.clock import Clock
from agentkit.errors import ConfigError
from agentkit.events import Event, EventSink
from agentkit.runtime import Runtime
from agentkit.swarm.scheduler import NodeResult
from agentkit.swarm.synthesize import Citation
from agentkit.task import TaskSpec, load_task

__all__ = ["Run", "RunResult", "UsageTotals", "arun", "run_sync", "start"]


class UsageTotals(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0


class RunResult(BaseModel):
    """What a run produced, and why it ended the way it did."""

    run_id: str
    status: Literal["succeeded", "failed", "cancelled"]
    answer: str | None = None
    citations: list[Citation] = Field(default_factory=list)
    nodes: dict[str, NodeResult] = Field(default_factory=dict)
    usage: UsageTotals = Field(default_factory=UsageTotals)
    cost_usd: float = 0.0
    ledger: str | None = None
    error: dict[str, Any] | None = None
    ungrounded: list[str] = Field(default_factory=list)


class Run:
    """A handle on one running task. Made by `start`; cheap; holds no global state."""

    def __init__(self, runtime: Runtime, overrides: Mapping[str, Any]) -> None:
        self.runtime = runtime
        self.run_id = runtime.run_id
        self._history: list[Event] = []
        self._readers: list[asyncio.Queue[Event | None]] = []
        self._done = False
        self._started = self._cancel_requested = False
        runtime.bus.add_sink(self._record)
        from agentkit.swarm.engine import execute

        self._task: asyncio.Task[RunResult] = asyncio.get_running_loop().create_task(
            self._main(execute, overrides), name=f"agentkit-run:{self.run_id}")

    def _record(self, event: Event) -> None:
        self._history.append(event)
        for queue in self._readers:
            queue.put_nowait(event)

    async def _main(self, execute: Any, overrides: Mapping[str, Any]) -> RunResult:
        self._started = True
        if self._cancel_requested:  # cancelled before it began: nothing ran, nothing to record
            await self.runtime.aclose()
            self._done = True
            return self._cancelled()
        try:
            result: RunResult = await execute(self.runtime, **overrides)
            return result
        finally:
            self._done = True
            for queue in self._readers:
                queue.put_nowait(None)

    async def events(self) -> AsyncIterator[Event]:
        """Every event of the run, from the first (replayed if already emitted) to the last."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        for event in self._history:
            queue.put_nowait(event)
        if self._done:
            queue.put_nowait(None)
        self._readers.append(queue)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield item
        finally:
            self._readers.remove(queue)

    def cancel(self) -> None:
        """Stop the run: every sub-agent, HTTP stream and container is cancelled and closed;
        `result()` then returns a RunResult with status "cancelled"."""
        self._cancel_requested = True
        if self._started:  # a task cancelled before its first step never enters its body
            self._task.cancel()

    def done(self) -> bool:
        return self._task.done()

    async def result(self) -> RunResult:
        try:
            return await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if not self._task.done():  # our caller was cancelled, not the run: stop it too
                self._task.cancel()
                raise
            if self._cancel_requested and self._task.cancelled():
                return self._cancelled()  # the run was stopped before its handlers could run
            raise

    def _cancelled(self) -> RunResult:
        from agentkit.errors import RunCancelled

        ledger = self.runtime.ledger_path
        return RunResult(run_id=self.run_id, status="cancelled",
                         error=RunCancelled("the run was cancelled").to_dict(),
                         ledger=str(ledger) if ledger else None)


def _task_of(task: TaskSpec | str | Path) -> TaskSpec:
    if isinstance(task, TaskSpec):
        return task
    if isinstance(task, str | Path):
        return load_task(task)
    raise ConfigError(f"task must be a TaskSpec or a path to a task file, not {type(task).__name__}")


def start(task: TaskSpec | str | Path, *, ledger_dir: str | Path | None = None,
          workspace: str | Path | None = None, sinks: Iterable[EventSink] = (),
          clock: Clock | None = None, environ: dict[str, str] | None = None,
          run_id: str | None = None, **overrides: Any) -> Run:
    """Start a run in the current event loop and return its handle at once.

    `overrides` are for tests and benchmarks (e.g. ``executor=`` a simulated node executor).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise ConfigError("agentkit.start() needs a running event loop; use `await arun(...)` "
                          "in async code or `run_sync(...)` in a script") from None
    from agentkit.swarm.prompting import Prompts

    spec = _task_of(task)
    Prompts.for_task(spec)  # a bad prompt override is a ConfigError now, not a failed run later
    runtime = Runtime(spec, run_id=run_id, clock=clock, sinks=sinks,
                      ledger_dir=ledger_dir, workspace=workspace, environ=environ)
    _check_inputs(spec, runtime.workspace)
    return Run(runtime, overrides)


def _check_inputs(spec: TaskSpec, workspace: Path) -> None:
    """Files the sandbox needs must exist before any model is called (not fail every node)."""
    missing = [p for p in spec.sandbox.inputs if not (workspace / p).is_file()]
    if missing:
        raise ConfigError(f"sandbox.inputs: {', '.join(map(repr, missing))} not found in the "
                          f"workspace {str(workspace)!r} (workspace paths in a task file are "
                          f"relative to the file)")


async def arun(task: TaskSpec | str | Path, **kwargs: Any) -> RunResult:
    """Run a task to the end and return its result (the async entry point)."""
    return await start(task, **kwargs).result()


def run_sync(task: TaskSpec | str | Path, **kwargs: Any) -> RunResult:
    """`arun` for synchronous code (scripts, workers). Not for use inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arun(task, **kwargs))
    raise ConfigError("run_sync() was called inside a running event loop (a notebook, an async "
                      "web handler); use `await agentkit.arun(task)` there instead")
