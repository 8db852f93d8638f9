"""web_fetch end to end against a real HTTP server on 127.0.0.1.

What this proves: every attack from issue 4 is refused with a typed tool error and a ledger
event, and the server records NO connection for it; allow-listed fetches are pinned to the
checked address (test hostnames exist only in a test resolver, so any second DNS lookup would
fail); body, decompression and time caps stop hostile servers; real article pages (shipped in
tests/data) come back with their main text, title and content hash.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import ssl
import subprocess
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _fetch_server import FetchTestServer, drip, endless, redirect, static

from agentkit.errors import ToolError
from agentkit.events import Event
from agentkit.runtime import Runtime
from agentkit.task import FetchSettings, TaskSpec
from agentkit.tools import invoke_tool
from agentkit.tools._fetch_http import SafeFetcher, make_client
from agentkit.tools._ssrf import FetchPolicy, StaticResolver
from agentkit.tools.web_fetch import WebFetch

#: four real article pages and their ground truth (MIT, see the README there)
PAGES = Path(__file__).resolve().parent / "data" / "article-extraction"
RESOLVER = {"news.test": ["127.0.0.1"], "other.test": ["127.0.0.1"],
            "mixed.test": ["93.184.216.34", "127.0.0.1"]}


def task(**fetch: Any) -> TaskSpec:
    return TaskSpec.model_validate({"name": "fetch-test", "goal": "test", "model": "m",
                                    "models": {"m": {"model": "none"}}, "tools": ["web_fetch"],
                                    "fetch": fetch})


class Harness:
    def __init__(self, runtime: Runtime, events: list[Event], tool: WebFetch) -> None:
        self.runtime, self.events, self.tool = runtime, events, tool

    async def fetch(self, url: str, **args: Any) -> Any:
        return await invoke_tool(self.tool, {"url": url, **args}, self.runtime.tool_context())

    async def refused(self, url: str, code: str) -> ToolError:
        with pytest.raises(ToolError) as info:
            await self.fetch(url)
        assert info.value.code == code, info.value
        return info.value

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [e.data for e in self.events if e.kind == kind]


@pytest.fixture
async def server() -> AsyncIterator[FetchTestServer]:
    async with FetchTestServer() as srv:
        yield srv


async def harness(**fetch: Any) -> Harness:
    events: list[Event] = []
    runtime = Runtime(task(**fetch), sinks=[events.append])
    return Harness(runtime, events, WebFetch(resolver=StaticResolver(RESOLVER), workers=1))


@pytest.fixture
async def guarded() -> AsyncIterator[Harness]:
    """Default policy: nothing allow-listed."""
    h = await harness()
    yield h
    await h.runtime.aclose()


@pytest.fixture
async def allowed() -> AsyncIterator[Harness]:
    """news.test and other.test allow-listed (they resolve to the loopback test server)."""
    h = await harness(allow_hosts=["news.test", "other.test"], max_bytes=1 << 20,
                      read_timeout_s=0.5, timeout_s=5.0, max_redirects=3)
    yield h
    await h.runtime.aclose()


ATTACKS = [
    ("http://169.254.169.254:{port}/latest/meta-data/", "link-local / cloud metadata address"),
    ("http://metadata.google.internal:{port}/computeMetadata/v1/", "cloud metadata hostname"),
    ("http://127.0.0.1:{port}/", "127.0.0.1 is a loopback address"),
    ("http://localhost:{port}/", "loopback hostname"),
    ("http://[::1]:{port}/", "::1 is a loopback address"),
    ("http://0.0.0.0:{port}/", "unspecified"),
    ("http://2130706433:{port}/", "127.0.0.1 is a loopback address"),
    ("http://0177.0.0.1:{port}/", "127.0.0.1 (written 0177.0.0.1) is a loopback address"),
    ("http://0x7f000001:{port}/", "127.0.0.1 is a loopback address"),
    ("http://[::ffff:127.0.0.1]:{port}/", "loopback address (127.0.0.1 inside the IPv6 form"),
    ("http://[fd00::1]:{port}/", "private (unique local) address"),
    ("http://mixed.test:{port}/", "127.0.0.1 is a loopback address (mixed.test resolves to it)"),
]


@pytest.mark.parametrize(("template", "expected"), ATTACKS)
async def test_attack_is_blocked_before_any_connection(server: FetchTestServer, guarded: Harness,
                                                       template: str, expected: str) -> None:
    server.routes["/"] = static(b"<p>secret</p>")
    url = template.format(port=server.port)
    err = await guarded.refused(url, "blocked")
    assert expected in err.message and err.retry_hint
    [event] = guarded.kinds("url.blocked")
    assert event["url"] == url and event["address_class"] == err.details["address_class"]
    assert event["policy"] == {"allow_hosts": [], "allow_private": False}
    assert server.connections == 0 and server.requests == []


@pytest.mark.parametrize("template", ["file:///etc/passwd", "gopher://127.0.0.1:{port}/_x",
                                      "ftp://127.0.0.1:{port}/"])
async def test_other_schemes_are_refused(server: FetchTestServer, guarded: Harness,
                                         template: str) -> None:
    url = template.format(port=server.port)
    err = await guarded.refused(url, "scheme_not_allowed")
    assert url.split(":")[0] in err.message
    assert guarded.kinds("url.blocked")[0]["address_class"] == "scheme"
    assert server.connections == 0


async def test_redirect_chain_to_a_private_address_is_blocked_at_that_hop(
        server: FetchTestServer, allowed: Harness) -> None:
    server.routes["/r1"] = redirect("/r2")
    server.routes["/r2"] = redirect(f"http://127.0.0.1:{server.port}/secret", status=307)
    server.routes["/secret"] = static(b"<p>secret</p>")
    err = await allowed.refused(f"http://news.test:{server.port}/r1", "blocked")
    assert "redirect hop 3" in err.message and "loopback" in err.message
    assert [r.path for r in server.requests] == ["/r1", "/r2"]  # /secret never requested
    [event] = allowed.kinds("url.blocked")
    assert [h["status"] for h in event["hops"]] == [302, 307, None]
    assert event["hops"][0]["allowed_by"] == "allow_hosts" and event["hop"] == 3


async def test_too_many_redirects(server: FetchTestServer, allowed: Harness) -> None:
    server.routes["/loop"] = redirect("/loop")
    err = await allowed.refused(f"http://news.test:{server.port}/loop", "too_many_redirects")
    assert len(err.details["hops"]) == 4 and len(server.requests) == 4  # first + 3 redirects


async def test_credentials_are_dropped_when_a_redirect_changes_host(
        server: FetchTestServer) -> None:
    server.routes["/a"] = redirect("/b")
    server.routes["/b"] = redirect(f"http://other.test:{server.port}/c")
    server.routes["/c"] = static(b"<p>ok</p>")
    settings = FetchSettings(allow_hosts=["news.test", "other.test"])
    async with make_client(settings) as client:
        fetcher = SafeFetcher(client, StaticResolver(RESOLVER),
                              FetchPolicy(allow_hosts=("news.test", "other.test")), settings)
        page = await fetcher.fetch(f"http://news.test:{server.port}/a",
                                   headers={"Authorization": "Bearer s3cret", "Cookie": "k=v"})
    assert page.final_url == f"http://other.test:{server.port}/c"
    a, b, c = server.requests
    assert a.headers["authorization"] == b.headers["authorization"] == "Bearer s3cret"
    assert "cookie" in b.headers  # same host: kept
    assert "authorization" not in c.headers and "cookie" not in c.headers


async def test_connection_is_pinned_to_the_checked_address(server: FetchTestServer) -> None:
    class Rebinding:
        """First answer passes the guard; a later lookup would point somewhere else."""

        def __init__(self) -> None:
            self.calls = 0

        async def resolve(self, host: str, port: int) -> list[str]:
            self.calls += 1
            return ["127.0.0.1"] if self.calls == 1 else ["203.0.113.66"]

    server.routes["/"] = static(b"<html><title>Pinned</title><p>hello</p></html>")
    resolver = Rebinding()
    events: list[Event] = []
    async with Runtime(task(allow_hosts=["rebind.test"]), sinks=[events.append]) as runtime:
        out = await invoke_tool(WebFetch(resolver=resolver, workers=1),
                                {"url": f"http://rebind.test:{server.port}/"}, runtime.tool_context())
    assert resolver.calls == 1 and server.connections == 1
    assert out.data["hops"][0]["address"] == "127.0.0.1"


async def test_unchecked_hosts_cannot_connect_through_the_client(server: FetchTestServer) -> None:
    """The transport fails closed: a request the guard did not pin never opens a socket."""
    async with make_client(FetchSettings()) as client:
        with pytest.raises(httpx.ConnectError, match="SSRF guard did not check"):
            await client.get(server.url("/"))
    assert server.connections == 0


async def test_endless_body_is_cut_at_the_cap_with_bounded_memory(
        server: FetchTestServer, allowed: Harness) -> None:
    server.routes["/big"] = endless(server)
    tracemalloc.start()
    try:
        err = await allowed.refused(f"http://news.test:{server.port}/big", "too_large")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    cap = 1 << 20
    assert cap < err.details["bytes"] <= cap + 65536 * 2
    assert server.bytes_sent < 64 * cap  # the server was cut off, nowhere near 5 GB
    assert peak < 8 * cap


async def test_declared_huge_body_is_refused_without_reading(server: FetchTestServer,
                                                             allowed: Harness) -> None:
    async def huge(request: Any, writer: Any) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                     b"Content-Length: 5368709120\r\n\r\n<p>")
        await writer.drain()

    server.routes["/huge"] = huge
    err = await allowed.refused(f"http://news.test:{server.port}/huge", "too_large")
    assert "5,368,709,120" in err.message and err.details["bytes"] == 0


async def test_gzip_bomb_is_stopped_at_the_decompressed_cap(server: FetchTestServer,
                                                            allowed: Harness) -> None:
    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)  # ~64 KB on the wire
    server.routes["/bomb"] = static(bomb, extra={"Content-Encoding": "gzip"})
    tracemalloc.start()
    try:
        err = await allowed.refused(f"http://news.test:{server.port}/bomb", "too_large")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.details["bytes"] <= len(bomb)
    assert peak < 8 << 20


async def test_stalled_server_hits_the_per_read_timeout(server: FetchTestServer,
                                                        allowed: Harness) -> None:
    """A server that sends one byte and then nothing for 10 s is cut off by the 0.5 s read
    timeout: the message is the per-read one, not the 5 s total deadline's."""
    server.routes["/slow"] = drip(10.0)  # one byte every 10 s
    err = await allowed.refused(f"http://news.test:{server.port}/slow", "timeout")
    assert "stalled: no data for 0.5 s" in err.message and "total deadline" not in err.message


async def test_trickling_server_hits_the_total_deadline(server: FetchTestServer) -> None:
    """A server that never pauses long enough for the 5 s read timeout, but never ends, is cut
    off by the 1 s total deadline (the only limit it can reach: its 20 bytes/s stay far below
    max_bytes)."""
    server.routes["/trickle"] = drip(0.05)
    h = await harness(allow_hosts=["news.test"], read_timeout_s=5.0, timeout_s=1.0)
    try:
        err = await h.refused(f"http://news.test:{server.port}/trickle", "timeout")
        assert "total deadline of 1 s" in err.message and "stalled" not in err.message
    finally:
        await h.runtime.aclose()


@pytest.mark.parametrize(("route", "code"), [
    (static(b"\x89PNG", content_type="image/png"), "bad_content_type"),
    (static(b"gone", status=404, content_type="text/plain"), "http_error"),
    (static(b"busy", status=503, content_type="text/plain"), "http_error"),
])
async def test_unusable_answers(server: FetchTestServer, allowed: Harness, route: Any,
                                code: str) -> None:
    server.routes["/x"] = route
    err = await allowed.refused(f"http://news.test:{server.port}/x", code)
    assert err.retry_hint


def _f1(predicted: str, truth: str) -> float:
    def shingles(text: str) -> Counter[tuple[str, ...]]:
        words = re.findall(r"\w+", text)
        return Counter(tuple(words[i:i + 4]) for i in range(len(words) - 3))

    p, t = shingles(predicted), shingles(truth)
    tp = sum((p & t).values())
    return 2 * tp / (sum(p.values()) + sum(t.values()))


async def test_real_pages_are_fetched_extracted_and_recorded(server: FetchTestServer,
                                                             allowed: Harness) -> None:
    truth = json.loads((PAGES / "ground-truth.json").read_text())
    ids = sorted(truth)[:3]
    for page_id in ids:
        raw = (PAGES / "html" / f"{page_id}.html.gz").read_bytes()
        server.routes[f"/{page_id}"] = static(raw, content_type="text/html",
                                              extra={"Content-Encoding": "gzip"})
    for page_id in ids:
        url = f"http://news.test:{server.port}/{page_id}"
        out = await allowed.fetch(url)
        body = gzip.decompress((PAGES / "html" / f"{page_id}.html.gz").read_bytes())
        assert out.data["final_url"] == url and out.data["status"] == 200
        assert out.data["title"] and not out.data["truncated"]
        assert out.data["content_hash"] == hashlib.sha256(body).hexdigest()
        assert _f1(out.data["text"], truth[page_id]["articleBody"]) > 0.8
        assert re.search(r"<<<untrusted_content id=[0-9a-f]{16} source=\"" + re.escape(url),
                         out.content)
    fetched = allowed.kinds("url.fetched")
    assert [e["url"] for e in fetched] == [f"http://news.test:{server.port}/{i}" for i in ids]
    assert all(e["policy"]["allow_hosts"] == ["news.test", "other.test"] for e in fetched)
    assert all(e["hops"][0]["allowed_by"] == "allow_hosts" and "text" not in e for e in fetched)


async def test_text_is_capped_and_marked_truncated(server: FetchTestServer,
                                                   allowed: Harness) -> None:
    server.routes["/t"] = static(("lorem ipsum dolor " * 500).encode(), content_type="text/plain")
    out = await allowed.fetch(f"http://news.test:{server.port}/t", max_chars=100)
    assert out.data["truncated"] is True and len(out.data["text"]) == 100


async def test_works_from_a_plain_runtime_registry() -> None:
    """What `agentkit tool web_fetch` does: the registry's tool with default settings."""
    events: list[Event] = []
    async with Runtime(task(), sinks=[events.append]) as runtime:
        with pytest.raises(ToolError) as info:
            await invoke_tool(runtime.tools.get("web_fetch"),
                              {"url": "http://169.254.169.254/latest/"}, runtime.tool_context())
    assert info.value.code == "blocked" and "cloud metadata" in info.value.message
    assert [e.kind for e in events] == ["tool.call", "url.blocked", "tool.result"]


async def test_unresolvable_host_is_an_unavailable_error(server: FetchTestServer,
                                                         guarded: Harness) -> None:
    err = await guarded.refused(f"http://nowhere.test:{server.port}/", "unavailable")
    assert "could not be resolved" in err.message and guarded.kinds("url.blocked") == []
    assert server.connections == 0


async def test_a_dead_extraction_worker_is_replaced(server: FetchTestServer,
                                                    allowed: Harness) -> None:
    server.routes["/p"] = static(b"<html><title>T</title><body><article><p>"
                                 + b"Some words in a paragraph. " * 40 + b"</p></article></body>")
    url = f"http://news.test:{server.port}/p"
    assert "Some words" in (await allowed.fetch(url)).data["text"]
    pool = await allowed.runtime.resources.get("web_fetch.extract.process", _unused)
    for worker in list(pool._all):
        worker.kill()
        await worker.proc.wait()
    err = await allowed.refused(url, "extract_failed")
    assert "worker" in err.message
    assert "Some words" in (await allowed.fetch(url)).data["text"]  # a fresh worker took over


async def _unused() -> Any:
    raise AssertionError("the pool should already exist")


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for `name` (openssl CLI; the test fails if it is missing)."""
    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@pytest.mark.parametrize(("cert_name", "ok"), [("news.test", True), ("other.test", False)])
async def test_tls_goes_to_the_pinned_address_but_verifies_the_hostname(
        tmp_path: Path, cert_name: str, ok: bool) -> None:
    cert, key = _certificate(tmp_path, cert_name)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    async with FetchTestServer(tls=server_ctx) as srv:
        srv.routes["/"] = static(b"<p>over tls</p>")
        settings = FetchSettings(allow_hosts=["news.test"])
        async with make_client(settings, ssl_context=client_ctx) as client:
            fetcher = SafeFetcher(client, StaticResolver(RESOLVER),
                                  FetchPolicy(allow_hosts=("news.test",)), settings)
            url = f"https://news.test:{srv.port}/"
            if ok:  # SNI and certificate checked for news.test while connecting to 127.0.0.1
                page = await fetcher.fetch(url)
                assert page.body == b"<p>over tls</p>" and page.hops[0].address == "127.0.0.1"
            else:  # a certificate for another name is refused: the pin does not weaken TLS
                with pytest.raises(ToolError) as info:
                    await fetcher.fetch(url)
                assert info.value.code == "unavailable" and "CERTIFICATE" in info.value.message
                assert srv.requests == []


async def test_thread_extraction_pool_gives_the_same_text(server: FetchTestServer) -> None:
    page_id = sorted(json.loads((PAGES / "ground-truth.json").read_text()))[3]
    raw = (PAGES / "html" / f"{page_id}.html.gz").read_bytes()
    server.routes["/p"] = static(raw, content_type="text/html", extra={"Content-Encoding": "gzip"})
    texts = []
    for kind in ("thread", "process"):
        async with Runtime(task(allow_hosts=["news.test"])) as runtime:
            tool = WebFetch(resolver=StaticResolver(RESOLVER), extract_pool=kind, workers=1)
            out = await invoke_tool(tool, {"url": f"http://news.test:{server.port}/p"},
                                    runtime.tool_context())
            texts.append(out.data["text"])
    assert texts[0] == texts[1] and len(texts[0]) > 200


async def test_redirect_to_another_scheme_is_refused(server: FetchTestServer,
                                                     allowed: Harness) -> None:
    server.routes["/go"] = redirect("file:///etc/passwd", status=301)
    err = await allowed.refused(f"http://news.test:{server.port}/go", "scheme_not_allowed")
    assert "not file" in err.message and "/etc/passwd" in err.message
    [event] = allowed.kinds("url.blocked")
    assert event["hop"] == 2 and event["hops"][0]["status"] == 301
