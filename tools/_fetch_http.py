"""The HTTP half of `web_fetch`: an SSRF-guarded download with pinned connections and caps.

How the guard reaches the socket: every hop's host is checked by `_ssrf.check_host` (one DNS
lookup), and the checked address is put in a context variable. The client's transport uses a
network backend (`PinnedBackend`) whose ``connect_tcp`` connects to that pinned address
instead of resolving the hostname again, so a DNS-rebinding server cannot swap the address
between check and connect. httpcore still passes the hostname to TLS, so SNI and certificate
verification are for the hostname. A connection for a host that was not checked is refused
(fail closed), which also catches any URL-parser disagreement between the guard and httpx.

Bodies are read raw and decompressed here (not by httpx) with ``zlib`` and a ``max_length``,
so a gzip bomb is stopped at the cap without ever holding more than the cap in memory.
"""

from __future__ import annotations

import contextvars
import hashlib
import select
import socket
import ssl
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from agentkit.errors import ToolError
from agentkit.task import FetchSettings
from agentkit.tools._ssrf import Blocked, FetchPolicy, Resolver, check_host, classify_address, numeric_ipv4

__all__ = ["FetchedBody", "Hop", "PinnedBackend", "SafeFetcher", "make_client"]

ALLOWED_CONTENT_TYPES = frozenset({"text/html", "application/xhtml+xml", "text/plain"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: headers that carry credentials: dropped when a redirect leaves the original host
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
USER_AGENT = "agentkit-web-fetch/0.1 (+https://github.com/agentkit)"

_PINS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "agentkit_fetch_pins", default=None)


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the address the guard pinned for a host; never resolves names itself."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109
                          local_address: str | None = None,
                          socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        pins = _PINS.get()
        address = pins.get(host.lower()) if pins else None
        if address is None:
            raise httpcore.ConnectError(f"refusing to connect to {host!r}: the SSRF guard did "
                                        "not check this host")
        stream = await self._inner.connect_tcp(address, port, timeout=timeout,
                                               local_address=local_address,
                                               socket_options=socket_options)
        return _Stream(stream)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are never used by web_fetch")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _readable(sock: socket.socket | None) -> bool:
    """True if a read would not block (data, or EOF: the server closed a kept-alive socket)."""
    fd = sock.fileno() if sock is not None else -1
    if fd < 0:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class _Stream(httpcore.AsyncNetworkStream):
    """The backend's stream with the raw socket looked up once.

    httpcore asks every pooled connection ``get_extra_info("is_readable")`` each time it
    assigns a request; through anyio that rebuilds an attribute table per call, which was the
    largest single CPU cost per fetch in ``benchmarks/extraction.py`` profiles.
    """

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._sock: socket.socket | None = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:  # noqa: ASYNC109
        return _Stream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return _readable(self._sock)
        if info == "socket":
            return self._sock
        return self._inner.get_extra_info(info)


@contextmanager
def pinned(host: str, address: str) -> Iterator[None]:
    """Allow connections to `host` (only to `address`) inside this block."""
    token = _PINS.set({host.lower(): address})
    try:
        yield
    finally:
        _PINS.reset(token)


class _NoCookies(DefaultCookiePolicy):
    """Cookies are never stored: one page must not influence what another fetch sends."""

    def set_ok(self, cookie: Any, request: Any) -> bool:
        return False


class _PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with its connection pool built on `PinnedBackend`.

    httpx exposes no ``network_backend`` argument, so the pool is rebuilt here with the same
    settings; `tests/test_web_fetch.py` proves the pinning end to end (test hostnames exist
    only in a test resolver, so any second lookup would fail).
    """

    def __init__(self, backend: PinnedBackend, limits: httpx.Limits,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry, network_backend=backend)


def make_client(settings: FetchSettings, backend: PinnedBackend | None = None,
                ssl_context: ssl.SSLContext | None = None) -> httpx.AsyncClient:
    """The run's HTTP client: pinned transport, no env proxies, no cookies, no redirects.
    `ssl_context` replaces the default CA bundle (an intranet CA; tests)."""
    limits = httpx.Limits(max_connections=max(settings.max_concurrency * 2, 10),
                          max_keepalive_connections=settings.max_concurrency, keepalive_expiry=30)
    timeout = httpx.Timeout(connect=settings.connect_timeout_s, read=settings.read_timeout_s,
                            write=settings.read_timeout_s, pool=settings.connect_timeout_s)
    transport = _PinnedTransport(backend or PinnedBackend(), limits, ssl_context)
    return httpx.AsyncClient(transport=transport,
                             trust_env=False, follow_redirects=False, timeout=timeout,
                             cookies=httpx.Cookies(CookieJar(policy=_NoCookies())))


@dataclass
class Hop:
    """One request of a fetch (the first URL, then each redirect target)."""

    url: str
    address: str | None = None
    status: int | None = None
    allowed_by: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "address": self.address, "status": self.status,
                "allowed_by": self.allowed_by}


@dataclass
class FetchedBody:
    """A successful download, decompressed and capped."""

    url: str
    final_url: str
    status: int
    content_type: str
    charset: str | None
    body: bytes
    raw_bytes: int
    #: hex sha256 of `body`, computed while streaming (no multi-ms hash on the loop at the end)
    sha256: str
    hops: list[Hop] = field(default_factory=list)


class _Decoder:
    """Content-Encoding decoding with an output cap (gzip/deflate via zlib, or identity)."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._zlib: Any = None
        if encoding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 16)

    def feed(self, chunk: bytes, room: int) -> bytes:
        """Decode `chunk`; raises OverflowError if it would produce more than `room` bytes."""
        if self.encoding == "identity":
            return chunk
        if self._zlib is None:  # deflate: zlib-wrapped or raw, decided by the first byte
            raw = bool(chunk) and (chunk[0] & 0x0F) != 8
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
        out: bytes = self._zlib.decompress(chunk, room + 1)
        if len(out) > room or self._zlib.unconsumed_tail:
            raise OverflowError
        return out


def _content_type(response: httpx.Response) -> tuple[str, str | None]:
    header = response.headers.get("content-type", "")
    mime = header.split(";", 1)[0].strip().lower()
    charset = None
    for param in header.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip("\"'") or None
    return mime, charset


def _error(code: str, message: str, hops: list[Hop], retry_hint: str | None = None,
           **details: Any) -> ToolError:
    return ToolError(code, message, retry_hint=retry_hint,
                     details={"hops": [h.as_dict() for h in hops], **details})


def _parse_url(raw: str, hops: list[Hop]) -> httpx.URL:
    """Parse with httpx (the parser the connection uses); refuse non-http(s) schemes first."""
    scheme = urlsplit(raw).scheme.lower()
    if scheme not in ("http", "https"):
        raise _error("scheme_not_allowed", f"only http and https URLs can be fetched, not "
                     f"{scheme or 'a URL without a scheme'}: {raw[:200]}", hops,
                     retry_hint="give a full http:// or https:// URL")
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as exc:
        host = urlsplit(raw).hostname or ""
        numeric = numeric_ipv4(host)
        label = classify_address(numeric) if numeric else None
        if numeric and label:  # e.g. 0177.0.0.1, which httpx refuses to parse
            raise Blocked(host, f"{numeric} (written {host}) is a {label}", label, numeric) from None
        raise _error("invalid_url", f"{raw[:200]} is not a valid URL ({exc})", hops) from None
    if not url.raw_host:
        raise _error("invalid_url", f"{raw[:200]} has no host", hops)
    return url


def _next_headers(headers: dict[str, str], old: httpx.URL, new: httpx.URL) -> dict[str, str]:
    """Headers for the next hop: credentials are dropped once the host changes."""
    if old.raw_host.lower() == new.raw_host.lower() and old.port == new.port:
        return headers
    return {k: v for k, v in headers.items() if k.lower() not in CREDENTIAL_HEADERS}


class SafeFetcher:
    """Downloads one URL through the guard: manual redirects, caps, content-type check."""

    def __init__(self, client: httpx.AsyncClient, resolver: Resolver, policy: FetchPolicy,
                 settings: FetchSettings) -> None:
        self.client, self.resolver, self.policy, self.settings = client, resolver, policy, settings

    async def fetch(self, raw_url: str, headers: Mapping[str, str] | None = None) -> FetchedBody:
        """Follow up to ``max_redirects`` redirects, re-checking every hop. Raises `Blocked`
        (with ``.hops`` attached) or `ToolError`."""
        hops: list[Hop] = []
        send_headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate",
                        "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9",
                        **(headers or {})}
        current = raw_url
        while True:
            hop = Hop(current)
            hops.append(hop)
            try:
                url = _parse_url(current, hops)
                host = url.raw_host.decode("ascii").lower()
                check = await check_host(host, url.port or (443 if url.scheme == "https" else 80),
                                         self.policy, self.resolver)
            except Blocked as blocked:
                blocked.hops = hops
                raise
            hop.address, hop.allowed_by = check.pinned, check.allowed_by
            response = await self._send(url, host, check.pinned, send_headers, hops)
            hop.status = response.status_code
            location = response.headers.get("location")
            if response.status_code in REDIRECT_STATUSES and location:
                await response.aclose()
                if len(hops) > self.settings.max_redirects:
                    raise _error("too_many_redirects", f"more than {self.settings.max_redirects} "
                                 f"redirects starting at {raw_url}", hops)
                try:
                    nxt = url.join(location)
                except httpx.InvalidURL:
                    raise _error("invalid_url", f"bad redirect Location {location[:200]!r}",
                                 hops) from None
                send_headers = _next_headers(send_headers, url, nxt)
                current = str(nxt)
                continue
            try:
                return await self._finish(raw_url, str(url), response, hops)
            finally:
                await response.aclose()

    async def _send(self, url: httpx.URL, host: str, address: str, headers: dict[str, str],
                    hops: list[Hop]) -> httpx.Response:
        request = self.client.build_request("GET", url, headers=headers)
        try:
            with pinned(host, address):
                return await self.client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise _error("timeout", f"{type(exc).__name__} while connecting to {url.host} "
                         f"({address})", hops, retry_hint="the site is slow; retry once later") from None
        except httpx.HTTPError as exc:
            raise _error("unavailable", f"could not reach {url.host} ({address}): {exc}",
                         hops, retry_hint="the site may be down; retry later or try another "
                         "source") from None

    async def _finish(self, raw_url: str, final_url: str, response: httpx.Response,
                      hops: list[Hop]) -> FetchedBody:
        status = response.status_code
        if status >= 400 or status in REDIRECT_STATUSES:
            hint = ("retry later" if status in (408, 425, 429) or status >= 500
                    else "this page cannot be fetched; try another source")
            raise _error("http_error", f"HTTP {status} from {final_url}", hops, retry_hint=hint,
                         status=status)
        mime, charset = _content_type(response)
        if mime and mime not in ALLOWED_CONTENT_TYPES:
            raise _error("bad_content_type", f"{final_url} is {mime}, not HTML or plain text",
                         hops, retry_hint="only HTML, XHTML and plain-text pages can be read",
                         content_type=mime)
        body, raw_bytes, digest = await self._read_body(response, final_url, hops)
        return FetchedBody(raw_url, final_url, status, mime or "text/html", charset, body,
                           raw_bytes, digest, hops)

    async def _read_body(self, response: httpx.Response, url: str,
                         hops: list[Hop]) -> tuple[bytes, int, str]:
        cap = self.settings.max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise _error("too_large", f"{url} declares {int(declared):,} bytes, over the cap of "
                         f"{cap:,}", hops, bytes=0)
        encoding = response.headers.get("content-encoding", "identity").strip().lower() or "identity"
        if encoding not in ("identity", "gzip", "x-gzip", "deflate"):
            raise _error("bad_content_type", f"{url} uses content-encoding {encoding!r}", hops)
        decoder, body, raw, digest = _Decoder(encoding), bytearray(), 0, hashlib.sha256()
        try:
            async for chunk in response.aiter_raw():
                raw += len(chunk)
                if raw > cap:
                    raise OverflowError
                data = decoder.feed(chunk, cap - len(body))
                digest.update(data)
                body += data
        except OverflowError:
            raise _error("too_large", f"{url} is over the cap of {cap:,} bytes (stopped after "
                         f"{raw:,} bytes on the wire)", hops, bytes=raw) from None
        except zlib.error as exc:
            raise _error("bad_encoding", f"{url}: corrupt {encoding} body ({exc})", hops) from None
        except httpx.TimeoutException:
            raise _error("timeout", f"{url} stalled: no data for {self.settings.read_timeout_s:g} "
                         f"s after {raw:,} bytes", hops, retry_hint="the site is slow; retry once "
                         "later", bytes=raw) from None
        except httpx.HTTPError as exc:
            raise _error("unavailable", f"{url}: connection failed while reading ({exc})", hops,
                         retry_hint="retry later") from None
        return bytes(body), raw, digest.hexdigest()
