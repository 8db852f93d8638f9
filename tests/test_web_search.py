"""web_search and its backends, offline.

What this proves: a team's backend plugs in through the public registry and is chosen by
``task.search.backend``; query, settings and results reach the ledger; the ddgs backend maps
the real ddgs exception types (and socket errors) to rate_limited / timeout / unavailable with
retry hints, turns "no results" into an empty list, and runs the blocking ddgs call off the
event loop. No test touches the internet: ddgs is given a stand-in client that raises or
returns what the test says.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException

from agentkit.errors import ToolError
from agentkit.events import Event
from agentkit.runtime import Runtime
from agentkit.task import SearchSettings, TaskSpec
from agentkit.tools import invoke_tool
from agentkit.tools.search_backends import SearchBackendRegistry, SearchQuery, SearchResult
from agentkit.tools.search_backends.ddgs_backend import DDGSBackend
from agentkit.tools.web_search import WebSearch


def task(**search: Any) -> TaskSpec:
    return TaskSpec(name="search-test", goal="test", model="m", models={"m": {"model": "none"}},
                    tools=["web_search"], search=search)


class CannedBackend:
    """A team's own backend: answers from a list and remembers the queries it got."""

    def __init__(self, settings: SearchSettings) -> None:
        self.queries: list[SearchQuery] = []
        self.closed = False

    async def search(self, query: SearchQuery) -> list[SearchResult]:
        self.queries.append(query)
        return [SearchResult(f"Result {i}", f"https://example.org/{i}", f"snippet {i}")
                for i in range(20)]

    async def aclose(self) -> None:
        self.closed = True


class FakeDDGS:
    """Stands in for ``ddgs.DDGS``: same ``text`` signature, scripted outcome."""

    def __init__(self, outcome: BaseException | list[dict[str, Any]], delay: float = 0.0) -> None:
        self.outcome, self.delay = outcome, delay
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def text(self, query: str, **kwargs: Any) -> list[dict[str, Any]]:
        self.calls.append((query, kwargs))
        time.sleep(self.delay)  # ddgs blocks its caller: this must not block the event loop
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


async def run_search(registry: SearchBackendRegistry, args: dict[str, Any], **search: Any,
                     ) -> tuple[Any, list[Event], Runtime]:
    events: list[Event] = []
    runtime = Runtime(task(**search), sinks=[events.append])
    try:
        out = await invoke_tool(WebSearch(registry), args, runtime.tool_context())
    finally:
        await runtime.aclose()
    return out, events, runtime


async def test_team_backend_is_used_and_results_are_recorded() -> None:
    backends: list[CannedBackend] = []

    def make(settings: SearchSettings) -> CannedBackend:
        backends.append(CannedBackend(settings))
        return backends[-1]

    registry = SearchBackendRegistry.default().register("canned", make)
    out, events, _ = await run_search(registry, {"query": "agent frameworks", "timelimit": "w"},
                                      backend="canned", region="de-de", max_results=3)
    [backend] = backends
    assert backend.queries == [SearchQuery("agent frameworks", "de-de", "w", 3, 20.0)]
    assert backend.closed  # released with the run
    assert [r["url"] for r in out.data["results"]] == [f"https://example.org/{i}" for i in range(3)]
    [event] = [e.data for e in events if e.kind == "search.results"]
    assert event["query"] == "agent frameworks" and event["backend"] == "canned"
    assert event["results"][0] == {"title": "Result 0", "url": "https://example.org/0",
                                   "snippet": "snippet 0"}
    assert "<<<untrusted_content id=" in out.content and "https://example.org/2" in out.content


async def test_unknown_backend_names_the_known_ones() -> None:
    with pytest.raises(ToolError) as info:
        await run_search(SearchBackendRegistry.default(), {"query": "x"}, backend="bing")
    assert info.value.code == "misconfigured"
    assert "'bing'" in info.value.message and "ddgs" in info.value.message


def test_default_registry_builds_the_ddgs_backend_without_io() -> None:
    backend = SearchBackendRegistry.default().create("ddgs", SearchSettings())
    assert isinstance(backend, DDGSBackend)


async def test_ddgs_results_are_mapped_with_the_requested_settings() -> None:
    fake = FakeDDGS([{"title": "Py", "href": "https://python.org", "body": "Python home"},
                     {"title": "no url", "body": "dropped"},
                     {"title": "Docs", "href": "https://docs.python.org", "body": "Docs"}])
    registry = SearchBackendRegistry().register(
        "ddgs", lambda s: DDGSBackend(s, client_factory=lambda: fake))
    out, _, _ = await run_search(registry, {"query": "python", "region": "us-en",
                                            "max_results": 5})
    assert fake.calls == [("python", {"region": "us-en", "timelimit": None, "max_results": 5})]
    assert out.data["results"] == [
        {"title": "Py", "url": "https://python.org", "snippet": "Python home"},
        {"title": "Docs", "url": "https://docs.python.org", "snippet": "Docs"}]


@pytest.mark.parametrize(("raised", "code", "hint"), [
    (RatelimitException("https://html.duckduckgo.com/html 202 Ratelimit"), "rate_limited", "wait"),
    (DDGSException("HTTPError: 429 Too Many Requests"), "rate_limited", "wait"),
    (TimeoutException("https://duckduckgo.com/ timed out"), "timeout", "retry once"),
    (DDGSException("ConnectError: dns error: failed to lookup address information"),
     "unavailable", "retry later"),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "unavailable",
     "retry later"),
    (DDGSException("engine returned garbage"), "unavailable", "retry later"),
])
async def test_ddgs_errors_become_tool_errors(raised: BaseException, code: str,
                                              hint: str) -> None:
    backend = DDGSBackend(SearchSettings(), client_factory=lambda: FakeDDGS(raised))
    with pytest.raises(ToolError) as info:
        await backend.search(SearchQuery("q", "wt-wt", None, 5, 5.0))
    assert info.value.code == code and hint in (info.value.retry_hint or "")
    assert info.value.details == {"query": "q"}


async def test_ddgs_no_results_is_an_empty_list_not_an_error() -> None:
    backend = DDGSBackend(SearchSettings(),
                          client_factory=lambda: FakeDDGS(DDGSException("No results found.")))
    assert await backend.search(SearchQuery("zzqx", "wt-wt", None, 5, 5.0)) == []


async def test_ddgs_call_runs_off_the_event_loop() -> None:
    backend = DDGSBackend(SearchSettings(), client_factory=lambda: FakeDDGS([], delay=0.3))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async with asyncio.TaskGroup() as group:
        tick_task = group.create_task(ticker())
        assert await backend.search(SearchQuery("q", "wt-wt", None, 5, 5.0)) == []
        tick_task.cancel()
    assert ticks >= 10  # the loop kept running while ddgs blocked its thread


async def test_slow_search_hits_the_task_timeout() -> None:
    backend = DDGSBackend(SearchSettings(), client_factory=lambda: FakeDDGS([], delay=0.5))
    started = time.monotonic()
    with pytest.raises(ToolError) as info:
        await backend.search(SearchQuery("q", "wt-wt", None, 5, 0.1))
    assert info.value.code == "timeout" and time.monotonic() - started < 0.4
