"""The one owner of usage and cost: every model call of a run is counted here, exactly once.

The model layer records each answered call at the one point every call passes
(`agentkit.models.managed.ManagedModel`), keyed by the node that made it, before any agent,
node attempt or consensus sample can fail. Results, budgets' reports, the progress display and
traces read from here; nothing else sums usage. So a call that was billed and then lost (its
node attempt failed, its sample was outvoted, the run was cancelled) is still in the totals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agentkit.messages import Usage

__all__ = ["RunUsage", "UsageLine"]


@dataclass
class UsageLine:
    """Usage, cost and call count of one slice of a run (a node, a model, the whole run)."""

    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    calls: int = 0

    def add(self, usage: Usage, cost_usd: float, calls: int = 1) -> None:
        self.usage = self.usage + usage
        self.cost_usd += cost_usd
        self.calls += calls


class RunUsage:
    """Totals of one run: overall, per node (``None`` = outside any node) and per model."""

    def __init__(self) -> None:
        self.total = UsageLine()
        self.by_node: dict[str | None, UsageLine] = {}
        self.by_model: dict[str, UsageLine] = {}

    def record(self, *, node_id: str | None, model: str, usage: Usage, cost_usd: float,
               calls: int = 1) -> None:
        """Count one answered model call (called once per response, by the model layer; a
        resumed run restores the calls its ledger recorded, several at once)."""
        self.total.add(usage, cost_usd, calls)
        self.by_node.setdefault(node_id, UsageLine()).add(usage, cost_usd, calls)
        self.by_model.setdefault(model, UsageLine()).add(usage, cost_usd, calls)

    def node(self, node_id: str | None) -> UsageLine:
        """What `node_id` spent so far (an empty line if it made no call)."""
        return self.by_node.get(node_id) or UsageLine()
