"""Approvals that wait: a person says yes or no before a tool call is made.

The task's ``approval:`` field (`agentkit.task.ApprovalSpec`) names the tools whose calls need
a person's yes. The agent loop asks the run's `Approvals` broker (``runtime.approvals``) before
each such call; the broker emits ``approval.requested`` (the call's deterministic key, the
tool, its arguments), which the ledger writes out at once, and the calling node waits
— only that node: the rest of the DAG goes on. Three ways to decide, first decision wins:

- the Python API: ``run.approve(key)`` / ``run.deny(key, reason)`` (`Approvals.approve`);
- the terminal: ``agentkit run`` on a terminal asks ``y/N/reason`` (via ``terminal``);
- a file: ``agentkit approve LEDGER KEY [--deny REASON]`` appends a decision to the sidecar
  ``<ledger>.approvals`` (`append_decision`), from any process. A running run polls the
  sidecar's size on its own clock (`poll_s`); a run that opens a ledger reads the decisions
  already there, so a decision made while the run was down is honoured when it resumes.

Decisions made through the API or the terminal are appended to the sidecar as well, so the
sidecar holds every person's decision of the run. ``approval.decided`` records the decision,
how it was made (``api``, ``terminal``, ``file``, ``timeout``), who made it and the reason. No
decision within ``timeout_s`` (measured on the runtime's clock) denies the call; a denied call
becomes a tool error the model reads ("denied by a person: REASON"); it never ends the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from agentkit.clock import Clock
from agentkit.events import Emitter
from agentkit.task import ApprovalSpec
from agentkit.tools.base import RESERVED_TOOL_NAMES, Tool

__all__ = ["ApprovalRequest", "Approvals", "Decision", "Via", "append_decision",
           "approvals_file", "needs_approval", "pending_requests", "read_decisions",
           "unmatched_entries"]

#: how a decision was made
Via = Literal["api", "terminal", "file", "timeout"]
_VIAS: tuple[str, ...] = Via.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Decision:
    """A person's (or the timeout's) answer to one approval request."""

    key: str
    approved: bool
    reason: str | None = None
    via: Via = "api"
    who: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Decision | None:
        """A decision read from the sidecar, or None for a line that is not one."""
        if not isinstance(data, dict) or not isinstance(data.get("key"), str) \
                or not isinstance(data.get("approved"), bool):
            return None
        reason, who, via = data.get("reason"), data.get("who"), data.get("via", "file")
        return cls(key=data["key"], approved=data["approved"],
                   reason=reason if isinstance(reason, str) else None,
                   via=via if via in _VIAS else "file", who=who if isinstance(who, str) else None)


@dataclass(frozen=True)
class ApprovalRequest:
    """A call waiting for a decision."""

    key: str
    tool: str
    arguments: dict[str, Any]
    node_id: str | None
    reason: str | None = None


def approvals_file(ledger: str | Path) -> Path:
    """The sidecar of a ledger's decisions: ``runs/ID.jsonl`` -> ``runs/ID.jsonl.approvals``."""
    ledger = Path(ledger)
    return ledger.with_name(ledger.name + ".approvals")


def append_decision(path: str | Path, decision: Decision) -> None:
    """Append one decision as one line with a single ``O_APPEND`` write (several writers, in
    this process or others, never interleave within a line)."""
    line = (json.dumps(decision.to_dict(), ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_decisions(path: str | Path, offset: int = 0) -> tuple[list[Decision], int]:
    """The decisions of whole lines from byte `offset` on, and the offset after the last whole
    line (a line still being written is left for the next read). No file: none."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    found: list[Decision] = []
    for line in data[:end].splitlines():
        with contextlib.suppress(ValueError):
            decision = Decision.from_dict(json.loads(line))
            if decision is not None:
                found.append(decision)
    return found, offset + end


def pending_requests(events: Iterator[dict[str, Any]],
                     decided: set[str]) -> dict[str, dict[str, Any]]:
    """Requests of a ledger's events (parsed lines) with no decision, neither in the ledger
    (``approval.decided``) nor in `decided` (keys of the sidecar): key -> request payload."""
    pending: dict[str, dict[str, Any]] = {}
    for event in events:
        data = event.get("data") or {}
        key = data.get("key")
        if event.get("kind") == "approval.requested" and isinstance(key, str):
            pending[key] = {**data, "node_id": event.get("node_id")}
        elif event.get("kind") == "approval.decided" and isinstance(key, str):
            pending.pop(key, None)
    return {k: v for k, v in pending.items() if k not in decided}


def needs_approval(spec: ApprovalSpec | None, tool: Tool) -> bool:
    """Whether `spec` asks a person before each call of `tool` (never for the engine's own
    control tools, such as the planner's submit_plan, whatever a pattern matches)."""
    if spec is None or tool.name in RESERVED_TOOL_NAMES:
        return False
    if spec.side_effects and tool.side_effects:
        return True
    return any(_matches(entry, tool) for entry in spec.tools)


def unmatched_entries(spec: ApprovalSpec | None, tools: Iterable[Tool]) -> list[str]:
    """Entries of ``approval.tools`` that match none of `tools` (a typo would otherwise
    silently let every call through)."""
    if spec is None:
        return []
    tools = list(tools)
    return [e for e in spec.tools if not any(_matches(e, t) for t in tools)]


def _matches(entry: str, tool: Tool) -> bool:
    names = [tool.name]
    origin = tool.origin
    if origin.get("source") == "mcp":
        server = str(origin.get("server"))
        names += [server, f"{server}.{origin.get('remote_tool')}"]
    return any(fnmatch.fnmatchcase(name, entry) for name in names)


class Approvals:
    """The run's approval broker (``runtime.approvals``): see the module docstring.

    `spec` is the task's ``approval`` (None: no call needs approval); `clock` times the
    timeout and the sidecar polling (every `poll_s` seconds while a call waits); `emit`
    records ``approval.requested``/``approval.decided``. No I/O until `attach`.
    """

    def __init__(self, spec: ApprovalSpec | None, *, clock: Clock, emit: Emitter,
                 poll_s: float = 0.5) -> None:
        self.spec, self.clock, self.emit, self.poll_s = spec, clock, emit, poll_s
        self.sidecar: Path | None = None
        self._offset = 0
        self._decisions: dict[str, Decision] = {}
        self._waiting: dict[str, tuple[ApprovalRequest, asyncio.Future[Decision]]] = {}

    def attach(self, sidecar: Path) -> None:
        """Use `sidecar` for decisions from other processes and read those already there."""
        self.sidecar = sidecar
        self._offset = 0
        self.poll()

    def needs(self, tool: Tool) -> bool:
        return needs_approval(self.spec, tool)

    def pending(self) -> list[ApprovalRequest]:
        """The calls waiting for a decision now, oldest first."""
        return [request for request, _ in self._waiting.values()]

    def poll(self) -> None:
        """Take the decisions appended to the sidecar since the last look."""
        if self.sidecar is None:
            return
        try:
            if os.stat(self.sidecar).st_size <= self._offset:
                return
        except FileNotFoundError:
            return
        found, self._offset = read_decisions(self.sidecar, self._offset)
        for decision in found:
            self._decide(decision)

    def approve(self, key: str, *, who: str | None = None, via: Via = "api") -> bool:
        """Approve the call `key` (waiting now, or made later in this run). False if it was
        already decided (the first decision stands)."""
        return self._record(Decision(key=key, approved=True, via=via, who=who))

    def deny(self, key: str, reason: str, *, who: str | None = None, via: Via = "api") -> bool:
        """Deny the call `key`; the model reads `reason`. False if it was already decided."""
        return self._record(Decision(key=key, approved=False, reason=reason, via=via, who=who))

    def _record(self, decision: Decision) -> bool:
        self.poll()  # a decision already in the sidecar came first
        if not self._decide(decision):
            return False
        if self.sidecar is not None:  # the sidecar holds every person's decision of the run
            append_decision(self.sidecar, decision)
        return True

    def _decide(self, decision: Decision) -> bool:
        if decision.key in self._decisions:
            return False
        self._decisions[decision.key] = decision
        waiting = self._waiting.get(decision.key)
        if waiting is not None and not waiting[1].done():
            waiting[1].set_result(decision)
        return True

    async def request(self, key: str, tool: str, arguments: dict[str, Any], *,
                      node_id: str | None, reason: str | None = None) -> Decision:
        """Record the request and wait for its decision (or the timeout, which denies)."""
        self.poll()
        self.emit("approval.requested", {"key": key, "tool": tool, "arguments": arguments,
                                         "reason": reason,
                                         "timeout_s": self.spec.timeout_s if self.spec else None},
                  node_id=node_id)  # the ledger writes it out at once (Runtime._use_ledger)
        decision = self._decisions.get(key)
        if decision is None:
            future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
            self._waiting[key] = (ApprovalRequest(key, tool, arguments, node_id, reason), future)
            try:
                decision = await self._wait(key, future)
            finally:
                self._waiting.pop(key, None)
        self.emit("approval.decided", {"key": key, "tool": tool, **decision.to_dict()},
                  node_id=node_id)
        return decision

    async def _wait(self, key: str, future: asyncio.Future[Decision]) -> Decision:
        timeout = self.spec.timeout_s if self.spec is not None else None
        deadline = None if timeout is None else self.clock.monotonic() + timeout
        while not future.done():
            self.poll()
            if future.done():
                break
            naps = [self.poll_s] if self.sidecar is not None else []
            if deadline is not None:
                left = deadline - self.clock.monotonic()
                if left <= 0:
                    timed_out = Decision(key=key, approved=False, via="timeout",
                                         reason=f"no person decided within {timeout:g} s")
                    self._decisions.setdefault(key, timed_out)
                    return self._decisions[key]
                naps.append(left)
            await self._nap(future, min(naps) if naps else None)
        return future.result()

    async def _nap(self, future: asyncio.Future[Decision], seconds: float | None) -> None:
        """Until `future` is done or `seconds` have passed on the runtime's clock."""
        if seconds is None:
            await asyncio.shield(future)
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        try:
            either: set[asyncio.Future[Any]] = {future, sleeper}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
