"""Workspace file tools: read_file, write_file, list_files.

Every path is relative to the run's workspace and must stay inside it. A path is refused when
it is absolute or contains ``..``; it is then walked one component at a time from the
workspace's folder descriptor with ``O_NOFOLLOW`` (`agentkit.tools._workspace`), so a folder
swapped for a symbolic link mid-call cannot lead outside, and links are followed only while
they stay inside. Folders in `ToolContext.protected` (the audit ledger and its blobs) are
refused by identity, whatever the spelling. Sizes are capped by the task's ``files``
settings. Every write records a unified diff with the SHA-256 of the file before and after as
a ``file.diff`` event, so the ledger shows exactly what an agent changed; the "before" is read
from the very file that is then written.
"""

from __future__ import annotations

import asyncio
import difflib
import errno
import hashlib
from typing import Any

from pydantic import Field

from agentkit.errors import ToolError
from agentkit.tools._workspace import Workspace
from agentkit.tools.base import Tool, ToolArgs, ToolContext, ToolOutput

__all__ = ["ListFiles", "ReadFile", "WriteFile", "read_workspace_file"]

#: largest diff kept inline in a file.diff event (the ledger offloads big payloads anyway)
_MAX_DIFF_CHARS = 200_000


def _workspace(ctx: ToolContext, tool: str) -> Workspace:
    return Workspace(ctx.workspace, ctx.protected, tool=tool)


def read_workspace_file(ctx: ToolContext, relative: str, tool: str) -> bytes:
    """The whole content of a workspace file, read as the file tools read (confined, never
    from a protected folder). Blocking. Raises `ToolError` or `OSError`."""
    data, _ = _workspace(ctx, tool).read(relative)
    return data


def _sha256(data: bytes | None) -> str | None:
    return hashlib.sha256(data).hexdigest() if data is not None else None


def _os_error(err: OSError, relative: str, tool: str) -> ToolError:
    if err.errno == errno.ENOENT:
        return ToolError("not_found", f"{relative!r} does not exist; list_files shows what "
                         f"is there", tool=tool)
    if err.errno == errno.EISDIR:
        return ToolError("is_directory", f"{relative!r} is a directory; use list_files",
                         tool=tool)
    if err.errno == errno.ENOTDIR:
        return ToolError("not_a_directory", f"{relative!r}: a part of this path is a file, "
                         f"not a folder", tool=tool)
    if err.errno == errno.ELOOP:
        return ToolError("blocked", f"{relative!r} is a symbolic link", tool=tool)
    return ToolError("io_error", f"{relative!r}: {err.strerror}", tool=tool)


# -- read_file ---------------------------------------------------------------------------------


class ReadFileArgs(ToolArgs):
    path: str = Field(description="File path relative to the workspace")
    offset: int = Field(default=0, ge=0, description="Byte offset to start reading at")


class ReadFile(Tool):
    name = "read_file"
    description = ("Read a text file from the workspace. Large files are returned in pieces: "
                   "call again with the offset the answer gives.")
    args_model = ReadFileArgs
    timeout_s = 30.0
    concurrency_class = "files"

    async def call(self, args: Any, ctx: ToolContext) -> ToolOutput:
        cap = ctx.task.files.max_read_bytes
        ws = _workspace(ctx, self.name)
        try:
            data, size = await asyncio.to_thread(ws.read, args.path, offset=args.offset, limit=cap)
        except OSError as err:
            raise _os_error(err, args.path, self.name) from None
        text = data.decode("utf-8", errors="replace")
        end = args.offset + len(data)
        if end < size:
            text += (f"\n[truncated: showing bytes {args.offset}-{end} of {size}; call "
                     f"read_file with offset={end} for more]")
        return ToolOutput(text, {"path": args.path, "bytes": len(data), "size": size,
                                 "offset": args.offset, "sha256": _sha256(data)})


# -- write_file --------------------------------------------------------------------------------


class WriteFileArgs(ToolArgs):
    path: str = Field(description="File path relative to the workspace")
    content: str = Field(description="The complete new content of the file")


class WriteFile(Tool):
    """Journals its intent (path, sha256 before and after) before it writes. On a resumed run,
    a write that was in flight at the crash is checked against that intent: a file already at
    the after-hash is not rewritten, one at the before-hash is written, anything else is a
    ``conflict`` (someone else changed the file: the model is told, nothing is overwritten)."""

    name = "write_file"
    description = ("Create or replace a text file in the workspace with the given content "
                   "(parent folders are created).")
    args_model = WriteFileArgs
    timeout_s = 30.0
    concurrency_class = "files"
    side_effects = True
    checks_intent = True

    async def call(self, args: Any, ctx: ToolContext) -> ToolOutput:
        new = args.content.encode("utf-8")
        cap = ctx.task.files.max_write_bytes
        if len(new) > cap:
            raise ToolError("too_large", f"content is {len(new)} bytes; the limit is {cap} "
                            f"(files.max_write_bytes)", tool=self.name)
        ws = _workspace(ctx, self.name)
        current, after = await asyncio.to_thread(_sha_of, ws, args.path), _hex(new)
        if ctx.in_flight is not None and self._already_done(ctx, args.path, current, after):
            return ToolOutput(f"{args.path} already holds this content ({len(new)} bytes)",
                              {"path": args.path, "after_sha256": after, "bytes": len(new),
                               "resumed": "already_written"})
        ctx.emit("tool.intent", {"tool": self.name, "call_key": ctx.call_key, "path": args.path,
                                 "before_sha256": current, "after_sha256": after})
        try:
            old = await asyncio.to_thread(ws.replace, args.path, new)
        except OSError as err:
            raise _os_error(err, args.path, self.name) from None
        diff = _unified_diff(args.path, old, new)
        record = {"path": args.path, "created": old is None, "before_sha256": _sha256(old),
                  "after_sha256": after, "bytes": len(new),
                  "diff": diff[:_MAX_DIFF_CHARS], "diff_truncated": len(diff) > _MAX_DIFF_CHARS}
        ctx.emit("file.diff", {**record, "tool": self.name, "call_id": ctx.call_id})
        verb = "created" if old is None else "updated"
        return ToolOutput(f"{verb} {args.path} ({len(new)} bytes)",
                          {k: v for k, v in record.items() if k != "diff"})

    def _already_done(self, ctx: ToolContext, path: str, current: str | None,
                      after: str) -> bool:
        """The resume rule for a write in flight at the crash (see the class docstring)."""
        assert ctx.in_flight is not None
        intent = ctx.in_flight.get("intent")
        if intent is None:  # the crash came before the intent: the file was never touched
            action = "rerun"
        elif current == after:
            action = "already_written"
        elif current == intent.get("before_sha256"):
            action = "rerun"
        else:
            ctx.emit("tool.in_flight", {"tool": self.name, "call_key": ctx.call_key,
                                        "action": "conflict", "path": path, "now_sha256": current,
                                        "intent": intent})
            raise ToolError("conflict", f"{path} changed since this write was started before "
                            f"the run stopped (it is neither the content before nor the content "
                            f"to write); it was not overwritten. Read it and decide",
                            tool=self.name)
        ctx.emit("tool.in_flight", {"tool": self.name, "call_key": ctx.call_key,
                                    "action": action, "path": path})
        return action == "already_written"


def _hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha_of(ws: Workspace, path: str) -> str | None:
    """sha256 of the file's content now (None if there is none)."""
    try:
        return _sha256(ws.read(path)[0])
    except (OSError, ToolError):
        return None


def _unified_diff(name: str, old: bytes | None, new: bytes) -> str:
    before = (old or b"").decode("utf-8", errors="replace").splitlines(keepends=True)
    after = new.decode("utf-8", errors="replace").splitlines(keepends=True)
    lines = difflib.unified_diff(before, after, fromfile="/dev/null" if old is None
                                 else f"a/{name}", tofile=f"b/{name}")
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                   for line in lines)


# -- list_files --------------------------------------------------------------------------------


class ListFilesArgs(ToolArgs):
    path: str = Field(default=".", description="Folder relative to the workspace")
    recursive: bool = Field(default=False, description="Also list sub-folders")


class ListFiles(Tool):
    name = "list_files"
    description = "List files and folders in the workspace (sizes in bytes; folders end in /)."
    args_model = ListFilesArgs
    timeout_s = 30.0
    concurrency_class = "files"
    max_entries = 1000

    async def call(self, args: Any, ctx: ToolContext) -> ToolOutput:
        ws = _workspace(ctx, self.name)
        path = "." if args.path in ("", "./") else args.path
        try:
            # a small folder is listed here, on the event loop; a large one or a tree on a
            # worker thread (see Workspace.small_listing)
            entries = None if args.recursive else ws.small_listing(path)
            if entries is None:
                entries = await asyncio.to_thread(ws.listing, path, recursive=args.recursive,
                                                  max_entries=self.max_entries)
        except OSError as err:
            raise _os_error(err, args.path, self.name) from None
        shown = entries[: self.max_entries]
        text = "\n".join(shown) or "(empty)"
        if len(entries) > len(shown):
            text += f"\n[{len(entries) - len(shown)} more entries not shown]"
        return ToolOutput(text, {"path": args.path, "entries": shown, "count": len(entries)})
