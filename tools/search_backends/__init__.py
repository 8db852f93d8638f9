"""Search backends for `web_search`: one file per backend behind `SearchBackend`."""

from __future__ import annotations

from agentkit.tools.search_backends.base import (
    BUILTIN_BACKENDS,
    ENTRY_POINT_GROUP,
    BackendFactory,
    SearchBackend,
    SearchBackendRegistry,
    SearchQuery,
    SearchResult,
)

__all__ = [
    "BUILTIN_BACKENDS",
    "ENTRY_POINT_GROUP",
    "BackendFactory",
    "SearchBackend",
    "SearchBackendRegistry",
    "SearchQuery",
    "SearchResult",
]
