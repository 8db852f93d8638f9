"""An extraction worker process: ``python -m agentkit.tools._extract_worker``.

Reads length-prefixed frames (page bytes and their content type) on stdin, answers each with
the page's title and main text on stdout, exits on EOF. Started and killed by
`agentkit.tools._extract_pool.ProcessExtractPool`. trafilatura is imported when the worker
starts, before the first page, not while a page waits.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

from agentkit.tools._extract import extract_page
from agentkit.tools._extract_pool import FRAME_HEADER, WORKER_NICENESS, frame

__all__: list[str] = []


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
