"""Minimal HTTP/1.1 for the scripted server: read a request, write JSON, chunks, raw bytes and
TCP resets. Hand-written because resets after N bytes and keep-alive comments need control of
the raw socket."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from agentkit.testing._script import Raw

__all__ = ["abort", "chunk", "head", "hold", "read_request", "write_json", "write_raw",
           "write_raw_item"]

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}

#: how often a held answer checks whether its client hung up (a test double: cheap, not instant)
_HANGUP_POLL_S = 0.05

T = TypeVar("T")


async def hold(reader: asyncio.StreamReader, work: Awaitable[T]) -> tuple[T | None, bool]:
    """Await `work` while watching the client: (result, False), or (None, True) as soon as the
    client closes or resets its connection (then `work` is cancelled). HTTP/1.1 clients send
    nothing while they wait for an answer, so end-of-stream here means they hung up."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=_HANGUP_POLL_S)
            if done:
                return task.result(), False
            if reader.at_eof() or reader.exception() is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return None, True
    finally:
        if not task.done():
            task.cancel()
async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], Any] | None:
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
            piece = await reader.readexactly(size + 2)
            if size == 0:
                break
            raw += piece[:-2]
    else:
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
    try:
        body = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        body = raw.decode("utf-8", "replace")
    return method, path, headers, body


async def write_raw_item(writer: asyncio.StreamWriter, item: Raw) -> bool:
    if item.events is None:
        data = item.body if isinstance(item.body, bytes) else json.dumps(item.body).encode()
        writer.write(head(item.status, {"Content-Type": item.content_type or "application/json",
                                        "Content-Length": str(len(data))}) + data)
    else:
        writer.write(head(item.status, {"Content-Type": item.content_type or "text/event-stream",
                                        "Transfer-Encoding": "chunked"}))
        for ev in item.events:
            frame = ev if isinstance(ev, str) else f"data: {json.dumps(ev)}\n\n"
            writer.write(chunk(frame.encode()))
        writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True


def head(status: int, headers: Mapping[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def write_json(writer: asyncio.StreamWriter, status: int, payload: Any,
                     headers: Mapping[str, str]) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    writer.write(head(status, {"Content-Type": "application/json",
                               "Content-Length": str(len(data)), **headers}) + data)
    await writer.drain()


async def write_raw(writer: asyncio.StreamWriter, data: bytes, limit: int) -> None:
    """Send the first `limit` bytes of `data`, then reset the connection."""
    writer.write(data[:limit])
    await writer.drain()
    abort(writer)


def abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), like a proxy or server dropping the connection."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
