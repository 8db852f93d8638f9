"""The `run_code` tool: Python or bash in a hardened Docker sandbox from the run's warm pool.

The tool talks to sandboxes through the `SandboxClient`/`SandboxSession` protocols: the run's
client is the resource ``sandbox_client`` (`SANDBOX_CLIENT`), a `DockerSandboxClient` unless
one was put there first (tests put `agentkit.testing.FakeSandboxClient` to run without Docker).

Returns exit code, capped stdout/stderr, duration and the files the code created, changed or
deleted in ``/workspace`` (path, size, sha256 and, for text, a unified diff). Each exec is a
``sandbox.exec`` event and each file change a ``file.diff`` event in the ledger. A timeout,
out-of-memory kill, pids exhaustion or output flood is a typed `SandboxError` the model can
read (``timeout``, ``oom``, ``resource_limit``, ``output_limit``); the sandbox is replaced,
so the next call works.

On a resumed run, a session whose earlier calls were answered from the ledger is rebuilt
before its first live call by re-running those recorded cells in a fresh container
(`_rebuild` states the rule).

Once a plan is known (`RunCode.planned`), the pool is made and grown at once to one container
per run_code agent that can run at the same time (`prewarm_size`), so those containers start
while the nodes' first model turns run instead of on their first call.
"""

from __future__ import annotations

import asyncio
import difflib
import weakref
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import Field

from agentkit.errors import SandboxError, ToolError
from agentkit.plan import PlanGraph
from agentkit.sandboxes.base import (
    REPLACE_CODES,
    ExecResult,
    SandboxClient,
    SandboxSession,
    check_relative_path,
    classify,
)
from agentkit.sandboxes.docker import DockerSandboxClient
from agentkit.sandboxes.pool import SANDBOX_CLIENT, SandboxPool
from agentkit.task import TaskSpec
from agentkit.tools.base import Tool, ToolArgs, ToolContext, ToolOutput
from agentkit.tools.files import read_workspace_file

__all__ = ["SANDBOX_CLIENT", "Prewarm", "RunCode", "RunCodeArgs", "prewarm_size", "sandbox_pool"]

#: contents last seen per sandbox and /workspace path (the "before" of the next diff)
Seen = weakref.WeakKeyDictionary[SandboxSession, dict[str, bytes]]

MAX_CHANGED_FILES = 50
MAX_READ_BYTES = 1_000_000
MAX_DIFF_SOURCE = 256_000
MAX_DIFF_CHARS = 64_000


class RunCodeArgs(ToolArgs):
    language: Literal["python", "bash"] = Field(default="python", description="python or bash")
    code: str = Field(min_length=1, max_length=200_000, description="the program to run")
    files: dict[str, str] = Field(default_factory=dict, max_length=100,
                                  description="text files to create in /workspace first: {path: content}")
    timeout_s: float | None = Field(default=None, gt=0, le=3600,
                                    description="seconds before the program is killed")


class RunCode(Tool):
    name = "run_code"
    description = ("Run Python 3 or bash code in an isolated sandbox (no network, 512 MiB, "
                   "/workspace is the writable working directory; files there persist between "
                   "your calls). Returns exit code, stdout, stderr and the files created or "
                   "changed in /workspace.")
    args_model = RunCodeArgs
    timeout_s = 3660.0
    concurrency_class = "sandbox"
    side_effects = False

    def timeout_for(self, args: Any) -> float:
        # the sandbox enforces its own (shorter) deadline; this only backs it up
        return float(args.timeout_s or 3600.0) + 60.0

    async def replayed(self, arguments: dict[str, Any], ctx: ToolContext) -> None:
        """On resume: the recorded cells of this session, to re-run before its first live call."""
        (await _pending_cells(ctx)).setdefault(_session_key(ctx), []).append(arguments)

    async def planned(self, plan: PlanGraph, ctx: ToolContext) -> None:
        """Pre-warm the run's pool for `plan` (`prewarm_size`), recorded as a
        ``sandbox.prewarm`` event. Returns at once: the containers start in tasks the pool
        owns, and a Docker failure is kept by the pool for the first call to raise. Nothing
        happens for a plan without run_code nodes or with ``sandbox.max_pool: 0``."""
        size = prewarm_size(plan, ctx.task)
        if size.nodes == 0 or ctx.task.sandbox.max_pool == 0:
            return
        pool = await sandbox_pool(ctx)
        pool.grow_to(size.warm, agents=size.agents)
        ctx.emit("sandbox.prewarm", {**asdict(size), "pool_size": pool.size})

    async def call(self, args: Any, ctx: ToolContext) -> ToolOutput:
        pool = await sandbox_pool(ctx)
        key = _session_key(ctx)
        async with pool.lease(key) as session:
            try:
                await _rebuild(session, (await _pending_cells(ctx)).pop(key, []), ctx)
                return await self._run(session, args, ctx)
            except SandboxError as err:
                if err.code in REPLACE_CODES:
                    await asyncio.shield(pool.discard(key, session))
                raise

    async def _run(self, session: SandboxSession, args: RunCodeArgs, ctx: ToolContext) -> ToolOutput:
        settings = ctx.task.sandbox
        seen = await _files_seen(ctx, session)
        await _copy_inputs(session, seen, settings.inputs, ctx)
        if args.files:
            inputs = {check_relative_path(p): c.encode() for p, c in args.files.items()}
            await session.write_files(inputs)
            seen.update(inputs)
        timeout = min(args.timeout_s or settings.timeout_s, settings.timeout_s)
        started = ctx.clock.monotonic()
        try:
            result = await session.exec(args.code, language=args.language, timeout_s=timeout)
        except SandboxError as err:  # the host deadline, a crash, a flooded channel
            _exec_event(ctx, session, args, None, err, ctx.clock.monotonic() - started)
            raise
        error = classify(result, timeout_s=timeout, memory_mb=settings.memory_mb, pids=settings.pids)
        _exec_event(ctx, session, args, result, error, ctx.clock.monotonic() - started)
        if error is not None:
            raise error
        files = await _changed_files(session, seen, result, ctx)
        data = {**_result_data(result), "files": files}
        return ToolOutput(content=_render(result, files), data=data)


def _session_key(ctx: ToolContext) -> str:
    """Calls of one agent share a sandbox session (its /workspace files, and with
    ``persistent`` its interpreter)."""
    return ctx.agent_id or ctx.node_id or "main"


async def _pending_cells(ctx: ToolContext) -> dict[str, list[dict[str, Any]]]:
    async def make() -> dict[str, list[dict[str, Any]]]:
        return {}
    return await ctx.resource("run_code:pending_cells", make)


async def _rebuild(session: SandboxSession, cells: list[dict[str, Any]], ctx: ToolContext) -> None:
    """The resume rule for sandboxes. A resumed run answers a session's completed calls from
    the ledger, so the container they ran in (gone with the crashed process) is not there:
    before the session's first live call, its recorded cells are re-run in the fresh
    container, in order (their files written first, outputs discarded: they were recorded).
    That rebuilds both an ephemeral session (each exec a new interpreter: what persists is
    /workspace) and a persistent one (the interpreter's variables too). Code is
    side-effect free outside its container (no network), so re-running it is safe; code
    whose results depend on time or randomness may rebuild a slightly different state."""
    if not cells:
        return
    settings = ctx.task.sandbox
    for arguments in cells:
        args = RunCodeArgs.model_validate(arguments)
        if args.files:
            await session.write_files({check_relative_path(p): c.encode()
                                       for p, c in args.files.items()})
        await session.exec(args.code, language=args.language,
                           timeout_s=min(args.timeout_s or settings.timeout_s, settings.timeout_s))
    ctx.emit("sandbox.rebuilt", {"container": session.id[:12], "cells": len(cells),
                                 "session": _session_key(ctx)})


@dataclass(frozen=True)
class Prewarm:
    """How a plan sizes the warm pool (`prewarm_size`)."""

    #: plan nodes whose tools include run_code (a node without tools gets none)
    nodes: int
    #: the most of them that can run at once (a maximum antichain of the plan), at most
    #: ``budget.max_agents``, the run's cap on nodes running at once
    width: int
    #: the sandbox sessions those nodes open (each node's agent; with consensus, the
    #: ``agree`` samples it runs at once)
    agents: int
    #: containers to keep warm: `width` times the sessions per node, at most ``sandbox.max_pool``
    warm: int


def prewarm_size(plan: PlanGraph, task: TaskSpec) -> Prewarm:
    """How many containers `plan`'s nodes can use at the same time. A node may call run_code
    only if it lists it (`AgentExecutor` gives a node without tools none; ``delegate``
    sub-teams announce their own plans); each running node holds one session per agent
    (consensus runs ``agree`` samples at once, each with its own session)."""
    users = [n for n in plan.order if RunCode.name in plan.nodes[n].tools]
    per_node = min(task.consensus.agree, task.consensus.samples)
    width = plan.max_parallel(users, at_most=task.budget.max_agents)
    return Prewarm(nodes=len(users), width=width, agents=len(users) * per_node,
                   warm=min(width * per_node, task.sandbox.max_pool))


async def sandbox_pool(ctx: ToolContext) -> SandboxPool:
    """The run's warm pool, made when the plan is known (`RunCode.planned`) or else on the
    first `run_code` call, and closed with the run (which removes every container of the
    run, then the client's leftovers). Making it does no I/O: warming runs in its tasks."""

    async def make_client() -> SandboxClient:
        return DockerSandboxClient(ctx.task.sandbox, run_id=ctx.run_id, emit=ctx.events)

    async def close_client(client: SandboxClient) -> None:
        await client.aclose()

    async def make() -> SandboxPool:
        client = await ctx.resource(SANDBOX_CLIENT, make_client, close_client)
        pool = SandboxPool(client, ctx.task.sandbox, close_client=False)
        try:
            await pool.start()
        except BaseException:
            await asyncio.shield(pool.aclose())
            raise
        return pool

    async def close(pool: SandboxPool) -> None:
        await pool.aclose()

    return await ctx.resource("sandbox_pool", make, close)


async def _files_seen(ctx: ToolContext, session: SandboxSession) -> dict[str, bytes]:
    async def make() -> Seen:
        return weakref.WeakKeyDictionary()
    return (await ctx.resource("run_code:files_seen", make)).setdefault(session, {})


async def _copy_inputs(session: SandboxSession, seen: dict[str, bytes], inputs: list[str],
                       ctx: ToolContext) -> None:
    """Copy the task's `sandbox.inputs` from the workspace (once per sandbox; again if
    deleted), read as the file tools read: confined, never from a protected folder."""
    missing = [p for p in inputs if check_relative_path(p) not in seen]
    if not missing:
        return

    def read() -> dict[str, bytes]:
        out = {}
        for path in missing:
            try:
                out[check_relative_path(path)] = read_workspace_file(ctx, path, "run_code")
            except OSError as exc:
                raise ToolError("setup", f"sandbox.inputs: cannot read {path!r} from the "
                                f"workspace {str(ctx.workspace)!r}: {exc.strerror}") from None
        return out

    data = await asyncio.to_thread(read)
    await session.write_files(data)
    seen.update(data)


def _exec_event(ctx: ToolContext, session: SandboxSession, args: RunCodeArgs,
                result: ExecResult | None, error: SandboxError | None, wall_s: float) -> None:
    """One ``sandbox.exec`` ledger event per exec: code, outcome, in-sandbox and host time."""
    data: dict[str, Any] = {"container": session.id[:12], "language": args.language, "code": args.code,
                            "wall_s": round(wall_s, 4), "error": error.code if error else None}
    if result is not None:
        data.update(exit_code=result.exit_code, duration_s=result.duration_s,
                    timed_out=result.timed_out, oom=result.oom, pids_exhausted=result.pids_exhausted,
                    stdout_truncated=result.stdout_truncated, stderr_truncated=result.stderr_truncated)
    ctx.emit("sandbox.exec", data)


def _result_data(result: ExecResult) -> dict[str, Any]:
    keys = ("exit_code", "stdout", "stderr", "duration_s", "stdout_truncated", "stderr_truncated",
            "state_reset")
    return {k: getattr(result, k) for k in keys}


async def _changed_files(session: SandboxSession, seen: dict[str, bytes], result: ExecResult,
                         ctx: ToolContext) -> list[dict[str, Any]]:
    """Files created, changed or deleted by the exec, each recorded as a ``file.diff`` event."""
    before, after = result.files_before, result.files_after
    changed = sorted(p for p in after if before.get(p) != after[p])[:MAX_CHANGED_FILES]
    deleted = sorted(p for p in before if p not in after)
    readable = [p for p in changed if after[p][0] <= MAX_READ_BYTES]
    contents = await session.read_files(readable) if readable else {}
    out: list[dict[str, Any]] = []
    for path in changed:
        size, sha = after[path]
        status = "changed" if path in before else "created"
        entry: dict[str, Any] = {"path": path, "status": status, "size": size, "sha256": sha}
        new = contents.get(path)
        if new is not None and (diff := _text_diff(path, seen.get(path), new)) is not None:
            entry["diff"] = diff
        if new is not None:
            seen[path] = new if len(new) <= MAX_DIFF_SOURCE else b""
        out.append(entry)
    for path in deleted:
        old = seen.pop(path, None)
        entry = {"path": path, "status": "deleted", "size": 0, "sha256": None}
        if old is not None and (diff := _text_diff(path, old, b"")) is not None:
            entry["diff"] = diff
        out.append(entry)
    for entry in out:
        previous = before.get(entry["path"])
        ctx.emit("file.diff", {"path": f"/workspace/{entry['path']}", "where": "sandbox",
                               "container": session.id[:12], "status": entry["status"],
                               "before_sha256": previous[1] if previous else None,
                               "after_sha256": entry["sha256"], "diff": entry.get("diff")})
    return out


def _text_diff(path: str, old: bytes | None, new: bytes) -> str | None:
    """A unified diff for text files (None for binary or very large ones)."""
    if len(new) > MAX_DIFF_SOURCE or b"\x00" in new or (old is not None and b"\x00" in old):
        return None
    try:
        new_text, old_text = new.decode(), (old or b"").decode()
    except UnicodeDecodeError:
        return None
    diff = "".join(difflib.unified_diff(
        old_text.splitlines(keepends=True), new_text.splitlines(keepends=True),
        fromfile="/dev/null" if old is None else f"a/{path}", tofile=f"b/{path}"))
    return diff[:MAX_DIFF_CHARS]


def _render(result: ExecResult, files: list[dict[str, Any]]) -> str:
    """The text the model reads: ``exit code N (T s)``, then ``--- stdout ---`` /
    ``--- stderr ---`` / files sections. Only models read it: the application reads the same
    facts from the result's structured data (`ToolOutput.data`)."""
    lines = [f"exit code {result.exit_code} ({result.duration_s:.2f} s)"]
    if result.state_reset:
        lines.append("note: the Python interpreter was restarted; earlier variables are gone")
    for name, text in (("stdout", result.stdout), ("stderr", result.stderr)):
        if text:
            lines += [f"--- {name} ---", text.rstrip("\n")]
    if files:
        lines += ["--- files in /workspace ---",
                  *(f"{f['status']} {f['path']} ({f['size']} bytes)" for f in files)]
    return "\n".join(lines)
