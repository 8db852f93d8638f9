"""agentkit: a planner on a reasoning model splits a task into a DAG; sub-agents run each node
in parallel with tools (search, fetch, sandboxed code, files); every step is audited.

    from agentkit import load_task, run_sync
    result = run_sync(load_task("task.yaml"))

The public surface is what `__all__` lists; everything else is private. Tools, the swarm, the
sandboxes and the test doubles have their own public modules: `agentkit.tools`,
`agentkit.swarm`, `agentkit.sandboxes`, `agentkit.testing`.
"""

from agentkit._version import __version__
from agentkit.agent import Agent, AgentResult
from agentkit.audit import Ledger, verify_ledger
from agentkit.budget import Budget
from agentkit.errors import (
    AgentkitError,
    BudgetExceeded,
    ConfigError,
    DivergenceError,
    PlanError,
    ProviderError,
    ReplayMiss,
    RunCancelled,
    RunFailed,
    SandboxError,
    SetupError,
    TaskFileError,
    ToolError,
    UserError,
)
from agentkit.events import Event, EventBus, EventKind
from agentkit.messages import Message, ReasoningPart, TextPart, ToolCallPart, ToolResultPart, Turn, Usage
from agentkit.models import ChatModel, ModelSettings
from agentkit.resume import replay, resume
from agentkit.retry import RetryPolicy
from agentkit.run import Run, RunError, RunResult, arun, run_sync, start
from agentkit.runtime import Runtime
from agentkit.task import TaskSpec, load_task
from agentkit.tools import tool
from agentkit.usage import RunUsage

__all__ = [
    "Agent",
    "AgentResult",
    "AgentkitError",
    "Budget",
    "BudgetExceeded",
    "ChatModel",
    "ConfigError",
    "DivergenceError",
    "Event",
    "EventBus",
    "EventKind",
    "Ledger",
    "Message",
    "ModelSettings",
    "PlanError",
    "ProviderError",
    "ReasoningPart",
    "ReplayMiss",
    "RetryPolicy",
    "Run",
    "RunCancelled",
    "RunError",
    "RunFailed",
    "RunResult",
    "RunUsage",
    "Runtime",
    "SandboxError",
    "SetupError",
    "TaskFileError",
    "TaskSpec",
    "TextPart",
    "ToolCallPart",
    "ToolError",
    "ToolResultPart",
    "Turn",
    "Usage",
    "UserError",
    "__version__",
    "arun",
    "load_task",
    "replay",
    "resume",
    "run_sync",
    "start",
    "tool",
    "verify_ledger",
]
