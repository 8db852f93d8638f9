"""Race-free access to the workspace: every path is walked from the workspace's descriptor.

Why not resolve-then-open: a folder swapped for a symbolic link between the check and the
open sends the open outside (a red-team run saw 158 of 3,000 reads and 39 writes escape).
Here each component is opened relative to the descriptor of the folder before it
(``openat``), with ``O_NOFOLLOW``: a link swapped in at any moment makes that open fail
instead of being followed. A symbolic link found on the way is followed only by hand: its
target is read once (``readlinkat``) and walked the same way, and an absolute target, or a
``..`` that would climb above the workspace, is refused. So a link inside the workspace that
points inside still works, and nothing can lead out. Folders are never resolved by name.

Protected folders (the audit ledger and its blobs) are recognised by identity (device and
inode), checked on every folder the walk opens and on what it finally opens, so no spelling
(``..`` through a link, a second link, another letter case, a bind mount) reaches them.

``openat2(RESOLVE_BENEATH)`` would do the confinement in one call where the kernel has it, but
it hides the folders it passes through, and the protected-folder check needs each of them;
the walk needs nothing beyond POSIX ``openat``/``mkdirat``/``readlinkat`` (``dir_fd``).
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from agentkit.errors import ToolError

__all__ = ["Workspace"]

#: symbolic links followed in one walk (the kernel's own limit is 40)
MAX_LINKS = 40
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
#: O_NONBLOCK: opening a FIFO must not hang the call (it is refused right after, by fstat)
_FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
#: the largest folder (the size of its directory file: some hundreds to a few thousand
#: entries, by file system) `Workspace.small_listing` lists
SMALL_FOLDER_BYTES = 64 * 1024


class Workspace:
    """One workspace folder, opened per call, with the folders no tool may touch.

    Every method is blocking (callers use a worker thread; `small_listing` alone is quick
    enough for the event loop) and raises `ToolError` for a path that leaves the workspace or
    enters a protected folder, `OSError` for the rest.
    """

    def __init__(self, root: Path, protected: Iterable[Path] = (), *, tool: str) -> None:
        if os.open not in os.supports_dir_fd or os.mkdir not in os.supports_dir_fd:
            raise ToolError("unsupported", "this platform cannot open files relative to a folder "
                            "descriptor (openat); the file tools need it", tool=tool)
        self.root, self.protected, self.tool = root, tuple(protected), tool

    # -- operations ---------------------------------------------------------------------------

    def read(self, relative: str, *, offset: int = 0, limit: int | None = None) -> tuple[bytes, int]:
        """Up to `limit` bytes of a regular file from `offset`, and the file's size."""
        fd = self._walk(relative, leaf="read")
        try:
            size = os.fstat(fd).st_size
            if limit is None:
                limit = max(size - offset, 0)
            chunks, pos = [], offset
            while pos - offset < limit:
                chunk = os.pread(fd, min(limit - (pos - offset), 1 << 20), pos)
                if not chunk:
                    break
                chunks.append(chunk)
                pos += len(chunk)
            return b"".join(chunks), size
        finally:
            os.close(fd)

    def replace(self, relative: str, data: bytes) -> bytes | None:
        """Write `data` as the file's whole content, creating missing parent folders; returns
        the previous content (None for a new file), read from the very file then written."""
        fd, created = self._walk_create(relative)
        with os.fdopen(fd, "r+b") as f:
            old = None if created else f.read()
            f.seek(0)
            f.truncate()
            f.write(data)
        return old

    def listing(self, relative: str, *, recursive: bool, max_entries: int) -> list[str]:
        """Entries under a folder (``name/`` for folders, ``name (N bytes)`` for files, links
        shown and never followed, protected folders shown and never listed)."""
        top = self._walk(relative, leaf="dir")
        prefix = "/".join(_parts(relative, self.tool))
        out: list[str] = []
        stack = [(top, prefix)]
        try:
            while stack and len(out) <= max_entries:
                fd, rel = stack.pop()
                try:
                    out += self._entries(fd, rel, stack if recursive else None)
                finally:
                    os.close(fd)
        finally:
            for fd, _ in stack:
                os.close(fd)
        return out

    def small_listing(self, relative: str) -> list[str] | None:
        """`listing` of one folder (not recursive), or None if the folder is large (its
        directory file over `SMALL_FOLDER_BYTES`): the caller then lists it on a worker
        thread. A small folder costs a few system calls (~30 µs on a local disk), less than
        the hop to a worker thread and back (60-85 µs of CPU, and handing the GIL between
        threads stalls the event loop of a busy swarm), so it is listed on the caller's."""
        fd = self._walk(relative, leaf="dir")
        try:
            if os.fstat(fd).st_size > SMALL_FOLDER_BYTES:
                return None
            return self._entries(fd, "/".join(_parts(relative, self.tool)), None)
        finally:
            os.close(fd)

    def _entries(self, fd: int, rel: str, stack: list[tuple[int, str]] | None) -> list[str]:
        out = []
        protected = self._protected_ids()
        with os.scandir(fd) as it:
            for entry in sorted(it, key=lambda e: e.name):
                path = f"{rel}/{entry.name}" if rel else entry.name
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    out.append(f"{path} -> (symbolic link)")
                elif stat.S_ISDIR(st.st_mode):
                    if (st.st_dev, st.st_ino) in protected:
                        out.append(f"{path}/ (protected: not listed)")
                        continue
                    out.append(f"{path}/")
                    if stack is not None:
                        try:
                            sub = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                        except OSError:  # swapped or removed meanwhile: shown, not entered
                            continue
                        if _identity(sub) in protected:
                            os.close(sub)
                            continue
                        stack.append((sub, path))
                else:
                    out.append(f"{path} ({st.st_size} bytes)")
        return out

    # -- the walk -----------------------------------------------------------------------------

    def _protected_ids(self) -> set[tuple[int, int]]:
        ids = set()
        for folder in self.protected:
            try:
                st = os.stat(folder)
            except OSError:  # not there (yet): nothing in it to protect
                continue
            ids.add((st.st_dev, st.st_ino))
        return ids

    def _refuse_protected(self, fd: int, relative: str, protected: set[tuple[int, int]]) -> None:
        """Raise if `fd` is a protected folder (the caller still owns and closes `fd`)."""
        if _identity(fd) in protected:
            raise ToolError("protected", f"{relative!r} is in a protected folder (the run's audit "
                            f"ledger); no tool may read, write or list it", tool=self.tool)

    def _walk(self, relative: str, *, leaf: str) -> int:
        """The descriptor of `relative` opened as `leaf` ("read" or "dir")."""
        fd, _ = self._walk_any(relative, leaf=leaf, create=False)
        return fd

    def _walk_create(self, relative: str) -> tuple[int, bool]:
        return self._walk_any(relative, leaf="write", create=True)

    def _walk_any(self, relative: str, *, leaf: str, create: bool) -> tuple[int, bool]:
        pending = deque(_parts(relative, self.tool))
        if leaf != "dir" and not pending:
            raise ToolError("is_directory", f"{relative!r} is the workspace folder; name a file",
                            tool=self.tool)
        protected = self._protected_ids()
        stack = [os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)]
        links = 0
        try:
            self._refuse_protected(stack[0], relative, protected)
            while pending:
                name = pending.popleft()
                if name == "..":  # only a link's target puts one here
                    if len(stack) == 1:
                        raise self._outside(relative)
                    os.close(stack.pop())
                    continue
                last = not pending
                try:
                    fd, created = self._open_step(stack[-1], name, leaf if last else "dir", create)
                except OSError as err:
                    target = _link_target(stack[-1], name, err)
                    if target is None:
                        raise
                    links += 1
                    if links > MAX_LINKS or target.startswith("/"):
                        raise self._outside(relative) from None
                    pending.extendleft(reversed(PurePosixPath(target).parts))
                    continue
                stack.append(fd)  # closed below unless handed out as the leaf
                self._refuse_protected(fd, relative, protected)
                if last:
                    return stack.pop(), created
            top = os.dup(stack[-1])  # the walk ended on a folder ("." or a link to one)
            if leaf != "dir":
                os.close(top)
                raise OSError(errno.EISDIR, "is a folder")
            return top, False
        finally:
            for fd in stack:
                os.close(fd)

    def _open_step(self, parent: int, name: str, kind: str, create: bool) -> tuple[int, bool]:
        """Open one component below `parent`, never following a link (a link raises ELOOP or
        ENOTDIR for the caller to follow by hand). Missing folders and the file are made when
        `create` is set."""
        if kind == "dir":
            try:
                return os.open(name, _DIR_FLAGS, dir_fd=parent), False
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(name, 0o755, dir_fd=parent)
                except FileExistsError:  # made (or swapped in) meanwhile: open what is there
                    pass
                return os.open(name, _DIR_FLAGS, dir_fd=parent), False
        mode = os.O_RDWR if kind == "write" else os.O_RDONLY
        try:
            fd, created = os.open(name, mode | _FILE_FLAGS, dir_fd=parent), False
        except FileNotFoundError:
            if not create:
                raise
            fd = os.open(name, mode | _FILE_FLAGS | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=parent)
            created = True
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise OSError(errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EINVAL,
                          "is a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file")
        os.set_blocking(fd, True)
        return fd, created

    def _outside(self, relative: str) -> ToolError:
        return ToolError("blocked", f"{relative!r} leads outside the workspace (through a "
                         f"symbolic link); only files inside the workspace can be used",
                         tool=self.tool)


def _parts(relative: str, tool: str) -> list[str]:
    """The components of a workspace path, or a ToolError for one that cannot be inside."""
    if not relative or "\x00" in relative:
        raise ToolError("invalid_arguments", "the path is empty or contains a NUL byte", tool=tool)
    pure = PurePosixPath(relative.replace("\\", "/"))
    if pure.is_absolute() or relative.startswith("~"):
        raise ToolError("blocked", f"{relative!r} is absolute; use a path relative to the "
                        f"workspace, like 'notes/summary.md'", tool=tool)
    if ".." in pure.parts:
        raise ToolError("blocked", f"{relative!r} contains '..'; paths must stay inside the "
                        f"workspace", tool=tool)
    return [p for p in pure.parts if p != "."]


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _link_target(parent: int, name: str, err: OSError) -> str | None:
    """The target of `name` if the failed open met a symbolic link, else None."""
    if err.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        return None
    try:
        return os.readlink(name, dir_fd=parent)
    except OSError:  # not a link (a file where a folder was expected), or gone
        return None
