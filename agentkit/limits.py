"""Concurrency limits per resource class, shared by every agent of a run.

A class is a name (``sandbox``, ``fetch``, ``model:deepseek``, ``agents``...). Limits not set
explicitly are unbounded. Rate limits (RPM/TPM) for models live in `agentkit.models.ratelimit`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

__all__ = ["ResourceLimits"]


class ResourceLimits:
    def __init__(self, limits: Mapping[str, int] | None = None) -> None:
        self._limits = dict(limits or {})
        self._semaphores: dict[str, asyncio.Semaphore] = {}

    def set(self, resource: str, limit: int) -> None:
        if resource in self._semaphores:
            raise RuntimeError(f"limit for {resource!r} is already in use")
        self._limits[resource] = limit

    def limit(self, resource: str) -> int | None:
        return self._limits.get(resource)

    @asynccontextmanager
    async def slot(self, resource: str) -> AsyncIterator[None]:
        limit = self._limits.get(resource)
        if limit is None:
            yield
            return
        sem = self._semaphores.get(resource)
        if sem is None:
            sem = self._semaphores[resource] = asyncio.Semaphore(limit)
        async with sem:
            yield
