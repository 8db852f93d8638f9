"""A real HTTP/1.1 server on 127.0.0.1 for the web_fetch tests (asyncio streams, no mocks).

It records every TCP connection and every request, so a test can prove that a blocked fetch
never reached the network. Handlers write raw HTTP, which lets tests send what well-behaved
servers never would: endless bodies, gzip bombs, one byte every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Handler = Callable[["Request", asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FetchTestServer:
    routes: dict[str, Handler] = field(default_factory=dict)
    connections: int = 0
    requests: list[Request] = field(default_factory=list)
    bytes_sent: int = 0
    port: int = 0
    #: serve HTTPS with this context (None: plain HTTP)
    tls: ssl.SSLContext | None = None
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def __aenter__(self) -> FetchTestServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self._server.wait_closed()

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            request = Request(method, path, headers)
            self.requests.append(request)
            handler = self.routes.get(path.split("?", 1)[0], not_found)
            await handler(request, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(BaseException):
                await writer.wait_closed()


def head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def static(body: bytes, status: int = 200, content_type: str = "text/html; charset=utf-8",
           extra: dict[str, str] | None = None) -> Handler:
    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(head(status, {"Content-Type": content_type, "Content-Length": str(len(body)),
                                   "Connection": "close", **(extra or {})}) + body)
        await writer.drain()
    return handler


def redirect(location: str, status: int = 302) -> Handler:
    return static(b"", status=status, extra={"Location": location})


async def not_found(request: Request, writer: asyncio.StreamWriter) -> None:
    await static(b"not found", status=404, content_type="text/plain")(request, writer)


def endless(server: FetchTestServer, chunk: int = 65536) -> Handler:
    """An unbounded body (no Content-Length): the '5 GB' page; counts what it sent."""
    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(head(200, {"Content-Type": "text/html", "Connection": "close"}))
        block = b"<p>" + b"a" * (chunk - 7) + b"</p>\n"
        while server.bytes_sent < 5 * 1024**3:
            writer.write(block)
            server.bytes_sent += len(block)
            await writer.drain()
    return handler


def drip(interval: float) -> Handler:
    """Headers at once, then one body byte every `interval` seconds (slowloris-style)."""
    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(head(200, {"Content-Type": "text/html", "Connection": "close"}))
        await writer.drain()
        while True:
            writer.write(b"a")
            await writer.drain()
            await asyncio.sleep(interval)
    return handler
