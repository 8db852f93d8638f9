"""The search-backend protocol and the registry that finds a backend by name.

A backend is one file with one class: ``async search(query) -> list[SearchResult]`` and
``async aclose()``. `web_search` looks the task's ``search.backend`` name up in a
`SearchBackendRegistry`. The registry is a value, not a module global: the default one holds
the built-in ``ddgs`` backend plus any installed under the ``agentkit.search_backends`` entry
point group, and a team adds its own with `SearchBackendRegistry.register` and passes the
registry to ``WebSearch(registry=...)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol

from agentkit.errors import ToolError
from agentkit.task import SearchSettings

__all__ = [
    "BUILTIN_BACKENDS",
    "ENTRY_POINT_GROUP",
    "BackendFactory",
    "SearchBackend",
    "SearchBackendRegistry",
    "SearchQuery",
    "SearchResult",
]

#: third-party packages can ship a backend under this entry point group (name -> factory)
ENTRY_POINT_GROUP = "agentkit.search_backends"
BUILTIN_BACKENDS: dict[str, str] = {
    "ddgs": "agentkit.tools.search_backends.ddgs_backend:DDGSBackend",
}


@dataclass(frozen=True)
class SearchQuery:
    query: str
    region: str
    timelimit: str | None
    max_results: int
    timeout_s: float


@dataclass(frozen=True)
class SearchResult:
    title: str
    url: str
    snippet: str

    def as_dict(self) -> dict[str, str]:
        return {"title": self.title, "url": self.url, "snippet": self.snippet}


class SearchBackend(Protocol):
    """One search API. Failures are raised as `ToolError` (rate_limited, timeout, unavailable,
    each with a retry hint); "no results" is an empty list, not an error."""

    async def search(self, query: SearchQuery) -> list[SearchResult]: ...

    async def aclose(self) -> None: ...


#: builds a backend for a run from the task's search settings (no I/O: connect on first use)
BackendFactory = Callable[[SearchSettings], SearchBackend]


def _import(target: str) -> BackendFactory:
    module, _, attr = target.partition(":")
    factory: BackendFactory = getattr(importlib.import_module(module), attr)
    return factory


class SearchBackendRegistry:
    """Backend factories by name; "module:attr" strings are imported only when used."""

    def __init__(self, factories: Mapping[str, BackendFactory | str] | None = None) -> None:
        self._factories: dict[str, BackendFactory | str | Any] = dict(factories or {})

    @classmethod
    def default(cls) -> SearchBackendRegistry:
        """Built-in backends plus those installed under the ``agentkit.search_backends``
        entry point group (a package's entry point wins over nothing, never over a built-in)."""
        registry = cls(BUILTIN_BACKENDS)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name not in registry._factories:
                registry._factories[ep.name] = ep
        return registry

    def register(self, name: str, factory: BackendFactory | str) -> SearchBackendRegistry:
        """Add or replace a backend; returns self so calls can be chained."""
        self._factories[name] = factory
        return self

    def names(self) -> list[str]:
        return sorted(self._factories)

    def create(self, name: str, settings: SearchSettings) -> SearchBackend:
        entry = self._factories.get(name)
        if entry is None:
            raise ToolError("misconfigured", f"search.backend is {name!r}, which is not a known "
                            f"search backend (known: {self.names()})",
                            retry_hint="not retryable: fix search.backend in the task")
        if isinstance(entry, str):
            factory = _import(entry)
        elif hasattr(entry, "load") and hasattr(entry, "group"):  # an importlib EntryPoint
            factory = entry.load()
        else:
            factory = entry
        return factory(settings)
