"""The swarm: a planner splits a task into a DAG, sub-agents run each node as soon as its
inputs exist, a synthesizer writes the cited answer.

    from agentkit.swarm import Plan, PlanNode, validate_plan, Scheduler

The run API (`start`, `arun`, `run_sync`, `RunResult`) serves swarm and agent tasks alike and
lives in the core: ``from agentkit import start``. The public surface here is what `__all__`
lists; everything else is private.
"""

from agentkit.plan import NodeBudget, Plan, PlanGraph, PlanNode, validate_plan
from agentkit.swarm.engine import PlanSource, SwarmOutcome, run_swarm
from agentkit.swarm.scheduler import (
    NodeExecutor,
    NodeOutput,
    NodeResult,
    Replanner,
    ReplanRequest,
    Scheduler,
)
from agentkit.swarm.synthesize import Citation

__all__ = [
    "Citation",
    "NodeBudget",
    "NodeExecutor",
    "NodeOutput",
    "NodeResult",
    "Plan",
    "PlanGraph",
    "PlanNode",
    "PlanSource",
    "ReplanRequest",
    "Replanner",
    "Scheduler",
    "SwarmOutcome",
    "run_swarm",
    "validate_plan",
]
