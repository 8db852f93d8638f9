"""Tools agents can call: web search, web fetch, code in a sandbox, workspace files, your own
Python functions (`tool`) and the tools of MCP servers (`agentkit.tools.mcp`, ``[mcp]`` extra).

Users import from here: the `tool` decorator and the `Tool` base class to write their own, and
the registry helpers. Built-in tools are found by name through `BUILTIN_TOOLS` ("module:Class",
imported lazily so that importing agentkit never imports docker or trafilatura).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from agentkit.tools.base import Tool, ToolArgs, ToolContext, ToolOutput, ToolRegistry, invoke_tool
from agentkit.tools.function import FunctionTool, load_reference, tool

__all__ = [
    "BUILTIN_TOOLS",
    "FunctionTool",
    "Tool",
    "ToolArgs",
    "ToolContext",
    "ToolOutput",
    "ToolRegistry",
    "build_registry",
    "default_registry",
    "invoke_tool",
    "load_reference",
    "tool",
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
