"""One MCP server of a run: its connection, started on first use, restarted once, closed with
the run.

A session is held open by a task of its own (the SDK's transports are anyio task groups that
must be entered and left by the same task), so every agent of the run can call through the
same session. A stdio server is started through `_mcp_launcher`, which kills it when the run's
process dies (even by ``kill -9``) and drops any message over the line limit; its stderr is
kept (the last few KB) for the error that explains a failed start or a crash. The ledger gets
``mcp.started`` and ``mcp.stopped`` with the command or URL and the names of the environment
variables passed, never their values.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import IO, Any

import anyio
import httpx2
import mcp_types as types
from mcp import Client, MCPError, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CONNECTION_CLOSED, Implementation
from pydantic import ValidationError

from agentkit._version import __version__
from agentkit.errors import ConfigError, SetupError, ToolError
from agentkit.events import Emitter
from agentkit.task import McpServerSpec
from agentkit.tools._mcp_net import check_server_url, pinned_client
from agentkit.tools._ssrf import Resolver, SystemResolver

__all__ = ["LAUNCHER", "TOO_LARGE_CODE", "McpServer", "line_limit"]

LAUNCHER = Path(__file__).with_name("_mcp_launcher.py")
#: the launcher's JSON-RPC error code for a message it dropped for its size
TOO_LARGE_CODE = -32099
#: tools/list pages read at most (a server that pages forever cannot hang the start)
_MAX_PAGES = 100
_MAX_LISTED = 10_000
_STDERR_TAIL = 4096


def line_limit(spec: McpServerSpec) -> int:
    """The largest JSON-RPC message taken from the server: room for a result of
    `max_result_chars` (sent twice, as text and as structured content, escaped), at least 4 MB
    so a long tool list fits."""
    return max(4 * 1024 * 1024, 8 * spec.max_result_chars)


class _Tail(asyncio.Protocol):
    """Keeps the last bytes of the server's stderr (read from a pipe by the event loop)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ended = asyncio.Event()
        self.pipe: asyncio.BaseTransport | None = None
        #: our copy of the pipe's write end, until the server has its own
        self.writer: IO[str] | None = None

    def data_received(self, data: bytes) -> None:
        self.data += data
        del self.data[:-_STDERR_TAIL]

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended.set()

    def release_writer(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def text(self) -> str:
        """What the server wrote last; waits (briefly) for its end of the pipe to close."""
        self.release_writer()
        try:
            await asyncio.wait_for(self.ended.wait(), 2.0)
        except TimeoutError:  # a child of the server still holds the pipe: take what came
            pass
        return self.data.decode("utf-8", "replace").strip()

    def close(self) -> None:
        self.release_writer()
        if self.pipe is not None:
            self.pipe.close()


class _Connection:
    """One live session, owned by its own task; `dead` once the connection was lost."""

    def __init__(self) -> None:
        self.client: Client | None = None
        self.dead = False
        self.error: BaseException | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: an HTTP server's client, closed with the session
        self.http: httpx2.AsyncClient | None = None
        #: a stdio server's stderr
        self.stderr: _Tail | None = None

    async def open(self, transport: AbstractAsyncContextManager[Any], within_s: float) -> Client:
        ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._own(transport, ready), name="agentkit-mcp-session")
        try:
            return await asyncio.wait_for(asyncio.shield(ready), within_s)
        except BaseException:
            # the owner task may still fail the future later: nobody will read it then
            ready.add_done_callback(lambda f: f.cancelled() or f.exception())
            await self.close()
            raise

    async def _own(self, transport: AbstractAsyncContextManager[Any],
                   ready: asyncio.Future[Client]) -> None:
        try:
            async with Client(transport, cache=None, client_info=Implementation(
                    name="agentkit", version=__version__)) as client:
                self.client = client
                ready.set_result(client)
                await self._stop.wait()
        except BaseException as exc:  # recorded for the error message; cancellation re-raised
            self.error = exc
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else ConnectionError(
                    "the session was cancelled"))
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self.dead = True

    async def close(self) -> None:
        """End the session; a stdio server is stopped (stdin closed, then the process group
        terminated and killed, each step bounded by the SDK)."""
        self.dead = True
        self._stop.set()
        if self.client is None and self._task is not None:  # never started: nothing to flush
            self._task.cancel()
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 15)
            except TimeoutError:
                task.cancel()
            except asyncio.CancelledError:
                if not task.done():  # our caller was cancelled, not the session
                    task.cancel()
                    raise
            except Exception:  # the session's own failure is already recorded
                pass
        if self.http is not None:
            await self.http.aclose()

    async def stderr_text(self) -> str:
        return await self.stderr.text() if self.stderr is not None else ""


def _brief(record: Mapping[str, Any]) -> str:
    return " ".join(record["command"]) if "command" in record else str(record.get("url"))


def _describe(exc: BaseException) -> str:
    """The innermost useful message of an exception (anyio wraps them in groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError):
        return f"{exc.message} (MCP error {exc.code})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class McpServer:
    """An MCP server of one run: started on first use, its tool list read once, restarted
    once after a crash; after a second crash its tools fail with ``server_unavailable``."""

    def __init__(self, name: str, spec: McpServerSpec, *, emit: Emitter,
                 environ: Mapping[str, str], workspace: Path,
                 resolver: Resolver | None = None) -> None:
        self.name, self.spec, self._emit = name, spec, emit
        self._environ, self._workspace = environ, workspace
        self._resolver: Resolver = resolver or SystemResolver()
        self._lock = asyncio.Lock()
        self._conn: _Connection | None = None
        self._listed: list[types.Tool] | None = None
        self._restarts = 0
        self._unavailable: str | None = None
        self.info: dict[str, Any] = {}

    # -- what the run sees ---------------------------------------------------------------------

    async def list_tools(self) -> list[types.Tool]:
        """The server's tools (listed once per run; starting the server if needed)."""
        if self._listed is None:
            client = await self._client(first=True)
            try:
                async with asyncio.timeout(self.spec.startup_timeout_s):
                    self._listed = await self._list(client)
            except (TimeoutError, MCPError) as exc:
                why = "it did not list its tools in time" if isinstance(exc, TimeoutError) \
                    else _describe(exc)
                raise SetupError(f"the MCP server {self.name!r} started but could not list its "
                                 f"tools: {why}") from None
        return self._listed

    async def call(self, tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """Call `tool`; failures are `ToolError`s (``server_crashed``, ``too_large``,
        ``mcp_error``, ``bad_response``, ``server_unavailable``)."""
        client = await self._client()
        conn = self._conn
        try:
            return await client.call_tool(tool, arguments)
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                raise await self._crashed(conn, tool) from None
            if exc.code == TOO_LARGE_CODE:
                raise ToolError("too_large", exc.message, retry_hint="ask for a smaller result",
                                details={"server": self.name, **(exc.data or {})}) from None
            raise ToolError("mcp_error", f"{exc.message} (MCP error {exc.code})",
                            details={"server": self.name, "code": exc.code}) from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream,
                ConnectionError):
            raise await self._crashed(conn, tool) from None
        except (ValidationError, RuntimeError, httpx2.HTTPError) as exc:
            raise ToolError("bad_response", f"the MCP server {self.name!r} answered with "
                            f"something unusable: {_describe(exc)}"[:2000],
                            details={"server": self.name}) from None

    async def aclose(self) -> None:
        """Stop the server (the run is over)."""
        async with self._lock:
            if self._conn is not None:
                await self._stop(self._conn, "run_end")
                self._conn = None

    # -- starting and stopping -----------------------------------------------------------------

    @property
    def needs_start(self) -> bool:
        """Whether the next call must first (re)start the server (its deadline then includes
        the start-up time)."""
        return self._conn is None or self._conn.dead

    async def _client(self, first: bool = False) -> Client:
        async with self._lock:
            conn = self._conn
            if conn is not None and not conn.dead and conn.client is not None:
                return conn.client
            if self._unavailable is not None:
                raise ToolError("server_unavailable", self._unavailable,
                                details={"server": self.name})
            if conn is not None:  # lost between calls: restart once
                self._conn = None
                await self._stop(conn, "crashed")
                if self._restarts >= 1:
                    raise self._give_up("it stopped again after a restart")
                self._restarts += 1
            try:
                self._conn, client = await self._start()
            except (SetupError, ConfigError) as err:
                if first and self._restarts == 0:
                    raise
                raise self._give_up(f"its restart failed: {err}") from None
            return client

    def _give_up(self, why: str) -> ToolError:
        self._unavailable = (f"the MCP server {self.name!r} is unavailable for the rest of this "
                             f"run: {why}")
        return ToolError("server_unavailable", self._unavailable, details={"server": self.name})

    async def _start(self) -> tuple[_Connection, Client]:
        conn = _Connection()
        transport, record = await self._transport(conn)
        timeout = self.spec.startup_timeout_s
        try:
            client = await conn.open(transport, timeout)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            why = (f"it did not answer within {timeout:g} s (startup_timeout_s)"
                   if isinstance(exc, TimeoutError) else _describe(exc))
            tail = await conn.stderr_text()
            if conn.stderr is not None:
                conn.stderr.close()
            self._emit("mcp.stopped", {"server": self.name, "reason": "start_failed",
                                       "error": why, "stderr": tail or None})
            raise SetupError(f"the MCP server {self.name!r} could not start ({_brief(record)}): "
                             f"{why}" + (f"; its stderr ends with:\n{tail}" if tail else "")
                             ) from None
        finally:
            if conn.stderr is not None:  # the server has its own copy of the pipe by now
                conn.stderr.release_writer()
        session = client.session
        info = session.server_info
        self.info = {"protocol_version": session.protocol_version,
                     "server_info": {"name": info.name, "version": info.version} if info else None}
        self._emit("mcp.started", {"server": self.name, **record, **self.info,
                                   "restart": self._restarts})
        return conn, client

    async def _transport(self, conn: _Connection) -> tuple[AbstractAsyncContextManager[Any],
                                                           dict[str, Any]]:
        """The SDK transport for the server, and what the ledger records about it."""
        spec = self.spec
        if spec.command is not None:
            return await self._stdio(conn, spec.command), {
                "transport": "stdio", "command": [spec.command, *spec.args],
                "cwd": str(spec.cwd or self._workspace),
                "env": sorted({*spec.env, *spec.pass_env})}
        assert spec.url is not None
        check = await check_server_url(self.name, spec.url, spec.allow_hosts, spec.allow_private,
                                       self._resolver)
        headers = {}
        for header, var in spec.headers_env.items():
            value = self._environ.get(var)
            if not value:
                raise ConfigError(f"mcp_servers.{self.name}.headers_env: {header} reads the "
                                  f"environment variable {var}, which is not set")
            headers[header] = value
        conn.http = pinned_client(check.host, check, headers, spec.timeout_s)
        transport = streamable_http_client(spec.url, http_client=conn.http,
                                           max_sse_event_size=line_limit(spec))
        return transport, {"transport": "http", "url": spec.url, "address": check.pinned,
                           "allowed_by": check.allowed_by, "headers": sorted(spec.headers_env)}

    async def _stdio(self, conn: _Connection, command: str) -> AbstractAsyncContextManager[Any]:
        spec = self.spec
        env = dict(spec.env)
        for var in spec.pass_env:
            if var not in self._environ:
                raise ConfigError(f"mcp_servers.{self.name}.pass_env names {var}, which is not "
                                  f"set in the run's environment")
            env[var] = self._environ[var]
        args = ["-I", "-S", str(LAUNCHER), str(os.getpid()), str(line_limit(spec)), "--",
                command, *spec.args]
        params = StdioServerParameters(command=sys.executable, args=args, env=env,
                                       cwd=spec.cwd or str(self._workspace),
                                       encoding_error_handler="replace")
        # stderr goes to a pipe the event loop reads: its tail explains a failed start or crash
        read_fd, write_fd = os.pipe()
        tail = conn.stderr = _Tail()
        tail.writer = os.fdopen(write_fd, "w")
        tail.pipe, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: tail, os.fdopen(read_fd, "rb", buffering=0))
        return stdio_client(params, errlog=tail.writer)

    async def _crashed(self, conn: _Connection | None, tool: str) -> ToolError:
        """The error for a call the server did not survive. The dead session is closed now;
        the next call restarts the server (once) within its own deadline."""
        tail = ""
        async with self._lock:
            if conn is not None and conn is self._conn:
                self._conn = None
                tail = await self._stop(conn, "crashed")
                if self._restarts >= 1:
                    self._give_up(f"it stopped during a call of {tool!r}, after a restart")
                else:
                    self._restarts += 1
        more = ("it is unavailable for the rest of this run" if self._unavailable is not None
                else "it will be restarted for the next call")
        return ToolError("server_crashed", f"the MCP server {self.name!r} stopped during the call "
                         f"of {tool!r}; {more}" + (f". Its stderr ends with: {tail[-800:]}"
                                                   if tail else ""),
                         retry_hint="retry once if the call is safe to repeat",
                         details={"server": self.name})

    async def _stop(self, conn: _Connection, reason: str) -> str:
        """Stop `conn`, record why; returns the end of the server's stderr."""
        await conn.close()
        tail = await conn.stderr_text()
        if conn.stderr is not None:
            conn.stderr.close()
        data: dict[str, Any] = {"server": self.name, "reason": reason}
        if reason != "run_end":
            data["stderr"] = tail or None
            data["error"] = _describe(conn.error) if conn.error is not None else None
        self._emit("mcp.stopped", data)
        return tail

    async def _list(self, client: Client) -> list[types.Tool]:
        tools: list[types.Tool] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools += page.tools
            cursor = page.next_cursor
            if cursor is None or len(tools) >= _MAX_LISTED:
                break
        return tools[:_MAX_LISTED]
