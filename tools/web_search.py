"""`web_search`: search the web through a pluggable backend (``ddgs`` by default).

The backend is chosen by the task's ``search.backend`` and built once per run (a run-scoped
resource). The query, the settings used and the results go to the ledger as a
``search.results`` event. Titles and snippets are text written by third parties, so the model
sees them inside untrusted-content delimiters, like fetched pages.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from agentkit.tools._untrusted import wrap_untrusted
from agentkit.tools.base import Tool, ToolArgs, ToolContext, ToolOutput
from agentkit.tools.search_backends.base import (
    SearchBackend,
    SearchBackendRegistry,
    SearchQuery,
    SearchResult,
)

__all__ = ["WebSearch", "WebSearchArgs"]


class WebSearchArgs(ToolArgs):
    query: str = Field(min_length=1, max_length=500, description="What to search for.")
    region: str | None = Field(default=None, max_length=16,
                               description="Region code such as 'us-en', 'de-de' or 'wt-wt' "
                                           "(no region). Default: the task's search.region.")
    timelimit: Literal["d", "w", "m", "y"] | None = Field(
        default=None, description="Only results from the last day, week, month or year.")
    max_results: int | None = Field(default=None, ge=1, le=50,
                                    description="How many results (default: task setting).")


def _render(query: str, results: list[SearchResult]) -> str:
    if not results:
        return f"No results for {query!r}."
    lines = [f"{i}. {r.title}\n   URL: {r.url}\n   {r.snippet}" for i, r in enumerate(results, 1)]
    return (f"{len(results)} results for {query!r} (fetch a page with web_fetch before citing "
            f"it).\n" + wrap_untrusted("\n".join(lines), f"web search results for {query!r}"))


class WebSearch(Tool):
    name: ClassVar[str] = "web_search"
    description: ClassVar[str] = (
        "Search the web. Returns titles, URLs and short snippets; read a page with web_fetch "
        "before relying on or citing it.")
    args_model: ClassVar[type[ToolArgs]] = WebSearchArgs
    timeout_s: ClassVar[float] = 60.0
    concurrency_class: ClassVar[str] = "search"

    def __init__(self, registry: SearchBackendRegistry | None = None) -> None:
        self.registry = registry or SearchBackendRegistry.default()

    async def _backend(self, ctx: ToolContext) -> SearchBackend:
        settings = ctx.task.search

        async def make() -> SearchBackend:
            return self.registry.create(settings.backend, settings)

        async def close(backend: SearchBackend) -> None:
            await backend.aclose()

        return await ctx.resource(f"web_search.backend:{settings.backend}", make, close)

    async def call(self, args: WebSearchArgs, ctx: ToolContext) -> ToolOutput:
        settings = ctx.task.search
        query = SearchQuery(query=args.query, region=args.region or settings.region,
                            timelimit=args.timelimit or settings.timelimit,
                            max_results=args.max_results or settings.max_results,
                            timeout_s=settings.timeout_s)
        backend = await self._backend(ctx)
        results = (await backend.search(query))[:query.max_results]
        data = {"query": query.query, "backend": settings.backend, "region": query.region,
                "timelimit": query.timelimit, "results": [r.as_dict() for r in results]}
        ctx.emit("search.results", data)
        return ToolOutput(_render(query.query, results), data)
