"""A warm pool of started sandboxes, handed out per agent, run-scoped.

Why: a cold container costs ~0.3-1 s; a code call should not. The pool keeps `pool_size`
containers started ahead; once a plan is known, `grow_to` raises that to one per agent that
can run at once, for as many agents as the plan has (the `run_code` tool's `planned` hook does
this), so a wide fan-out's first calls find their containers started. The first call of an
agent (a key such as the node or agent id) takes one and keeps it bound, so that agent's
later calls reuse it: its ``/workspace`` files persist, and with
``SandboxSettings.persistent`` so do its Python variables. Containers are never shared between
keys; a container whose call ended in ``timeout``, ``oom``, ``resource_limit``,
``output_limit`` or a crash is destroyed and the key gets a fresh one next time. Refills run
as tasks the pool owns and cancels and awaits in `aclose`, never fire-and-forget. The
`run_code` tool keeps one pool per run among the run's resources, so closing the run removes
every container of the run.

The pool programs against the `SandboxClient`/`SandboxSession` protocols only: the Docker
backend and the in-process test double (`agentkit.testing.FakeSandboxClient`) both fit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from agentkit.sandboxes.base import SandboxClient, SandboxSession
from agentkit.task import SandboxSettings

__all__ = ["SANDBOX_CLIENT", "SandboxPool"]

#: the run resource (`agentkit.resources.Resources`) holding the run's `SandboxClient`: the
#: `run_code` tool makes a Docker one there unless another was put first (a test double)
SANDBOX_CLIENT = "sandbox_client"

#: bound containers kept per pool, as a multiple of max(pool_size, a plan's warm target,
#: max_concurrency)
BOUND_FACTOR = 4


class SandboxPool:
    """Warm sandboxes for one run. The constructor stores; `start` begins warming (the
    client starts itself on its first `create`, so its errors surface there). `size` is the
    floor of containers kept warm; `grow_to` raises it for a plan's agents."""

    def __init__(self, client: SandboxClient, settings: SandboxSettings, *,
                 size: int | None = None, close_client: bool = True) -> None:
        self.client, self.settings, self.close_client = client, settings, close_client
        self.size = settings.pool_size if size is None else size
        self._idle: list[SandboxSession] = []
        self._bound: OrderedDict[str, SandboxSession] = OrderedDict()
        self._in_use: dict[str, int] = {}
        self._key_locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._creating = 0
        self._waiting = 0
        #: warm containers a plan asked for (`grow_to`), and how many of its agents have yet
        #: to bind one: the pool keeps max(size, min(the two)) warm
        self._target = 0
        self._expected = 0
        #: leases that found no container warm or warming and created one on the spot
        self.cold = 0
        self._changed = asyncio.Event()
        self.last_error: BaseException | None = None
        self.closed = False

    async def start(self) -> None:
        self._fill()

    def grow_to(self, n: int, *, agents: int | None = None) -> None:
        """Keep up to `n` containers warm for agents about to start (a plan's nodes that can
        run at once), starting the extra warming tasks now; returns at once. The raise is
        spent as agents bind containers: it lasts for `agents` more bindings (default `n`) and
        never warms more than are still to come, so the pool then falls back to `size`
        instead of refilling past the plan. Calls add up (a sub-team's plan adds its agents).
        A creation that fails is remembered (`last_error`) and raised by the next lease."""
        self._target = max(self._target, n)
        self._expected += n if agents is None else agents
        self._fill()

    async def warmed(self) -> None:
        """Wait until the containers being warmed now are ready or failed (tests, benchmarks).
        Cancelling the wait leaves the warming tasks to the pool."""
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    # -- warming ------------------------------------------------------------------------------

    def _fill(self) -> None:
        """Start enough owned creation tasks to bring idle + creating up to the warm target."""
        if self.closed or self.last_error is not None:
            return
        want = max(self.size, min(self._target, self._expected))
        for _ in range(want - len(self._idle) - self._creating):
            self._creating += 1
            task = asyncio.get_running_loop().create_task(self._warm_one())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _warm_one(self) -> None:
        try:
            session = await self.client.create(persistent=self.settings.persistent)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # remembered; the next lease creates directly and raises it
            self.last_error = exc
            return
        finally:
            self._creating -= 1
            self._changed.set()
        if self.closed:
            await self.client.destroy(session.id)
            return
        self._idle.append(session)
        self._changed.set()

    async def _take_idle(self) -> SandboxSession:
        """A warm container: a ready one, else one already being warmed (when there are more
        warming than waiting), else a new one made now."""
        while not self._idle and self._waiting < self._creating and not self.closed:
            self._waiting += 1
            self._changed.clear()
            try:
                await self._changed.wait()
            finally:
                self._waiting -= 1
        session = self._idle.pop() if self._idle else None
        self.last_error = None
        self._expected = max(0, self._expected - 1)
        if session is None:
            self.cold += 1
            session = await self.client.create(persistent=self.settings.persistent)
        self._fill()
        return session

    # -- leasing ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lease(self, key: str) -> AsyncIterator[SandboxSession]:
        """The container bound to `key` (binding a warm one on first use)."""
        lock = self._key_locks.setdefault(key, asyncio.Lock())
        async with lock:
            session = self._bound.get(key)
            if session is None or session.broken:
                if session is not None:
                    await self.discard(key)
                session = await self._take_idle()
                self._bound[key] = session
                await self._evict(keep=key)
            self._bound.move_to_end(key)
            self._in_use[key] = self._in_use.get(key, 0) + 1
        try:
            yield session
        finally:
            self._in_use[key] -= 1
            if session.broken:
                await asyncio.shield(self.discard(key, session))

    async def discard(self, key: str, session: SandboxSession | None = None) -> None:
        """Destroy the container bound to `key` (only if it is still `session`, when given)."""
        current = self._bound.get(key)
        if current is None or (session is not None and current is not session):
            return
        del self._bound[key]
        await self.client.destroy(current.id)

    async def release(self, key: str) -> None:
        """The agent is done: destroy its container (its files and state go with it)."""
        await self.discard(key)

    async def _evict(self, keep: str) -> None:
        """Destroy the least recently used idle bindings beyond the limit (never `keep`)."""
        limit = max(self.size, self._target, self.settings.max_concurrency, 1) * BOUND_FACTOR
        for key in list(self._bound):
            if len(self._bound) <= limit:
                return
            if key != keep and not self._in_use.get(key):
                await self.discard(key)

    def stats(self) -> dict[str, Any]:
        return {"idle": len(self._idle), "bound": len(self._bound), "warming": len(self._tasks),
                "target": max(self.size, min(self._target, self._expected)), "cold": self.cold}

    # -- closing ------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Cancel refills, then remove every container of the pool (and of the run, when the
        pool owns its client)."""
        self.closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sessions = [*self._idle, *self._bound.values()]
        self._idle.clear()
        self._bound.clear()
        for session in sessions:
            await self.client.destroy(session.id)
        if self.close_client:
            await self.client.aclose()

    async def __aenter__(self) -> SandboxPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.shield(self.aclose())
