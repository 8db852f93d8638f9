"""The approval prompt of ``agentkit run`` on a terminal.

`TerminalApprover` is an event sink (it queues each ``approval.requested``) and a task that
asks about the queued calls one at a time: it pauses the live progress table, prints the tool
and its arguments, and reads ``y`` (approve), an empty line or ``n`` (deny), or any other text
(deny, with that text as the reason the model reads). Standard input is read through the event
loop (``add_reader``), never a blocking thread, so the run can end while a question is open;
a call decided elsewhere meanwhile (``agentkit approve``, the timeout) ends its question.
"""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
from collections.abc import Callable
from typing import Any

from agentkit.cli.approve import current_user
from agentkit.events import Event
from agentkit.progress import ProgressDisplay
from agentkit.run import Run

__all__ = ["TerminalApprover"]

_QUESTION = "approve? [y/N, or a reason to deny] "


class TerminalApprover:
    def __init__(self, handle: Run, progress: ProgressDisplay, *, fd: int,
                 write: Callable[[str], None]) -> None:
        self.handle, self.progress, self.fd, self.write = handle, progress, fd, write
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._decided: dict[str, asyncio.Event] = {}
        self._buffer = b""

    def __call__(self, event: Event) -> None:
        key = event.data.get("key")
        if not isinstance(key, str):
            return
        flag = self._decided.setdefault(key, asyncio.Event())
        if event.kind == "approval.requested":
            self._queue.put_nowait({**event.data, "node_id": event.node_id})
        elif event.kind == "approval.decided":
            flag.set()

    async def run(self) -> None:
        """Ask about each request in turn, until cancelled or standard input ends."""
        while True:
            request = await self._queue.get()
            decided = self._decided[request["key"]]
            if decided.is_set():
                continue
            with self.progress.paused():
                self.write(self._describe(request))
                line = await self._readline(decided)
                if line is None:
                    self.write("\n(decided elsewhere)\n")
                    continue
            if not self._answer(request["key"], line):
                return

    def _describe(self, request: dict[str, Any]) -> str:
        args = json.dumps(request.get("arguments"), ensure_ascii=False, indent=2, default=str)
        where = f" (node {request['node_id']})" if request.get("node_id") else ""
        text = (f"\nthe call {request['key']}{where} needs your approval:\n"
                f"  {request.get('tool')} {textwrap.indent(args, '  ').lstrip()}\n")
        return self.progress.redact(text) + _QUESTION

    def _answer(self, key: str, line: str) -> bool:
        """Decide `key` from the typed line; False at the end of input (stop asking)."""
        if line == "\x04":
            self.write("\nno answer (standard input closed): decide with `agentkit approve "
                       "LEDGER KEY`\n")
            return False
        text = line.strip()
        if text.lower() in ("y", "yes"):
            self.handle.runtime.approvals.approve(key, who=current_user(), via="terminal")
        else:
            reason = text if text.lower() not in ("", "n", "no") else "denied at the terminal"
            self.handle.runtime.approvals.deny(key, reason, who=current_user(), via="terminal")
        return True

    async def _readline(self, decided: asyncio.Event) -> str | None:
        """The next line typed ("\\x04" at the end of input), or None once `decided` is set."""
        loop = asyncio.get_running_loop()
        while b"\n" not in self._buffer:
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(self.fd, _resolve, readable)
            waiter = asyncio.ensure_future(decided.wait())
            try:
                either: set[asyncio.Future[Any]] = {readable, waiter}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            finally:
                loop.remove_reader(self.fd)
                waiter.cancel()
            if decided.is_set():
                return None
            chunk = os.read(self.fd, 4096)
            if not chunk:
                return "\x04"
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("utf-8", errors="replace")


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
