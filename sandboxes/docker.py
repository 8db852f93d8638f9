"""The Docker sandbox backend: hardened containers driven through the docker SDK.

Every blocking SDK call runs in a worker thread (`asyncio.to_thread`), never on the event
loop. A container's main process is the small in-container agent (`_guest.py`) reached over
the container's attached stdin/stdout, so one exec costs a few milliseconds instead of a
`docker exec` round trip. Messages on that channel are framed and authenticated with a key
per container (`_channel.py`), so nothing code in the container writes can pass as a reply.
Files cross only as tar archives through `put_archive` / `get_archive`, and what comes out
is checked by `safe_extract`.

Hardened defaults (the usual container-hardening checklist), relaxed only by
`SandboxSettings` (network, read_only_root, env), each relaxation emitted as
``sandbox.relaxed``: no network; read-only root; tmpfs ``/tmp`` (noexec, nosuid, nodev);
``/workspace`` a size-capped tmpfs-backed volume (nosuid, nodev; the archive API cannot reach
plain tmpfs mounts); memory = memory+swap; CPU and pids limits; all capabilities dropped;
no-new-privileges; user 65534; default seccomp/AppArmor; ulimits nofile/fsize/core=0; an
env allow-list; no docker socket, host namespaces or host bind mounts; never privileged.

Limits on output: the in-container agent caps each stream at ``output_bytes`` (the result
carries the head, a truncation marker, and the process is stopped); the host separately caps
what it reads from the container (an ``output_limit`` error, container killed) so a process
that bypasses the agent (pushing bytes into the container's stdout) still cannot make the
host read more than the cap plus the manifests' allowance.
Deadlines: ``timeout -s KILL`` / the agent's group kill inside; `HOST_GRACE_S` later the host
kills the container (``timeout``). Any such error, OOM or pids exhaustion retires the
container (the pool replaces it).

Containers die with their run: each is created with StdinOnce and AutoRemove, so when the
host's attach connection closes -- the run ended, or its process was killed, even with
SIGKILL -- the engine closes the container's stdin, the agent exits, and the engine removes
the container and its volume (measured: a run's two containers gone 0.2 s after its kill -9).
Only a container whose run is killed between its create and its start (a few milliseconds)
waits for the sweep below.

Orphan sweep rule: every container carries ``agentkit.run=<run id>`` and
``agentkit.owner=<host>:<pid>:<process start time>``. At start-up a client removes labelled
containers whose owner is on this host and no longer alive (pid gone, or reused by another
process), and any labelled container older than `ORPHAN_MAX_AGE_S` whatever its owner.
Several runs share one engine: a container another run removes meanwhile is not an error.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import docker
import requests

from agentkit.errors import SandboxError
from agentkit.events import Emitter, EventKind
from agentkit.sandboxes._channel import Channel, ChannelCorrupt
from agentkit.sandboxes.base import ExecResult, Language, build_tar, check_relative_path, safe_extract
from agentkit.sandboxes.image import resolve_image
from agentkit.task import SandboxSettings

__all__ = ["DockerSandboxClient", "DockerSession", "container_kwargs", "sweep_orphans"]

RUN_LABEL, OWNER_LABEL, CREATED_LABEL = "agentkit.run", "agentkit.owner", "agentkit.created"
ORPHAN_MAX_AGE_S = 24 * 3600.0
SANDBOX_USER = "65534:65534"
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "MPLCONFIGDIR": "/tmp"}
WORKSPACE_MB, TMP_MB, FSIZE_BYTES, NOFILE = 256, 64, 128 * 1024 * 1024, 1024
#: seconds the host waits past the in-container deadline before it kills the container
HOST_GRACE_S = 5.0
MAX_FILE_BYTES = 16 * 1024 * 1024
#: files listed per manifest, and the bytes an exec answer may add for its two manifests
MAX_MANIFEST_FILES, MANIFEST_BYTES = 2000, 8 << 20


@contextlib.contextmanager
def _engine_errors(what: str) -> Iterator[None]:
    """Map docker SDK / HTTP failures to `SandboxError` ``engine_error`` at this boundary."""
    try:
        yield
    except SandboxError:
        raise
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise SandboxError("engine_error", f"{what}: {exc}", retry_hint="retry once; if it "
                           "persists, check the Docker engine") from None


def owner_label() -> str:
    """``host:pid:starttime``: identifies this process even after its pid is reused."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def _start_time(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"
    return stat.rpartition(")")[2].split()[19]


def _owner_alive(owner: str) -> bool | None:
    """True/False for an owner on this host, None if it lives elsewhere (cannot tell)."""
    host, _, rest = owner.partition(":")
    pid_s, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid_s.isdigit():
        return None
    return _start_time(int(pid_s)) == started


def sweep_orphans(client: Any, *, now: float | None = None,
                  max_age_s: float = ORPHAN_MAX_AGE_S) -> list[str]:
    """Remove labelled containers whose run is not live (see the module docstring). Blocking.

    The listing's summaries carry the labels, so nothing is inspected one by one: a container
    removed by another run between the listing and its removal is skipped, not an error.
    """
    now = time.time() if now is None else now
    removed = []
    for c in client.api.containers(all=True, filters={"label": RUN_LABEL}):
        labels = c.get("Labels") or {}
        alive = _owner_alive(labels.get(OWNER_LABEL, ""))
        try:
            age = now - float(labels.get(CREATED_LABEL, "0"))
        except ValueError:
            age = float("inf")
        if (alive is False or age > max_age_s) and _remove_quietly(client, c["Id"]):
            removed.append(c["Id"])
    return removed


def _remove_quietly(client: Any, container_id: str) -> bool:
    """Remove a container; False if it is already gone or being removed by someone else."""
    try:
        client.api.remove_container(container_id, force=True, v=True)
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError as exc:
        if exc.status_code == 409:  # "removal already in progress" (AutoRemove, another run)
            return False
        raise
    return True


def relaxations(settings: SandboxSettings) -> list[dict[str, Any]]:
    """Every way `settings` loosens the hardened defaults (each one goes to the ledger)."""
    out: list[dict[str, Any]] = []
    if settings.network != "none":
        out.append({"setting": "network", "value": settings.network})
    if not settings.read_only_root:
        out.append({"setting": "read_only_root", "value": False})
    if settings.env:
        out.append({"setting": "env", "names": sorted(settings.env)})
    return out


def container_kwargs(settings: SandboxSettings, *, image: str, run_id: str, command: list[str],
                     owner: str) -> dict[str, Any]:
    """The `containers.create` arguments: the hardening checklist as data."""
    types = docker.types
    mb = settings.memory_mb
    workspace = types.Mount(
        "/workspace", None, type="volume", driver_config=types.DriverConfig("local", {
            "type": "tmpfs", "device": "tmpfs",
            "o": f"size={WORKSPACE_MB}m,uid=65534,gid=65534,mode=0755,nosuid,nodev"}))
    return {
        "image": image, "command": command, "name": f"agentkit-{run_id[:16]}-{uuid.uuid4().hex[:8]}",
        # detach=False with stdin_open makes docker-py set StdinOnce: the engine closes the
        # container's stdin when the host's attach connection ends, so the agent exits and
        # AutoRemove deletes the container (it dies with its run, even one killed with -9)
        "detach": False, "stdin_open": True, "tty": False, "init": True, "auto_remove": True,
        "network_mode": settings.network, "read_only": settings.read_only_root,
        "tmpfs": {"/tmp": f"rw,noexec,nosuid,nodev,size={TMP_MB}m"}, "mounts": [workspace],
        "mem_limit": f"{mb}m", "memswap_limit": f"{mb}m", "nano_cpus": int(settings.cpus * 1e9),
        "pids_limit": settings.pids, "cap_drop": ["ALL"], "security_opt": ["no-new-privileges"],
        "user": SANDBOX_USER, "privileged": False, "ipc_mode": "private",
        "ulimits": [types.Ulimit(name="nofile", soft=NOFILE, hard=NOFILE),
                    types.Ulimit(name="fsize", soft=FSIZE_BYTES, hard=FSIZE_BYTES),
                    types.Ulimit(name="core", soft=0, hard=0)],
        "environment": {**BASE_ENV, **settings.env}, "working_dir": "/workspace",
        "hostname": "sandbox",
        "labels": {RUN_LABEL: run_id, OWNER_LABEL: owner, CREATED_LABEL: f"{time.time():.0f}"},
    }


class DockerSandboxClient:
    """Creates and destroys hardened containers for one run (a `SandboxClient`). Use
    ``async with``, or let the first `create` start it.

    `start` connects, resolves the image, sweeps orphans and records relaxations; the
    constructor only stores its arguments. There is no reattaching to a container: one whose
    connection drops ends (see the module docstring), and the pool replaces it.
    """

    def __init__(self, settings: SandboxSettings, *, run_id: str, emit: Emitter | None = None,
                 image: str | None = None, docker_client: Any = None) -> None:
        self.settings, self.run_id, self.image = settings, run_id, image
        self._emit = emit
        self._docker = docker_client
        self._owns_docker = docker_client is None
        self._sessions: dict[str, DockerSession] = {}
        self._guest_source: str | None = None
        self._owner = ""
        self._start_lock = asyncio.Lock()
        self.started = False

    def emit(self, kind: EventKind, data: dict[str, Any]) -> None:
        if self._emit is not None:
            self._emit(kind, data)

    async def start(self) -> None:
        async with self._start_lock:
            if not self.started:
                await self._start()

    async def _start(self) -> None:
        if self._docker is None:
            self._docker = await asyncio.to_thread(_connect)
        with _engine_errors("could not look up the sandbox image"):
            self.image = await asyncio.to_thread(resolve_image, self._docker,
                                                 self.image or self.settings.image)
        self._guest_source = (Path(__file__).parent / "_guest.py").read_text()
        self._owner = owner_label()
        with _engine_errors("could not list old sandboxes"):
            swept = await asyncio.to_thread(sweep_orphans, self._docker)
        if swept:
            self.emit("sandbox.removed", {"reason": "orphan", "containers": swept})
        for relaxed in relaxations(self.settings):
            self.emit("sandbox.relaxed", relaxed)
        self.started = True

    async def create(self, *, persistent: bool | None = None) -> DockerSession:
        """Start one hardened container and connect to its agent."""
        await self.start()
        assert self.image is not None and self._guest_source is not None
        persistent = self.settings.persistent if persistent is None else persistent
        command = ["python3", "-u", "-c", self._guest_source, *(["persistent"] if persistent else [])]
        kwargs = container_kwargs(self.settings, image=self.image, run_id=self.run_id,
                                  command=command, owner=self._owner)
        started = time.monotonic()
        cid = await asyncio.to_thread(self._create_blocking, kwargs)
        session = DockerSession(self, cid, persistent)
        self._sessions[cid] = session
        try:
            await session.connect()
        except BaseException:
            await asyncio.shield(self.destroy(cid))
            raise
        self.emit("sandbox.created", {"container": cid[:12], "image": self.image,
                                      "startup_s": round(time.monotonic() - started, 4)})
        return session

    def _create_blocking(self, kwargs: dict[str, Any]) -> str:
        try:
            return str(self._docker.containers.create(**kwargs).id)
        except docker.errors.ImageNotFound:
            raise SandboxError("image_missing", f"sandbox image {self.image!r} is not present; run "
                               "`agentkit sandbox build`") from None
        except docker.errors.DockerException as exc:
            raise SandboxError("engine_error", f"docker refused to create the sandbox: {exc}") from None
        except Exception as exc:  # requests timeouts and connection errors
            raise SandboxError("engine_error", f"docker did not create the sandbox: {exc}") from None

    async def destroy(self, sandbox_id: str) -> None:
        session = self._sessions.pop(sandbox_id, None)
        if session is not None:
            session.disconnect()
        await asyncio.to_thread(self._remove_blocking, sandbox_id)
        self.emit("sandbox.removed", {"container": sandbox_id[:12]})

    def _remove_blocking(self, sandbox_id: str) -> None:
        with _engine_errors("could not remove the sandbox"):
            _remove_quietly(self._docker, sandbox_id)

    async def kill(self, sandbox_id: str) -> None:
        """Stop a runaway container now (the host deadline); removal follows in `destroy`.

        The session's output is read and dropped meanwhile: the engine finishes a kill only
        once the container's stdout is drained, so a full, unread attach stream (code flooding
        the channel) would hold the kill, and every later call on that container, past the
        engine API's 60 s timeout.
        """
        def kill() -> None:
            # best effort: a gone container or a slow engine must not mask the real error;
            # `destroy` removes it (force) afterwards either way
            with contextlib.suppress(Exception):
                self._docker.api.kill(sandbox_id)
        session = self._sessions.get(sandbox_id)
        drain = asyncio.create_task(session.discard_output()) if session is not None else None
        try:
            await asyncio.to_thread(kill)
        finally:
            if drain is not None:
                drain.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drain

    async def inspect_state(self, sandbox_id: str) -> dict[str, Any]:
        def state() -> dict[str, Any]:
            try:
                return dict(self._docker.api.inspect_container(sandbox_id)["State"])
            except Exception:  # gone or engine trouble: report what we know (nothing)
                return {}
        return await asyncio.to_thread(state)

    @property
    def docker(self) -> Any:
        return self._docker

    async def aclose(self) -> None:
        """Remove every container of this run, including any this client lost track of."""
        for cid in list(self._sessions):
            await self.destroy(cid)
        if self._docker is not None:
            def sweep_run() -> None:
                mine = {"label": f"{RUN_LABEL}={self.run_id}"}
                for c in self._docker.api.containers(all=True, filters=mine):
                    with contextlib.suppress(Exception):  # best effort: the run is ending
                        _remove_quietly(self._docker, c["Id"])
            await asyncio.to_thread(sweep_run)
            if self._owns_docker:
                await asyncio.to_thread(self._docker.close)
                self._docker = None
        self.started = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.shield(self.aclose())


def _connect() -> Any:
    try:
        client = docker.from_env(timeout=60, max_pool_size=64)
        client.ping()
    except docker.errors.DockerException as exc:
        raise SandboxError("engine_unavailable", f"cannot reach the Docker engine: {exc}",
                           retry_hint="start Docker or set DOCKER_HOST") from None
    return client


class DockerSession:
    """One container and the framed connection to its agent (a `SandboxSession`). Calls are
    serialised by a lock."""

    def __init__(self, client: DockerSandboxClient, container_id: str, persistent: bool) -> None:
        self.client, self.id, self.persistent = client, container_id, persistent
        self.settings = client.settings
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._raw: Any = None
        self._channel = Channel()
        self._pending = bytearray()
        self._received = 0
        self._next_id = 0
        self._guest_stderr = bytearray()
        self.broken: str | None = None

    async def connect(self) -> None:
        """Attach to the container's stdin/stdout (before starting it), start it, hand the
        agent its session key and wait for its framed 'ready'."""
        api = self.client.docker.api
        params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        with _engine_errors("could not attach to the sandbox"):
            raw = await asyncio.to_thread(api.attach_socket, self.id, params)
        self._raw = raw
        sock = socket.socket(fileno=os.dup(raw._sock.fileno()))
        self._reader, self._writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 20)
        with _engine_errors("could not start the sandbox"):
            await asyncio.to_thread(api.start, self.id)
        self._writer.write(self._channel.hello())
        await self._writer.drain()
        self._received = 0
        await self._read_answer(30.0, 4096, 0)

    async def discard_output(self) -> None:
        """Read and drop whatever the container still sends, until it closes the stream."""
        if self._reader is None:
            return
        with contextlib.suppress(Exception):
            while await self._reader.read(1 << 16):
                pass

    def disconnect(self) -> None:
        """Drop the connection; the container's stdin closes and it ends (StdinOnce)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._raw is not None:
            with contextlib.suppress(Exception):
                # shutdown, not only close: the SDK's HTTP response still holds the socket
                self._raw._sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(Exception):
                self._raw.close()
                self._raw._sock.close()
            self._raw = None

    async def exec(self, code: str, *, language: Language = "python",
                   timeout_s: float | None = None) -> ExecResult:
        timeout = min(timeout_s or self.settings.timeout_s, self.settings.timeout_s)
        cap = self.settings.output_bytes
        req = {"op": "exec", "lang": language, "code": code, "timeout": timeout, "cap": cap,
               "persistent": self.persistent, "max_files": MAX_MANIFEST_FILES}
        answer = await self._request(req, timeout + HOST_GRACE_S, limit=3 * cap + MANIFEST_BYTES)
        return _result(answer, cap)

    async def write_files(self, files: Mapping[str, bytes]) -> None:
        data = build_tar(files)
        api = self.client.docker.api

        def put() -> bool:
            return bool(api.put_archive(self.id, "/workspace", data))
        with _engine_errors("could not write files into the sandbox"):
            ok = await asyncio.to_thread(put)
        if not ok:
            raise SandboxError("write_failed", "docker did not accept the files")

    async def read_files(self, paths: list[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for path in paths:
            rel = check_relative_path(path)
            tar = await asyncio.to_thread(self._get_archive, rel)
            files = safe_extract(tar, max_total=MAX_FILE_BYTES)
            name = rel.rsplit("/", 1)[-1]
            if name not in files:
                raise SandboxError("not_found", f"{path!r} is not a regular file in /workspace")
            out[rel] = files[name]
        return out

    def _get_archive(self, rel: str) -> bytes:
        api = self.client.docker.api
        with _engine_errors(f"could not read {rel!r} from the sandbox"):
            try:
                stream, stat = api.get_archive(self.id, f"/workspace/{rel}")
            except docker.errors.NotFound:
                raise SandboxError("not_found", f"{rel!r} does not exist in /workspace") from None
        if stat.get("size", 0) > MAX_FILE_BYTES:
            raise SandboxError("too_large", f"{rel!r} is larger than {MAX_FILE_BYTES} bytes")
        buf = bytearray()
        for chunk in stream:
            buf += chunk
            if len(buf) > MAX_FILE_BYTES + 65536:
                raise SandboxError("too_large", f"{rel!r} is larger than {MAX_FILE_BYTES} bytes")
        return bytes(buf)

    async def _request(self, req: dict[str, Any], deadline_s: float, limit: int) -> dict[str, Any]:
        if self.broken:
            raise SandboxError("crashed", f"this sandbox is unusable ({self.broken}); a new one is "
                               "needed")
        async with self._lock:
            assert self._writer is not None
            self._next_id += 1
            req = {**req, "id": self._next_id}
            self._received = 0
            try:
                self._writer.write(self._channel.frame(b"req", json.dumps(req).encode()))
                await self._writer.drain()
                return await self._read_answer(deadline_s, limit, req["id"])
            except (ConnectionError, OSError) as exc:
                raise await self._fail("crashed", f"lost the sandbox connection: {exc}") from None
            except BaseException:
                # cancelled mid-call: the protocol is out of step, so the container is done for
                self.broken = self.broken or "interrupted"
                raise

    async def _read_answer(self, deadline_s: float, limit: int, want_id: int) -> dict[str, Any]:
        """The answer to request `want_id`: the next authentic frame carrying that id. Noise
        between frames is skipped; replayed frames (another id) are skipped; everything the
        container sends meanwhile counts toward `limit`."""
        try:
            async with asyncio.timeout(deadline_s):
                while True:
                    try:
                        payload = self._channel.parse(self._pending, b"rep", limit)
                    except ChannelCorrupt:
                        raise await self._fail("crashed", "a reply from the sandbox was corrupted "
                                               "(bytes were pushed into or taken out of its "
                                               "channel)") from None
                    except OverflowError:
                        raise await self._flooded(limit) from None
                    if payload is None:
                        await self._read_frame(limit)
                        continue
                    answer = json.loads(payload)
                    if answer.get("id") == want_id:
                        break
        except TimeoutError:
            await self.client.kill(self.id)
            raise await self._fail("timeout", f"no answer within {deadline_s:g} s; the container "
                                   "was killed") from None
        if not answer.get("ok"):
            raise SandboxError("sandbox_error", str(answer.get("error", "unknown error")))
        return dict(answer)

    async def _read_frame(self, limit: int) -> None:
        """One frame of the engine's attach stream (8-byte header: stream type, size)."""
        assert self._reader is not None
        try:
            header = await self._reader.readexactly(8)
            size = int.from_bytes(header[4:8], "big")
            self._received += size
            if self._received > limit:
                raise await self._flooded(limit)
            payload = await self._reader.readexactly(size)
        except asyncio.IncompleteReadError:
            raise await self._died() from None
        if header[0] == 1:
            self._pending += payload
        else:
            self._guest_stderr = (self._guest_stderr + payload)[-4096:]

    async def _flooded(self, limit: int) -> SandboxError:
        await self.client.kill(self.id)
        return await self._fail("output_limit", f"the sandbox sent more than {limit} bytes")

    async def _died(self) -> SandboxError:
        state = await self.client.inspect_state(self.id)  # {} once AutoRemove has run
        if state.get("OOMKilled"):
            return await self._fail("oom", f"the sandbox ran out of memory ({self.settings.memory_mb} "
                                    "MiB) and was killed")
        detail = self._guest_stderr.decode(errors="replace")[-500:]
        exit_code = state.get("ExitCode", "unknown")
        return await self._fail("crashed", f"the sandbox stopped (exit {exit_code}); "
                                f"{detail}".strip())

    async def _fail(self, code: str, message: str) -> SandboxError:
        self.broken = code
        return SandboxError(code, message, retry_hint="the next call gets a fresh sandbox")

    async def close(self) -> None:
        await self.client.destroy(self.id)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.shield(self.close())


def _result(answer: dict[str, Any], cap: int) -> ExecResult:
    def text(key: str, truncated: bool) -> str:
        out = base64.b64decode(answer[key]).decode("utf-8", errors="replace")
        if truncated:
            out += f"\n[agentkit: {key} truncated at {cap} bytes; the process was stopped]"
        return out

    rc = int(answer["exit_code"])
    out_t, err_t = bool(answer["stdout_truncated"]), bool(answer["stderr_truncated"])
    return ExecResult(
        exit_code=rc, stdout=text("stdout", out_t), stderr=text("stderr", err_t),
        duration_s=round(max(float(answer["duration_s"]), 0.0), 4), stdout_truncated=out_t,
        stderr_truncated=err_t, timed_out=bool(answer["timed_out"]), oom=bool(answer["oom"]),
        pids_exhausted=bool(answer["pids_exhausted"]), state_reset=bool(answer["state_reset"]),
        files_before=_manifest(answer["files_before"]), files_after=_manifest(answer["files_after"]))


def _manifest(raw: dict[str, list[Any]]) -> dict[str, tuple[int, str]]:
    return {str(path): (int(size), str(sha)) for path, (size, sha) in raw.items()}
