"""Hostile model servers and a measured client, shared by `hostile_load.py` and the tests.

`HostileServer` is a real HTTP/1.1 server on 127.0.0.1 (asyncio streams on a background
thread). The first path segment of the request picks the behaviour, so one server serves every
case: point a model's ``base_url`` at ``server.base_url("gzip-bomb")``.

- ``sse-drip``: a 200 event stream that sends a ``: keep-alive`` comment every `drip_s`, forever;
- ``byte-drip``: a 200 JSON answer that sends one space every `drip_s`, forever;
- ``gzip-bomb``: 0.5 MB of gzip that inflates to 512 MiB of JSON whitespace (``error-bomb``:
  the same as the body of a 503);
- ``big-json``: a well-formed 50 MB Chat Completions answer (one huge message);
- ``big-sse``: a well-formed 50 MB stream of content chunks;
- ``retry-after``: 429 with ``Retry-After: 3600`` to every request;
- ``gzip-json`` / ``deflate-json``: a normal answer (`SMALL_ANSWER`), gzip in two members /
  raw deflate, to show that well-behaved compressed answers still read.

`measure` runs one case in a *separate process* (``python _hostile.py KIND PARAMS``) and
returns what happened with that process's peak-RSS growth (``getrusage`` before and after
the case), so the figure is the client's alone; `measure_call` is one plain model call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agentkit.budget import Budget
from agentkit.clock import SystemClock
from agentkit.events import EventBus
from agentkit.messages import Message
from agentkit.models import ChatModel, build_model, call_scope
from agentkit.models.openai_compat import OpenAICompatModel
from agentkit.models.profiles import get_profile
from agentkit.retry import RetryPolicy
from agentkit.run import arun
from agentkit.task import BudgetSpec, ModelSpec, RetrySpec, TaskSpec
from agentkit.usage import RunUsage

__all__ = ["BIG_BYTES", "BOMB_INFLATED", "SMALL_ANSWER", "HostileServer", "gzip_bomb", "measure",
           "measure_call"]

#: how far the bomb inflates, and how large the big answers are
BOMB_INFLATED = 512 * 1024 * 1024
BIG_BYTES = 50 * 1000 * 1000
_PIECE = 64 * 1024
#: the text of the compressed well-behaved answers
SMALL_ANSWER = "Tide pools hold anemones. " * 4000


def _compressed(case: str) -> bytes:
    body = json.dumps({"id": "ok", "object": "chat.completion", "model": "m",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": SMALL_ANSWER}}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1}}).encode()
    if case == "deflate-json":
        z = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        return z.compress(body) + z.flush()
    half = len(body) // 2  # two gzip members, one after the other (a valid gzip file)
    return _gzip(body[:half]) + _gzip(body[half:])


def _gzip(data: bytes) -> bytes:
    z = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    return z.compress(data) + z.flush()


@functools.cache
def gzip_bomb() -> bytes:
    """gzip of `BOMB_INFLATED` spaces (about 0.5 MB), made without holding the inflated form."""
    z = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = b" " * (1 << 20)
    out = [z.compress(block) for _ in range(BOMB_INFLATED >> 20)]
    out.append(z.flush())
    return b"".join(out)


def _big_json_pieces() -> Iterator[bytes]:
    head = b'{"id":"big","object":"chat.completion","model":"m","choices":[{"index":0,' \
           b'"finish_reason":"stop","message":{"role":"assistant","content":"'
    tail = b'"}}],"usage":{"prompt_tokens":1,"completion_tokens":1}}'
    yield head
    left = BIG_BYTES - len(head) - len(tail)
    while left > 0:
        n = min(_PIECE, left)
        yield b"x" * n
        left -= n
    yield tail


def _big_sse_pieces() -> Iterator[bytes]:
    chunk = json.dumps({"id": "big", "object": "chat.completion.chunk", "model": "m",
                        "choices": [{"index": 0, "delta": {"content": "y" * 900},
                                     "finish_reason": None}]})
    frame = f"data: {chunk}\n\n".encode()
    sent = 0
    while sent < BIG_BYTES:
        yield frame * 16
        sent += len(frame) * 16
    done = json.dumps({"id": "big", "object": "chat.completion.chunk", "model": "m",
                       "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    yield f"data: {done}\n\ndata: [DONE]\n\n".encode()


class HostileServer:
    """Serves the hostile cases on an ephemeral port from a background thread.

    `requests` counts requests by case; `hangups[case]` is set once a client of that case
    closed its connection while the server was still sending (it gave up on the answer).
    """

    def __init__(self, drip_s: float = 0.05) -> None:
        self.drip_s = drip_s
        self.port = 0
        self.requests: dict[str, int] = {}
        self.hangups: dict[str, threading.Event] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="hostile-server")
        self._server: asyncio.Server | None = None

    def base_url(self, case: str) -> str:
        return f"http://127.0.0.1:{self.port}/{case}/v1"

    def hangup(self, case: str) -> threading.Event:
        return self.hangups.setdefault(case, threading.Event())

    def __enter__(self) -> HostileServer:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                await reader.readexactly(length)
                case = path.strip("/").split("/")[0]
                self.requests[case] = self.requests.get(case, 0) + 1
                if not await self._answer(case, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass  # the server is stopping
        finally:
            writer.close()

    async def _answer(self, case: str, writer: asyncio.StreamWriter) -> bool:
        """Write the case's answer; False once the connection should end."""
        try:
            if case == "retry-after":
                body = b'{"error":{"message":"rate limited","type":"rate_limit_error"}}'
                writer.write(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3600\r\n"
                             b"Content-Type: application/json\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
                await writer.drain()
                return True
            if case in ("sse-drip", "byte-drip"):
                ctype = b"text/event-stream" if case == "sse-drip" else b"application/json"
                drop = b": keep-alive\n\n" if case == "sse-drip" else b" "
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype +
                             b"\r\nTransfer-Encoding: chunked\r\n\r\n")
                while True:
                    writer.write(b"%x\r\n%s\r\n" % (len(drop), drop))
                    await writer.drain()
                    await asyncio.sleep(self.drip_s)
            if case in ("gzip-bomb", "error-bomb"):
                bomb = gzip_bomb()
                status = b"200 OK" if case == "gzip-bomb" else b"503 Service Unavailable"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                             b"Content-Encoding: gzip\r\nContent-Length: "
                             + str(len(bomb)).encode() + b"\r\n\r\n")
                for i in range(0, len(bomb), _PIECE):
                    writer.write(bomb[i:i + _PIECE])
                    await writer.drain()
                return False
            if case in ("gzip-json", "deflate-json"):
                body = _compressed(case)
                encoding = b"gzip" if case == "gzip-json" else b"deflate"
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Encoding: " + encoding + b"\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
                await writer.drain()
                return True
            if case in ("big-json", "big-sse"):
                ctype = b"application/json" if case == "big-json" else b"text/event-stream"
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype +
                             b"\r\nTransfer-Encoding: chunked\r\n\r\n")
                pieces = _big_json_pieces() if case == "big-json" else _big_sse_pieces()
                for piece in pieces:
                    writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                return False
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return False
        except ConnectionError:
            self.hangup(case).set()
            return False


# ---------------------------------------------------------------------------------------------
# The measured client: one model call (or one run) in a child process


def measure(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run one measured case in a child process (``python _hostile.py KIND PARAMS``): ``call``
    (one adapter call), ``managed`` (a call through the retry owner, real clock, optionally
    inside a node budget with `wall_seconds` left) or ``fanout`` (a 30-node run under a
    budget). Returns what the case returned plus ``seconds`` and ``rss_growth_mb`` (peak RSS
    during the case minus peak RSS before it, so imports and the HTTP client are excluded)."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), kind,
                           json.dumps(params)], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"the measured child failed: {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def measure_call(base_url: str, *, stream: bool = False, timeout_s: float = 600.0,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One Chat Completions call to `base_url` from a child process: ``error`` (the
    exception's type and message, or None), ``answer_chars``, ``seconds``, ``rss_growth_mb``."""
    spec = {"model": "m", "profile": "openai", "stream": stream, "timeout_s": timeout_s,
            **(extra or {})}
    return measure("call", {"base_url": base_url, "spec": spec})


async def _call(params: dict[str, Any]) -> dict[str, Any]:
    spec = ModelSpec.model_validate(params["spec"])
    model: ChatModel
    if "retry" in params:
        bus = EventBus("bench")
        model = build_model("m", spec.model_copy(update={"base_url": params["base_url"]}),
                            clock=SystemClock(), events=bus.emit, usage=RunUsage(),
                            policy=RetryPolicy.from_spec(RetrySpec(**params["retry"])))
        budget = Budget.root(BudgetSpec(wall_seconds=params["wall_seconds"]), emit=bus.emit,
                             clock=SystemClock()) if params.get("wall_seconds") else None
    else:
        model = OpenAICompatModel(spec, name="m", api_key=None, base_url=params["base_url"],
                                  profile=get_profile(spec.profile))
        model._client()  # the HTTP client (and its TLS context) is not part of the call's cost
        budget = None
    out: dict[str, Any] = {"error": None, "answer_chars": 0}
    try:
        with call_scope("n", budget=budget):
            out["answer_chars"] = len((await model.turn([Message.user("hello")])).message.text)
    except Exception as exc:  # what the call raised is the measurement
        out["error"] = {"type": type(exc).__name__, "message": str(exc)}
    with contextlib.suppress(Exception):
        await model.aclose()
    return out


async def _fanout(params: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        task = TaskSpec.model_validate({**params["task"], "workspace": tmp})
        result = await arun(task, ledger_dir=Path(tmp) / "runs", environ={"BENCH_KEY": "k"})
    usage = result.usage
    return {"status": result.status, "tokens": usage.input_tokens + usage.output_tokens,
            "cost_usd": result.cost_usd,
            "succeeded": sum(1 for n in result.nodes.values() if n.status == "succeeded")}


async def _child(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    case = {"call": _call, "managed": _call, "fanout": _fanout}[kind]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    out = await case(params)
    out["seconds"] = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["rss_growth_mb"] = (after - before) / 1024  # ru_maxrss is in KiB on Linux
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_child(sys.argv[1], json.loads(sys.argv[2])))))
