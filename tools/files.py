"""Workspace file tools: read_file, write_file, list_files.

Every path is relative to the run's workspace and must stay inside it. A path is refused when
it is absolute, contains ``..``, or resolves (following every symlink on the way) to a place
outside the workspace; the final open uses ``O_NOFOLLOW`` so a symlink swapped in after the
check is not followed either. Sizes are capped by the task's ``files`` settings. Every write
records a unified diff with the SHA-256 of the file before and after as a ``file.diff`` event,
so the ledger shows exactly what an agent changed.
"""

from __future__ import annotations

import asyncio
import difflib
import errno
import hashlib
import os
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import Field

from agentkit.errors import ToolError
from agentkit.tools.base import Tool, ToolArgs, ToolContext, ToolOutput

__all__ = ["ListFiles", "ReadFile", "WriteFile", "confine"]

#: largest diff kept inline in a file.diff event (the ledger offloads big payloads anyway)
_MAX_DIFF_CHARS = 200_000


def confine(workspace: Path, relative: str, tool: str) -> Path:
    """The real path of `relative` inside `workspace`, or a ``blocked`` ToolError."""
    if not relative or "\x00" in relative:
        raise ToolError("invalid_arguments", "the path is empty or contains a NUL byte", tool=tool)
    pure = PurePosixPath(relative.replace("\\", "/"))
    if pure.is_absolute() or relative.startswith("~"):
        raise ToolError("blocked", f"{relative!r} is absolute; use a path relative to the "
                        f"workspace, like 'notes/summary.md'", tool=tool)
    if ".." in pure.parts:
        raise ToolError("blocked", f"{relative!r} contains '..'; paths must stay inside the "
                        f"workspace", tool=tool)
    root = workspace.resolve()
    real = (root / pure).resolve()
    if real != root and not real.is_relative_to(root):
        raise ToolError("blocked", f"{relative!r} leads outside the workspace (through a "
                        f"symbolic link); only files inside the workspace can be used", tool=tool)
    return real


def _sha256(data: bytes | None) -> str | None:
    return hashlib.sha256(data).hexdigest() if data is not None else None


def _read_nofollow(path: Path, limit: int | None = None) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        return f.read() if limit is None else f.read(limit)


def _os_error(err: OSError, relative: str, tool: str) -> ToolError:
    if err.errno == errno.ENOENT:
        return ToolError("not_found", f"{relative!r} does not exist; list_files shows what "
                         f"is there", tool=tool)
    if err.errno == errno.EISDIR:
        return ToolError("is_directory", f"{relative!r} is a directory; use list_files",
                         tool=tool)
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
        path = confine(ctx.workspace, args.path, self.name)
        try:
            data, size = await asyncio.to_thread(self._read, path, args.offset, cap)
        except OSError as err:
            raise _os_error(err, args.path, self.name) from None
        text = data.decode("utf-8", errors="replace")
        end = args.offset + len(data)
        if end < size:
            text += (f"\n[truncated: showing bytes {args.offset}-{end} of {size}; call "
                     f"read_file with offset={end} for more]")
        return ToolOutput(text, {"path": args.path, "bytes": len(data), "size": size,
                                 "offset": args.offset, "sha256": _sha256(data)})

    @staticmethod
    def _read(path: Path, offset: int, cap: int) -> tuple[bytes, int]:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(offset)
            return f.read(cap), size


# -- write_file --------------------------------------------------------------------------------


class WriteFileArgs(ToolArgs):
    path: str = Field(description="File path relative to the workspace")
    content: str = Field(description="The complete new content of the file")


class WriteFile(Tool):
    name = "write_file"
    description = ("Create or replace a text file in the workspace with the given content "
                   "(parent folders are created).")
    args_model = WriteFileArgs
    timeout_s = 30.0
    concurrency_class = "files"
    side_effects = True

    async def call(self, args: Any, ctx: ToolContext) -> ToolOutput:
        new = args.content.encode("utf-8")
        cap = ctx.task.files.max_write_bytes
        if len(new) > cap:
            raise ToolError("too_large", f"content is {len(new)} bytes; the limit is {cap} "
                            f"(files.max_write_bytes)", tool=self.name)
        path = confine(ctx.workspace, args.path, self.name)
        try:
            old = await asyncio.to_thread(self._write, ctx.workspace.resolve(), path, new)
        except OSError as err:
            raise _os_error(err, args.path, self.name) from None
        diff = _unified_diff(args.path, old, new)
        record = {"path": args.path, "created": old is None, "before_sha256": _sha256(old),
                  "after_sha256": _sha256(new), "bytes": len(new),
                  "diff": diff[:_MAX_DIFF_CHARS], "diff_truncated": len(diff) > _MAX_DIFF_CHARS}
        ctx.emit("file.diff", {**record, "tool": self.name, "call_id": ctx.call_id})
        verb = "created" if old is None else "updated"
        return ToolOutput(f"{verb} {args.path} ({len(new)} bytes)",
                          {k: v for k, v in record.items() if k != "diff"})

    @staticmethod
    def _write(root: Path, path: Path, data: bytes) -> bytes | None:
        """Write `data`, returning the previous content (None if the file is new)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.parent.resolve().is_relative_to(root):  # a link raced in: refuse
            raise OSError(errno.ELOOP, "symbolic link in the path")
        try:
            old: bytes | None = _read_nofollow(path)
        except FileNotFoundError:
            old = None
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return old


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
        root = ctx.workspace.resolve()
        path = root if args.path in (".", "", "./") else confine(root, args.path, self.name)
        if not path.is_dir():
            raise _os_error(OSError(errno.ENOENT if not path.exists() else errno.ENOTDIR,
                                    "not a folder"), args.path, self.name)
        entries = await asyncio.to_thread(self._walk, root, path, args.recursive)
        shown = entries[: self.max_entries]
        text = "\n".join(shown) or "(empty)"
        if len(entries) > len(shown):
            text += f"\n[{len(entries) - len(shown)} more entries not shown]"
        return ToolOutput(text, {"path": args.path, "entries": shown, "count": len(entries)})

    def _walk(self, root: Path, path: Path, recursive: bool) -> list[str]:
        out: list[str] = []
        stack = [path]
        while stack and len(out) <= self.max_entries:
            folder = stack.pop()
            with os.scandir(folder) as it:
                for entry in sorted(it, key=lambda e: e.name):
                    rel = Path(entry.path).relative_to(root).as_posix()
                    if entry.is_symlink():
                        out.append(f"{rel} -> (symbolic link)")
                    elif entry.is_dir(follow_symlinks=False):
                        out.append(f"{rel}/")
                        if recursive:
                            stack.append(Path(entry.path))
                    else:
                        out.append(f"{rel} ({entry.stat(follow_symlinks=False).st_size} bytes)")
        return out
