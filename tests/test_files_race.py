"""The file tools under a symlink race: a thread swaps a workspace folder for a symbolic link
to an outside folder and back, 3,000 times, while read_file, write_file and list_files run.

Before the tools walked paths from a workspace descriptor, a check-then-open let reads see
the outside file and writes land outside (158 of 3,000 reads and 39 writes in the red-team
run). Each call here goes through the real tool (`invoke_tool`, real threads, real files).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

from agentkit.errors import ToolError
from agentkit.runtime import Runtime
from agentkit.task import ModelSpec, TaskSpec
from agentkit.tools import invoke_tool

SWAPS = 3000
INSIDE, OUTSIDE = "inside\n", "OUTSIDE SECRET\n"


def swap_forever(ws: Path, outside: Path, swaps: int, started: threading.Event,
                 done: threading.Event, counter: list[int]) -> None:
    """`ws/d` is a real folder, then a link to `outside`, then the folder again: one swap.
    write_file may re-create `d` while the folder is parked (it makes parent folders); such a
    folder is moved aside so the swap can go on."""
    real, parked = ws / "d", ws / ".d-parked"
    junk = 0

    def place(step: Callable[[], None]) -> None:
        nonlocal junk
        while True:
            try:
                return step()
            except OSError:  # `d` was re-created in between: move it out of the way
                junk += 1
                with contextlib.suppress(FileNotFoundError):
                    os.rename(real, ws / f".junk-{junk}")

    started.set()
    try:
        for _ in range(swaps):
            os.rename(real, parked)
            place(lambda: os.symlink(outside, real))
            os.unlink(real)
            place(lambda: os.rename(parked, real))
            counter[0] += 1
    finally:
        done.set()


async def test_no_read_or_write_escapes_while_a_folder_is_swapped_for_a_symlink(tmp_path: Path) -> None:
    """Proves: 0 outside reads, 0 outside listings and 0 outside writes over 3,000
    folder<->symlink swaps, and the race was really run (calls overlapped the swaps: some
    saw the link and were refused, some saw the folder and worked)."""
    ws, outside = tmp_path / "ws", tmp_path / "outside"
    (ws / "d").mkdir(parents=True)
    outside.mkdir()
    (ws / "d" / "f.txt").write_text(INSIDE)
    (outside / "f.txt").write_text(OUTSIDE)
    (outside / "marker").write_text("only outside")
    task = TaskSpec(name="race", goal="g", model="m", models={"m": ModelSpec(model="x")},
                    tools=["read_file", "write_file", "list_files"])
    rt = Runtime(task, workspace=ws)
    ctx = rt.tool_context(node_id="n", call_id="c")
    read, write, listing = (rt.tools.get(n) for n in ("read_file", "write_file", "list_files"))

    started, done, swaps = threading.Event(), threading.Event(), [0]
    swapper = threading.Thread(target=swap_forever, args=(ws, outside, SWAPS, started, done, swaps))
    outcomes = {"read_ok": 0, "read_outside": 0, "write_ok": 0, "list_ok": 0, "list_outside": 0,
                "refused": 0}
    swapper.start()
    started.wait()
    n = 0
    while not done.is_set():
        n += 1
        try:
            out = await invoke_tool(read, {"path": "d/f.txt"}, ctx)
            outcomes["read_outside" if OUTSIDE in out.content else "read_ok"] += 1
        except ToolError:
            outcomes["refused"] += 1
        try:
            await invoke_tool(write, {"path": f"d/w{n % 50}.txt", "content": "x"}, ctx)
            outcomes["write_ok"] += 1
        except ToolError:
            outcomes["refused"] += 1
        try:
            out = await invoke_tool(listing, {"path": "d"}, ctx)
            outcomes["list_outside" if "marker" in out.content else "list_ok"] += 1
        except ToolError:
            outcomes["refused"] += 1
        await asyncio.sleep(0)
    swapper.join()
    written_outside = sorted(p.name for p in outside.iterdir() if p.name not in ("f.txt", "marker"))
    print(f"swaps={swaps[0]} calls={3 * n} {outcomes} written_outside={len(written_outside)}")
    assert swaps[0] == SWAPS
    assert outcomes["read_outside"] == 0 and outcomes["list_outside"] == 0, outcomes
    assert written_outside == [], f"{len(written_outside)} writes landed outside"
    assert (outside / "f.txt").read_text() == OUTSIDE
    # the race was exercised: calls ran both while `d` was the link and while it was a folder
    worked = outcomes["read_ok"] + outcomes["write_ok"] + outcomes["list_ok"]
    assert outcomes["refused"] > 0 and worked > 0, outcomes
