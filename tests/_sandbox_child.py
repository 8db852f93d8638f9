"""A run that holds sandboxes and waits to be killed (used by test_sandbox_lifecycle).

Starts a runtime with `run_code` and a warm pool of one, runs one real call, waits until both
containers (the agent's and the warm one) are up, prints ``ready <run id>`` and then blocks
reading stdin until the test kills it with SIGKILL.
"""

from __future__ import annotations

import asyncio
import sys

from sandbox_helpers import make_runtime, run_code

from agentkit.events import Event


class Watch(list[Event]):
    def __init__(self) -> None:
        super().__init__()
        self.both_up = asyncio.Event()

    def append(self, event: Event) -> None:
        super().append(event)
        if sum(e.kind == "sandbox.created" for e in self) >= 2:
            self.both_up.set()


async def main() -> None:
    events = Watch()
    rt = make_runtime(events, pool_size=1)
    out = await run_code(rt, code="print('up')")
    assert out.data["stdout"] == "up\n", out.data
    await events.both_up.wait()
    print("ready", rt.run_id, flush=True)
    await asyncio.to_thread(sys.stdin.read)  # killed here


if __name__ == "__main__":
    asyncio.run(main())
