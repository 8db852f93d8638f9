"""The ``ddgs`` search backend (the maintained successor of duckduckgo-search).

ddgs is synchronous (it drives its own thread pool and HTTP client), so each search runs in a
worker thread via ``asyncio.to_thread`` and the event loop never blocks. Its exceptions are
mapped here, at the boundary, to `ToolError` codes the model can act on: ``rate_limited``,
``timeout``, ``unavailable`` — each with a retry hint. ddgs reports "nothing found" as an
exception; that becomes an empty result list.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

from ddgs import DDGS
from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException

from agentkit.errors import ToolError
from agentkit.task import SearchSettings
from agentkit.tools.search_backends.base import SearchQuery, SearchResult

__all__ = ["DDGSBackend", "map_ddgs_error"]

_RATE_LIMIT_WORDS = ("ratelimit", "rate limit", "429", "too many requests")
_NETWORK_WORDS = ("dns", "resolve", "name or service", "connect", "connection", "network",
                  "unreachable", "tls", "ssl")
_NO_RESULTS = "no results found"


def map_ddgs_error(exc: BaseException, query: str) -> ToolError:
    """The tool error for a ddgs (or socket) failure."""
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if isinstance(exc, RatelimitException) or any(w in lowered for w in _RATE_LIMIT_WORDS):
        return ToolError("rate_limited", f"the search engine is rate-limiting requests ({text})",
                         retry_hint="wait about a minute before searching again; do not retry "
                         "immediately", details={"query": query})
    if isinstance(exc, TimeoutException | TimeoutError) or "timed out" in lowered:
        return ToolError("timeout", f"the search timed out ({text})",
                         retry_hint="retry once, perhaps with a shorter query",
                         details={"query": query})
    if isinstance(exc, OSError) or any(w in lowered for w in _NETWORK_WORDS):
        return ToolError("unavailable", f"the search engine could not be reached: network or "
                         f"DNS failure ({text})", retry_hint="retry later; if it persists, "
                         "continue without searching", details={"query": query})
    return ToolError("unavailable", f"the search failed ({text})",
                     retry_hint="retry later or rephrase the query", details={"query": query})


def _to_result(row: dict[str, Any]) -> SearchResult | None:
    url = str(row.get("href") or row.get("url") or "")
    if not url:
        return None
    return SearchResult(title=str(row.get("title") or ""), url=url,
                        snippet=str(row.get("body") or row.get("snippet") or ""))


class DDGSBackend:
    """Text search through ``ddgs.DDGS().text``. `client_factory` lets tests inject a stand-in
    that raises the real ddgs exception types (no network in tests)."""

    def __init__(self, settings: SearchSettings,
                 client_factory: Callable[[], Any] | None = None) -> None:
        self._timeout = settings.timeout_s
        self._client_factory = client_factory or self._default_client

    def _default_client(self) -> Any:
        return DDGS(timeout=max(1, math.ceil(self._timeout)))

    def _search_sync(self, q: SearchQuery) -> list[SearchResult]:
        try:
            rows = self._client_factory().text(q.query, region=q.region, timelimit=q.timelimit,
                                               max_results=q.max_results)
        except (DDGSException, OSError) as exc:
            if not isinstance(exc, RatelimitException | TimeoutException) and \
                    str(exc).strip().lower().rstrip(".") == _NO_RESULTS:
                return []
            raise map_ddgs_error(exc, q.query) from None
        results = [r for r in map(_to_result, rows or []) if r is not None]
        return results[:q.max_results]

    async def search(self, query: SearchQuery) -> list[SearchResult]:
        try:
            async with asyncio.timeout(query.timeout_s):
                return await asyncio.to_thread(self._search_sync, query)
        except TimeoutError as exc:  # our own deadline (the worker thread finishes on its own)
            raise map_ddgs_error(exc, query.query) from None

    async def aclose(self) -> None:
        """Nothing to release: a ddgs client lives for one search."""
