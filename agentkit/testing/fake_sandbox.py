"""An in-process fake sandbox: `run_code`, consensus and whole runs in tests without Docker.

**Not a security boundary.** `FakeSandboxClient` runs the code as a plain subprocess of the
test process, as the same user, with the same network and the same access to every file; all
it isolates is the working directory (a fresh temporary folder per session) and the
environment (a short allow-list, no host variables such as API keys). Use it only for code
you wrote in a test, never for code a model wrote against real data; production runs use the
Docker sandbox.

It speaks the `SandboxClient`/`SandboxSession` protocols, so the warm pool and the `run_code`
tool use it unchanged: ``FakeSandboxClient(task.sandbox).install(runtime)`` (or
``.install(run.runtime)`` right after `agentkit.start`) before the first call. It honours the
settings' deadline (``timeout``: the process group is killed) and output cap (the process is
stopped, the output marked truncated) and reports the work directory's files before and after
each exec; it does not emulate memory, CPU or process limits, and it keeps no interpreter
state between execs (``persistent: true`` is refused rather than silently ignored).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, Self

from agentkit.errors import SandboxError
from agentkit.resources import Resources
from agentkit.sandboxes.base import ExecResult, Language, check_relative_path
from agentkit.sandboxes.pool import SANDBOX_CLIENT
from agentkit.task import SandboxSettings

__all__ = ["FakeSandboxClient", "FakeSandboxSession"]

#: files listed per manifest (as the Docker agent does)
MAX_FILES = 2000


class HasResources(Protocol):
    """A `Runtime` (or anything holding a run's resources)."""

    @property
    def resources(self) -> Resources: ...


class FakeSandboxClient:
    """Makes `FakeSandboxSession`s (temporary folders); `aclose` removes what is left."""

    def __init__(self, settings: SandboxSettings | None = None, *,
                 python: str = sys.executable) -> None:
        self.settings = settings or SandboxSettings()
        self.python = python
        self.sessions: dict[str, FakeSandboxSession] = {}
        #: how many sessions were made and destroyed (for assertions)
        self.created = self.destroyed = 0

    def install(self, runtime: HasResources) -> Self:
        """Make this the sandbox client of `runtime`'s run (before its first `run_code`)."""
        runtime.resources.put(SANDBOX_CLIENT, self)
        return self

    async def create(self, *, persistent: bool | None = None) -> FakeSandboxSession:
        if persistent if persistent is not None else self.settings.persistent:
            raise SandboxError("unsupported", "the fake sandbox keeps no interpreter state "
                               "between execs; use `persistent: false` in tests that use it")
        session = FakeSandboxSession(self, Path(tempfile.mkdtemp(prefix="agentkit-fake-")))
        self.sessions[session.id] = session
        self.created += 1
        return session

    async def destroy(self, sandbox_id: str) -> None:
        session = self.sessions.pop(sandbox_id, None)
        if session is not None:
            session.broken = session.broken or "destroyed"
            await asyncio.to_thread(shutil.rmtree, session.workdir, True)
            self.destroyed += 1

    async def aclose(self) -> None:
        for sandbox_id in list(self.sessions):
            await self.destroy(sandbox_id)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class FakeSandboxSession:
    """One temporary work directory; each exec is a fresh ``python -c`` or ``bash -c`` there."""

    def __init__(self, client: FakeSandboxClient, workdir: Path) -> None:
        self.client, self.workdir, self.settings = client, workdir, client.settings
        self.id = f"fake-{uuid.uuid4().hex}"
        self.broken: str | None = None

    async def exec(self, code: str, *, language: Language = "python",
                   timeout_s: float | None = None) -> ExecResult:
        if self.broken:
            raise SandboxError("crashed", f"this sandbox is unusable ({self.broken})")
        timeout = min(timeout_s or self.settings.timeout_s, self.settings.timeout_s)
        before = await asyncio.to_thread(_manifest, self.workdir)
        argv = [self.client.python, "-c", code] if language == "python" else ["bash", "-c", code]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.workdir),
               "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
               **self.settings.env}
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=self.workdir, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
        out, err = _Capped(self.settings.output_bytes), _Capped(self.settings.output_bytes)
        timed_out = False
        try:
            async with asyncio.timeout(timeout):
                assert proc.stdout is not None and proc.stderr is not None
                await asyncio.gather(out.pump(proc.stdout, proc.pid), err.pump(proc.stderr, proc.pid))
                await proc.wait()
        except TimeoutError:
            timed_out = True
        finally:
            _kill_group(proc.pid)
            await proc.wait()
        rc = proc.returncode if proc.returncode is not None else -signal.SIGKILL
        return ExecResult(
            exit_code=128 - rc if rc < 0 else rc, stdout=out.text("stdout"), stderr=err.text("stderr"),
            duration_s=round(time.monotonic() - started, 4), stdout_truncated=out.truncated,
            stderr_truncated=err.truncated, timed_out=timed_out,
            files_before=before, files_after=await asyncio.to_thread(_manifest, self.workdir))

    async def write_files(self, files: Mapping[str, bytes]) -> None:
        for raw, data in files.items():
            target = self._inside(raw)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

    async def read_files(self, paths: list[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for raw in paths:
            target = self._inside(raw)
            try:
                mode = target.lstat().st_mode
            except FileNotFoundError:
                raise SandboxError("not_found", f"{raw!r} does not exist in the work directory") from None
            if not stat.S_ISREG(mode):
                raise SandboxError("unsafe_archive", f"{raw!r} is not a regular file (links and "
                                   "special files are refused)")
            out[check_relative_path(raw)] = target.read_bytes()
        return out

    def _inside(self, raw: str) -> Path:
        """The path under the work directory; refuses escapes (a convenience, not a guard)."""
        target = self.workdir / check_relative_path(raw)
        if not target.parent.resolve().is_relative_to(self.workdir.resolve()):
            raise SandboxError("unsafe_path", f"{raw!r} leads outside the work directory")
        return target


class _Capped:
    """One output stream, kept up to `cap` bytes; past the cap the process group is stopped."""

    def __init__(self, cap: int) -> None:
        self.cap, self.buf, self.truncated = cap, bytearray(), False

    async def pump(self, stream: asyncio.StreamReader, pid: int) -> None:
        while chunk := await stream.read(1 << 16):
            room = self.cap - len(self.buf)
            self.buf += chunk[:room]
            if len(chunk) > room:
                self.truncated = True
                _kill_group(pid)
                return

    def text(self, name: str) -> str:
        text = self.buf.decode("utf-8", errors="replace")
        if self.truncated:
            text += f"\n[agentkit: {name} truncated at {self.cap} bytes; the process was stopped]"
        return text


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _manifest(workdir: Path) -> dict[str, tuple[int, str]]:
    files: dict[str, tuple[int, str]] = {}
    for root, _dirs, names in os.walk(workdir):
        for name in sorted(names):
            path = Path(root, name)
            try:
                st = path.lstat()
                if len(files) >= MAX_FILES or not stat.S_ISREG(st.st_mode):
                    continue
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:  # removed meanwhile by a background process
                continue
            files[path.relative_to(workdir).as_posix()] = (st.st_size, digest)
    return files
