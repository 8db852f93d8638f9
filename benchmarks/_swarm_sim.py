"""Shared pieces for the swarm benchmarks: a slow local page server and request routing for the
`ScriptedModelServer` (which agent is asking, how far along it is)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from agentkit.testing import RecordedRequest

PAGE = ("<html><head><title>Item {n}</title></head><body><article><h1>Item {n}</h1>"
        + "<p>Item {n} has the value {v}. It was measured twice and both readings agree.</p>" * 4
        + "</article></body></html>")


def text_of(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def role_of(req: RecordedRequest) -> str:
    system = text_of(req.messages[0]) if req.messages else ""
    if "You are the planner" in system:
        return "planner"
    if "You write the final answer" in system:
        return "synthesizer"
    if "You are one agent of a team" in system:
        return "worker"
    return "agent"


def tool_results(req: RecordedRequest) -> int:
    return sum(1 for m in req.messages if m.get("role") == "tool")


def sub_task(req: RecordedRequest) -> str:
    for m in req.messages:
        if m.get("role") == "user" and "Your sub-task:" in text_of(m):
            return text_of(m).split("Your sub-task:", 1)[1].strip().splitlines()[0]
    return ""


class PageServer:
    """HTTP/1.1 on 127.0.0.1: ``/item/N`` answers after `delay` seconds (a slow website)."""

    def __init__(self, delay: float) -> None:
        self.delay, self.port, self.hits = delay, 0, 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> PageServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def url(self, n: int) -> str:
        return f"http://127.0.0.1:{self.port}/item/{n}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            n = int(path.rsplit("/", 1)[1]) if path.startswith("/item/") else 0
            self.hits += 1
            await asyncio.sleep(self.delay)
            body = PAGE.format(n=n, v=1000 + n).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                         + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                         + body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
