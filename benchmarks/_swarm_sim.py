"""Shared pieces for the swarm benchmarks: a slow local page server, and how the simulated
model tells its callers apart. Each role talks to the `ScriptedModelServer` under its own model
name (the task's `roles:`), so the server routes replies by name; a worker's node is recognised
by the goal the benchmark itself wrote, never by the wording of agentkit's prompts."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

from agentkit.testing import RecordedRequest

PAGE = ("<html><head><title>Item {n}</title></head><body><article><h1>Item {n}</h1>"
        + "<p>Item {n} has the value {v}. It was measured twice and both readings agree.</p>" * 4
        + "</article></body></html>")

#: wire model names: the swarm's three roles, and the lone agent of ``mode: agent``
PLANNER, WORKER, WRITER, SOLO = "planner-model", "worker-model", "writer-model", "solo-model"
#: the task's `roles:` for the models `role_models` defines
ROLES = {"planner": "plan", "worker": "work", "synthesizer": "write"}


def role_models(base_url: str, key_env: str, max_tokens: int = 256) -> dict[str, Any]:
    """Task `models:` entries for the three roles (and `solo`), all on one scripted server."""
    def spec(wire_name: str) -> dict[str, Any]:
        return {"profile": "deepseek", "model": wire_name, "base_url": base_url,
                "api_key_env": key_env, "max_tokens": max_tokens, "stream": False}
    return {"plan": spec(PLANNER), "work": spec(WORKER), "write": spec(WRITER), "solo": spec(SOLO)}



def user_text(req: RecordedRequest) -> str:
    """The request's user messages: the task or node goal (which the benchmark wrote)."""
    return "\n".join(req.texts("user"))


def number_in(req: RecordedRequest, pattern: str) -> int:
    """The number `pattern`'s group captures in the request's user text (a goal we wrote)."""
    found = re.search(pattern, user_text(req))
    if found is None:
        raise ValueError(f"no {pattern!r} in the request: {user_text(req)[:200]!r}")
    return int(found[1])


def tool_results(req: RecordedRequest) -> int:
    return sum(1 for m in req.messages if m.get("role") == "tool")


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
