"""Budgets: one semantics for every mode, hierarchical so that they hold under fan-out.

A run has one root `Budget` (from the task's `BudgetSpec`); in ``mode: agent`` the agent spends
from it directly, in a swarm each node and each spawned sub-planner gets a child. Per quantity
(tokens, cost_usd, tool_calls) a child is either

- *prepaid*: its plan gave it a share, reserved from the parent before the node starts and
  returned (minus what it used) when it finishes, or
- *pass-through*: every reservation walks up the chain and must fit at every level.

Every spend is reserved before it happens and settled after, without an ``await`` between check
and hold, so thirty agents reserving at once can never take more than the limit: a model call
holds its prompt (estimated from above) plus its ``max_tokens`` output, and the cost of both at
the model's price; a tool call holds 1. A call whose hold does not fit is not made. Every
decision where a limit exists is an event (``budget.reserved`` / ``budget.released`` /
``budget.exceeded``); with no limit anywhere in the chain there is nothing to decide and nothing
is emitted (keeps the engine cheap).

Wall time is a deadline (`deadline`, monotonic seconds) and spawn depth a counter; both are
checked when a child is made. Concurrent agents are a limit (``runtime.limits`` "agents"), not a
budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agentkit.clock import Clock
from agentkit.errors import BudgetExceeded
from agentkit.events import Emitter
from agentkit.messages import Usage
from agentkit.plan import NodeBudget
from agentkit.task import BudgetSpec

__all__ = ["QUANTITIES", "Budget", "ModelHold", "Reservation"]

Quantity = Literal["tokens", "cost_usd", "tool_calls"]
#: the quantities reserved and settled (wall time and depth are checked, not reserved)
QUANTITIES: tuple[Quantity, ...] = ("tokens", "cost_usd", "tool_calls")


@dataclass
class Reservation:
    """What one call holds until it is settled."""

    kind: Quantity
    amount: float
    what: str
    settled: bool = False


@dataclass
class ModelHold:
    """What one model call holds: its tokens and, where a cost limit exists, its cost."""

    budget: Budget
    tokens: Reservation
    cost: Reservation | None


class _Pool:
    """One quantity at one level: limit (None: unbounded), used, held by in-flight spends."""

    __slots__ = ("held", "limit", "used")

    def __init__(self, limit: float | None) -> None:
        self.limit, self.used, self.held = limit, 0.0, 0.0

    def room(self) -> float:
        return float("inf") if self.limit is None else self.limit - self.used - self.held


class Budget:
    """A node in the budget tree. Use `root`, then `child` per node; `close` when done."""

    def __init__(self, *, scope: str, emit: Emitter, clock: Clock, parent: Budget | None = None,
                 limits: dict[str, float | None] | None = None, depth: int = 0,
                 max_depth: int = 0, deadline: float | None = None) -> None:
        self.scope, self.parent, self.depth, self.max_depth = scope, parent, depth, max_depth
        self._emit, self.clock, self.deadline = emit, clock, deadline
        limits = limits or {}
        #: prepaid quantities have a pool here; others pass through to the parent
        self.pools = {k: _Pool(limits[k]) for k in QUANTITIES if k in limits}
        self.used = {k: 0.0 for k in QUANTITIES}
        self._open_holds: list[ModelHold] = []
        self.closed = False

    @classmethod
    def root(cls, spec: BudgetSpec, *, emit: Emitter, clock: Clock) -> Budget:
        deadline = clock.monotonic() + spec.wall_seconds if spec.wall_seconds else None
        return cls(scope="run", emit=emit, clock=clock, max_depth=spec.max_depth,
                   deadline=deadline, limits={"tokens": spec.tokens, "cost_usd": spec.cost_usd,
                                              "tool_calls": spec.tool_calls})

    def restore(self, spent: dict[Quantity, float], elapsed_s: float = 0.0) -> None:
        """A resumed run's root: what the run spent before stays spent (tokens, cost, tool
        calls), and its wall clock counts the time it already ran."""
        for kind, amount in spent.items():
            self.used[kind] += amount
            pool = self.pools.get(kind)
            if pool is not None:
                pool.used += amount
        if self.deadline is not None:
            self.deadline -= elapsed_s

    # -- the tree -----------------------------------------------------------------------------

    def child(self, scope: str, share: NodeBudget | None = None, *, spawn: bool = False) -> Budget:
        """A budget for a node (or, with `spawn`, a sub-planner one level deeper).

        A share in the plan is reserved from this budget now (BudgetExceeded if it does not fit).
        """
        depth = self.depth + 1 if spawn else self.depth
        if depth > self.max_depth:
            self._refuse("max_depth", self.max_depth, depth, scope)
        limits: dict[str, float | None] = {}
        deadline = self.deadline
        if share is not None:
            for kind in QUANTITIES:
                amount = getattr(share, kind)
                if amount is not None:
                    self._hold(kind, float(amount), f"share of {scope}")
                    limits[kind] = float(amount)
            if share.wall_seconds is not None:
                mine = self.clock.monotonic() + share.wall_seconds
                deadline = mine if deadline is None else min(deadline, mine)
        if deadline is not None and self.clock.monotonic() >= deadline:
            self._refuse("wall_seconds", deadline, None, scope)
        return Budget(scope=scope, emit=self._emit, clock=self.clock, parent=self, limits=limits,
                      depth=depth, max_depth=self.max_depth, deadline=deadline)

    def close(self) -> None:
        """Return what a prepaid share did not use to the parent (idempotent)."""
        if self.closed:
            return
        self.closed = True
        for hold in list(self._open_holds):  # a model call that never came back: nothing used
            self.release_model(hold)
        if self.parent is None:
            return
        for kind, pool in self.pools.items():
            assert pool.limit is not None
            self.parent._settle_amount(kind, pool.limit, pool.used, f"share of {self.scope}")

    def remaining_seconds(self) -> float | None:
        return None if self.deadline is None else self.deadline - self.clock.monotonic()

    # -- reserve / settle ---------------------------------------------------------------------

    def reserve(self, kind: Quantity, amount: float, what: str) -> Reservation:
        """Hold `amount` of `kind` at every level up to a prepaid pool, or raise BudgetExceeded."""
        self._hold(kind, amount, what)
        return Reservation(kind, amount, what)

    def settle(self, res: Reservation, actual: float) -> None:
        """Turn a hold into use: `actual` is what was spent (the rest is returned)."""
        if res.settled:
            return
        res.settled = True
        self._settle_amount(res.kind, res.amount, actual, res.what)

    def _levels(self, kind: Quantity) -> list[Budget]:
        """This budget and its ancestors up to (including) the first that prepaid `kind`."""
        out: list[Budget] = []
        level: Budget | None = self
        while level is not None:
            out.append(level)
            if kind in level.pools:
                break
            level = level.parent
        return out

    def _hold(self, kind: Quantity, amount: float, what: str) -> None:
        levels = self._levels(kind)
        limited = [b for b in levels if kind in b.pools and b.pools[kind].limit is not None]
        for level in limited:
            pool = level.pools[kind]
            # a zero-size hold (a model call's cost, unknown before the answer) still needs room
            if amount > pool.room() or pool.room() <= 0:
                assert pool.limit is not None
                self._emit("budget.exceeded", {"budget": kind, "scope": level.scope,
                                               "limit": pool.limit, "used": pool.used,
                                               "held": pool.held, "requested": amount,
                                               "what": what}, node_id=self._node())
                raise BudgetExceeded(kind, pool.limit, amount,
                                     f"budget {kind!r} of {level.scope} exhausted: {what} needs "
                                     f"{amount:g}, {max(pool.room(), 0):g} of {pool.limit:g} left")
        for level in levels:
            if kind in level.pools:
                level.pools[kind].held += amount
        if limited:
            pool = limited[-1].pools[kind]
            self._emit("budget.reserved", {"budget": kind, "scope": self.scope, "amount": amount,
                                           "what": what, "room": pool.room()}, node_id=self._node())

    def _settle_amount(self, kind: Quantity, held: float, actual: float, what: str) -> None:
        levels = self._levels(kind)
        limited = False
        for level in levels:
            level.used[kind] += actual
            pool = level.pools.get(kind)
            if pool is not None:
                pool.held -= held
                pool.used += actual
                limited = limited or pool.limit is not None
        if limited:
            self._emit("budget.released", {"budget": kind, "scope": self.scope, "held": held,
                                           "used": actual, "returned": held - actual,
                                           "what": what}, node_id=self._node())

    def _refuse(self, kind: str, limit: float, requested: float | None, scope: str) -> None:
        self._emit("budget.exceeded", {"budget": kind, "scope": scope, "limit": limit,
                                       "requested": requested}, node_id=self._node())
        raise BudgetExceeded(kind, limit, requested,
                             f"budget {kind!r} exhausted for {scope} (limit {limit:g})")

    def _node(self) -> str | None:
        return None if self.parent is None else self.scope

    # -- model and tool calls ----------------------------------------------------------------

    def reserve_model(self, tokens: int, cost_usd: float) -> ModelHold:
        """Before a model call: hold its largest possible `tokens` (prompt + max output) and
        `cost_usd`; raises `BudgetExceeded` (and holds nothing) if either does not fit."""
        held = self.reserve("tokens", float(tokens), "model call")
        cost = None
        try:
            if cost_usd or self._has_limit("cost_usd"):
                cost = self.reserve("cost_usd", cost_usd, "model call")
        except BudgetExceeded:
            self.settle(held, 0.0)
            raise
        hold = ModelHold(self, held, cost)
        self._open_holds.append(hold)
        return hold

    def settle_model(self, hold: ModelHold, usage: Usage, cost_usd: float) -> None:
        """After the call: what it really used replaces what it held."""
        self._forget(hold)
        self.settle(hold.tokens, float(usage.input_tokens + usage.output_tokens))
        if hold.cost is not None:
            self.settle(hold.cost, cost_usd)
        else:
            self._settle_amount("cost_usd", 0.0, cost_usd, "model call")

    def release_model(self, hold: ModelHold) -> None:
        """The call failed before an answer: give its hold back."""
        self._forget(hold)
        self.settle(hold.tokens, 0.0)
        if hold.cost is not None:
            self.settle(hold.cost, 0.0)

    def _forget(self, hold: ModelHold) -> None:
        if hold in self._open_holds:
            self._open_holds.remove(hold)

    def reserve_tool(self) -> None:
        """Before a tool call: one call of the tool_calls budget, spent at once."""
        self.settle(self.reserve("tool_calls", 1.0, "tool call"), 1.0)

    # The awaitable doors the agent loop and the model layer use. Here they hold at once (no
    # await between check and hold); a budget kept elsewhere (a Ray worker's, whose pools live
    # in the driver) overrides them with a round trip to where the pools are.

    async def acquire_model(self, tokens: int, cost_usd: float) -> ModelHold:
        """`reserve_model`, awaitable."""
        return self.reserve_model(tokens, cost_usd)

    async def acquire_tool(self) -> None:
        """`reserve_tool`, awaitable."""
        self.reserve_tool()

    def limits_model_calls(self) -> bool:
        """Whether a token or cost limit applies to model calls made from here."""
        return self._has_limit("tokens") or self._has_limit("cost_usd")

    def limits_tool_calls(self) -> bool:
        """Whether a tool_calls limit applies to tool calls made from here."""
        return self._has_limit("tool_calls")

    def _has_limit(self, kind: Quantity) -> bool:
        return any(kind in b.pools and b.pools[kind].limit is not None for b in self._levels(kind))
