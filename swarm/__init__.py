"""The swarm: a planner splits a task into a DAG, sub-agents run each node as soon as its
inputs exist, a synthesizer writes the cited answer. Also the run API (`start`, `arun`,
`run_sync`) used for both swarm and single-agent tasks.

    result = await arun("task.yaml")          # or run_sync(...) in a script
    run = start(task); async for ev in run.events(): ...; run.cancel()

The public surface is what `__all__` lists; modules starting with ``_`` and everything else
are private.
"""

from agentkit.swarm.budget import Budget
from agentkit.swarm.plan import NodeBudget, Plan, PlanError, PlanGraph, PlanNode, validate_plan
from agentkit.swarm.run import Run, RunResult, UsageTotals, arun, run_sync, start
from agentkit.swarm.scheduler import NodeExecutor, NodeOutput, NodeResult, Scheduler
from agentkit.swarm.synthesize import Citation

__all__ = [
    "Budget",
    "Citation",
    "NodeBudget",
    "NodeExecutor",
    "NodeOutput",
    "NodeResult",
    "Plan",
    "PlanError",
    "PlanGraph",
    "PlanNode",
    "Run",
    "RunResult",
    "Scheduler",
    "UsageTotals",
    "arun",
    "run_sync",
    "start",
    "validate_plan",
]
