"""An extraction worker process: ``python -P .../agentkit/tools/_extract_worker.py``.

Reads length-prefixed frames (page bytes and their content type) on stdin, answers each with
the page's title and main text on stdout, exits on EOF. Started and killed by
`agentkit.tools._extract_pool.ProcessExtractPool`. trafilatura is imported when the worker
starts, before the first page, not while a page waits.

Run as a script, not ``-m agentkit.tools._extract_worker``: importing through the package runs
``agentkit/__init__``, which loads the whole engine (measured 1.25 s of a worker's start-up,
against 0.31 s for trafilatura alone). The two modules it needs use only the standard library
and trafilatura, so they are loaded from their files beside this one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

__all__: list[str] = []


def _sibling(name: str) -> ModuleType:
    """The module `name` of this folder, loaded from its file under a private name (so the
    ``agentkit`` package is never imported in a worker)."""
    spec = importlib.util.spec_from_file_location(f"_agentkit_worker_{name}",
                                                  Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_pool = _sibling("_extract_pool")
extract_page = _sibling("_extract").extract_page
FRAME_HEADER, WORKER_NICENESS, frame = _pool.FRAME_HEADER, _pool.WORKER_NICENESS, _pool.frame


def _serve() -> None:
    """Worker main loop: read a frame, extract, answer; exit on EOF."""
    # Extraction is batch work; the parent's event loop is latency-sensitive. A lower priority
    # lets the loop's process preempt a busy worker at once when it wakes (loop lag).
    with contextlib.suppress(OSError, AttributeError):
        os.nice(WORKER_NICENESS)
    # frames go to the original stdout; anything a library prints goes to stderr instead
    stdout = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    stdin = sys.stdin.buffer
    while True:
        header = stdin.read(FRAME_HEADER.size)
        if len(header) < FRAME_HEADER.size:
            return
        meta_len, payload_len = FRAME_HEADER.unpack(header)
        meta = json.loads(stdin.read(meta_len))
        payload = stdin.read(payload_len)
        try:
            title, text = extract_page(payload, meta["content_type"], meta["charset"])
            out = frame({"title": title}, text.encode("utf-8", "replace"))
        except Exception as exc:  # reported to the parent as an extraction error
            out = frame({"error": f"{type(exc).__name__}: {exc}"}, b"")
        stdout.write(out)
        stdout.flush()


if __name__ == "__main__":
    _serve()
    # Nothing to clean up (every answer was flushed): skip the interpreter's teardown of
    # trafilatura and lxml, ~50 ms that the end of every run waited for.
    os._exit(0)
