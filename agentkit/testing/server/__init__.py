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

Replies can be routed by the request's model name (`ScriptedModelServer.route`). It also runs
from the command line, serving a JSON or YAML script file until Ctrl-C
(``python -m agentkit.testing.server --help``; the file format is described there), and pytest
offers it as the ``scripted_model_server`` fixture (`agentkit.testing.pytest_plugin`).
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import json
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agentkit.clock import Clock
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
from agentkit.testing._script import ErrorReply, Raw, RecordedRequest, Reply, Reset, error
from agentkit.testing.server._file import load_script_file
from agentkit.testing.server._http import (
    abort,
    chunk,
    head,
    hold,
    read_request,
    write_json,
    write_raw,
    write_raw_item,
)
from agentkit.testing.server._routes import Answer, Handler, Item, Routes

__all__ = ["Answer", "Handler", "Item", "ScriptedModelServer", "ServerStats"]


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
    #: requests whose client closed the connection while the server held the answer (a reply's
    #: `delay`, or an async handler still waiting): an HTTP client that was cancelled
    hangups: int = 0


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
    """A scripted model server; see the module docstring. Construction does no I/O.

    `dialect`: one of `DIALECTS` (deepseek, deepseek-reasoner, deepseek-hybrid, kimi, qwen,
    dashscope, openrouter, vllm, vllm-transition, sglang, llamacpp, raw, raw-tagged, ollama
    (also native NDJSON on ``/api/chat``, see `root_url`), openai, openai-responses, gemini,
    xai, generic, anthropic). `script`: answers for any request, in order. `default`: the
    answer once a queue runs out (else a 500 saying so). `strict`: enforce replay rules.
    `rpm`/`tpm`/`window_s`: rate limits (`token_estimate(body)` decides what a request
    reserves), counted on `clock` (a `FakeClock` makes them deterministic; default: real
    time). `chunk_chars`: size of streamed text pieces (small, so tags split across chunks).
    `stream_delay`: seconds between events. `host`/`port`: where to listen
    (port 0: an ephemeral port, read it from `port` or `base_url` after `start()`).

    Answers are `reply(...)`, `error(...)`, `reset(...)`, `raw(...)`, or a handler
    ``request -> answer``; an ``async def`` handler may wait before answering (for an
    `asyncio.Event` the test sets, say). A client that hangs up while its answer is held is
    counted in ``stats.hangups``.

    Routing by model: several agents of one run (planner, workers, writer) usually talk to
    the same server, in no fixed order when they run in parallel. Give each role its own model
    name in the task (``roles: {planner: plan}`` with ``models: {plan: {model: planner-model,
    base_url: ...}}``) and script each name on its own::

        srv.route("planner-model", reply(tool_calls=[call("submit_plan", plan)]), reply("ok"))
        srv.route("worker-model", default=lambda req: reply("done"))   # every worker request
        srv.script(reply("hi"))                  # requests for any other model, in order

    or pass ``routes={"planner-model": [reply(...), reply(...)], "worker-model": handler}``
    (a list is a queue; a single answer or handler answers every request for that model). A
    routed model's requests take from its queue, then its `default`, then the server's
    `default`; they never consume the shared `script`. Requests for a model that is not
    routed take from the shared script. `requests_for(model)` lists what one model received;
    `await wait_until(condition)` waits for the server to reach a state (no sleeps in tests).
    """

    def __init__(self, dialect: str = "generic", *, script: Sequence[Item] = (),
                 default: Item | None = None, routes: Mapping[str, Item | Sequence[Item]] | None = None,
                 strict: bool = True, rpm: int | None = None, tpm: int | None = None,
                 window_s: float = 60.0, token_estimate: Callable[[Any], int] = estimate_tokens,
                 chunk_chars: int = 6, stream_delay: float = 0.0, host: str = "127.0.0.1",
                 port: int = 0, clock: Clock | None = None) -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}; known: {', '.join(sorted(DIALECTS))}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0 (ephemeral) or 1-65535, not {port}")
        self.dialect: Dialect = DIALECTS[dialect]
        self._routes = Routes(script)
        self._routes.add_all(routes or {})
        self.default = default
        self.strict = strict
        self._limits = _RateWindow(rpm, tpm, window_s) if (rpm or tpm) else None
        self._monotonic = clock.monotonic if clock is not None else time.monotonic
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
        self._port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._waiters_lock = threading.Lock()
        #: called with each request once its status is known (the command line logs with it)
        self._observers: list[Callable[[RecordedRequest], None]] = []
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port once started (before: the port asked for, 0 meaning ephemeral)."""
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
        self._server = await asyncio.start_server(self._handle, self.host, self._port,
                                                  limit=2**22, backlog=1024)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._stopping = True  # connections we close are no client hang-ups
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
            self._server, self._stopping = None, False

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

    def script(self, *items: Item) -> ScriptedModelServer:
        """Queue answers, used in order, one per accepted request for a model without a route."""
        self._routes.shared.extend(items)
        return self

    def route(self, model: str, *items: Item, default: Item | None = None) -> ScriptedModelServer:
        """Queue answers for requests whose ``model`` is `model` (in order); `default` answers
        its requests once that queue is empty. Can be called again to queue more."""
        self._routes.add(model, items, default)
        return self

    def load_script(self, path: str | Path) -> ScriptedModelServer:
        """Queue the replies of a JSON or YAML script file (the format
        ``python -m agentkit.testing.server --script`` reads, described in
        `agentkit.testing.server.__main__`)."""
        loaded = load_script_file(path)
        self.script(*loaded.replies)
        if loaded.default is not None:
            self.default = loaded.default
        for model, (items, default) in loaded.models.items():
            self.route(model, *items, default=default)
        return self

    @property
    def pending(self) -> int:
        """Answers still queued (shared and per model; standing defaults not counted)."""
        return self._routes.pending

    def requests_for(self, model: str) -> list[RecordedRequest]:
        """The requests whose body named `model`, in arrival order."""
        return [r for r in self.requests if isinstance(r.body, dict) and r.body.get("model") == model]

    # `timeout` is a safety net, not a deadline to compose (hence the noqa): without it a broken
    # test hangs; with it, it fails saying what the server saw
    async def wait_until(self, condition: Callable[[], bool], *,
                         timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Return once `condition()` is true. It is checked now and again after every request
        arrives, is answered or is abandoned by its client, so a test can wait for "six
        requests are being held" instead of sleeping. `timeout` only keeps a broken test from
        hanging: it raises `TimeoutError` describing what the server saw. Works from any event
        loop (also while the server runs on its background thread)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    changed = asyncio.Event()
                    entry = (loop, changed)
                    with self._waiters_lock:
                        self._waiters.add(entry)
                    try:
                        if condition():  # changed between the check and the registration
                            return
                        await changed.wait()
                    finally:
                        with self._waiters_lock:
                            self._waiters.discard(entry)
        except TimeoutError:
            raise TimeoutError(
                f"scripted model server: condition still false after {timeout:g} s; it saw "
                f"{len(self.requests)} requests (by status {self.stats.by_status}, "
                f"{self.stats.hangups} hang-ups)") from None

    def _changed(self) -> None:
        with self._waiters_lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    # -- HTTP --------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                req = await read_request(reader)
                if req is None or not await self._respond(req, reader, writer):
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

    def _arrive(self, req: tuple[str, str, dict[str, str], Any], status: int = 0) -> int:
        """Record a request as it arrives (status 0 until its answer is chosen)."""
        self.requests.append(RecordedRequest(method=req[0], path=req[1], headers=req[2],
                                             body=req[3], status=status))
        self.stats.requests += 1
        if status:
            self._settle(len(self.requests) - 1, status)
        self._changed()
        return len(self.requests) - 1

    def _settle(self, index: int, status: int) -> None:
        rec = self.requests[index] = replace(self.requests[index], status=status)
        self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
        for observe in self._observers:
            observe(rec)
        self._changed()

    async def _answer(self, index: int, reader: asyncio.StreamReader) -> Answer | None:
        """The scripted answer for request `index` (None: its client hung up meanwhile)."""
        item = self._routes.pick(self.requests[index], self.default, index + 1)
        answer: Answer | None
        if callable(item):
            answer, hung_up = await self._call(item, index, reader)
            if hung_up or answer is None:
                self._hung_up(index)
                return None
        else:
            answer = item
        self._settle(index, answer.status if isinstance(answer, ErrorReply | Raw) else 200)
        if answer.delay:
            _, hung_up = await hold(reader, asyncio.sleep(answer.delay))
            if hung_up:
                self._hung_up(index)
                return None
        return answer

    async def _call(self, handler: Handler, index: int,
                    reader: asyncio.StreamReader) -> tuple[Answer | None, bool]:
        """Run a handler (awaiting it if async, while watching for a hang-up)."""
        try:
            made = handler(self.requests[index])
            if inspect.isawaitable(made):
                return await hold(reader, made)
            return made, False
        except Exception as exc:  # a test's handler is broken: say so on the wire
            return error(500, f"scripted model server: the handler raised "
                              f"{type(exc).__name__}: {exc}"), False

    def _hung_up(self, index: int) -> None:
        """The client left before its answer was sent: status 499 (nginx's "client closed
        request"), whatever had been scripted."""
        if self._stopping:
            return
        self.stats.hangups += 1
        scripted = self.requests[index].status
        if scripted:
            self.stats.by_status[scripted] -= 1
            if not self.stats.by_status[scripted]:
                del self.stats.by_status[scripted]
        self._settle(index, 499)

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
            wait = self._limits.admit(self._monotonic(), self._estimate(body))
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
                       reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        _, path, headers, body = req
        refusal = self._precheck(path, headers, body)
        if refusal is not None:
            self._arrive(req, refusal.status)
            await write_json(writer, refusal.status, refusal.body, refusal.headers)
            return True
        item = await self._answer(self._arrive(req), reader)
        if item is None:
            return False
        if isinstance(item, ErrorReply):
            await write_json(writer, item.status, item.body, item.headers)
            return True
        if isinstance(item, Raw):
            return await write_raw_item(writer, item)
        if isinstance(item, Reset):
            await write_raw(writer, head(200, {"Content-Type": "application/json",
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
            await write_json(writer, 200, lines[0], {})
            return True
        frames = [json.dumps(line).encode() + b"\n" for line in lines]
        writer.write(head(200, {"Content-Type": "application/x-ndjson", "Transfer-Encoding": "chunked"}))
        for i, frame in enumerate(frames):
            if r.reset_after is not None and i >= r.reset_after:
                await writer.drain()
                abort(writer)
                return False
            writer.write(chunk(frame))
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
                await write_raw(writer, head(200, {"Content-Type": "application/json",
                                                     "Content-Length": str(len(data))}) + data,
                                 len(head(200, {})) + r.reset_after)
                return False
            await write_json(writer, 200, payload, {})
            return True
        return await self._write_stream(writer, frames, r)

    async def _write_stream(self, writer: asyncio.StreamWriter, frames: list[bytes], r: Reply) -> bool:
        writer.write(head(200, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                 "Transfer-Encoding": "chunked"}))
        for _ in range(r.keepalives):
            writer.write(chunk(b": keep-alive\n\n"))
            writer.write(chunk(b"\n"))
        for i, frame in enumerate(frames):
            if r.reset_after is not None and i >= r.reset_after:
                await writer.drain()
                abort(writer)
                return False
            writer.write(chunk(frame))
            await writer.drain()
            if self.stream_delay:
                await asyncio.sleep(self.stream_delay)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True
