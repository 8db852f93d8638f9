"""`web_fetch`: download a page through the SSRF guard and return its main text.

Data flow: URL -> `_fetch_http.SafeFetcher` (scheme check, one DNS lookup per hop, every
address classified, connection pinned to the checked address, manual redirects, size/time
caps, content-type allow-list) -> ``trafilatura.extract`` in a run-scoped worker pool (never on
the event loop) -> `ToolOutput` whose ``data`` holds url, final_url, title, text, content_hash
(sha256 of the decoded body), truncated, status, content_type, bytes and hops.

Ledger: every successful fetch emits ``url.fetched`` (with the hash, so a citation can be
checked against what was actually read); every refusal emits ``url.blocked`` naming the
address class. The task's overrides (``fetch.allow_hosts`` / ``allow_private``) are copied
into both events, so an allow-listed fetch is visible as such in the audit.

Extraction options were chosen on ``benchmarks/article-extraction`` (``benchmarks/
extraction.py``): markdown output, ``favor_precision=True``, ``include_comments=False``
scores F1 0.961 against 0.953 for plain defaults.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field

from agentkit.errors import ToolError
from agentkit.tools._extract import extract_page
from agentkit.tools._extract_pool import (
    ExtractPool,
    ProcessExtractPool,
    ThreadExtractPool,
    WorkerCrashed,
)
from agentkit.tools._fetch_http import FetchedBody, PinnedBackend, SafeFetcher, make_client
from agentkit.tools._ssrf import Blocked, FetchPolicy, Resolver, SystemResolver
from agentkit.tools._untrusted import wrap_untrusted
from agentkit.tools.base import Tool, ToolArgs, ToolContext, ToolOutput

__all__ = ["WebFetch", "WebFetchArgs"]

PoolKind = Literal["process", "thread"]

class WebFetchArgs(ToolArgs):
    url: str = Field(min_length=1, max_length=8192,
                     description="The http:// or https:// URL of the page to read.")
    max_chars: int | None = Field(default=None, ge=100, le=2_000_000,
                                  description="Return at most this many characters of text "
                                              "(default: the task's fetch.max_text_chars).")


class WebFetch(Tool):
    name: ClassVar[str] = "web_fetch"
    description: ClassVar[str] = (
        "Download a web page (http/https only) and return its main text as markdown, with its "
        "title and final URL. Private, loopback and cloud-metadata addresses are refused. Cite "
        "pages by the URL given in the result.")
    args_model: ClassVar[type[ToolArgs]] = WebFetchArgs
    timeout_s: ClassVar[float] = 120.0
    concurrency_class: ClassVar[str] = "fetch"

    def __init__(self, resolver: Resolver | None = None, extract_pool: PoolKind = "process",
                 workers: int | None = None) -> None:
        self.resolver: Resolver = resolver or SystemResolver()
        self.extract_pool: PoolKind = extract_pool
        self.workers = workers or min(4, os.cpu_count() or 2)

    async def call(self, args: WebFetchArgs, ctx: ToolContext) -> ToolOutput:
        settings = ctx.task.fetch
        policy = FetchPolicy(tuple(settings.allow_hosts), settings.allow_private)
        fetcher = SafeFetcher(await self._client(ctx), self.resolver, policy, settings)
        await self.prepare(ctx)  # if the run has not: workers import while the page downloads
        try:
            async with asyncio.timeout(settings.timeout_s):
                page = await fetcher.fetch(args.url)
        except Blocked as blocked:
            raise self._blocked(ctx, args.url, blocked, policy) from None
        except ToolError as err:
            if err.code == "scheme_not_allowed":  # refused by policy: audited like a block
                hops = err.details.get("hops", [])
                ctx.emit("url.blocked", {"url": args.url, "reason": err.message,
                                         "address_class": "scheme", "hop": len(hops),
                                         "hops": hops, "policy": policy.describe()})
            raise
        except TimeoutError:
            raise ToolError("timeout", f"fetching {args.url} took longer than the total deadline "
                            f"of {settings.timeout_s:g} s", retry_hint="the site is slow; retry "
                            "once later or use another source") from None
        title, text = await self._extract(ctx, page)
        limit = args.max_chars or settings.max_text_chars
        truncated = len(text) > limit
        shown = text[:limit]
        data = {"url": args.url, "final_url": page.final_url, "title": title,
                "text": shown, "content_hash": page.sha256,
                "truncated": truncated, "status": page.status, "content_type": page.content_type,
                "bytes": len(page.body), "raw_bytes": page.raw_bytes,
                "hops": [h.as_dict() for h in page.hops]}
        ctx.emit("url.fetched", {k: v for k, v in data.items() if k != "text"}
                 | {"chars": len(shown), "policy": policy.describe()})
        return ToolOutput(self._content(data), data)

    @staticmethod
    def _content(data: dict[str, Any]) -> str:
        head = (f"Fetched {data['final_url']} (HTTP {data['status']}"
                + (f", title: {data['title']!r}" if data["title"] else "") + ")"
                + (" — text truncated" if data["truncated"] else "") + ".")
        if not data["text"].strip():
            return head + " No main text could be extracted from this page."
        return head + "\n" + wrap_untrusted(data["text"], data["final_url"])

    @staticmethod
    def _blocked(ctx: ToolContext, url: str, blocked: Blocked, policy: FetchPolicy) -> ToolError:
        hops = [h.as_dict() for h in blocked.hops]
        if blocked.address_class == "unresolvable":  # refused (fail closed), but not a policy hit
            return ToolError("unavailable", f"could not fetch {url}: {blocked.reason}",
                             retry_hint="check the host name; retry later if it should exist",
                             details={"host": blocked.host, "hops": hops})
        ctx.emit("url.blocked", {"url": url, "host": blocked.host, "reason": blocked.reason,
                                 "address_class": blocked.address_class,
                                 "address": blocked.address, "hop": len(hops), "hops": hops,
                                 "policy": policy.describe()})
        where = f" (redirect hop {len(hops)})" if len(hops) > 1 else ""
        return ToolError("blocked", f"refused to fetch {url}{where}: {blocked.reason}",
                         retry_hint="this address is not reachable from agents; use a public "
                         "URL (a task can allow-list intranet hosts in fetch.allow_hosts)",
                         details={"address_class": blocked.address_class,
                                  "address": blocked.address, "host": blocked.host,
                                  "hops": hops})

    async def prepare(self, ctx: ToolContext) -> None:
        """Start the run's extraction workers when the run starts, so that their start-up
        (Python and trafilatura, ~0.3 s) overlaps the first model turns instead of delaying
        the first page; idempotent."""
        await (await self._pool(ctx)).start()

    async def _client(self, ctx: ToolContext) -> httpx.AsyncClient:
        settings = ctx.task.fetch

        async def make() -> httpx.AsyncClient:
            return make_client(settings, PinnedBackend())

        async def close(client: httpx.AsyncClient) -> None:
            await client.aclose()

        return await ctx.resource("web_fetch.http", make, close)

    async def _pool(self, ctx: ToolContext) -> ExtractPool:
        kind, workers = self.extract_pool, self.workers

        async def make() -> ExtractPool:
            if kind == "thread":
                return ThreadExtractPool(extract_page, workers)
            return ProcessExtractPool(workers)

        async def close(pool: ExtractPool) -> None:
            await pool.aclose()

        return await ctx.resource(f"web_fetch.extract.{kind}", make, close)

    async def _extract(self, ctx: ToolContext, page: FetchedBody) -> tuple[str, str]:
        pool = await self._pool(ctx)
        try:
            return await pool.extract(page.body, page.content_type, page.charset)
        except WorkerCrashed:
            raise ToolError("extract_failed", f"the extraction worker crashed on "
                            f"{page.final_url}", retry_hint="try another source") from None
        except Exception as exc:  # trafilatura/lxml failures on hostile markup
            raise ToolError("extract_failed", f"could not extract text from {page.final_url}: "
                            f"{type(exc).__name__}: {exc}", retry_hint="try another source") from None
