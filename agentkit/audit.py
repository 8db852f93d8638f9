"""The audit ledger: every event of a run as one hash-chained JSONL line.

Each line is ``{"data","kind","node_id","prev","run_id","seq","ts"}`` in canonical JSON (sorted
keys, no spaces, UTF-8) followed by ``"hash"``: the sha256 of exactly those canonical bytes.
``prev`` is the previous line's hash (64 zeros for the first line), so editing, deleting or
reordering any line breaks the chain at that line, and `verify_ledger` names its ``seq``.
Hashing the written bytes (not a re-serialisation) means *any* flipped byte is detected.

Before hashing, strings over 64 KB (UTF-8) move into content-addressed blob files beside the
ledger, and one pipeline of plain callables (``str -> str`` over the event data's canonical
JSON) redacts secrets: by key, by pattern and by the exact values of configured secrets. Working
on the text keeps redaction to a few C-speed scans per event. Sequence numbers are the ledger's
own line numbers (equal to the events' ``seq`` when the ledger is the bus's first sink).
Writes go through ``os.open(O_APPEND)`` with one ``os.write`` per batch of whole lines; a
failed write raises, so a run never continues unaudited. A torn last line left by a crash is
cut on reopen and named in a ``recovered`` record, never dropped silently.

What a ``kill -9`` can lose is bounded (see `Ledger`): records of side effects are written to
the operating system before the effect, answered model and tool calls as they complete,
everything else within 64 events or 250 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agentkit._canonical import dumps, encoder, quote
from agentkit._timeline import timeline
from agentkit.errors import ConfigError, RunFailed
from agentkit.events import Event
from agentkit.secrets import Redactor, redaction_pipeline

__all__ = ["GENESIS", "Ledger", "VerifyResult", "VerifyState", "lock_ledger", "read_blob",
           "show_ledger", "verify_ledger"]

GENESIS = "0" * 64
BLOB_THRESHOLD = 64 * 1024
PREVIEW_CHARS = 512

#: kinds written through at once (no fsync): the run's milestones, a change made to a file, a
#: side effect's intent, a request for a person's approval and its decision, and every
#: completed model and tool call (the journal a resumed run answers from: a call whose answer
#: reached the kernel is never sent again). A ``tool.call`` whose data says
#: ``"side_effects": true`` is written through too, *before* the tool acts (and with it every
#: line queued before it).
_WRITE_THROUGH = frozenset({"run.started", "run.finished", "run.resumed", "plan.created",
                            "plan.replanned", "node.finished", "node.failed", "budget.exceeded",
                            "recovered", "file.diff", "tool.intent", "model.response",
                            "tool.result", "approval.requested", "approval.decided"})

FsyncPolicy = Literal["close", "always", "never", "interval"]
_HASH_SUFFIX = re.compile(rb',"hash":"([0-9a-f]{64})"\}\n\Z')


# ---------------------------------------------------------------------------------------------
# Large strings -> content-addressed blobs beside the ledger


def _is_big(text: str) -> bool:
    """Over the threshold in UTF-8 bytes (encoding only strings that could be)."""
    return len(text) > BLOB_THRESHOLD or (
        len(text) * 4 > BLOB_THRESHOLD and len(text.encode("utf-8", "surrogatepass")) > BLOB_THRESHOLD)


def _has_big_string(value: Any) -> bool:
    if isinstance(value, str):
        return _is_big(value)
    if isinstance(value, dict):
        return any(_has_big_string(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_big_string(v) for v in value)
    return False


def _offload(value: Any, store: Callable[[str], dict[str, Any]]) -> Any:
    if isinstance(value, str):
        return store(value) if _is_big(value) else value
    if isinstance(value, dict):
        return {k: _offload(v, store) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_offload(v, store) for v in value]
    return value


def _blob_dir(ledger: Path) -> Path:
    return ledger.with_name(ledger.name + ".blobs")


def read_blob(ledger: str | Path, ref: dict[str, Any] | str) -> str:
    """The full text behind a ``{"$blob": sha, ...}`` reference; checks its hash."""
    sha = ref if isinstance(ref, str) else str(ref["$blob"])
    raw = (_blob_dir(Path(ledger)) / sha).read_bytes()
    if hashlib.sha256(raw).hexdigest() != sha:
        raise ValueError(f"blob {sha} was altered (its content no longer matches its name)")
    return raw.decode("utf-8")


# ---------------------------------------------------------------------------------------------
# The writer


class Ledger:
    """Append-only, hash-chained JSONL. `append` is an `EventBus` sink.

    What a ``kill -9`` of the run can lose: nothing of a side effect (a ``tool.call`` marked
    ``"side_effects": true`` and its ``tool.intent``, written before the tool acts, and the
    ``file.diff`` of what it changed), of a completed call (``model.response``,
    ``tool.result``: what a resumed run answers from) or of a milestone (run, plan, node,
    budget), which are written to the operating system before `append` returns; of any other
    event at most the last `flush_events` (64) and at most the last `flush_after_s` (0.25 s): the
    buffer is written when either is reached, by a timer on the running event loop if nothing
    else comes. "Written" means handed to the kernel, which a killed process cannot undo;
    surviving a power cut needs ``fsync``.

    `fsync`: ``close`` (default: one fsync when the run ends), ``always`` (each event written
    and fsynced before `append` returns), ``interval`` (at most every `fsync_interval_s`),
    ``never``. Except with ``always``, lines are buffered in small batches (≤ `batch_bytes`,
    `flush_events`, `flush_after_s`) and written in order with one ``os.write`` per batch. The
    constructor does no I/O; the file is opened (and a torn tail recovered) on first use.
    """

    def __init__(self, path: str | Path, *, secrets: Iterable[str] = (),
                 fsync: FsyncPolicy | str = "close", fsync_interval_s: float = 1.0,
                 batch_bytes: int = 64 * 1024, flush_events: int = 64,
                 flush_after_s: float = 0.25, redactors: list[Redactor] | None = None,
                 time_fn: Callable[[], float] = time.time) -> None:
        if fsync not in ("close", "always", "never", "interval"):
            raise ConfigError(f"unknown fsync policy {fsync!r}; expected close, always, "
                              "interval or never")
        self.path = Path(path)
        self.fsync = fsync
        self.fsync_interval_s = fsync_interval_s
        self.batch_bytes = 0 if fsync == "always" else batch_bytes
        self.flush_events, self.flush_after_s = flush_events, flush_after_s
        self.redactors = redactors if redactors is not None else redaction_pipeline(secrets)
        self._encode = encoder()
        self._time = time_fn
        self._fd: int | None = None
        self._buffer: list[bytes] = []
        self._buffered = 0
        #: when the oldest buffered line was queued (monotonic), and whether a timer will
        #: write the buffer out
        self._oldest = 0.0
        self._timer: asyncio.AbstractEventLoop | None = None
        self._seq = 0
        self.head = GENESIS
        self._last_sync = 0.0
        self._failed: BaseException | None = None
        self._lock = threading.Lock()
        self.closed = False

    # -- public ---------------------------------------------------------------------------------

    def append(self, event: Event) -> None:
        """Redact, chain and queue one event. Raises `RunFailed` if the ledger cannot write."""
        self.record(event.kind, event.data, run_id=event.run_id, node_id=event.node_id,
                    ts=event.ts)

    def record(self, kind: str, data: dict[str, Any], *, run_id: str, node_id: str | None,
               ts: float) -> None:
        with self._lock:
            if self._failed is not None and kind == "run.finished":
                # the write that failed already stopped the run (its error is the run's);
                # refusing the last record too would turn that clean failure into a crash
                return
            self._ensure_open()
            self._add(kind, data, run_id, node_id, ts)

    def _add(self, kind: str, data: dict[str, Any], run_id: str, node_id: str | None,
             ts: float) -> None:
        """Redact, offload, chain, buffer (the caller holds the lock)."""
        try:
            data_text = self._encode(data)
        except (TypeError, ValueError):  # mixed key types, or a cycle: the slow path says so
            self._encode = encoder()  # a failed call may leave markers behind
            data_text = dumps(data)
        if len(data_text) * 4 > BLOB_THRESHOLD and _has_big_string(data):  # maybe > 64 KB UTF-8
            data_text = dumps(_offload(data, self._store_blob))
        for redact in self.redactors:
            data_text = redact(data_text)
        # the canonical form of the record: keys in sorted order, as json.dumps would write them
        node = "null" if node_id is None else quote(node_id)
        stamp = repr(ts) if type(ts) is float and math.isfinite(ts) else dumps(ts)
        body = (f'{{"data":{data_text},"kind":{quote(kind)},"node_id":{node},'
                f'"prev":"{self.head}","run_id":{quote(run_id)},"seq":{self._seq},'
                f'"ts":{stamp}}}').encode("utf-8", "replace")  # lone surrogates -> ?
        self.head = hashlib.sha256(body).hexdigest()
        self._seq += 1
        line = body[:-1] + b',"hash":"' + self.head.encode() + b'"}\n'
        now = time.monotonic()
        if not self._buffer:
            self._oldest = now
            self._arm_timer()
        self._buffer.append(line)
        self._buffered += len(line)
        if (kind in _WRITE_THROUGH or self._buffered >= self.batch_bytes
                or len(self._buffer) >= self.flush_events
                or now - self._oldest >= self.flush_after_s
                or (kind == "tool.call" and data.get("side_effects") is True)):
            self._flush(sync=self.fsync == "always")
        if self.fsync == "interval" and now - self._last_sync >= self.fsync_interval_s:
            self._flush(sync=True)

    def _arm_timer(self) -> None:
        """Write the buffer out `flush_after_s` from now, should no event come to do it (only
        on a running event loop; without one the age is checked as events arrive)."""
        if self.batch_bytes == 0:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._timer is loop:  # one is pending on this loop (one on a finished loop is not)
            return
        self._timer = loop
        loop.call_later(self.flush_after_s, self._on_timer)

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
            if self._buffer and self._fd is not None and self._failed is None \
                    and not self.closed:
                with contextlib.suppress(RunFailed):  # the next append reports the failure
                    self._flush(sync=self.fsync == "always")

    @property
    def count(self) -> int:
        """Lines in the ledger so far (including buffered ones)."""
        return self._seq

    def flush(self) -> None:
        """Write buffered lines now (no fsync unless the policy is ``always``)."""
        with self._lock:
            if self._fd is not None:
                self._flush(sync=self.fsync == "always")

    def close(self) -> None:
        """Write what is buffered, fsync (unless ``never``) and close. Idempotent."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self._fd is None:
                return
            try:
                if self._failed is None:
                    self._flush(sync=self.fsync != "never")
                elif self._buffer:  # whole records queued before the failure: keep what fits
                    with contextlib.suppress(RunFailed):
                        self._flush(sync=self.fsync != "never")
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------------

    def _ensure_open(self) -> None:
        if self._failed is not None:
            raise RunFailed(f"the audit ledger {self.path} failed earlier ({self._failed}); "
                            "the run cannot continue unaudited") from self._failed
        if self.closed:
            raise RunFailed(f"the audit ledger {self.path} is closed")
        if self._fd is not None:
            return
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if not lock_ledger(fd):
            os.close(fd)
            self._failed = RunFailed(f"{self.path} is being written by another process")
            raise RunFailed(f"the audit ledger {self.path} is being written by another process "
                            f"(a run, or a resume of it, still alive); stop it first")
        self._fd = fd
        if created:
            _fsync_dir(self.path.parent)
        else:
            self._resume()

    def _resume(self) -> None:
        """Continue the chain of an existing ledger; cut and report a torn last line."""
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        tail = _read_tail(self._fd, size)
        cut = tail.rfind(b"\n") + 1
        torn, complete = tail[cut:], tail[:cut]
        if torn:
            os.ftruncate(self._fd, size - len(torn))
            os.fsync(self._fd)
        run_id = ""
        if complete:
            record = _parse_last(complete, self.path)
            self._seq, self.head = record["seq"] + 1, record["hash"]
            run_id = str(record.get("run_id") or "")
        if torn:
            self._add("recovered", {
                "reason": "torn last line (the writer stopped mid-write); the bytes were cut",
                "cut_bytes": len(torn), "cut_sha256": hashlib.sha256(torn).hexdigest(),
                "cut_preview": torn[:PREVIEW_CHARS].decode("utf-8", "replace"),
                "resumed_at_seq": self._seq}, run_id, None, self._time())
            self._flush(sync=self.fsync != "never")

    def _store_blob(self, text: str) -> dict[str, Any]:
        """Redact the string with the same pipeline (as a JSON string literal), then store it
        under its sha256; the record keeps a reference and a preview."""
        literal = json.dumps(text, ensure_ascii=False)
        for redact in self.redactors:
            literal = redact(literal)
        text = json.loads(literal)
        raw = text.encode("utf-8", "replace")
        sha = hashlib.sha256(raw).hexdigest()
        folder = _blob_dir(self.path)
        target = folder / sha
        if not target.exists():
            # written under a temporary name and renamed: a blob is whole or absent, and a
            # failed write (a full disk) leaves nothing behind
            tmp = folder / f".{sha}.{os.getpid()}.tmp"
            try:
                folder.mkdir(exist_ok=True)
                _write_new(tmp, raw, sync=self.fsync == "always")
                os.replace(tmp, target)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                self._failed = exc
                raise RunFailed(f"cannot write audit blob {target}: {exc.strerror or exc}; the "
                                "run stops rather than continue unaudited") from exc
        return {"$blob": sha, "size": len(raw), "preview": text[:PREVIEW_CHARS]}

    def _flush(self, *, sync: bool) -> None:
        assert self._fd is not None
        try:
            if self._buffer:
                data = b"".join(self._buffer)
                self._buffer.clear()
                self._buffered = 0
                view = memoryview(data)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
            if sync:
                os.fsync(self._fd)
                self._last_sync = time.monotonic()
        except OSError as exc:
            self._failed = exc
            raise RunFailed(f"cannot write the audit ledger {self.path}: {exc.strerror or exc}; "
                            "the run stops rather than continue unaudited") from exc


def lock_ledger(fd: int) -> bool:
    """Take the one-writer lock on an open ledger (False: another process holds it). The
    kernel drops it when the writer's file is closed or its process dies, ``kill -9``
    included, so a crashed run never leaves it behind."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _write_new(path: Path, data: bytes, *, sync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make a new file's directory entry durable (a crash must not lose the whole ledger)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_tail(fd: int, size: int) -> bytes:
    """The end of the file from at least the start of its last complete line (torn bytes
    after it included), read backwards so a large ledger is not read whole."""
    chunk = 65536
    while True:
        start = max(0, size - chunk)
        tail = os.pread(fd, size - start, start)
        end = tail.rfind(b"\n")
        if start == 0 or (end > 0 and tail.rfind(b"\n", 0, end) >= 0):
            return tail
        chunk *= 4


def _parse_last(tail: bytes, path: Path) -> dict[str, Any]:
    lines = [ln for ln in tail.split(b"\n") if ln]
    try:
        record: dict[str, Any] = json.loads(lines[-1])
        if not isinstance(record.get("seq"), int) or not isinstance(record.get("hash"), str):
            raise ValueError("no seq/hash")
        return record
    except (ValueError, IndexError) as exc:
        raise ConfigError(f"{path}: the last complete line is not a ledger record ({exc}); "
                          f"run `agentkit audit verify {path}`") from None


# ---------------------------------------------------------------------------------------------
# Verifying and showing


VerifyState = Literal["intact", "incomplete", "tampered"]
_RECORD_START = b'{"data":'


@dataclass(frozen=True)
class VerifyResult:
    """What `verify_ledger` found.

    `state` is ``intact`` (`ok`), ``tampered`` (a line was edited, inserted, deleted or moved,
    a blob altered, or the expected head is missing), or ``incomplete``: every complete line
    verifies and only the last one is torn, cut mid-write without its newline, as a crash
    (``kill -9``, power loss) or a full disk leaves it. Reopening the ledger cuts the torn
    bytes and records them in a ``recovered`` record.
    """

    ok: bool
    #: seq of the first line that fails (the line's position when it cannot be parsed)
    first_bad_seq: int | None
    reason: str | None
    #: lines that verified before the first bad one
    count: int
    head: str = GENESIS
    state: VerifyState = "intact"
    #: whether the last complete line is ``run.finished``: False for a run still going, or one
    #: that was killed (``agentkit resume`` continues it)
    finished: bool = False


def verify_ledger(path: str | Path, *, expected_head: str | None = None,
                  check_blobs: bool = True,
                  on_record: Callable[[dict[str, Any]], None] | None = None) -> VerifyResult:
    """Recompute the chain. Detects edited, inserted, deleted and reordered lines, altered
    blobs and (given `expected_head`, the head exported elsewhere) a cut tail; tells a torn
    last line (``incomplete``) from tampering. `on_record` gets each verified record as it is
    read (one pass for readers such as the run report, instead of parsing the file twice)."""
    path = Path(path)
    prev, seq, last = GENESIS, 0, b""
    with path.open("rb") as fh:
        for line in fh:
            if not line.endswith(b"\n") and expected_head is None and _torn(line, seq, prev):
                return VerifyResult(False, seq, f"torn last line ({len(line)} bytes without a "
                                    "newline): the writer stopped mid-write (a crash or a full "
                                    "disk); every line before it verified", seq, prev,
                                    state="incomplete")
            reason = _check_line(line, seq, prev, path if check_blobs else None, on_record)
            if reason is not None:
                return VerifyResult(False, seq, reason, seq, prev, state="tampered")
            prev, last = line[-67:-3].decode(), line
            seq += 1
    if expected_head is not None and expected_head != prev:
        return VerifyResult(False, seq, "the last line is not the expected head: lines were "
                                        "removed from the end", seq, prev, state="tampered")
    return VerifyResult(True, None, None, seq, prev,
                        finished=bool(last) and json.loads(last).get("kind") == "run.finished")


def _torn(line: bytes, seq: int, prev: str) -> bool:
    """Whether a last line without its newline is what an interrupted write leaves: the start
    of a record (zero bytes a crash left after it allowed), and not a whole record whose
    newline was replaced (an edit). This tells a crash from clumsy tampering; it cannot prove
    what the torn bytes would have been (an exported head, `--expect-head`, can)."""
    body = line.rstrip(b"\x00")
    if not _RECORD_START.startswith(body[:len(_RECORD_START)]):
        return False
    return _check_line(body[:-1] + b"\n", seq, prev, None) is not None


def _check_line(line: bytes, seq: int, prev: str, blobs_of: Path | None,
                on_record: Callable[[dict[str, Any]], None] | None = None) -> str | None:
    if not line.endswith(b"\n"):
        return (f"the last line ({len(line)} bytes) has no newline and is not a record's "
                "beginning (or lines follow the expected head): bytes were appended or cut")
    match = _HASH_SUFFIX.search(line)
    if match is None:
        return "malformed line: it does not end with the record hash"
    body = line[:match.start()] + b"}"
    if hashlib.sha256(body).hexdigest() != match.group(1).decode():
        return "hash mismatch: the line was edited"
    try:
        record = json.loads(body)
    except ValueError as exc:
        return f"not valid JSON: {exc}"
    if not isinstance(record, dict) or record.get("seq") != seq:
        got = record.get("seq") if isinstance(record, dict) else None
        return f"seq {got} where {seq} was expected: a line was deleted, inserted or moved"
    if record.get("prev") != prev:
        return "prev does not match the previous line's hash: a line was deleted or moved"
    if blobs_of is not None and b'"$blob"' in line:  # walk only records that hold a blob
        for sha in _blob_refs(record.get("data")):
            try:
                read_blob(blobs_of, sha)
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                return f"blob {sha} is missing or altered ({exc})"
    if on_record is not None:
        on_record(record)
    return None


def _blob_refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if isinstance(value.get("$blob"), str):
            yield value["$blob"]
        for v in value.values():
            yield from _blob_refs(v)
    elif isinstance(value, list):
        for v in value:
            yield from _blob_refs(v)


def show_ledger(path: str | Path, *, width: int | None = None) -> Iterator[str]:
    """A readable timeline: one line per record (time, seq, kind, node, its fields); see
    `agentkit._timeline` for the filters (`agentkit audit show --kind/--node/--full`)."""
    return timeline(path, width=width)
