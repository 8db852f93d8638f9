"""Run-scoped shared objects: made once on first use, closed when the run ends.

An HTTP client for `web_fetch`, the sandbox pool, the run's rate limits, an MCP session: things
every agent of one run shares and nothing outside the run may see. `Resources` makes each one
once (concurrent first users wait for the same object) and closes them in reverse order of
creation. It is owned by the `Runtime` and handed to tools through their `ToolContext`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from agentkit.errors import ConfigError

__all__ = ["Resources"]

T = TypeVar("T")


class Resources:
    """Shared objects of one run, by key. The constructor does no I/O."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self.closed = False

    async def get(self, key: str, factory: Callable[[], Awaitable[T]],
                  close: Callable[[T], Awaitable[None]] | None = None) -> T:
        """The object under `key`, made by `factory` the first time (`close` runs at the end)."""
        if self.closed:
            raise ConfigError("the run's resources are closed")
        if key in self._values:
            value: T = self._values[key]
            return value
        async with self._locks.setdefault(key, asyncio.Lock()):
            if key not in self._values:
                made = await factory()
                self._values[key] = made
                if close is not None:
                    self._closers.append(lambda: close(made))
        value = self._values[key]
        return value

    def put(self, key: str, value: object) -> None:
        """Register an object made elsewhere (e.g. rate limits shared by several runs)."""
        if key in self._values:
            raise ConfigError(f"resource {key!r} exists already")
        self._values[key] = value

    async def aclose(self) -> None:
        """Close everything, newest first; every closer runs even if one fails (the first
        error is raised at the end). Closers are shielded: a cancelled run still cleans up."""
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
        self._values.clear()
        if errors:
            raise errors[0]
