"""Starts a stdio MCP server for a run, so that it never outlives the run.

    python -I -S _mcp_launcher.py PARENT_PID MAX_LINE_BYTES -- COMMAND [ARGS...]

Run as a script (standard library only, no agentkit import: it starts in milliseconds). The MCP
SDK starts it in a new process group; it starts the server in that group and then:

- dies with the run: the kernel signals it when the run's process dies, even by ``kill -9``
  (``PR_SET_PDEATHSIG`` on Linux; elsewhere a thread watches the parent pid), and it then
  kills its whole process group, the server and anything the server started;
- relays the server's stdout line by line, so a line (one JSON-RPC message) longer than
  MAX_LINE_BYTES never reaches the client: the client would otherwise buffer a 50 MB answer
  with quadratic cost. Such a response is replaced by a JSON-RPC error for the same request
  id, which the run reports as a ``too_large`` tool error;
- exits with the server's exit status once the server is gone.

The server reads the client's stdin and writes to the same stderr directly.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import threading
from types import FrameType

#: the JSON-RPC error code of a message dropped for its size (in the server-defined range)
TOO_LARGE_CODE = -32099
_PR_SET_PDEATHSIG = 1
_ID = re.compile(rb'"id"\s*:\s*(-?\d+|"(?:[^"\\]|\\.){0,200}")')
#: how much of a dropped line is kept to find its request id
_HEAD_BYTES = 4096


def _kill_group(signum: int = 0, frame: FrameType | None = None) -> None:
    """Kill everything in this process group (the server, its children, this launcher)."""
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _die_with_parent(parent: int) -> None:
    signal.signal(signal.SIGUSR1, _kill_group)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGUSR1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:  # no parent-death signal: poll (this process only waits and relays)
        def watch() -> None:
            while os.getppid() == parent:
                threading.Event().wait(0.5)
            _kill_group()

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # the parent died before the signal was armed
        _kill_group()


def _too_large(head: bytes, size: int, limit: int) -> bytes:
    """The error that replaces a response of `size` bytes (empty if `head` has no id)."""
    found = _ID.search(head)
    if found is None:
        return b""
    error = {"jsonrpc": "2.0", "id": json.loads(found.group(1)),
             "error": {"code": TOO_LARGE_CODE, "message": f"the server's message has "
                       f"{size:,} bytes, over the limit of {limit:,}; it was dropped",
                       "data": {"bytes": size, "limit": limit}}}
    return json.dumps(error).encode() + b"\n"


def relay(source: int, sink: int, limit: int) -> None:
    """Copy lines from `source` to `sink` until EOF, replacing lines over `limit` bytes."""
    line = bytearray()
    dropped = 0  # >0 while discarding an oversized line: its size so far
    head = b""
    while chunk := os.read(source, 65536):
        parts = chunk.split(b"\n")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if dropped:
                dropped += len(part)
            elif len(line) + len(part) > limit:
                head = (bytes(line[:_HEAD_BYTES]) + part[:_HEAD_BYTES])[:_HEAD_BYTES]
                dropped = len(line) + len(part)
                line.clear()
            else:
                line += part
            if last:
                break
            if dropped:
                _write_all(sink, _too_large(head, dropped, limit))
                dropped = 0
            else:
                _write_all(sink, bytes(line) + b"\n")
                line.clear()
    if line and not dropped:
        _write_all(sink, bytes(line))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main(argv: list[str]) -> int:
    if len(argv) < 5 or argv[3] != "--":
        sys.stderr.write("usage: _mcp_launcher.py PARENT_PID MAX_LINE_BYTES -- COMMAND [ARGS]\n")
        return 2
    parent, limit, command = int(argv[1]), int(argv[2]), argv[4:]
    _die_with_parent(parent)
    try:
        server = subprocess.Popen(command, stdout=subprocess.PIPE, bufsize=0)
    except OSError as exc:
        sys.stderr.write(f"cannot start the MCP server {command[0]!r}: {exc}\n")
        return 127
    # the server owns stdin now; this process keeps only its relay ends open
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    assert server.stdout is not None
    try:
        relay(server.stdout.fileno(), 1, limit)
    except OSError:  # the client closed its end: the server gets EPIPE or stdin EOF
        pass
    finally:
        os.close(1)
    code = server.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
