"""The plan's data shape, shared by task files (`TaskSpec.plan`) and the swarm.

Shape: ``{"nodes": [{"id", "goal", "depends_on": [ids], "tools": [names], "model"?, "budget"?}]}``.
It lives in the core (not in `agentkit.swarm`) so that `agentkit.task` does not import the
swarm package; users import these names from `agentkit.swarm`, and validation of the graph is
`agentkit.swarm.plan.validate_plan`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["NodeBudget", "Plan", "PlanNode"]


class _PlanModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeBudget(_PlanModel):
    """A node's share of the run's budget (absent fields: an even share of what is left)."""

    tokens: int | None = Field(default=None, ge=1)
    cost_usd: float | None = Field(default=None, ge=0)
    tool_calls: int | None = Field(default=None, ge=0)
    wall_seconds: float | None = Field(default=None, gt=0)


class PlanNode(_PlanModel):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    goal: str = Field(min_length=1, max_length=20_000)
    depends_on: list[str] = Field(default_factory=list, max_length=100)
    tools: list[str] = Field(default_factory=list, max_length=20)
    expected_output: str | None = Field(default=None, max_length=5_000)
    model: str | None = None
    role: str | None = None
    budget: NodeBudget | None = None


class Plan(_PlanModel):
    nodes: list[PlanNode] = Field(min_length=1, max_length=1000)
