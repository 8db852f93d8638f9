"""Shared parts of the MCP tests: the hostile test server's command, a streamable-HTTP server
built with the SDK and served by uvicorn on an ephemeral port, process liveness checks, and a
scripted-model agent task."""

from __future__ import annotations

import asyncio
import os
import select
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp, Receive, Scope, Send

from agentkit.task import TaskSpec
from agentkit.testing import ScriptedModelServer

HOSTILE = Path(__file__).parent / "data" / "mcp" / "hostile_server.py"
KEY_ENV = {"MCP_TEST_KEY": "sk-mcp-test-0123456789abcdef"}


def hostile(*args: str, **spec: Any) -> dict[str, Any]:
    """An mcp_servers entry that runs the hostile test server."""
    return {"command": sys.executable, "args": [str(HOSTILE), *args], **spec}


def agent_task(srv: ScriptedModelServer, tmp_path: Path, **extra: Any) -> TaskSpec:
    """An agent-mode task on the scripted DeepSeek server."""
    spec: dict[str, Any] = {
        "name": "mcp", "goal": "Use the tools.", "mode": "agent", "model": "m",
        "models": {"m": {"profile": "deepseek", "model": "deepseek-chat", "base_url": srv.base_url,
                         "api_key_env": "MCP_TEST_KEY", "stream": False, "max_tokens": 256}},
        "retry": {"attempts": 1, "base_delay_s": 0.0}, "workspace": str(tmp_path),
    }
    spec.update(extra)
    return TaskSpec.model_validate(spec)


def alive(pid: int) -> bool:
    """Whether `pid` is a running process (a zombie, dead but not yet reaped, is not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def wait_gone(pid: int, limit_s: float = 20.0) -> bool:
    """Wait for `pid` to exit (a pidfd becomes readable when it does); True if it did. The
    limit only bounds a failing test; nothing is timed."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.poll(limit_s * 1000)
    finally:
        os.close(fd)
    return not alive(pid)


class _RequireHeader:
    """ASGI middleware: 401 unless the request carries `header: value`."""

    def __init__(self, app: ASGIApp, header: str, value: str) -> None:
        self.app, self.header, self.value = app, header.lower().encode(), value.encode()
        self.seen: list[bytes | None] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            got = dict(scope["headers"]).get(self.header)
            self.seen.append(got)
            if got != self.value:
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b"unauthorized"})
                return
        await self.app(scope, receive, send)


def notes_server() -> MCPServer:
    notes: dict[str, str] = {}
    server = MCPServer("notes")

    @server.tool()
    def add_note(title: str, text: str) -> str:
        """Store a note."""
        notes[title] = text
        return f"stored {title!r}"

    @server.tool()
    def get_note(title: str) -> dict[str, str]:
        """Read a note back."""
        return {"title": title, "text": notes.get(title, "")}

    return server


class _Uvicorn(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@contextmanager
def http_server(token: str) -> Iterator[tuple[str, _RequireHeader]]:
    """A streamable-HTTP MCP server (the SDK's) on 127.0.0.1:<ephemeral>, requiring
    ``Authorization: Bearer <token>``; yields its URL and the header check."""
    app = _RequireHeader(notes_server().streamable_http_app(), "authorization", f"Bearer {token}")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _Uvicorn(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])),
                              daemon=True)
    thread.start()
    try:
        assert server.ready.wait(30), "the test MCP server did not start"
        yield f"http://127.0.0.1:{port}/mcp", app
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
