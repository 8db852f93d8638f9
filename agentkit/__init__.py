"""agentkit: a planner on a reasoning model splits a task into a DAG; sub-agents run each node
in parallel with tools (search, fetch, sandboxed code, files); every step is audited.

The public surface is what `__all__` lists; everything else is private.
"""

from agentkit.errors import (
    AgentkitError,
    BudgetExceeded,
    ConfigError,
    ProviderError,
    RunCancelled,
    RunFailed,
    SandboxError,
    SetupError,
    TaskFileError,
    ToolError,
    UserError,
)
from agentkit.events import Event, EventBus
from agentkit.messages import Message, ReasoningPart, TextPart, ToolCallPart, ToolResultPart, Turn, Usage
from agentkit.runtime import Runtime
from agentkit.task import TaskSpec

__version__ = "0.1.0"

__all__ = [
    "AgentkitError",
    "BudgetExceeded",
    "ConfigError",
    "Event",
    "EventBus",
    "Message",
    "ProviderError",
    "ReasoningPart",
    "RunCancelled",
    "RunFailed",
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
]
