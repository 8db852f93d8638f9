"""The run API, for swarm and agent tasks alike: start a run, stream its events, cancel it,
get a typed `RunResult`.

    run = start(task)                     # inside a running event loop
    async for event in run.events(): ...  # every event from run.started to run.finished
    result = await run.result()           # RunResult; run.cancel() stops it cleanly
    run.approve(key); run.deny(key, why)  # a tool call waiting for a person (task `approval`)
    result.raise_for_status()             # the run's error as an exception, if it failed

`arun` is ``await start(...).result()``; `run_sync` is the one-line sync wrapper for scripts
(it refuses to run inside an event loop rather than nesting one). Each run owns its Runtime:
nothing is shared between runs, so a backend can run many at once in one process.

`execute` is the run's lifecycle: it opens the Runtime (ledger), always emits ``run.started``
and ``run.finished``, enforces the wall clock, and always closes the Runtime — on success,
failure and cancellation — then assembles the result from the run's usage owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr

from agentkit import errors
from agentkit._preflight import Role, problems, raise_problems
from agentkit.agent import run_agent_task
from agentkit.budget import Budget
from agentkit.clock import Clock
from agentkit.errors import AgentkitError, BudgetExceeded, ConfigError, RunCancelled, RunFailed
from agentkit.events import Event, EventSink
from agentkit.journal import Journal
from agentkit.messages import Usage
from agentkit.models import RateLimits
from agentkit.runtime import Runtime
from agentkit.swarm.context import SwarmContext
from agentkit.swarm.engine import PlanSource, run_swarm
from agentkit.swarm.remote import check_executor
from agentkit.swarm.scheduler import NodeExecutor, NodeOutput, NodeResult, Replanner
from agentkit.swarm.synthesize import Ask, Citation
from agentkit.task import ExecutorSpec, TaskSpec, load_task
from agentkit.telemetry import attach as attach_telemetry
from agentkit.telemetry import check_available as check_telemetry
from agentkit.tools import Tool

__all__ = ["FROM_TASK", "Run", "RunError", "RunResult", "RunStatus", "arun", "execute", "head_file",
           "run_sync", "start"]

RunStatus = Literal["succeeded", "failed", "cancelled"]


class _Default(enum.Enum):
    TASK_OUTPUT = "the task's output folder"


#: `start(ledger_dir=...)`'s default: the task's `output` folder, as the CLI uses
FROM_TASK: Literal[_Default.TASK_OUTPUT] = _Default.TASK_OUTPUT


class RunError(BaseModel):
    """Why a run did not succeed. `type` names the exception class in `agentkit.errors`
    (``RunFailed``, ``BudgetExceeded``, ``ProviderHTTPError``, ``ConfigError``, ...); `details`
    holds that error's own facts (provider, status, budget, limit, nodes, ...)."""

    type: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, exc: BaseException) -> RunError:
        if isinstance(exc, AgentkitError):
            data = exc.to_dict()
            return cls(type=data.pop("type"), message=data.pop("message"), details=data)
        return cls(type=type(exc).__name__, message=str(exc), details={"internal": True})

    def exception(self) -> AgentkitError:
        """This error as an exception of the agentkit tree (`RunFailed` if the type is not one)."""
        cls = getattr(errors, self.type, None)
        if isinstance(cls, type) and issubclass(cls, AgentkitError):
            try:
                return cls(self.message)
            except TypeError:  # a constructor with required facts: keep the words
                pass
        return RunFailed(f"{self.type}: {self.message}")


class RunResult(BaseModel):
    """What a run produced, and why it ended the way it did.

    `usage`/`cost_usd` count every model call of the run, including calls of node attempts
    that failed, outvoted consensus samples and the work done before a cancellation; each
    node's share is in `nodes[...]`. `ledger_head` is the hash of the ledger's last line: keep
    it elsewhere and check the file later with ``agentkit audit verify --expect-head``.
    """

    run_id: str
    status: RunStatus
    answer: str | None = None
    citations: list[Citation] = Field(default_factory=list)
    nodes: dict[str, NodeResult] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    ledger: str | None = None
    ledger_head: str | None = None
    error: RunError | None = None
    ungrounded: list[str] = Field(default_factory=list)
    _exception: AgentkitError | None = PrivateAttr(default=None)

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def raise_for_status(self) -> RunResult:
        """Return self if the run succeeded, else raise its error (the original exception when
        this result was made in this process)."""
        if self.status == "succeeded":
            return self
        if self._exception is not None:
            raise self._exception
        if self.error is not None:
            raise self.error.exception()
        raise RunCancelled("the run was cancelled") if self.status == "cancelled" \
            else RunFailed("the run failed")


class Run:
    """A handle on one running task. Made by `start`; cheap; holds no global state."""

    def __init__(self, runtime: Runtime, overrides: dict[str, Any], *,
                 recorded: RunResult | None = None) -> None:
        self.runtime = runtime
        #: a resumed run that had already succeeded: its recorded result, nothing runs
        self._recorded = recorded
        self.run_id = runtime.run_id
        self._history: list[Event] = []
        #: False when no one can ever call `events` (`arun` keeps the handle to itself): then
        #: the run does not hold on to every event it emitted (4,000 of them, with their data,
        #: in benchmarks/swarm_scale.py: memory, and objects for every full GC pass to walk)
        self._keeps_history = True
        self._readers: list[asyncio.Queue[Event | None]] = []
        self._done = False
        self._started = self._cancel_requested = False
        self._cancel_reason: str | None = None
        runtime.bus.add_sink(self._record)
        self._task: asyncio.Task[RunResult] = asyncio.get_running_loop().create_task(
            self._main(overrides), name=f"agentkit-run:{self.run_id}")

    def _record(self, event: Event) -> None:
        if self._keeps_history:
            self._history.append(event)
        for queue in self._readers:
            queue.put_nowait(event)

    async def _main(self, overrides: dict[str, Any]) -> RunResult:
        self._started = True
        if self._recorded is not None:
            self._done = True
            for queue in self._readers:
                queue.put_nowait(None)
            return self._recorded
        if self._cancel_requested:  # cancelled before it began: nothing ran, nothing to record
            await self.runtime.aclose()
            self._done = True
            return self._cancelled()
        try:
            return await execute(self.runtime, **overrides)
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

    def cancel(self, reason: str | None = None) -> None:
        """Stop the run: every sub-agent, HTTP stream and container is cancelled and closed;
        `result()` then returns a RunResult with status "cancelled". `reason` (e.g. "SIGTERM")
        is recorded in the error and the ledger's ``run.finished``.

        To stop a run cleanly when the process is told to stop (``kill``, ``docker stop``,
        systemd, CI timeouts send SIGTERM; a closed terminal SIGHUP), wire the signals to it::

            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGHUP):
                loop.add_signal_handler(sig, run.cancel, sig.name)
        """
        self._cancel_requested = True
        self._cancel_reason = reason
        if self._started:  # a task cancelled before its first step never enters its body
            self._task.cancel(msg=reason)

    def approve(self, key: str, *, who: str | None = None) -> bool:
        """Approve the waiting tool call `key` (the ``key`` of its ``approval.requested``
        event). False if the call was already decided: the first decision stands."""
        return self.runtime.approvals.approve(key, who=who)

    def deny(self, key: str, reason: str, *, who: str | None = None) -> bool:
        """Deny the tool call `key`; the model reads `reason` in the call's error result and
        the run goes on. False if the call was already decided."""
        return self.runtime.approvals.deny(key, reason, who=who)

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
        return _assemble(self.runtime, "cancelled", error=_cancelled(self._cancel_reason))


def _task_of(task: TaskSpec | str | Path) -> TaskSpec:
    if isinstance(task, TaskSpec):
        return task
    if isinstance(task, str | Path):
        return load_task(task)
    raise ConfigError(f"task must be a TaskSpec or a path to a task file, not {type(task).__name__}")


def start(task: TaskSpec | str | Path, *,
          ledger_dir: str | Path | None | Literal[_Default.TASK_OUTPUT] = FROM_TASK,
          workspace: str | Path | None = None, sinks: Iterable[EventSink] = (),
          clock: Clock | None = None, environ: dict[str, str] | None = None,
          run_id: str | None = None, rate_limits: RateLimits | None = None,
          executor: NodeExecutor | ExecutorSpec | None = None, replanner: Replanner | None = None,
          planner: PlanSource | None = None, synthesizer: Ask | None = None,
          tools: Iterable[Tool | Callable[..., Any]] = (),
          task_file: str | Path | None = None) -> Run:
    """Start a run in the current event loop and return its handle at once.

    The audit ledger goes where ``agentkit run`` puts it: the task's `output` folder (``runs``
    if it names none); pass `ledger_dir` to put it elsewhere, or ``None`` for no ledger file.
    Relative paths given here resolve against the current directory; those in a task file,
    against the file's folder. Every configuration problem (unknown profile, API key variable
    not set, bad prompt override, missing sandbox input) is one `ConfigError` raised here,
    before any model is called.

    `tools`: your own tools (`agentkit.tool` functions, `Tool` objects, plain functions),
    offered besides those the task names. `executor`, `planner`, `replanner` and
    `synthesizer` replace the swarm's default parts (tests and benchmarks use simulated ones);
    an `ExecutorSpec` as `executor` replaces the task's ``executor`` instead (where nodes run:
    ``ExecutorSpec(kind="ray", address="auto")`` runs them on a Ray cluster). `task_file`:
    the file a `TaskSpec` was read from (its sha256 is recorded at ``run.started``; a path
    given as `task` is that file already).
    """
    _require_loop()
    spec = _task_of(task)
    task_file = task_file if task_file is not None else (
        task if isinstance(task, str | Path) else None)
    spec, executor = _checked_executor(spec, executor, environ)
    if ledger_dir is FROM_TASK:
        ledger_dir = spec.output or "runs"
    runtime = Runtime(spec, run_id=run_id, clock=clock, sinks=sinks,
                      ledger_dir=Path(ledger_dir).resolve() if ledger_dir is not None else None,
                      workspace=workspace, environ=environ, rate_limits=rate_limits,
                      tools=tools)
    runtime.task_file = _file_hash(task_file) if task_file is not None else None
    _preflight(runtime, {"worker": executor, "planner": planner, "synthesizer": synthesizer})
    overrides = {"executor": executor, "replanner": replanner, "planner": planner,
                 "synthesizer": synthesizer}
    return Run(runtime, overrides)


def _require_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise ConfigError("agentkit.start() needs a running event loop; use `await arun(...)` "
                          "in async code or `run_sync(...)` in a script") from None


def _checked_executor(spec: TaskSpec, executor: NodeExecutor | ExecutorSpec | None,
                      environ: dict[str, str] | None) -> tuple[TaskSpec, NodeExecutor | None]:
    """The task with an `ExecutorSpec` given to `start` in it, and the executor object (if one
    was given); the ``[ray]`` and ``[otel]`` extras the task needs are checked here, before
    anything starts."""
    if isinstance(executor, ExecutorSpec):
        spec, executor = spec.model_copy(update={"executor": executor}), None
    if executor is None:
        check_executor(spec)
    check_telemetry(spec, environ if environ is not None else os.environ)
    return spec, executor


def _preflight(runtime: Runtime, parts: dict[Role, object]) -> None:
    """Every configuration problem of the run as one `ConfigError` (parts the caller replaced,
    in `parts`, are not checked)."""
    found = problems(runtime.task, workspace=runtime.workspace, environ=runtime.environ,
                     replaced=[role for role, part in parts.items() if part is not None])
    try:  # a tool that cannot be imported, or two tools with one name: one more problem
        runtime.resolve_tools()
    except ConfigError as exc:
        found.append((("tools",), str(exc)))
    raise_problems(found)


async def arun(task: TaskSpec | str | Path, **kwargs: Any) -> RunResult:
    """Run a task to the end and return its result (the async entry point)."""
    handle = start(task, **kwargs)
    handle._keeps_history = False  # the handle never leaves this function: nobody reads events
    return await handle.result()


def run_sync(task: TaskSpec | str | Path, **kwargs: Any) -> RunResult:
    """`arun` for synchronous code (scripts, workers). Not for use inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arun(task, **kwargs))
    raise ConfigError("run_sync() was called inside a running event loop (a notebook, an async "
                      "web handler); use `await agentkit.arun(task)` there instead")


# ---------------------------------------------------------------------------------------------
# The lifecycle


async def execute(runtime: Runtime, *, executor: NodeExecutor | None = None,
                  replanner: Replanner | None = None, planner: PlanSource | None = None,
                  synthesizer: Ask | None = None) -> RunResult:
    """Run the task held by `runtime`. Never raises for a failed or cancelled run.

    With a journal (`agentkit.resume`), the run re-executes from its ledger: it records
    ``run.resumed`` instead of ``run.started``, restores what was spent and the finished
    nodes, and stops at the first call the journal refuses (a divergence, a replay miss)."""
    task = runtime.task
    async with runtime:
        telemetry = attach_telemetry(runtime)  # None unless the task turns OTel on
        budget = Budget.root(task.budget, emit=runtime.emit, clock=runtime.clock)
        swarm = SwarmContext(runtime=runtime, budget=budget)
        runtime.bus.add_sink(swarm.on_event)
        _begin(runtime, budget, swarm)
        result = _assemble(runtime, "failed", error=RunFailed("did not finish"))
        parts = {"executor": executor, "replanner": replanner, "planner": planner,
                 "synthesizer": synthesizer}
        try:
            async with asyncio.timeout(budget.remaining_seconds()):
                await runtime.prepare_tools()  # starts the MCP servers the task names
                work = _work(runtime, budget, swarm, parts)
                result = await (work if runtime.journal is None
                                else _stoppable(runtime.journal, work))
        except asyncio.CancelledError as exc:
            reason = str(exc.args[0]) if exc.args and exc.args[0] else None
            result = _assemble(runtime, "cancelled", swarm, error=_cancelled(reason))
        except TimeoutError:
            limit = task.budget.wall_seconds or 0.0
            runtime.emit("budget.exceeded", {"budget": "wall_seconds", "limit": limit,
                                             "scope": "run"})
            result = _assemble(runtime, "failed", swarm, error=BudgetExceeded("wall_seconds", limit))
        except Exception as exc:  # AgentkitError, or a bug: end the run cleanly, say what
            result = _assemble(runtime, "failed", swarm, error=exc)
        finally:
            result = _finish(runtime, swarm, result)
    if telemetry is not None:
        await telemetry.aclose()
    return _with_ledger_head(result, runtime)


async def _work(runtime: Runtime, budget: Budget, swarm: SwarmContext,
                parts: dict[str, Any]) -> RunResult:
    """The task itself: one agent, or plan -> nodes -> synthesis."""
    if runtime.task.mode == "agent":
        answer = (await run_agent_task(runtime, budget)).answer
        return _assemble(runtime, "succeeded", answer=answer)
    outcome = await run_swarm(swarm, **parts)
    return _swarm_result(runtime, swarm, outcome.synthesis.answer, outcome)


async def _stoppable(journal: Journal, work: Coroutine[Any, Any, RunResult]) -> RunResult:
    """Run `work` in a child task the journal cancels at the first call it refuses (wherever
    in the DAG that call is), then raise that refusal as the run's error."""
    child = asyncio.ensure_future(work)
    def stop(_error: RunFailed) -> None:
        child.cancel()

    journal.on_stop = stop
    try:
        return await child
    except asyncio.CancelledError:
        me = asyncio.current_task()
        if journal.stopped is not None and (me is None or not me.cancelling()):
            raise journal.stopped from None
        raise
    finally:
        journal.on_stop = None


def _begin(runtime: Runtime, budget: Budget, swarm: SwarmContext) -> None:
    """``run.started`` (with the resolved task and its file's hash), or, on a resumed run,
    ``run.resumed`` (where it picks up) after restoring what the ledger says was done."""
    task, journal = runtime.task, runtime.journal
    if journal is not None:
        restore(journal, runtime, budget, swarm)
    if journal is None or runtime.append_to is None:
        runtime.emit("run.started", {"task": task.name, "mode": task.mode, "goal": task.goal,
                                     "spec": task.model_dump(mode="json"),
                                     "task_file": runtime.task_file[0] if runtime.task_file
                                     else None,
                                     "task_sha256": runtime.task_file[1] if runtime.task_file
                                     else None})
        return
    runtime.emit("run.resumed", {
        "after_seq": journal.last_seq, "segment": journal.segments + 1,
        "finished_nodes": sorted(journal.nodes), "recorded_model_calls": len(journal.responses),
        "recorded_tool_results": len(journal.tool_results),
        "in_flight": journal.in_flight(), "elapsed_s": journal.elapsed_s,
        "usage": runtime.usage.total.usage.model_dump(), "cost_usd": runtime.usage.total.cost_usd,
        "from_divergence": journal.from_divergence,
        "limits": task.budget.model_dump(mode="json")})


def restore(journal: Journal, runtime: Runtime, budget: Budget, swarm: SwarmContext) -> None:
    """What a re-executed run takes from its ledger before it starts: the usage of every
    recorded model answer (counted once, for the node that made it), the spent budget and
    wall time, the pages fetched, and the outputs of finished nodes."""
    for node_id, model, usage, cost, calls in journal.usage_by_node():
        runtime.usage.record(node_id=node_id, model=model, usage=Usage.model_validate(usage),
                             cost_usd=cost, calls=calls)
    total = runtime.usage.total
    budget.restore({"tokens": float(total.usage.input_tokens + total.usage.output_tokens),
                    "cost_usd": total.cost_usd, "tool_calls": float(journal.tool_calls_spent)},
                   journal.elapsed_s)
    for page in journal.fetched:
        if page.get("url"):
            swarm.fetched[page["url"]] = {"content_hash": page.get("content_hash"),
                                          "title": page.get("title")}
    swarm.restored = {node_id: NodeOutput(output=str(data.get("output") or ""),
                                          sources=list(data.get("sources") or []))
                      for node_id, data in journal.nodes.items()}


def _finish(runtime: Runtime, swarm: SwarmContext, result: RunResult) -> RunResult:
    """Record ``run.finished`` (the result unchanged unless the ledger cannot take it)."""
    try:
        runtime.emit("run.finished", {
            "status": result.status, "answer": result.answer,
            "error": result.error.model_dump() if result.error else None,
            "usage": runtime.usage.total.usage.model_dump(),
            "cost_usd": runtime.usage.total.cost_usd,
            "nodes": {k: v.status for k, v in swarm.nodes.items()}})
    except RunFailed as exc:  # the ledger could not record the end (a full disk)
        return _assemble(runtime, "failed", swarm, error=exc)
    return result


def _cancelled(reason: str | None) -> RunCancelled:
    return RunCancelled(f"the run was cancelled ({reason})" if reason else "the run was cancelled")


def _swarm_result(runtime: Runtime, swarm: SwarmContext, answer: str, outcome: Any) -> RunResult:
    synthesis, bad = outcome.synthesis, outcome.not_succeeded
    error = None
    if bad:
        error = RunFailed(f"{len(bad)} node(s) did not succeed; the answer uses the others")
    result = _assemble(runtime, "failed" if bad else "succeeded", swarm, answer=answer,
                       error=error)
    result.citations, result.ungrounded = synthesis.citations, synthesis.ungrounded
    if error is not None and result.error is not None:
        result.error.details["nodes"] = bad
    return result


def _assemble(runtime: Runtime, status: RunStatus, swarm: SwarmContext | None = None, *,
              answer: str | None = None, error: BaseException | None = None) -> RunResult:
    """The result as the run's usage owner and node records say it is now."""
    nodes: dict[str, NodeResult] = {}
    for node_id, node in (swarm.nodes if swarm is not None else {}).items():
        line = runtime.usage.node(node_id)
        nodes[node_id] = NodeResult(**{**vars(node), "usage": line.usage,
                                       "cost_usd": line.cost_usd})
    result = RunResult(run_id=runtime.run_id, status=status, answer=answer, nodes=nodes,
                       usage=runtime.usage.total.usage, cost_usd=runtime.usage.total.cost_usd,
                       ledger=str(runtime.ledger_path) if runtime.ledger_path else None,
                       error=RunError.of(error) if error is not None else None)
    if isinstance(error, AgentkitError):
        result._exception = error
    return result


def _with_ledger_head(result: RunResult, runtime: Runtime) -> RunResult:
    """After the ledger closed: its head hash (also written to the sidecar file
    ``<ledger>.head``) and the final totals (calls of the clean-up)."""
    ledger = runtime.ledger
    result.ledger_head = ledger.head if ledger is not None else None
    if ledger is not None and ledger.closed:
        write_head_file(ledger.path, ledger.head)
    result.usage, result.cost_usd = runtime.usage.total.usage, runtime.usage.total.cost_usd
    return result


def _file_hash(path: str | Path) -> tuple[str, str] | None:
    """(resolved path, sha256 of its bytes) of a task file, recorded at ``run.started``."""
    try:
        return str(Path(path).resolve()), hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def head_file(ledger: str | Path) -> Path:
    """The sidecar that holds a ledger's head hash: ``runs/ID.jsonl`` -> ``runs/ID.jsonl.head``."""
    ledger = Path(ledger)
    return ledger.with_name(ledger.name + ".head")


def write_head_file(ledger: Path, head: str) -> None:
    """``HASH  FILENAME`` (the sha256sum layout), written whole or not at all. Keep a copy
    where the run cannot write, and check the ledger later with ``agentkit audit verify
    --expect-head FILE``. A failure to write it is not the run's failure: the head is also in
    the `RunResult` and the CLI's output."""
    target = head_file(ledger)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(f"{head}  {ledger.name}\n", encoding="utf-8")
        os.replace(tmp, target)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
