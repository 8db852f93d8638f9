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
import threading
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
    return TaskSpec.model_validate({"name": "search-test", "goal": "test", "model": "m",
                                    "models": {"m": {"model": "none"}}, "tools": ["web_search"],
                                    "search": search})


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
    """Stands in for ``ddgs.DDGS``: same ``text`` signature, scripted outcome. With a `gate`,
    ``text`` blocks its thread (like a slow search) until the test opens the gate."""

    def __init__(self, outcome: BaseException | list[dict[str, Any]],
                 gate: threading.Event | None = None) -> None:
        self.outcome, self.gate = outcome, gate
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.entered = threading.Event()
        self.thread: int | None = None
        #: whether the gate opened while text() was blocked (False: it gave up waiting)
        self.released: bool | None = None

    def text(self, query: str, **kwargs: Any) -> list[dict[str, Any]]:
        self.calls.append((query, kwargs))
        self.thread = threading.get_ident()
        self.entered.set()
        if self.gate is not None:  # the wait's limit only keeps a broken test from hanging
            self.released = self.gate.wait(timeout=30)
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
    """ddgs blocks its caller. The search runs it on another thread, so the event loop stays
    free: the test's own coroutine opens the gate while ``text`` is still blocked (had the call
    blocked the loop, nothing could open it and ``text`` would give up waiting)."""
    fake = FakeDDGS([], gate=threading.Event())
    backend = DDGSBackend(SearchSettings(), client_factory=lambda: fake)
    search = asyncio.ensure_future(backend.search(SearchQuery("q", "wt-wt", None, 5, 60.0)))
    await asyncio.to_thread(fake.entered.wait, 30)
    assert fake.gate is not None
    fake.gate.set()
    assert await search == []
    assert fake.released is True and fake.thread != threading.get_ident()


async def test_slow_search_hits_the_task_timeout() -> None:
    """The search's own deadline ends the wait while ddgs is still blocked in its thread
    (the gate is opened only afterwards, to let that thread finish)."""
    fake = FakeDDGS([], gate=threading.Event())
    backend = DDGSBackend(SearchSettings(), client_factory=lambda: fake)
    try:
        with pytest.raises(ToolError) as info:
            await backend.search(SearchQuery("q", "wt-wt", None, 5, 0.1))
        assert info.value.code == "timeout" and fake.entered.is_set()
        assert fake.released is None  # ddgs had not returned: the deadline cut the wait
    finally:
        assert fake.gate is not None
        fake.gate.set()
