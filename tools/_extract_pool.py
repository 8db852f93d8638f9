"""Main-text extraction off the event loop: a pool of extraction worker processes, or threads.

Why our own worker processes instead of ``concurrent.futures.ProcessPoolExecutor``: the
executor's spawn/forkserver start re-runs the user's ``__main__`` script in every worker (a
script without an ``if __name__ == "__main__"`` guard breaks), and its feeder and manager
threads pickle payloads in the main process, competing with the event loop for the GIL. Here
each worker is ``python -P .../_extract_worker.py`` talking length-prefixed frames over
its stdin/stdout through asyncio pipes: nothing but the loop runs in the parent, a worker
stuck on a hostile page is killed and replaced when its call is cancelled, and the parent's
``__main__`` is never imported. The thread variant exists for comparison (``benchmarks/
extraction.py --pool thread``): trafilatura is mostly Python-level tree walking that holds the
GIL, so extraction threads add event-loop lag. Measured on this project's shared 2-core
machine (181 pages, 2 workers, 16 in flight): processes p99 loop lag 6.8 ms / max 12 ms at
36 pages/s; threads p99 10.9 ms / max 61 ms at 39 pages/s. Processes are the default.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

__all__ = ["ExtractPool", "ProcessExtractPool", "ThreadExtractPool", "WorkerCrashed"]

FRAME_HEADER = struct.Struct("!II")  # meta length, payload length
_MAX_FRAME = 1 << 30
#: added to the workers' nice value (see `agentkit.tools._extract_worker`)
WORKER_NICENESS = 5

Extractor = Callable[[bytes, str, str | None], tuple[str, str]]
#: the worker runs as a script (see its docstring: the package's import is not paid in it)
_WORKER_SCRIPT = str(Path(__file__).with_name("_extract_worker.py"))


class WorkerCrashed(Exception):
    """An extraction worker died or answered garbage."""


class ExtractPool(Protocol):
    """Runs ``extract_page(body, content_type, charset) -> (title, text)`` off the loop."""

    async def extract(self, body: bytes, content_type: str,
                      charset: str | None) -> tuple[str, str]: ...

    async def start(self) -> None:
        """Start the workers now, ahead of the first page (idempotent, returns at once)."""

    async def aclose(self) -> None: ...


class ThreadExtractPool:
    def __init__(self, extractor: Extractor, workers: int) -> None:
        self._extractor = extractor
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="agentkit-extract")

    async def start(self) -> None:
        """Threads start with their first task: nothing to do ahead of it."""

    async def extract(self, body: bytes, content_type: str,
                      charset: str | None) -> tuple[str, str]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._extractor, body, content_type,
                                          charset)

    async def aclose(self) -> None:
        # never wait for a thread stuck on a hostile page: threads cannot be killed
        self._pool.shutdown(wait=False, cancel_futures=True)


def frame(meta: dict[str, Any], payload: bytes) -> bytes:
    raw = json.dumps(meta).encode()
    return FRAME_HEADER.pack(len(raw), len(payload)) + raw + payload


async def _readframe(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    meta_len, payload_len = FRAME_HEADER.unpack(await reader.readexactly(FRAME_HEADER.size))
    if meta_len > _MAX_FRAME or payload_len > _MAX_FRAME:
        raise WorkerCrashed("oversized frame from an extraction worker")
    meta = json.loads(await reader.readexactly(meta_len))
    return meta, await reader.readexactly(payload_len)


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def call(self, body: bytes, content_type: str, charset: str | None) -> tuple[str, str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(frame({"content_type": content_type, "charset": charset}, body))
        await self.proc.stdin.drain()
        meta, answer = await _readframe(self.proc.stdout)
        if "error" in meta:
            raise RuntimeError(meta["error"])
        return meta["title"], answer.decode("utf-8")

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


class ProcessExtractPool:
    """`workers` long-lived extraction processes, started on first use."""

    def __init__(self, workers: int) -> None:
        self._size = workers
        self._idle: asyncio.Queue[_Worker] | None = None
        self._all: set[_Worker] = set()
        self._starting = asyncio.Lock()

    async def _spawn(self) -> _Worker:
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-P", _WORKER_SCRIPT,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 20,
                # a session of its own: a terminal's Ctrl-C reaches the run (which then closes
                # the pool), not the workers, which would die printing KeyboardInterrupt
                # tracebacks; a worker whose parent dies sees EOF on stdin and exits
                start_new_session=True)
        except OSError as exc:
            raise WorkerCrashed(f"could not start an extraction worker: {exc}") from None
        worker = _Worker(proc)
        self._all.add(worker)
        return worker

    async def start(self) -> None:
        """Spawn the workers (their imports then run while the caller goes on: `web_fetch`
        starts them before it downloads, so the first page does not wait for trafilatura)."""
        await self._workers()

    async def _workers(self) -> asyncio.Queue[_Worker]:
        async with self._starting:  # the first callers wait for the same start-up
            if self._idle is None:
                idle: asyncio.Queue[_Worker] = asyncio.Queue()
                for _ in range(self._size):
                    idle.put_nowait(await self._spawn())
                self._idle = idle
        return self._idle

    async def extract(self, body: bytes, content_type: str,
                      charset: str | None) -> tuple[str, str]:
        idle = await self._workers()
        worker = await idle.get()
        healthy = False
        try:
            result = await worker.call(body, content_type, charset)
            healthy = True
            return result
        except (asyncio.IncompleteReadError, ConnectionError, BrokenPipeError,
                struct.error, ValueError) as exc:
            raise WorkerCrashed(f"extraction worker failed: {type(exc).__name__}: {exc}") from None
        except RuntimeError:
            healthy = True  # the worker reported an extraction error and is still in sync
            raise
        finally:
            if not healthy:  # crashed, or cancelled mid-frame: its pipe state is unknown
                worker.kill()
                self._all.discard(worker)
                with contextlib.suppress(Exception):
                    worker = await asyncio.shield(self._spawn())
            idle.put_nowait(worker)

    async def aclose(self) -> None:
        for worker in list(self._all):
            if worker.proc.stdin is not None:
                worker.proc.stdin.close()
        for worker in list(self._all):
            try:
                await asyncio.wait_for(worker.proc.wait(), 5)
            except TimeoutError:
                worker.kill()
                await worker.proc.wait()
        self._all.clear()
