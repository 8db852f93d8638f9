"""The in-container agent: runs inside the sandbox, talks to the host over its stdin/stdout.

Why: `docker exec` through the API costs 30-100+ ms per call; a long-lived process reached
over the container's attached stdin/stdout answers in about a millisecond. One-shot Python
is forked (no interpreter start-up) into a fresh ``__main__``; bash runs under
``timeout -s KILL``; a persistent interpreter (`Worker`) keeps variables when asked. This file
is sent as the container's command (``python3 -c <source>``), so any image with python3
works; it uses the standard library only.

Two processes, both made unreadable to the code (``PR_SET_DUMPABLE 0``: their /proc entries
-- descriptors, memory, environment -- belong to root, and the code runs with no
capabilities):

* the *channel* (this process) holds the container's stdin/stdout, reads the session key the
  host sends first, and frames every message: ``mark | length | HMAC-SHA256 | payload``, with
  a per-direction mark and the MAC both derived from the key. Bytes anyone else pushes into
  the container's stdout (reachable through the init process's /proc entry) can never pass
  as a reply, and injected requests are dropped; request ids must increase.
* the *runner*, forked before the key arrives (so neither it nor any child forked from it
  ever holds the key), runs the code and lists ``/workspace``; it talks to the channel over
  private pipes no child inherits.

When the host's connection ends (the run exited, or was killed), the container's stdin
closes (the container is created with StdinOnce), the channel exits and the container ends
with it. Requests: ``{"op": "exec", "id", "lang", "code", "timeout", "cap", "persistent",
"max_files"}``; the answer carries the result and the manifests before and after.
"""

import base64
import ctypes
import hashlib
import hmac
import json
import os
import resource
import selectors
import signal
import stat
import subprocess
import sys
import time
import traceback
import types

WORKDIR = "/workspace"
WORKER = r"""
import json, os, sys, traceback
cmd = os.fdopen(int(sys.argv[1]), "rb"); done = os.fdopen(int(sys.argv[2]), "wb")
scope = {"__name__": "__main__", "__builtins__": __builtins__}
for line in cmd:
    code = json.loads(line)["code"]; rc = 0
    try:
        exec(compile(code, "<run_code>", "exec"), scope)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))): print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc(); rc = 1
    sys.stdout.flush(); sys.stderr.flush()
    done.write((json.dumps({"rc": rc}) + "\n").encode()); done.flush()
"""
FORK_FAILURE = (b"Resource temporarily unavailable", b"fork: retry", b"can't start new thread")


def counter(paths, key):
    """A kernel event counter (cgroup v1 or v2), or None where the file is missing."""
    for path in paths:
        try:
            with open(path) as fh:
                for line in fh:
                    name, _, value = line.partition(" ")
                    if name == key:
                        return int(value)
        except OSError:
            continue
    return None


def oom_count():
    return counter(("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events"),
                   "oom_kill")


def pids_max_count():
    return counter(("/sys/fs/cgroup/pids/pids.events", "/sys/fs/cgroup/pids.events"), "max")


def killpg(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


class Collector:
    """Reads a process's stdout/stderr with a byte cap per stream, never buffering more."""

    def __init__(self, fds, cap):
        self.sel = selectors.DefaultSelector()
        self.buf = {}
        self.truncated = {}
        self.cap = cap
        for name, fd in fds.items():
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ, name)
            self.buf[name] = bytearray()
            self.truncated[name] = False

    def open(self):
        return bool(self.sel.get_map())

    def poll(self, timeout):
        for key, _ in self.sel.select(max(timeout, 0)):
            try:
                chunk = os.read(key.fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                self.sel.unregister(key.fd)
                continue
            buf = self.buf[key.data]
            room = self.cap - len(buf)
            buf += chunk[:room]
            if len(chunk) > room:
                self.truncated[key.data] = True
        return any(self.truncated.values())

    def drain(self):
        """Read whatever is already in the pipes (the writer has flushed)."""
        while self.open() and not any(self.truncated.values()):
            if not self.sel.select(0):
                return
            self.poll(0)

    def close(self):
        for key in list(self.sel.get_map().values()):
            self.sel.unregister(key.fd)
        self.sel.close()


class Forked:
    """Python code in a child forked from this agent: no interpreter start-up, so a one-shot
    run costs about a millisecond. The child gets a fresh ``__main__``, its own session and
    pipes, closes every other descriptor (the agent channel included), and carries a CPU
    rlimit as a kernel backstop to the agent's wall-clock kill."""

    def __init__(self, code, timeout):
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never returns into the agent loop
            try:
                os.dup2(out_w, 1)
                os.dup2(err_w, 2)
                run_child(code, timeout)
            finally:
                os._exit(1)
        os.close(out_w)
        os.close(err_w)
        self.pid, self.out, self.err, self.returncode = pid, out_r, err_r, None

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout=None):
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if end is not None and time.monotonic() > end:
                raise subprocess.TimeoutExpired("run_code", timeout)
            time.sleep(0.002)
        return self.returncode

    def close(self):
        os.close(self.out)
        os.close(self.err)


def run_child(code, timeout):
    # resource, traceback and types are imported by the agent already: a child inherits them
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.closerange(3, 1 << 16)
    cpu = int(timeout) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    os.chdir(WORKDIR)
    sys.stdin = open(os.devnull)
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = main
    sys.argv = ["-c"]
    rc = 0
    try:
        exec(compile(code, "<run_code>", "exec"), main.__dict__)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        rc = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(rc)


class Spawned:
    """A command under `timeout -s KILL` (the in-container deadline), own process group."""

    def __init__(self, argv, timeout):
        self.proc = subprocess.Popen(["timeout", "-s", "KILL", f"{timeout:.3f}"] + argv,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=WORKDIR, start_new_session=True)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.pid, self.out, self.err = self.proc.pid, self.proc.stdout.fileno(), self.proc.stderr.fileno()
        self.poll, self.wait = self.proc.poll, self.proc.wait

    def close(self):
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        self.proc.stderr.close()


def run_once(req):
    """One fresh process per call (forked Python, or bash under `timeout`), killed with its
    whole process group at the deadline or when an output cap is hit."""
    timeout, cap = float(req["timeout"]), int(req["cap"])
    proc: Forked | Spawned
    if req["lang"] == "python":
        proc, grace = Forked(req["code"], timeout), 0.0
    else:
        proc, grace = Spawned(["bash", "-c", req["code"]], timeout), 1.0
    col = Collector({"stdout": proc.out, "stderr": proc.err}, cap)
    started = time.monotonic()
    deadline = started + timeout + grace
    timed_out = capped = False
    exited_at = None
    while col.open():
        now = time.monotonic()
        if now > deadline:
            timed_out = True
            break
        if col.poll(min(0.05, deadline - now)):
            capped = True
            break
        if exited_at is None and proc.poll() is not None:
            exited_at = now
        if exited_at is not None and now - exited_at > 0.2:
            break  # a background child holds the pipes open; do not wait for it
    if not (timed_out or capped):
        try:  # pipes closed: the process is exiting; let it finish before killing the rest
            proc.wait(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            pass
    killpg(proc.pid)
    rc = proc.wait()
    col.close()
    proc.close()
    killed = rc in (-signal.SIGKILL, -signal.SIGXCPU, 124, 137)
    if killed and not capped and time.monotonic() - started >= timeout - 0.05:
        timed_out = True  # `timeout -s KILL` kills its whole group, itself included
    return (128 - rc if rc < 0 else rc), col, timed_out, False


class Worker:
    """A persistent python interpreter: variables survive between calls."""

    def __init__(self):
        cmd_r, self.cmd_w = os.pipe()
        self.done_r, done_w = os.pipe()
        self.proc = subprocess.Popen(
            ["python3", "-c", WORKER, str(cmd_r), str(done_w)], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=WORKDIR, start_new_session=True,
            pass_fds=(cmd_r, done_w))
        assert self.proc.stdout is not None and self.proc.stderr is not None
        os.close(cmd_r)
        os.close(done_w)

    def run(self, req):
        assert self.proc.stdout is not None and self.proc.stderr is not None
        timeout, cap = float(req["timeout"]), int(req["cap"])
        col = Collector({"stdout": self.proc.stdout.fileno(), "stderr": self.proc.stderr.fileno(),
                         "done": self.done_r}, cap)
        os.write(self.cmd_w, (json.dumps({"code": req["code"]}) + "\n").encode())
        deadline = time.monotonic() + timeout
        timed_out = capped = alive = False
        rc = -1
        while True:
            now = time.monotonic()
            if now > deadline:
                timed_out = True
                break
            if col.poll(min(0.05, deadline - now)):
                capped = True
                break
            if b"\n" in col.buf["done"]:
                col.drain()
                rc, alive = int(json.loads(bytes(col.buf["done"]).split(b"\n")[0])["rc"]), True
                break
            if self.proc.poll() is not None:
                col.drain()
                rc = self.proc.returncode
                rc = 128 - rc if rc < 0 else rc
                break
        col.close()
        if not alive or capped:
            self.kill()
            alive = False
        return rc, col, timed_out, not alive

    def kill(self):
        assert self.proc.stdout is not None and self.proc.stderr is not None
        killpg(self.proc.pid)
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()
        for fd in (self.cmd_w, self.done_r):
            try:
                os.close(fd)
            except OSError:
                pass


def do_exec(req, state):
    limit = int(req.get("max_files", 2000))
    before = manifest(limit)
    oom0, pids0 = oom_count(), pids_max_count()
    start = time.monotonic()
    if req.get("persistent") and req["lang"] == "python":
        died = state.get("worker") is not None and state["worker"].proc.poll() is not None
        if died:
            state["worker"].kill()
        if state.get("worker") is None or died:
            state["worker"] = Worker()
        rc, col, timed_out, reset = state["worker"].run(req)
        reset = reset or died
        if reset:
            state["worker"] = None
    else:
        rc, col, timed_out, reset = run_once(req)
    duration = time.monotonic() - start
    oom1, pids1 = oom_count(), pids_max_count()
    err = bytes(col.buf["stderr"])
    pids_hit = (pids1 or 0) > (pids0 or 0) if pids1 is not None else any(m in err for m in FORK_FAILURE)
    return {"ok": True, "exit_code": rc, "duration_s": duration,
            "stdout": base64.b64encode(bytes(col.buf["stdout"])).decode(),
            "stderr": base64.b64encode(err).decode(),
            "stdout_truncated": col.truncated["stdout"], "stderr_truncated": col.truncated["stderr"],
            "timed_out": timed_out, "oom": (oom1 or 0) > (oom0 or 0), "pids_exhausted": pids_hit,
            "state_reset": reset, "files_before": before, "files_after": manifest(limit)}


def manifest(limit):
    """Regular files under /workspace with size and sha256 (links, FIFOs... are left out)."""
    files: dict = {}
    for root, _dirs, names in os.walk(WORKDIR):
        for name in names:
            path = os.path.join(root, name)
            if len(files) >= limit:
                return files
            try:
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode):
                    continue
                digest = hashlib.sha256()
                with open(path, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(block)
            except OSError:  # removed meanwhile (a background process), or unreadable
                continue
            files[os.path.relpath(path, WORKDIR)] = [st.st_size, digest.hexdigest()]
    return files


def runner(requests, answers):
    """The runner process: one JSON line in, one JSON line out, until the channel goes."""
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)  # the container's stdin and stdout belong to the channel alone
    os.dup2(devnull, 1)
    state: dict = {}
    if "persistent" in sys.argv[1:]:  # start the interpreter now, not on the first call
        state["worker"] = Worker()
    src, out = os.fdopen(requests, "rb"), os.fdopen(answers, "wb")
    for line in src:
        try:
            req = json.loads(line)
            answer = do_exec(req, state) if req.get("op") == "exec" else {"ok": True, "pong": True}
        except Exception as exc:
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write((json.dumps(answer) + "\n").encode())
        out.flush()


# -- the channel ---------------------------------------------------------------------------


def unreadable():
    """PR_SET_DUMPABLE 0: /proc/<pid>/{fd,mem,environ...} of this process (and of a child
    forked from it) become root's, so same-user code without capabilities cannot reach them."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
        sys.stderr.write(f"agentkit agent: prctl(PR_SET_DUMPABLE) failed: errno {ctypes.get_errno()}\n")
        sys.exit(70)  # fail closed: an agent the code can read would leak the channel key


class Channel:
    """Frames: ``mark(16) | length(4, big-endian) | mac(32) | payload``. The mark is the
    key's HMAC of the direction (so it cannot be guessed, and a request cannot pass as a
    reply); the MAC covers direction, length and payload."""

    MARK, HEAD = 16, 52

    def __init__(self, key):
        self.key = key
        self.marks = {d: hmac.new(key, b"mark:" + d, hashlib.sha256).digest()[:self.MARK]
                      for d in (b"req", b"rep")}

    def frame(self, direction, payload):
        size = len(payload).to_bytes(4, "big")
        mac = hmac.new(self.key, direction + size + payload, hashlib.sha256).digest()
        return self.marks[direction] + size + mac + payload

    def parse(self, buf, direction, limit):
        """The payload of the first valid frame in `buf` (consumed), or None (need more).
        Bytes before a mark, frames over `limit` and frames whose MAC fails are dropped."""
        mark = self.marks[direction]
        while True:
            start = buf.find(mark)
            if start < 0:
                del buf[:max(0, len(buf) - self.MARK + 1)]
                return None
            del buf[:start]
            if len(buf) < self.HEAD:
                return None
            size = int.from_bytes(buf[self.MARK:self.MARK + 4], "big")
            if size > limit:
                del buf[:self.MARK]
                continue
            if len(buf) < self.HEAD + size:
                return None
            payload = bytes(buf[self.HEAD:self.HEAD + size])
            mac = hmac.new(self.key, direction + buf[self.MARK:self.MARK + 4] + payload, hashlib.sha256)
            if not hmac.compare_digest(mac.digest(), bytes(buf[self.MARK + 4:self.HEAD])):
                del buf[:self.MARK]
                continue
            del buf[:self.HEAD + size]
            return payload


MAX_REQUEST = 64 << 20


def main():
    unreadable()
    requests, answers = fork_runner()
    out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    stdin = sys.stdin.buffer.raw
    opened = read_key(stdin)
    if opened is None:
        return
    channel, buf = opened
    out.write(channel.frame(b"rep", b'{"ok": true, "ready": true, "id": 0}'))
    out.flush()
    serve(channel, buf, stdin, out, os.fdopen(requests, "wb"), os.fdopen(answers, "rb"))


def fork_runner():
    """Fork the runner before the key exists; return the (requests, answers) pipe ends."""
    to_runner, requests = os.pipe()
    answers, from_runner = os.pipe()
    if os.fork() == 0:  # the runner
        os.close(requests)
        os.close(answers)
        try:
            runner(to_runner, from_runner)
        finally:
            os._exit(0)
    os.close(to_runner)
    os.close(from_runner)
    return requests, answers


def read_key(stdin):
    """The session key, the first line the host sends: (channel, what followed it) or None."""
    buf = bytearray()
    while b"\n" not in buf:
        chunk = stdin.read(65536)
        if not chunk:
            return None
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    return Channel(bytes.fromhex(line.decode())), bytearray(rest)


def serve(channel, buf, stdin, out, to_run, from_run):
    """Pass each authenticated, new request to the runner and its answer back, until EOF."""
    last = 0
    while True:
        payload = channel.parse(buf, b"req", MAX_REQUEST)
        if payload is None:
            chunk = stdin.read(65536)
            if not chunk:
                return  # the host's connection is gone: end the container with it
            buf += chunk
            continue
        req = json.loads(payload)
        if not isinstance(req.get("id"), int) or req["id"] <= last:
            continue  # a replayed request
        last = req["id"]
        to_run.write(payload + b"\n")
        to_run.flush()
        answer = from_run.readline()
        if not answer:
            sys.stderr.write("agentkit agent: the runner process died\n")
            sys.exit(1)
        reply = json.loads(answer)
        reply["id"] = last
        out.write(channel.frame(b"rep", json.dumps(reply).encode()))
        out.flush()


if __name__ == "__main__":
    main()
