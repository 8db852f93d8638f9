"""The HTTP boundary shared by the wire adapters: error mapping, SSE framing, redaction, and
the limits every model call runs under.

Everything httpx raises is mapped here to `ProviderError` subclasses carrying the facts the
retry owner needs (status, retryable, retry_after). The API key never appears in a message.

Every call (`post`) has one overall deadline, ``timeout_s``: connecting, sending and reading
every byte of the answer, streamed or not. httpx's own timeouts are per read, so a server
dripping keep-alives (or one byte every few seconds) would otherwise hold a call forever. The
answer's *decompressed* size is capped (``max_response_bytes``): the body is read raw and
inflated here in bounded steps, counted as it goes, so neither a gzip bomb nor a huge answer
can grow the process past the cap (httpx's decoder inflates each network chunk whole, about
1,000x for gzip). Only gzip and deflate are asked for and accepted.
"""

from __future__ import annotations

import asyncio
import codecs
import email.utils
import json
import re
import ssl
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from agentkit.clock import Clock
from agentkit.errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderHTTPError,
    ProviderResponseError,
    ProviderTimeout,
)

__all__ = ["Body", "CallLimits", "Clients", "Endpoint", "SseEvent", "http_error", "iter_sse",
           "parse_retry_after", "post"]

RETRYABLE_STATUS = frozenset({408, 409, 429, 529})
_QUOTA = re.compile(r"quota|billing|insufficient|balance|credit|payment", re.I)
_KEYISH = re.compile(r"\b(sk-[A-Za-z0-9_\-]{4,}|sk-ant-[A-Za-z0-9_\-]{4,}|AIza[0-9A-Za-z_\-]{10,})")
_HINTS = {
    401: "check the API key in the environment variable named by api_key_env",
    403: "the key is not allowed to use this model or endpoint",
    404: "check the model name and base_url",
    413: "the request is too large: shorten the conversation or tool results",
}


#: connections per httpx client. httpcore's pool does work quadratic in its connections on every
#: request it queues or releases, and its default keeps 20 idle of 100 (a fan-out of 100 agents
#: on one model reopened a connection for almost every call: 379 connects for 400 requests).
#: So a model's calls are spread over clients of `SHARD` connections each, all kept alive.
#: 1: the pool then checks one connection per request and release (each check builds anyio's
#: socket attributes anew); on swarm_scale, interleaved A/B over 5 runs each, 1 beat 4 by
#: 3-5% of makespan and 4% of CPU (4 had beaten 16 before).
SHARD = 1
_SHARD_LIMITS = httpx.Limits(max_connections=SHARD, max_keepalive_connections=SHARD,
                             keepalive_expiry=20.0)


class Clients:
    """The HTTP clients of one model, made on demand (no I/O until the first call): each call
    leases the first client with a free connection, so idle kept-alive connections are reused
    and no client holds more than `SHARD`. One TLS context serves them all. A client given
    by the caller (`given`) is used for every call and closed by its owner, not here.

    `tls` False (an ``http://`` endpoint, as local servers are): the clients get a TLS context
    that trusts no certificate at all instead of loading the CA bundle (~35 ms on the first
    call of every run); nothing is sent over TLS to such an endpoint, and a TLS connection
    (an ``https://`` proxy) would fail closed, not open."""

    def __init__(self, timeout_s: float, given: httpx.AsyncClient | None = None, *,
                 tls: bool = True) -> None:
        self._timeout = httpx.Timeout(timeout_s, connect=15.0)
        self._given, self._tls_wanted = given, tls
        self._clients: list[httpx.AsyncClient] = []
        self._busy: list[int] = []
        self._tls: ssl.SSLContext | None = None
        self._urls: dict[str, httpx.URL] = {}

    def url(self, url: str) -> httpx.URL:
        """`url` parsed once (httpx parses a string URL twice for every request)."""
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = self._urls[url] = httpx.URL(url)
        return parsed

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[httpx.AsyncClient]:
        if self._given is not None:
            yield self._given
            return
        i = next((i for i, n in enumerate(self._busy) if n < SHARD), len(self._busy))
        if i == len(self._clients):
            self._clients.append(self._new())
            self._busy.append(0)
        self._busy[i] += 1
        try:
            yield self._clients[i]
        finally:
            self._busy[i] -= 1

    def _new(self) -> httpx.AsyncClient:
        if self._tls is None:  # the CA bundle honours SSL_CERT_FILE/DIR, as httpx does
            self._tls = (httpx.create_ssl_context() if self._tls_wanted
                         else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
        return httpx.AsyncClient(timeout=self._timeout, limits=_SHARD_LIMITS, verify=self._tls)

    async def aclose(self) -> None:
        clients, self._clients, self._busy = self._clients, [], []
        for client in clients:
            await client.aclose()


@dataclass(frozen=True)
class Endpoint:
    """Who we talk to, for error messages and redaction."""

    provider: str
    model: str
    api_key: str | None


def redact(text: str, api_key: str | None) -> str:
    if api_key:
        text = text.replace(api_key, "***")
    return _KEYISH.sub("***", text)


def parse_retry_after(headers: httpx.Headers, clock: Clock | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = clock.time() if clock is not None else when.timestamp()
    return max(0.0, when.timestamp() - now)


def _error_message(body: str) -> str:
    """The provider's own words from an error body (OpenAI, Anthropic, Gemini array shapes)."""
    try:
        data: Any = json.loads(body)
    except (json.JSONDecodeError, ValueError):
        return body.strip()[:500]
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("msg") or json.dumps(err)
            kind = err.get("type") or err.get("status") or err.get("code")
            return f"{msg} ({kind})" if kind and str(kind) not in str(msg) else str(msg)
        if isinstance(err, str):
            return err
    return body.strip()[:500]


def http_error(status: int, body: str, headers: httpx.Headers, ep: Endpoint,
               clock: Clock | None = None) -> ProviderHTTPError:
    """Map a non-2xx answer: retryable by status, except quota/billing 429s."""
    message = redact(_error_message(body), ep.api_key)[:800]
    retryable = status in RETRYABLE_STATUS or status >= 500
    if status == 429 and _QUOTA.search(message):
        retryable = False
    hint = _HINTS.get(status)
    text = f"HTTP {status}: {message}" + (f" — {hint}" if hint else "")
    return ProviderHTTPError(text, provider=ep.provider, model=ep.model, status=status,
                             retry_after=parse_retry_after(headers, clock), retryable=retryable,
                             body=redact(body, ep.api_key)[:4000])


def map_transport_error(exc: httpx.HTTPError, ep: Endpoint) -> ProviderError:
    what = redact(f"{type(exc).__name__}: {exc}", ep.api_key)
    where = _endpoint_of(exc)
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeout(f"timed out{where} ({what})", provider=ep.provider, model=ep.model)
    if isinstance(exc, httpx.TransportError):
        return ProviderConnectionError(f"connection failed{where} ({what})", provider=ep.provider,
                                       model=ep.model)
    return ProviderResponseError(what, provider=ep.provider, model=ep.model)


@dataclass(frozen=True)
class CallLimits:
    """What one model call may take: `deadline_s` for the whole exchange, `max_bytes` of
    decompressed answer. `setting` names where the user raises them (``models.fast``)."""

    deadline_s: float
    max_bytes: int
    setting: str = "the model's settings"


#: error bodies are read up to this many decompressed bytes (the message is in the first few)
ERROR_BODY_BYTES = 64 * 1024
#: the most one inflate step may produce: memory grows by at most this per step
_STEP = 64 * 1024
_EOL = re.compile(r"\r\n|\r|\n")


def _endpoint_of(exc: httpx.HTTPError) -> str:
    """`` to http://host:port/path`` of the failed request: a connection error must say what it
    tried to reach. No query string or user info (a key may ride in either)."""
    try:
        url = exc.request.url
    except RuntimeError:  # an error raised without a request
        return ""
    port = f":{url.port}" if url.port is not None else ""
    return f" to {url.scheme}://{url.host}{port}{url.path}"


@asynccontextmanager
async def post(clients: Clients, url: str, *, body: dict[str, Any],
               headers: dict[str, str], ep: Endpoint, limits: CallLimits,
               clock: Clock | None = None) -> AsyncIterator[Body]:
    """POST and yield the answer's `Body` once it is 2xx; every failure leaves as
    ProviderError, including transport errors raised while the caller reads the body. The
    whole block, the caller's reading included, runs under `limits.deadline_s`."""
    if not any(k.lower() == "accept-encoding" for k in headers):
        headers = {**headers, "Accept-Encoding": "gzip, deflate"}
    deadline = asyncio.timeout(limits.deadline_s)
    try:
        async with deadline, clients.lease() as client, \
                client.stream("POST", clients.url(url), json=body, headers=headers) as resp:
            if resp.status_code >= 300:
                raw = await Body(resp, ep, CallLimits(limits.deadline_s, ERROR_BODY_BYTES,
                                                      limits.setting)).text(truncate=True)
                raise http_error(resp.status_code, raw, resp.headers, ep, clock)
            yield Body(resp, ep, limits)
    except httpx.HTTPError as exc:
        raise map_transport_error(exc, ep) from None
    except TimeoutError:
        if not deadline.expired():
            raise
        raise ProviderTimeout(
            f"no complete answer within timeout_s = {limits.deadline_s:g} s, the deadline of "
            f"the whole call (connecting, sending and reading every byte of the answer, "
            f"streamed or not); raise {limits.setting}.timeout_s for a slower model",
            provider=ep.provider, model=ep.model) from None


class Body:
    """A 2xx answer, read raw and decompressed here in bounded steps, its decoded size
    counted against `CallLimits.max_bytes` as it arrives."""

    def __init__(self, resp: httpx.Response, ep: Endpoint, limits: CallLimits) -> None:
        self.headers = resp.headers
        self._resp, self._ep, self._limits = resp, ep, limits
        self._decoder = _decoder(resp.headers.get("content-encoding", ""), ep)
        #: decoded bytes read so far
        self.size = 0

    async def chunks(self, *, truncate: bool = False) -> AsyncIterator[bytes]:
        """Decoded pieces of at most 64 KB; past the cap a `ProviderResponseError` (or, with
        `truncate`, the end of the body)."""
        async for raw in self._resp.aiter_raw():
            for piece in self._decoder.feed(raw):
                room = self._limits.max_bytes - self.size
                if len(piece) > room:
                    if truncate:
                        yield piece[:room]
                        return
                    raise self._too_large()
                self.size += len(piece)
                yield piece

    async def text(self, *, truncate: bool = False) -> str:
        """The whole answer as text (undecodable bytes replaced)."""
        buf = bytearray()
        async for piece in self.chunks(truncate=truncate):
            buf += piece
        return buf.decode("utf-8", "replace")

    async def lines(self) -> AsyncIterator[str]:
        """Lines without their ending (``\\r\\n``, ``\\r`` or ``\\n``, as SSE allows)."""
        utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        held: list[str] = []  # the unfinished line, in pieces (a long line is joined once)
        cr = False  # the last piece ended in "\r": kept back, a "\n" may follow in the next
        async for piece in self.chunks():
            text = ("\r" if cr else "") + utf8.decode(piece)
            cr = text.endswith("\r")
            parts = _EOL.split(text[:-1] if cr else text)
            held.append(parts[0])
            if len(parts) > 1:
                yield "".join(held)
                for line in parts[1:-1]:
                    yield line
                held = [parts[-1]]
        last = "".join(held) + utf8.decode(b"", final=True)
        if last:
            yield last

    def _too_large(self) -> ProviderResponseError:
        cap = self._limits.max_bytes
        return ProviderResponseError(
            f"the answer is larger than max_response_bytes = {cap:,} bytes (decompressed); "
            f"it was cut there. If this model really answers that much, raise "
            f"{self._limits.setting}.max_response_bytes", provider=self._ep.provider,
            model=self._ep.model, retryable=False)


class _Identity:
    def feed(self, data: bytes) -> Iterator[bytes]:
        if data:
            yield data


class _Inflate:
    """gzip or deflate, inflated at most `_STEP` bytes at a time (zlib keeps the rest of the
    input in ``unconsumed_tail``), so a bomb never expands in one go."""

    def __init__(self, encoding: str, ep: Endpoint) -> None:
        self._gzip = encoding != "deflate"
        # deflate is zlib-wrapped per the RFC, raw in practice: auto-detect, raw as a fallback
        self._wbits = zlib.MAX_WBITS | (16 if self._gzip else 32)
        self._z = zlib.decompressobj(self._wbits)
        self._ep, self._started, self._done = ep, False, False

    def feed(self, data: bytes) -> Iterator[bytes]:
        while not self._done:
            try:
                out = self._z.decompress(data, _STEP)
            except zlib.error as exc:
                if self._gzip or self._started:
                    raise ProviderResponseError(
                        f"the answer's compressed body is corrupt ({exc})", retryable=True,
                        provider=self._ep.provider, model=self._ep.model) from None
                self._z = zlib.decompressobj(-zlib.MAX_WBITS)
                continue
            self._started = True
            if out:
                yield out
            if self._z.eof:
                data = self._z.unused_data
                if self._gzip and data[:2] == b"\x1f\x8b":  # the next member of a gzip file
                    self._z = zlib.decompressobj(self._wbits)
                    continue
                self._done = True  # bytes after the end are ignored (and never buffered)
                return
            data = self._z.unconsumed_tail
            if not data and len(out) < _STEP:  # a full step may leave output inside zlib
                return


def _decoder(encoding: str, ep: Endpoint) -> _Identity | _Inflate:
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return _Identity()
    if name in ("gzip", "x-gzip", "deflate"):
        return _Inflate(name, ep)
    raise ProviderResponseError(f"the answer uses content-encoding {encoding!r}; agentkit asks "
                                "for gzip or deflate and accepts only those",
                                provider=ep.provider, model=ep.model)


@dataclass(frozen=True)
class SseEvent:
    event: str | None
    data: str


async def iter_sse(body: Body) -> AsyncIterator[SseEvent]:
    """Server-sent events: skips `:` comments (keep-alives) and blank lines, joins multi-line
    data, keeps the `event:` name (Anthropic)."""
    event: str | None = None
    data: list[str] = []
    async for line in body.lines():
        if not line:
            if data:
                yield SseEvent(event, "\n".join(data))
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    if data:
        yield SseEvent(event, "\n".join(data))


def loads(text: str, ep: Endpoint, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProviderResponseError(f"malformed JSON in {what}: {exc.msg}: {text[:200]!r}",
                                    provider=ep.provider, model=ep.model) from None


def stream_error(data: Any, ep: Endpoint, status_of: Callable[[str], int]) -> ProviderError:
    """An error object delivered inside a 200 stream (Anthropic `error` event, OpenAI-style
    `{"error": ...}` chunk)."""
    err = data[0].get("error", data[0]) if isinstance(data, list) and data else data.get("error", data)
    if not isinstance(err, dict):
        err = {"message": str(err)}
    kind = str(err.get("type") or err.get("status") or err.get("code") or "error")
    status = status_of(kind)
    msg = redact(str(err.get("message", kind)), ep.api_key)
    return ProviderHTTPError(f"error in stream: {msg} ({kind})", provider=ep.provider,
                             model=ep.model, status=status,
                             retryable=status in RETRYABLE_STATUS or status >= 500)
