"""How long a stdio MCP server's oversized answer holds up a run: the MCP SDK's stdio client
alone (baseline) against agentkit's launcher, which drops a line over its limit before the
client buffers it.

    python benchmarks/mcp_large_result.py [--mb 10]

The SDK's stdio reader joins each chunk to the line read so far, so a single N MB line costs
O(N^2) copying on the run's event loop (a 50 MB answer took minutes on the development machine).
Through the launcher the same answer is a ``too_large`` error once the server has written it.
Both paths start the same test server (tests/data/mcp/hostile_server.py) and ask it for an
`--mb` megabyte result; the figure is the time from the call to its answer or error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from mcp import Client, MCPError, StdioServerParameters

from agentkit.task import McpServerSpec
from agentkit.tools._mcp_session import LAUNCHER, line_limit

SERVER = Path(__file__).resolve().parents[1] / "tests" / "data" / "mcp" / "hostile_server.py"


async def timed_call(params: StdioServerParameters, mb: int) -> tuple[float, str]:
    async with Client(params) as client:
        started = time.perf_counter()
        try:
            result = await client.call_tool("big", {"mb": mb})
            outcome = f"answer of {sum(len(getattr(c, 'text', '')) for c in result.content):,} chars"
        except MCPError as exc:
            outcome = f"error {exc.code}: {exc.message[:70]}"
        return time.perf_counter() - started, outcome


async def main(mb: int) -> None:
    server = [str(SERVER)]
    direct = StdioServerParameters(command=sys.executable, args=server)
    limit = line_limit(McpServerSpec(command="x"))
    launched = StdioServerParameters(command=sys.executable, args=[
        "-I", "-S", str(LAUNCHER), str(os.getpid()), str(limit), "--", sys.executable, *server])
    base_s, base_out = await timed_call(direct, mb)
    ours_s, ours_out = await timed_call(launched, mb)
    print(f"{mb} MB result, launcher limit {limit:,} bytes")
    print(f"  SDK stdio client alone: {base_s:8.2f} s  ({base_out})")
    print(f"  through the launcher:   {ours_s:8.2f} s  ({ours_out})")
    print(f"  ratio: {base_s / ours_s:.1f}x faster")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=10)
    asyncio.run(main(parser.parse_args().mb))
