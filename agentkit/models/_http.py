"""The HTTP boundary shared by the wire adapters: error mapping, SSE framing, redaction.

Everything httpx raises is mapped here to `ProviderError` subclasses carrying the facts the
retry owner needs (status, retryable, retry_after). The API key never appears in a message.
"""

from __future__ import annotations

import email.utils
import json
import re
from collections.abc import AsyncIterator, Callable
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

__all__ = ["Endpoint", "SseEvent", "http_error", "iter_sse", "parse_retry_after", "post"]

RETRYABLE_STATUS = frozenset({408, 409, 429, 529})
_QUOTA = re.compile(r"quota|billing|insufficient|balance|credit|payment", re.I)
_KEYISH = re.compile(r"\b(sk-[A-Za-z0-9_\-]{4,}|sk-ant-[A-Za-z0-9_\-]{4,}|AIza[0-9A-Za-z_\-]{10,})")
_HINTS = {
    401: "check the API key in the environment variable named by api_key_env",
    403: "the key is not allowed to use this model or endpoint",
    404: "check the model name and base_url",
    413: "the request is too large: shorten the conversation or tool results",
}


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
async def post(client: httpx.AsyncClient, url: str, *, body: dict[str, Any],
               headers: dict[str, str], ep: Endpoint, clock: Clock | None = None
               ) -> AsyncIterator[httpx.Response]:
    """POST and yield the open response once it is 2xx; every failure leaves as ProviderError,
    including transport errors raised while the caller reads the body."""
    try:
        async with client.stream("POST", url, json=body, headers=headers) as resp:
            if resp.status_code >= 300:
                raw = (await resp.aread()).decode("utf-8", "replace")
                raise http_error(resp.status_code, raw, resp.headers, ep, clock)
            yield resp
    except httpx.HTTPError as exc:
        raise map_transport_error(exc, ep) from None


@dataclass(frozen=True)
class SseEvent:
    event: str | None
    data: str


async def iter_sse(resp: httpx.Response) -> AsyncIterator[SseEvent]:
    """Server-sent events: skips `:` comments (keep-alives) and blank lines, joins multi-line
    data, keeps the `event:` name (Anthropic)."""
    event: str | None = None
    data: list[str] = []
    async for line in resp.aiter_lines():
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
