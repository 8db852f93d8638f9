"""Test helper: start a Runtime whose task uses the hostile MCP server, print the server's pid
and the pid of a child it started, then wait forever (the test kills this process with -9)."""

from __future__ import annotations

import asyncio
import json
import sys

from agentkit.runtime import Runtime
from agentkit.task import TaskSpec
from agentkit.tools import invoke_tool


async def main() -> None:
    spec = TaskSpec.model_validate(json.loads(sys.argv[1]))
    async with Runtime(spec) as rt:
        await rt.prepare_tools()
        ctx = rt.tool_context()
        server = await invoke_tool(rt.tools.get("h_pid"), {}, ctx)
        child = await invoke_tool(rt.tools.get("h_child"), {}, ctx)
        print(json.dumps([server.data["structured"]["result"], child.data["structured"]["result"]]),
              flush=True)
        await asyncio.Event().wait()


asyncio.run(main())
