"""`ScriptedModelServer`: a model server on 127.0.0.1 speaking one provider's exact wire format.

It answers from a script (replies, errors, resets, delays), renders each reply in the chosen
dialect (JSON or SSE, as the request asks), records every request, and enforces the dialect's
replay rules with the provider's own 400, so a client that drops reasoning fails the way it
would in production. Optional RPM/TPM limits answer 429 with Retry-After.

    async with ScriptedModelServer("deepseek") as srv:
        srv.script(reply(reasoning="Need weather.", tool_calls=[call("get_weather", {"city": "Oslo"})]),
                   reply(content="Sunny"))
        ... point a client at srv.base_url ...
        assert srv.requests[1].messages[1]["reasoning_content"] == "Need weather."

It also works from synchronous code: ``with ScriptedModelServer("openai") as srv:`` runs it on a
background thread. The server is plain asyncio with a minimal HTTP/1.1 implementation, because
resets after N bytes and keep-alive comments need control of the raw socket.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agentkit.testing._dialect_anthropic import (
    check_anthropic,
    render_anthropic_events,
    render_anthropic_json,
)
from agentkit.testing._dialect_ollama import check_ollama_native, render_ndjson
from agentkit.testing._dialect_responses import (
    check_responses,
    render_responses_events,
    render_responses_json,
    responses_call_ids,
)
from agentkit.testing._dialects import (
    DIALECTS,
    Dialect,
    Issued,
    call_ids,
    check_request,
    render_chunks,
    render_json,
)
from agentkit.testing._script import ErrorReply, Raw, RecordedRequest, Reply, Reset, ScriptItem, error

__all__ = ["ScriptedModelServer", "ServerStats"]

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


def estimate_tokens(body: Any) -> int:
    """Tokens a request reserves against TPM: prompt (~4 chars per token) + max_tokens."""
    if not isinstance(body, dict):
        return 0
    prompt = math.ceil(len(json.dumps(body.get("messages") or [])) / 4)
    limit = body.get("max_tokens") or body.get("max_completion_tokens") or 0
    return prompt + int(limit)


@dataclass
class ServerStats:
    requests: int = 0
    rate_limited: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    tokens_admitted: int = 0


class _RateWindow:
    """Sliding-window RPM/TPM: a request is admitted only if, counted with the last
    `window_s` seconds, it stays within both limits; else the seconds until it would fit."""

    def __init__(self, rpm: int | None, tpm: int | None, window_s: float) -> None:
        self.rpm, self.tpm, self.window = rpm, tpm, window_s
        self._log: collections.deque[tuple[float, int]] = collections.deque()

    def admit(self, now: float, tokens: int) -> float | None:
        while self._log and self._log[0][0] <= now - self.window:
            self._log.popleft()
        wait = 0.0
        if self.rpm is not None and len(self._log) + 1 > self.rpm:
            wait = self._log[len(self._log) - self.rpm][0] + self.window - now
        if self.tpm is not None:
            if tokens > self.tpm:
                return self.window
            excess = sum(t for _, t in self._log) + tokens - self.tpm
            for ts, t in self._log:
                if excess <= 0:
                    break
                excess -= t
                wait = max(wait, ts + self.window - now)
        if wait > 0:
            return wait
        self._log.append((now, tokens))
        return None


class ScriptedModelServer:
    """See the module docstring. Construction does no I/O; `start()` binds an ephemeral port.

    `dialect`: one of `DIALECTS` (deepseek, deepseek-reasoner, deepseek-hybrid, kimi, qwen,
    dashscope, openrouter, vllm, vllm-transition, sglang, llamacpp, raw, raw-tagged, ollama
    (also native NDJSON on ``/api/chat``, see `root_url`), openai, openai-responses, gemini,
    xai, generic, anthropic). `default`: the answer once the script runs out
    (else a 500 saying so). `strict`: enforce replay rules. `rpm`/`tpm`/`window_s`: rate limits
    (`token_estimate(body)` decides what a request reserves). `chunk_chars`: size of streamed
    text pieces (small, so tags split across chunks). `stream_delay`: seconds between events.
    """

    def __init__(self, dialect: str = "generic", *, script: tuple[ScriptItem, ...] = (),
                 default: ScriptItem | None = None, strict: bool = True,
                 rpm: int | None = None, tpm: int | None = None, window_s: float = 60.0,
                 token_estimate: Callable[[Any], int] = estimate_tokens, chunk_chars: int = 6,
                 stream_delay: float = 0.0, host: str = "127.0.0.1") -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}; known: {', '.join(sorted(DIALECTS))}")
        self.dialect: Dialect = DIALECTS[dialect]
        self._queue: collections.deque[ScriptItem] = collections.deque(script)
        self.default = default
        self.strict = strict
        self._limits = _RateWindow(rpm, tpm, window_s) if (rpm or tpm) else None
        self._estimate = token_estimate
        self.chunk_chars = chunk_chars
        self.stream_delay = stream_delay
        self.host = host
        self.requests: list[RecordedRequest] = []
        self.stats = ServerStats()
        self.issued: dict[str, Issued] = {}
        self._turns = 0
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT`` (Ollama native clients append ``/api/chat``)."""
        return f"http://{self.host}:{self._port}"

    @property
    def base_url(self) -> str:
        """What a client's `base_url` should be (``/v1`` included for OpenAI-style dialects)."""
        root = f"http://{self.host}:{self._port}"
        return root if self.dialect.wire == "anthropic" else root + "/v1"

    def _frames(self, r: Reply, n: int, model: str, *, stream: bool, include_usage: bool
                ) -> tuple[Any, list[bytes], Issued, list[str]]:
        """(JSON payload or None, SSE frames, what was issued, call ids) in this dialect."""
        wire, size = self.dialect.wire, self.chunk_chars

        def named(events: list[tuple[str, Any]]) -> list[bytes]:
            # a str payload is already encoded (a dialect may pad it as its provider does)
            return [f"event: {name}\ndata: {data if isinstance(data, str) else json.dumps(data)}"
                    "\n\n".encode() for name, data in events]

        if wire == "responses":
            ids = responses_call_ids(r, n)
            if stream:
                events, issued = render_responses_events(r, n, model, size)
                return None, named(events), issued, ids
            payload, issued = render_responses_json(r, n, model)
            return payload, [], issued, ids
        ids = call_ids(self.dialect, r, n)
        if wire == "anthropic":
            if stream:
                events, issued = render_anthropic_events(r, n, model, size)
                return None, named(events), issued, ids
            payload, issued = render_anthropic_json(r, n, model)
            return payload, [], issued, ids
        if stream:
            chunks, issued = render_chunks(self.dialect, r, n, model, include_usage=include_usage,
                                           size=size)
            frames = [(c if isinstance(c, str) else f"data: {json.dumps(c)}\n\n").encode()
                      for c in chunks] + [b"data: [DONE]\n\n"]  # str: a comment line
            return None, frames, issued, ids
        payload, issued = render_json(self.dialect, r, n, model)
        return payload, [], issued, ids

    async def start(self) -> ScriptedModelServer:
        self._server = await asyncio.start_server(self._handle, self.host, 0, limit=2**22,
                                                  backlog=1024)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            if self._tasks:
                _, pending = await asyncio.wait(list(self._tasks), timeout=1.0)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending, timeout=1.0)
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> ScriptedModelServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __enter__(self) -> ScriptedModelServer:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()

        self._loop, self._thread = loop, threading.Thread(target=run, daemon=True,
                                                          name="scripted-model-server")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("scripted model server did not start within 10 s")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._thread is not None
        asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # -- scripting ---------------------------------------------------------------------------

    def script(self, *items: ScriptItem) -> ScriptedModelServer:
        """Queue answers, used in order, one per accepted request."""
        self._queue.extend(items)
        return self

    @property
    def pending(self) -> int:
        return len(self._queue)

    def _next_item(self, req: RecordedRequest) -> Reply | ErrorReply | Reset | Raw:
        item = self._queue.popleft() if self._queue else self.default
        if item is None:
            return error(500, "scripted model server: the script is exhausted "
                              f"(request #{len(self.requests)} to {req.path} had no answer queued)")
        return item(req) if callable(item) else item

    # -- HTTP --------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                req = await _read_request(reader)
                if req is None or not await self._respond(req, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass  # stop(): the connection ends with the server
        finally:
            if task is not None:
                self._tasks.discard(task)
            self._writers.discard(writer)
            if not writer.is_closing():
                writer.close()

    def _record(self, req: tuple[str, str, dict[str, str], Any], status: int) -> RecordedRequest:
        rec = RecordedRequest(method=req[0], path=req[1], headers=req[2], body=req[3], status=status)
        self.requests.append(rec)
        self.stats.requests += 1
        self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
        return rec

    def _native(self, path: str) -> bool:
        native = self.dialect.native_path
        return native is not None and path.split("?")[0].endswith(native)

    def _precheck(self, path: str, headers: Mapping[str, str], body: Any) -> ErrorReply | None:
        want = {"anthropic": "/v1/messages", "responses": "/responses"}.get(self.dialect.wire,
                                                                            "/chat/completions")
        if not path.split("?")[0].endswith(want) and not self._native(path):
            return error(404, f"no route for {path} (dialect {self.dialect.name} serves *{want})")
        if not isinstance(body, dict):
            return error(400, "We could not parse the JSON body of your request.")
        if self._limits is not None:
            wait = self._limits.admit(time.monotonic(), self._estimate(body))
            if wait is not None:
                self.stats.rate_limited += 1
                return ErrorReply(429, {"error": {"message": "Rate limit reached for requests "
                                                  "or tokens per minute; retry later",
                                                  "type": "rate_limit_error", "code": "rate_limit"}},
                                  {"Retry-After": str(max(1, math.ceil(wait))),
                                   "retry-after-ms": str(int(wait * 1000))})
        if not self.strict:
            return None
        if self.dialect.wire == "anthropic":
            return check_anthropic(body, headers, self.issued)
        if self.dialect.wire == "responses":
            return check_responses(body, self.issued)
        if self._native(path):
            return check_ollama_native(body, self.issued)
        return check_request(self.dialect, body, self.issued)

    async def _respond(self, req: tuple[str, str, dict[str, str], Any],
                       writer: asyncio.StreamWriter) -> bool:
        _, path, headers, body = req
        refusal = self._precheck(path, headers, body)
        if refusal is not None:
            self._record(req, refusal.status)
            await _write_json(writer, refusal.status, refusal.body, refusal.headers)
            return True
        item = self._next_item(RecordedRequest("POST", path, headers, body))
        status = item.status if isinstance(item, ErrorReply | Raw) else 200
        self._record(req, status)
        if item.delay:
            await asyncio.sleep(item.delay)
        if isinstance(item, ErrorReply):
            await _write_json(writer, item.status, item.body, item.headers)
            return True
        if isinstance(item, Raw):
            return await _write_raw_item(writer, item)
        if isinstance(item, Reset):
            await _write_raw(writer, _head(200, {"Content-Type": "application/json",
                                                 "Content-Length": "100000"}), item.after_bytes)
            return False
        if self._native(path):
            return await self._write_ndjson(item, body, writer)
        return await self._write_reply(item, body, writer)

    async def _write_ndjson(self, r: Reply, body: dict[str, Any], writer: asyncio.StreamWriter) -> bool:
        stream = body.get("stream", True) is not False  # Ollama streams unless told not to
        lines, issued, keys = render_ndjson(r, str(body.get("model", "scripted")), self.chunk_chars,
                                            stream=stream)
        for key in keys:
            self.issued[key] = issued
        if not stream:
            await _write_json(writer, 200, lines[0], {})
            return True
        frames = [json.dumps(line).encode() + b"\n" for line in lines]
        writer.write(_head(200, {"Content-Type": "application/x-ndjson", "Transfer-Encoding": "chunked"}))
        for i, frame in enumerate(frames):
            if r.reset_after is not None and i >= r.reset_after:
                await writer.drain()
                _abort(writer)
                return False
            writer.write(_chunk(frame))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def _write_reply(self, r: Reply, body: dict[str, Any], writer: asyncio.StreamWriter) -> bool:
        self._turns += 1
        n, model = self._turns, str(body.get("model", "scripted"))
        stream = bool(body.get("stream"))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        payload, frames, issued, ids = self._frames(r, n, model, stream=stream,
                                                    include_usage=include_usage)
        for id_ in ids:
            self.issued[id_] = issued
        if not stream:
            data = json.dumps(payload).encode()
            if r.reset_after is not None:
                await _write_raw(writer, _head(200, {"Content-Type": "application/json",
                                                     "Content-Length": str(len(data))}) + data,
                                 len(_head(200, {})) + r.reset_after)
                return False
            await _write_json(writer, 200, payload, {})
            return True
        return await self._write_stream(writer, frames, r)

    async def _write_stream(self, writer: asyncio.StreamWriter, frames: list[bytes], r: Reply) -> bool:
        writer.write(_head(200, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                 "Transfer-Encoding": "chunked"}))
        for _ in range(r.keepalives):
            writer.write(_chunk(b": keep-alive\n\n"))
            writer.write(_chunk(b"\n"))
        for i, frame in enumerate(frames):
            if r.reset_after is not None and i >= r.reset_after:
                await writer.drain()
                _abort(writer)
                return False
            writer.write(_chunk(frame))
            await writer.drain()
            if self.stream_delay:
                await asyncio.sleep(self.stream_delay)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


# ---------------------------------------------------------------------------------------------
# Minimal HTTP/1.1


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], Any] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        raw = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip() or b"0", 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            raw += chunk[:-2]
    else:
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
    try:
        body = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        body = raw.decode("utf-8", "replace")
    return method, path, headers, body


async def _write_raw_item(writer: asyncio.StreamWriter, item: Raw) -> bool:
    if item.events is None:
        data = item.body if isinstance(item.body, bytes) else json.dumps(item.body).encode()
        writer.write(_head(item.status, {"Content-Type": item.content_type or "application/json",
                                         "Content-Length": str(len(data))}) + data)
    else:
        writer.write(_head(item.status, {"Content-Type": item.content_type or "text/event-stream",
                                         "Transfer-Encoding": "chunked"}))
        for ev in item.events:
            frame = ev if isinstance(ev, str) else f"data: {json.dumps(ev)}\n\n"
            writer.write(_chunk(frame.encode()))
        writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True


def _head(status: int, headers: Mapping[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def _write_json(writer: asyncio.StreamWriter, status: int, payload: Any,
                      headers: Mapping[str, str]) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    writer.write(_head(status, {"Content-Type": "application/json",
                                "Content-Length": str(len(data)), **headers}) + data)
    await writer.drain()


async def _write_raw(writer: asyncio.StreamWriter, data: bytes, limit: int) -> None:
    """Send the first `limit` bytes of `data`, then reset the connection."""
    writer.write(data[:limit])
    await writer.drain()
    _abort(writer)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), like a proxy or server dropping the connection."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
