"""Tools agents can call: web search, web fetch, code in a sandbox, workspace files.

Users import from here: the `Tool` base class to write their own, and the registry helpers.
Built-in tools are found by name through `BUILTIN_TOOLS` ("module:Class", imported lazily so
that importing agentkit never imports docker or trafilatura).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from agentkit.tools.base import Tool, ToolArgs, ToolContext, ToolOutput, ToolRegistry, invoke_tool

__all__ = [
    "BUILTIN_TOOLS",
    "Tool",
    "ToolArgs",
    "ToolContext",
    "ToolOutput",
    "ToolRegistry",
    "build_registry",
    "default_registry",
    "invoke_tool",
]

BUILTIN_TOOLS: dict[str, str] = {
    "web_search": "agentkit.tools.web_search:WebSearch",
    "web_fetch": "agentkit.tools.web_fetch:WebFetch",
    "run_code": "agentkit.tools.run_code:RunCode",
    "read_file": "agentkit.tools.files:ReadFile",
    "write_file": "agentkit.tools.files:WriteFile",
    "list_files": "agentkit.tools.files:ListFiles",
}


def _load(target: str) -> Tool:
    module, _, cls = target.partition(":")
    tool: Tool = getattr(importlib.import_module(module), cls)()
    return tool


def build_registry(names: Iterable[str]) -> ToolRegistry:
    """A registry with the named built-in tools (unknown names raise KeyError)."""
    return ToolRegistry(_load(BUILTIN_TOOLS[n]) for n in names)


def default_registry() -> ToolRegistry:
    """Every built-in tool."""
    return build_registry(BUILTIN_TOOLS)
