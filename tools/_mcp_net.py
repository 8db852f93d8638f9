"""The HTTP client of a streamable-HTTP MCP server, behind `web_fetch`'s address guard.

The server's host is checked once with `agentkit.tools._ssrf.check_host` (the same tables,
the same fail-closed rules as ``web_fetch``); the client then connects only to the address that
was checked, for that host only, so a DNS answer that changes later (rebinding) cannot move the
connection to another address. TLS still verifies the hostname. The MCP SDK speaks HTTP
through ``httpx2``; its pool is rebuilt here on a pinned network backend, as `_fetch_http`
does for ``httpx``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpcore2
import httpx2

from agentkit.errors import ConfigError
from agentkit.tools._ssrf import AddressCheck, Blocked, FetchPolicy, Resolver, check_host

__all__ = ["check_server_url", "pinned_client"]


class _PinnedBackend(httpcore2.AsyncNetworkBackend):
    """Connects `host` to the checked address; any other host is refused (fail closed)."""

    def __init__(self, host: str, address: str) -> None:
        self._host, self._address = host.lower(), address
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None,
                          ) -> httpcore2.AsyncNetworkStream:
        if host.lower() != self._host:
            raise httpcore2.ConnectError(f"refusing to connect to {host!r}: only the MCP "
                                         f"server's checked host {self._host!r} is allowed")
        return await self._inner.connect_tcp(self._address, port, timeout=timeout,
                                             local_address=local_address,
                                             socket_options=socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: Iterable[Any] | None = None,
                                  ) -> httpcore2.AsyncNetworkStream:
        raise httpcore2.ConnectError("unix sockets are not used for MCP servers")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _PinnedTransport(httpx2.AsyncHTTPTransport):
    def __init__(self, backend: _PinnedBackend) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=httpx2.create_ssl_context(trust_env=False), max_connections=16,
            max_keepalive_connections=8, keepalive_expiry=30, network_backend=backend)


async def check_server_url(server: str, url: str, allow_hosts: Iterable[str], allow_private: bool,
                           resolver: Resolver) -> AddressCheck:
    """The address `url` may be reached at, or a `ConfigError` saying why not."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError(f"mcp_servers.{server}.url: {url!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise ConfigError(f"mcp_servers.{server}.url: put credentials in headers_env, not in "
                          f"the URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ConfigError(f"mcp_servers.{server}.url: bad port in {url!r}") from None
    policy = FetchPolicy(tuple(allow_hosts), allow_private)
    try:
        return await check_host(host, port, policy, resolver)
    except Blocked as blocked:
        hint = ("" if blocked.address_class == "unresolvable" else
                f"; to use a server on this address, list its host in "
                f"mcp_servers.{server}.allow_hosts")
        raise ConfigError(f"mcp_servers.{server}.url: refused to connect to {url}: "
                          f"{blocked.reason}{hint}") from None


def pinned_client(host: str, check: AddressCheck, headers: Mapping[str, str],
                  timeout_s: float) -> httpx2.AsyncClient:
    """An ``httpx2`` client that reaches `host` only at the checked address."""
    return httpx2.AsyncClient(transport=_PinnedTransport(_PinnedBackend(host, check.pinned)),
                              headers=dict(headers), trust_env=False, follow_redirects=False,
                              timeout=httpx2.Timeout(timeout_s, read=max(timeout_s, 300.0)))
