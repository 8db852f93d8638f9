"""Workspace file tools: confinement (no escape by '..', absolute path or symlink), size caps,
and a unified diff with before/after SHA-256 in the ledger for every write."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from agentkit.errors import ToolError
from agentkit.events import Event
from agentkit.runtime import Runtime
from agentkit.task import FilesSettings, ModelSpec, TaskSpec
from agentkit.tools import _workspace, build_registry, invoke_tool


def make_runtime(tmp_path: Path, events: list[Event], **files: int) -> Runtime:
    task = TaskSpec(name="t", goal="g", model="m", models={"m": ModelSpec(model="x")},
                    tools=["read_file", "write_file", "list_files"],
                    files=FilesSettings(**files))
    ws = tmp_path / "ws"
    ws.mkdir()
    return Runtime(task, workspace=ws, sinks=[events.append])


async def call(rt: Runtime, name: str, **args: object) -> str:
    out = await invoke_tool(rt.tools.get(name), dict(args), rt.tool_context(node_id="n", call_id="c"))
    return out.content


async def test_write_records_unified_diff_with_hashes(tmp_path: Path) -> None:
    events: list[Event] = []
    rt = make_runtime(tmp_path, events)
    await call(rt, "write_file", path="notes/a.txt", content="one\ntwo\n")
    await call(rt, "write_file", path="notes/a.txt", content="one\nthree\n")
    assert (rt.workspace / "notes/a.txt").read_text() == "one\nthree\n"
    diffs = [e for e in events if e.kind == "file.diff"]
    assert [d.data["created"] for d in diffs] == [True, False]
    second = diffs[1].data
    assert second["before_sha256"] == hashlib.sha256(b"one\ntwo\n").hexdigest()
    assert second["after_sha256"] == hashlib.sha256(b"one\nthree\n").hexdigest()
    assert "-two\n" in second["diff"] and "+three\n" in second["diff"]
    assert second["diff"].startswith("--- a/notes/a.txt\n+++ b/notes/a.txt\n")
    assert diffs[0].data["diff"].startswith("--- /dev/null\n")
    assert diffs[1].node_id == "n"


async def test_read_and_list_inside_workspace(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, [])
    (rt.workspace / "d").mkdir()
    (rt.workspace / "d" / "f.txt").write_text("hello")
    assert await call(rt, "read_file", path="d/f.txt") == "hello"
    listing = await call(rt, "list_files", recursive=True)
    assert listing.splitlines() == ["d/", "d/f.txt (5 bytes)"]


async def test_a_small_folder_is_listed_on_the_event_loop(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Proves: list_files of a small folder makes no hop to a worker thread; a folder over the
    size limit and a recursive listing do; the folder's listing is the same either way."""
    rt = make_runtime(tmp_path, [])
    (rt.workspace / "d").mkdir()
    (rt.workspace / "d" / "f.txt").write_text("hello")
    (rt.workspace / "g.txt").write_text("x")
    hops: list[str] = []
    to_thread = asyncio.to_thread

    async def counted(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        hops.append(fn.__name__)
        return await to_thread(fn, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    small = await call(rt, "list_files")
    assert (small, hops) == ("d/\ng.txt (1 bytes)", [])
    assert await call(rt, "list_files", recursive=True) == "d/\ng.txt (1 bytes)\nd/f.txt (5 bytes)"
    assert hops == ["listing"]
    monkeypatch.setattr(_workspace, "SMALL_FOLDER_BYTES", -1)  # every folder is large now
    assert await call(rt, "list_files") == small
    assert await call(rt, "list_files", path="d") == "d/f.txt (5 bytes)"
    assert hops == ["listing"] * 3


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/passwd", "~/.ssh/id_rsa"])
async def test_escapes_are_refused(tmp_path: Path, path: str) -> None:
    rt = make_runtime(tmp_path, [])
    for tool, args in (("read_file", {"path": path}), ("write_file", {"path": path, "content": "x"})):
        with pytest.raises(ToolError) as info:
            await call(rt, tool, **args)
        assert info.value.code == "blocked"
    assert not (tmp_path / "x").exists()


async def test_symlink_pointing_outside_is_refused(tmp_path: Path) -> None:
    events: list[Event] = []
    rt = make_runtime(tmp_path, events)
    outside = tmp_path / "secret.txt"
    outside.write_text("top secret")
    os.symlink(outside, rt.workspace / "link.txt")
    os.symlink(tmp_path, rt.workspace / "linkdir")
    for path in ("link.txt", "linkdir/secret.txt"):
        with pytest.raises(ToolError) as info:
            await call(rt, "read_file", path=path)
        assert info.value.code == "blocked"
        with pytest.raises(ToolError):
            await call(rt, "write_file", path=path, content="pwned")
    with pytest.raises(ToolError):
        await call(rt, "list_files", path="linkdir")
    assert outside.read_text() == "top secret"
    assert not [e for e in events if e.kind == "file.diff"]


async def test_symlink_inside_workspace_is_allowed(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, [])
    (rt.workspace / "real.txt").write_text("data")
    os.symlink("real.txt", rt.workspace / "alias.txt")
    assert await call(rt, "read_file", path="alias.txt") == "data"


async def test_size_caps(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, [], max_read_bytes=4, max_write_bytes=8)
    with pytest.raises(ToolError) as info:
        await call(rt, "write_file", path="big.txt", content="123456789")
    assert info.value.code == "too_large"
    (rt.workspace / "r.txt").write_text("abcdefghij")
    first = await call(rt, "read_file", path="r.txt")
    assert first.startswith("abcd\n[truncated") and "offset=4" in first
    assert (await call(rt, "read_file", path="r.txt", offset=8)) == "ij"


async def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, [])
    with pytest.raises(ToolError) as info:
        await call(rt, "read_file", path="nope.txt")
    assert info.value.code == "not_found"


def test_registry_knows_the_file_tools() -> None:
    reg = build_registry(["read_file", "write_file", "list_files"])
    assert reg.names() == ["list_files", "read_file", "write_file"]
    assert reg.get("write_file").side_effects and not reg.get("read_file").side_effects


async def test_links_inside_are_followed_by_hand_and_links_out_are_refused(tmp_path: Path) -> None:
    """Proves: a link whose target stays inside (even through '..') works for read, write
    and list; one that climbs above the workspace or is absolute is refused as `blocked`."""
    rt = make_runtime(tmp_path, [])
    ws = rt.workspace
    (ws / "a" / "b").mkdir(parents=True)
    (ws / "top.txt").write_text("top")
    os.symlink("../../top.txt", ws / "a" / "b" / "up.txt")  # inside, through '..'
    os.symlink("b", ws / "a" / "bee")                        # a folder link, inside
    os.symlink("../../..", ws / "a" / "b" / "out")           # climbs above the workspace
    os.symlink(str(tmp_path), ws / "abs")                    # absolute
    assert await call(rt, "read_file", path="a/b/up.txt") == "top"
    await call(rt, "write_file", path="a/bee/new/deep.txt", content="made")
    assert (ws / "a" / "b" / "new" / "deep.txt").read_text() == "made"
    assert "a/bee/new/" in await call(rt, "list_files", path="a/bee")
    for path in ("a/b/out/x.txt", "abs/x.txt", "a/b/out"):
        with pytest.raises(ToolError) as info:
            await call(rt, "write_file", path=path, content="x")
        assert info.value.code == "blocked", path
    assert not (tmp_path / "x.txt").exists()


async def test_special_files_are_refused_without_blocking(tmp_path: Path) -> None:
    """Proves: a FIFO in the workspace is refused at once (opening it for reading would wait
    forever for a writer), and so is the workspace folder itself as a file."""
    rt = make_runtime(tmp_path, [])
    os.mkfifo(rt.workspace / "pipe")
    for tool, args in (("read_file", {"path": "pipe"}), ("write_file", {"path": "pipe", "content": "x"}),
                       ("read_file", {"path": "."})):
        with pytest.raises(ToolError) as info:
            await call(rt, tool, **args)
        assert info.value.code in ("io_error", "is_directory"), info.value


async def test_no_descriptor_is_leaked_on_any_outcome(tmp_path: Path) -> None:
    """Proves: 50 rounds of calls that succeed, miss, escape, hit a protected folder and end
    on a folder leave the process with exactly as many open descriptors as before."""
    events: list[Event] = []
    rt = make_runtime(tmp_path, events)
    (rt.workspace / "runs").mkdir()
    os.symlink("/etc", rt.workspace / "out")
    ctx = dataclasses.replace(rt.tool_context(call_id="c"), protected=(rt.workspace / "runs",))
    calls: list[tuple[str, dict[str, object]]] = [
             ("write_file", {"path": "a/b.txt", "content": "x"}), ("read_file", {"path": "a/b.txt"}),
             ("read_file", {"path": "nope"}), ("read_file", {"path": "out/passwd"}),
             ("write_file", {"path": "runs/x", "content": "x"}), ("read_file", {"path": "a"}),
             ("list_files", {"path": "a", "recursive": True}), ("list_files", {"path": "runs"})]
    await invoke_tool(rt.tools.get("list_files"), {}, ctx)  # warm up the worker threads
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        for name, args in calls:
            try:
                await invoke_tool(rt.tools.get(name), dict(args), ctx)
            except ToolError:
                pass
    assert len(os.listdir("/proc/self/fd")) == before
