"""The Runtime: one explicit object holding everything a run uses.

Models, tools, the sandbox pool, concurrency limits, budgets, the clock and the event sinks all
hang off a `Runtime`; nothing is module-global, so several runs can share a process without
interfering. The constructor does no I/O; resources (ledger file, HTTP clients, containers) are
opened on first use or in ``async with runtime`` and released by `aclose`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from agentkit.clock import Clock, SystemClock
from agentkit.errors import ConfigError
from agentkit.events import Event, EventBus, EventSink
from agentkit.limits import ResourceLimits
from agentkit.task import TaskSpec

__all__ = ["Runtime"]

T = TypeVar("T")


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


class Runtime:
    """Everything one run needs, passed explicitly.

    Parameters: the validated `task`; an optional `run_id`; `clock` (a fake one in tests);
    extra event `sinks`; `ledger_dir` where the audit ledger is written (``None``: no ledger
    file, events still flow to the sinks); `environ` for API keys (defaults to ``os.environ``,
    read only when a model is built).
    """

    def __init__(self, task: TaskSpec, *, run_id: str | None = None, clock: Clock | None = None,
                 sinks: Iterable[EventSink] = (), ledger_dir: str | Path | None = None,
                 workspace: str | Path | None = None,
                 environ: dict[str, str] | None = None, fsync: str = "close") -> None:
        self.task = task
        self.run_id = run_id or new_run_id()
        self.clock: Clock = clock or SystemClock()
        self.bus = EventBus(self.run_id, clock=self.clock, sinks=sinks)
        self.environ = environ
        self.ledger_dir = Path(ledger_dir) if ledger_dir is not None else None
        self.ledger_path: Path | None = None
        self.fsync = fsync
        self.workspace = Path(workspace or task.workspace or ".").resolve()
        self.limits = ResourceLimits({
            "sandbox": task.sandbox.max_concurrency,
            "fetch": task.fetch.max_concurrency,
            "agents": task.budget.max_agents,
        })
        self._resources: dict[str, Any] = {}
        self._resource_locks: dict[str, asyncio.Lock] = {}
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._ledger: Any = None
        self._tools: Any = None
        self.closed = False

    # -- events -------------------------------------------------------------------------------

    def emit(self, kind: str, data: dict[str, Any] | None = None, *,
             node_id: str | None = None) -> Event:
        return self.bus.emit(kind, data, node_id=node_id)

    def secrets(self) -> list[str]:
        """Values of every environment variable a model reads a key from (for redaction)."""
        import os

        from agentkit.models import api_key_envs

        env = self.environ if self.environ is not None else os.environ
        names = set().union(*(api_key_envs(m) for m in self.task.models.values()))
        return [env[n] for n in sorted(names) if env.get(n)]

    def open_ledger(self) -> Path | None:
        """Open the run's audit ledger (idempotent). Called by ``async with runtime``."""
        if self._ledger is not None or self.ledger_dir is None:
            return self.ledger_path
        from agentkit.audit import Ledger

        self.ledger_dir.mkdir(parents=True, exist_ok=True)
        self.ledger_path = self.ledger_dir / f"{self.run_id}.jsonl"
        self._ledger = Ledger(self.ledger_path, secrets=self.secrets(), fsync=self.fsync)
        self.bus.sinks.insert(0, self._ledger.append)
        return self.ledger_path

    # -- tools, models and shared resources ---------------------------------------------------

    @property
    def tools(self) -> Any:
        """The run's `ToolRegistry` (every tool the task lists)."""
        if self._tools is None:
            from agentkit.tools import build_registry

            self._tools = build_registry(self.task.tools)
        return self._tools

    async def resource(self, key: str, factory: Callable[[], Awaitable[T]],
                       close: Callable[[T], Awaitable[None]] | None = None) -> T:
        """A run-scoped shared object (HTTP client, sandbox pool, loaded model), made once.

        `close` is awaited by `aclose`, in reverse order of creation.
        """
        if self.closed:
            raise ConfigError("the runtime is closed")
        if key in self._resources:
            return self._resources[key]
        lock = self._resource_locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self._resources:
                value = await factory()
                self._resources[key] = value
                if close is not None:
                    self._closers.append(lambda: close(value))
        return self._resources[key]

    async def model(self, name: str) -> Any:
        """The `ChatModel` for a name in ``task.models`` (built once, with retries/limits)."""
        if name not in self.task.models:
            raise ConfigError(f"model {name!r} is not defined in the task's models "
                              f"(defined: {sorted(self.task.models)})")
        from agentkit.models import build_model

        async def make() -> Any:
            return build_model(name, self)

        async def close(m: Any) -> None:
            await m.aclose()

        return await self.resource(f"model:{name}", make, close)

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        self.open_ledger()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release every resource (containers, connections) and close the ledger."""
        if self.closed:
            return
        self.closed = True
        errors: list[BaseException] = []
        for closer in reversed(self._closers):
            try:
                await asyncio.shield(closer())
            except BaseException as exc:  # keep closing the rest; re-raise below
                errors.append(exc)
        self._closers.clear()
        self._resources.clear()
        self.bus.close()
        if self._ledger is not None:
            self._ledger.close()
        if errors:
            raise errors[0]
