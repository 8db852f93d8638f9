"""The executor seam shared by the driver and the workers of a run that runs nodes elsewhere.

A task chooses where its nodes run with ``executor: {kind: local | ray}``. ``local`` (the
default) runs each node as an `Agent` in this process (`AgentExecutor`). Another kind is an
extra loaded at first use through `agentkit._extras.require`, so ``import agentkit`` never
imports Ray; without the extra, choosing it is a `SetupError` naming ``pip install
'agentkit-swarm[ray]'``.

Between the driver (scheduler, ledger, budgets, rate limits, usage) and a worker only plain
values travel: the task as JSON, the node, its inputs, and the messages below. A message from
a worker is a tuple whose first item says what it is:

- ``("event", kind, node_id, data_json)``: an event the worker's agent emitted; the driver
  emits it on the run's bus (which gives it its ``seq``) in the order it arrived;
- ``("call", call_id, op, args)``: a question the driver answers (``reply``): a budget hold
  (``budget.model``, ``budget.tool``) or a rate-limit reservation (``rate.reserve``);
- ``("note", op, args)``: what the driver applies without answering (settle, release, refund);
- ``("result", output, sources)`` / ``("error", error_dict)``: how the node ended.

Errors cross as `AgentkitError.to_dict` dictionaries and are rebuilt by `error_from_dict`,
so a node that failed remotely is recorded exactly like one that failed here.
"""

from __future__ import annotations

from typing import Any, Protocol

from agentkit._extras import require
from agentkit.errors import AgentkitError, BudgetExceeded, ConfigError
from agentkit.swarm.context import SwarmContext
from agentkit.swarm.scheduler import NodeExecutor, PlacingExecutor
from agentkit.task import TaskSpec

__all__ = ["RemoteError", "RemoteExecutor", "check_executor", "check_extra", "error_dict",
           "error_from_dict",
           "start_executor"]

#: what each executor kind is loaded from, and the extra that holds its dependency
_KINDS = {"ray": ("agentkit.swarm.ray_executor", "ray", "ray")}


class RemoteExecutor(NodeExecutor, PlacingExecutor, Protocol):
    """A `NodeExecutor` whose nodes run outside this process. `ready` waits until its
    workers can take nodes (it raises if none can); it closes with the run's resources."""

    async def ready(self) -> None: ...


class _Opener(Protocol):
    async def __call__(self, ctx: SwarmContext) -> RemoteExecutor: ...


async def start_executor(ctx: SwarmContext) -> RemoteExecutor | None:
    """The executor the task's ``executor.kind`` names, started (None for ``local``)."""
    kind = ctx.runtime.task.executor.kind
    if kind == "local":
        return None
    check_extra(kind)
    module, extra, _ = _KINDS[kind]
    opener: _Opener = require(module, extra, feature=f"executor: {{kind: {kind}}}").open_executor
    return await opener(ctx)


def check_executor(task: TaskSpec) -> None:
    """Refuse, before the run starts, an executor the task cannot use: one whose extra is not
    installed (`SetupError` naming it), or a remote one for ``mode: agent`` (`ConfigError`)."""
    kind = task.executor.kind
    if kind == "local":
        return
    if task.mode == "agent":
        raise ConfigError(f"executor: {{kind: {kind}}} runs a swarm's nodes elsewhere; a mode: "
                          f"agent task is one agent in this process: remove executor or use "
                          f"mode: swarm")
    check_extra(kind)


def check_extra(kind: str) -> None:
    """Raise `SetupError` naming the extra if executor `kind` cannot be loaded here."""
    if kind in _KINDS:
        _, extra, dependency = _KINDS[kind]
        require(dependency, extra, feature=f"executor: {{kind: {kind}}} (runs nodes on {extra})")


class RemoteError(AgentkitError):
    """A node's error raised on a worker: the same type name, message and facts as there."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        super().__init__(str(data.get("message", "")))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.data)


def error_dict(exc: BaseException) -> dict[str, Any]:
    """What crosses the wire for `exc` (the scheduler records the same dictionary)."""
    if isinstance(exc, AgentkitError):
        return exc.to_dict()
    if isinstance(exc, TimeoutError):
        return {"type": "Timeout", "message": "the node ran past its wall-time budget"}
    return {"type": type(exc).__name__, "message": str(exc)}


def error_from_dict(data: dict[str, Any]) -> AgentkitError:
    """The error a worker reported, as an exception here. `BudgetExceeded` is rebuilt as
    itself (the scheduler does not retry a node that ran out of budget); any other keeps its
    type name and facts in `to_dict`."""
    if data.get("type") == "BudgetExceeded":
        return BudgetExceeded(str(data.get("budget")), float(data.get("limit") or 0.0),
                              data.get("requested"), str(data.get("message", "")))
    return RemoteError(data)
