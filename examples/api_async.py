"""Run a task from Python: stream its events as they happen, cancel it, read the typed result.

    export DEEPSEEK_API_KEY=...
    python examples/api_async.py examples/research.yaml [--max-seconds 120]

`start()` returns at once with a `Run` handle; `run.events()` yields every event (the same
stream the audit ledger records), from `run.started` to `run.finished`; `run.cancel()` stops
every sub-agent, HTTP stream and sandbox container, and `await run.result()` then returns a
`RunResult` with status "cancelled". Nothing here is global: call `start()` as often as you like.
"""

from __future__ import annotations

import argparse
import asyncio

from agentkit.swarm import RunResult, start
from agentkit.task import load_task


async def main(path: str, max_seconds: float) -> RunResult:
    task = load_task(path)  # or build a TaskSpec(...) in code
    run = start(task, ledger_dir="runs")
    # cancel after max_seconds; the event stream continues to run.finished, then ends
    timer = asyncio.get_running_loop().call_later(max_seconds, run.cancel)
    async for event in run.events():
        if event.kind in ("node.started", "node.finished", "node.failed", "node.skipped"):
            print(f"{event.kind:<14} {event.node_id}")
        elif event.kind == "tool.call":
            print(f"  {event.node_id}: {event.data['tool']}({event.data.get('arguments')})")
        elif event.kind == "plan.created":
            print(f"plan: {len(event.data['nodes'])} nodes, critical path "
                  f"{' -> '.join(event.data['critical_path'])}")
    timer.cancel()
    result = await run.result()
    print(f"\nstatus: {result.status}  cost: ${result.cost_usd:.4f}  "
          f"tokens: {result.usage.input_tokens} in / {result.usage.output_tokens} out")
    print(result.answer or result.error)
    for c in result.citations:
        print(f"  [{c.url}] sha256 {c.content_hash}")
    print(f"ledger: {result.ledger}  (verify: agentkit audit verify {result.ledger})")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("task")
    parser.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args()
    asyncio.run(main(args.task, args.max_seconds))
