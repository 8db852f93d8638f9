"""The sandbox protocol: a client that makes sessions, a session that runs code.

Split in two so a warm pool can sit between them, and each half holds only what its consumers
(`SandboxPool`, the `run_code` tool) call: the *client* `create`s and `destroy`s sandboxes
(containers, microVMs...) and `aclose`s them all; a *session* is one live sandbox that can
`exec` code, `write_files` in and `read_files` out, and says when it is `broken`. Neither does
I/O in its constructor. One backend per file (`agentkit.sandboxes.docker`); the in-process
test double is `agentkit.testing.FakeSandboxClient`.

`ExecResult` is the neutral answer of one exec; `classify` maps its facts (timed out, OOM,
pids exhausted) to the typed `SandboxError` the model reads, in one place for every backend.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from agentkit.errors import SandboxError

__all__ = [
    "ExecResult",
    "Manifest",
    "Language",
    "SandboxClient",
    "SandboxSession",
    "build_tar",
    "check_relative_path",
    "classify",
    "safe_extract",
]

Language = Literal["python", "bash"]
#: regular files of the work directory: relative path -> (size in bytes, sha256 hex)
Manifest = Mapping[str, tuple[int, str]]

#: error codes after which a sandbox is replaced, not reused (state inside is suspect)
REPLACE_CODES = frozenset({"timeout", "oom", "resource_limit", "output_limit", "crashed"})


@dataclass(frozen=True)
class ExecResult:
    """What one exec produced. Output is decoded UTF-8 (invalid bytes replaced), capped."""

    exit_code: int
    stdout: str
    stderr: str
    duration_s: float
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    timed_out: bool = False
    oom: bool = False
    #: the pids limit was hit (fork/clone failed with EAGAIN) during the exec
    pids_exhausted: bool = False
    #: a persistent interpreter was restarted, so earlier variables are gone
    state_reset: bool = False
    #: the work directory's regular files just before and just after the code ran (what
    #: `run_code` turns into created/changed/deleted files and diffs)
    files_before: Manifest = field(default_factory=dict)
    files_after: Manifest = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def classify(result: ExecResult, *, timeout_s: float, memory_mb: int, pids: int) -> SandboxError | None:
    """The typed error a result stands for, or None for a normal exit (even non-zero).

    Order matters: a timed-out fork bomb is reported as the fork bomb (``resource_limit``),
    since that is what the model must change.
    """
    if result.oom:
        return SandboxError("oom", f"the code ran out of memory (limit {memory_mb} MiB) and was "
                            "killed", retry_hint="use less memory (stream data, smaller arrays)",
                            details={"exit_code": result.exit_code})
    if result.pids_exhausted:
        return SandboxError("resource_limit", f"the code hit the process limit ({pids} processes/"
                            "threads): fork failed with 'Resource temporarily unavailable'",
                            retry_hint="start fewer processes or threads",
                            details={"exit_code": result.exit_code})
    if result.timed_out:
        return SandboxError("timeout", f"the code did not finish within {timeout_s:g} s and was "
                            "killed", retry_hint="make it faster or pass a larger timeout_s",
                            details={"stdout": result.stdout[-2000:], "stderr": result.stderr[-2000:]})
    return None


@runtime_checkable
class SandboxSession(Protocol):
    """One live sandbox. Calls on a session are serialised by the backend."""

    #: the backend's name for this sandbox (a container id...)
    id: str
    #: why the sandbox is unusable (a timeout, a crash...), or None while it works; a pool
    #: replaces a broken session instead of handing it out again
    broken: str | None

    async def exec(self, code: str, *, language: Language = "python",
                   timeout_s: float | None = None) -> ExecResult:
        """Run `code` in the work directory; limits come from the session's settings."""
        ...

    async def write_files(self, files: Mapping[str, bytes]) -> None:
        """Write files under the work directory (paths relative to it)."""
        ...

    async def read_files(self, paths: list[str]) -> dict[str, bytes]:
        """Read regular files under the work directory; anything else is refused."""
        ...


@runtime_checkable
class SandboxClient(Protocol):
    """Makes sessions for one run."""

    async def create(self, *, persistent: bool | None = None) -> SandboxSession:
        """Start a new sandbox with the hardened settings (`persistent`: keep interpreter
        state between execs; None: the client's settings decide)."""
        ...

    async def destroy(self, sandbox_id: str) -> None:
        """Remove a sandbox and everything it stored (idempotent)."""
        ...

    async def aclose(self) -> None:
        """Destroy every sandbox this client made."""
        ...


# ---------------------------------------------------------------------------------------------
# Tar in and out: the only way files cross the boundary


def check_relative_path(path: str) -> str:
    """A normalised relative POSIX path, or ``unsafe_path``: no absolute paths, no ``..``."""
    if not path or "\x00" in path or path.startswith("/") or "\\" in path:
        raise SandboxError("unsafe_path", f"{path!r} must be a relative path inside /workspace")
    norm = posixpath.normpath(path)
    if norm in (".", "") or norm.startswith("../") or norm == ".." or "/../" in f"/{norm}/":
        raise SandboxError("unsafe_path", f"{path!r} leaves /workspace or names no file")
    return norm


def build_tar(files: Mapping[str, bytes], *, uid: int = 65534, gid: int = 65534) -> bytes:
    """A tar of regular files owned by the sandbox user (mode 0644, parents created)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for raw_path, data in files.items():
            path = check_relative_path(raw_path)
            parent = posixpath.dirname(path)
            while parent and parent not in dirs:
                dirs.add(parent)
                parent = posixpath.dirname(parent)
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.uid, info.gid = len(data), 0o644, uid, gid
            tar.addfile(info, io.BytesIO(data))
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, 0o755, uid, gid
            tar.addfile(info)
    return buf.getvalue()


def safe_extract(data: bytes, *, max_total: int, max_members: int = 10_000) -> dict[str, bytes]:
    """Regular files of a tar, in memory, refusing anything that could escape or explode.

    Refused (``unsafe_archive``): absolute names, ``..`` components, symlinks, hardlinks,
    devices, FIFOs, more than `max_members` entries, and contents larger than `max_total`
    bytes in all (counted from the headers before reading, so a bomb is never buffered).
    Nothing is written to disk; callers decide where bytes go.
    """
    out: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for count, member in enumerate(tar, start=1):
                if count > max_members:
                    raise SandboxError("unsafe_archive", f"more than {max_members} entries")
                name = _safe_member_name(member)
                if member.isdir():
                    continue
                total += member.size
                if total > max_total:
                    raise SandboxError("unsafe_archive", f"contents exceed {max_total} bytes")
                handle = tar.extractfile(member)
                if handle is None:
                    raise SandboxError("unsafe_archive", f"{member.name!r} has no data")
                out[name] = handle.read()
    except tarfile.TarError as exc:
        raise SandboxError("unsafe_archive", f"not a valid tar: {exc}") from None
    return out


def _safe_member_name(member: tarfile.TarInfo) -> str:
    name = member.name
    if name.startswith("/") or posixpath.isabs(name):
        raise SandboxError("unsafe_archive", f"absolute path {name!r} refused")
    parts = name.split("/")
    if ".." in parts:
        raise SandboxError("unsafe_archive", f"path with '..' refused: {name!r}")
    if member.issym() or member.islnk():
        raise SandboxError("unsafe_archive", f"link {name!r} -> {member.linkname!r} refused")
    if not (member.isreg() or member.isdir()):
        raise SandboxError("unsafe_archive", f"special file {name!r} (type {member.type!r}) refused")
    return posixpath.normpath(name)
