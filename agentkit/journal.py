"""The audit ledger read back as a journal: what a resumed or replayed run may answer from it.

A durable run re-executes its task and answers every call that already completed from the
ledger (see `agentkit.resume`). This module only *reads*: `read_journal` turns a ledger (a
torn last line is ignored, as the writer cuts it on reopen) into a `Journal` holding

- the run's id, the resolved task spec and the task file's sha256 (from ``run.started``);
- model answers by ``(call_key, fingerprint)`` and the last request sent under each key (for
  the divergence diff);
- tool results by tool call key (``<model call key of the turn>`` with ``/m`` replaced by
  ``/t<index>``: `tool_call_key`), and side-effecting calls whose intent was recorded but
  whose result was not (in flight at the crash);
- finished nodes with their outputs, usage and tool calls spent, elapsed seconds, and whether
  (and how) the run finished.

Speed: a 50,000-event ledger is read in well under two seconds (``benchmarks/durability.py``
measures it). Each line's kind is found from the bytes (it follows the data in canonical JSON),
and model and tool calls are indexed by a byte search for their call key (and fingerprint);
their lines are parsed only when a lookup, a diff or the usage restore needs them. Lines of
kinds nothing here needs are never parsed.

The lookups (`model_answer`, `tool_result`) decide per call: *replay* (a recorded answer
exists for this key and fingerprint), *live* (nothing recorded under the key), or
*divergence* (answers are recorded under the key, for another request): a `DivergenceError`
naming the call and a short diff of the two requests, unless the journal was opened with
``from_divergence``. In strict replay (``agentkit replay``) anything not recorded is a
`ReplayMiss`.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentkit.audit import read_blob
from agentkit.errors import ConfigError, DivergenceError, ReplayMiss, RunFailed

__all__ = ["Journal", "read_journal", "request_diff", "tool_call_key"]

#: kinds whose data the journal needs whole; the others are only counted or byte-searched
_PARSED = frozenset({"run.started", "run.resumed", "run.finished", "tool.intent",
                     "node.finished", "url.fetched"})
_INDEXED = frozenset({"model.request", "model.response", "tool.call", "tool.result"})
_KIND = re.compile(rb',"kind":"([a-z._]+)","node_id":')
_CALL_KEY = re.compile(rb'"call_key":"((?:[^"\\]|\\.)*)"')
_TS = re.compile(rb',"ts":([0-9.eE+-]+)')
_FINGERPRINT = re.compile(rb'"fingerprint":"([0-9a-f]{64})"')
_NODE = re.compile(rb',"kind":"[a-z._]+","node_id":(null|"(?:[^"\\]|\\.)*")')
_MODEL = re.compile(rb'"model":("(?:[^"\\]|\\.)*"),"priced":')
_COST = re.compile(rb'"cost_usd":([0-9.eE+-]+)')
_USAGE = re.compile(rb'"usage":(\{[^{}]*\})')
_SIDE_EFFECTS = re.compile(rb'"side_effects":true')


def _data(line: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(line).get("data") or {}
    return data


def _node_of(line: bytes) -> str | None:
    found = _NODE.search(line, max(0, len(line) - 600)) or _NODE.search(line)
    return None if found is None or found[1] == b"null" else _string(found[1])


def _string(quoted: bytes) -> str:
    """A JSON string literal's value (without a parse when it holds no escape)."""
    if b"\\" not in quoted:
        return quoted[1:-1].decode()
    value: str = json.loads(quoted)
    return value


def tool_call_key(model_call_key: str, index: int) -> str:
    """The key of the `index`-th tool call (0-based) asked for by the turn `model_call_key`."""
    head, _, _ = model_call_key.rpartition("/")
    return f"{head}/t{index}"


@dataclass
class Journal:
    """What a ledger says a run did; see the module docstring. Made by `read_journal`."""

    path: Path
    run_id: str = ""
    spec: dict[str, Any] | None = None
    task_file: str | None = None
    task_sha256: str | None = None
    #: (call_key, fingerprint) -> the model.response line (parsed when looked up)
    responses: dict[tuple[str, str], bytes] = field(default_factory=dict)
    #: call_key -> raw bytes of the last model.request line under it (parsed on demand)
    requests: dict[str, bytes] = field(default_factory=dict)
    #: tool call key -> its tool.result / tool.call line (parsed when looked up); the keys of
    #: side-effecting calls; tool.intent data by key
    tool_results: dict[str, bytes] = field(default_factory=dict)
    tool_calls: dict[str, bytes] = field(default_factory=dict)
    side_effect_calls: set[str] = field(default_factory=set)
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: node id -> node.finished data (output, sources, attempt)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: url.fetched data, in order (the pages a swarm may cite)
    fetched: list[dict[str, Any]] = field(default_factory=list)
    tool_calls_spent: int = 0
    elapsed_s: float = 0.0
    events: int = 0
    last_seq: int = -1
    #: the data of the last run.finished after the last start or resume (None: unfinished)
    finished: dict[str, Any] | None = None
    segments: int = 0
    #: how lookups treat a request that differs from the recorded one (see module docstring)
    from_divergence: bool = False
    strict: bool = False
    #: called once with the first error that must stop the run (the run cancels itself)
    on_stop: Callable[[RunFailed], None] | None = None
    stopped: RunFailed | None = None
    #: counts of what a re-execution answered from the ledger, and of divergences passed
    replayed_models: int = 0
    replayed_tools: int = 0
    diverged: list[str] = field(default_factory=list)
    #: where a divergence passed with ``from_divergence`` is recorded (``resume.diverged``)
    emit: Callable[..., Any] | None = field(default=None, repr=False)
    _answered_keys: set[tuple[str, Any]] | None = field(default=None, init=False, repr=False)

    # -- what the run did --------------------------------------------------------------------

    @property
    def succeeded(self) -> bool:
        return self.finished is not None and self.finished.get("status") == "succeeded"

    def in_flight(self) -> list[str]:
        """Keys of side-effecting tool calls recorded without a result."""
        return sorted(k for k in self.side_effect_calls if k not in self.tool_results)

    def in_flight_call(self, key: str) -> dict[str, Any] | None:
        """If tool call `key` had side effects and was in flight at the crash: its tool.call
        data, with its journalled intent under ``"intent"`` (None otherwise)."""
        if key not in self.side_effect_calls or key in self.tool_results:
            return None
        data = _data(self.tool_calls[key])
        return {**data, "intent": self.intents.get(key)}

    def usage_by_node(self) -> list[tuple[str | None, str, dict[str, int], float, int]]:
        """What the recorded answers spent, per (node, model): usage summed field by field,
        cost, and the number of calls."""
        sums: dict[tuple[str | None, str], tuple[dict[str, int], list[float]]] = {}
        for line in self.responses.values():  # byte searches, no full parse
            model, cost = _MODEL.search(line), _COST.search(line)
            usage = [m for m in _USAGE.finditer(line)]
            group = sums.setdefault((_node_of(line), _string(model[1]) if model else "?"),
                                    ({}, [0.0, 0]))
            for name, value in (json.loads(usage[-1][1]) if usage else {}).items():
                if isinstance(value, int):
                    group[0][name] = group[0].get(name, 0) + value
            group[1][0] += float(cost[1]) if cost else 0.0
            group[1][1] += 1
        return [(node, model, usage, cost, int(calls))
                for (node, model), (usage, (cost, calls)) in sums.items()]

    # -- lookups made by a re-execution -----------------------------------------------------

    def model_answer(self, key: str, fingerprint: str,
                     request: dict[str, Any]) -> dict[str, Any] | None:
        """The recorded answer to this call, or None to make it live (see module docstring)."""
        self._check_stopped()
        found = self.responses.get((key, fingerprint))
        if found is not None:
            self.replayed_models += 1
            inflated: dict[str, Any] = self._inflate(_data(found))
            return inflated
        recorded = (key, request.get("model")) in self._answered()
        if self.strict:
            self._stop(ReplayMiss(
                f"replay: no recorded answer for model call {key} (request fingerprint "
                f"{fingerprint[:12]}); the replayed run asked for something the recorded one "
                f"did not", call_key=key, diff=self.nearest_diff(key, request)))
        if recorded and not self.from_divergence:
            diff = self.nearest_diff(key, request)
            self._stop(DivergenceError(
                f"resume diverged at model call {key}: its request differs from the recorded "
                f"one (the code, a prompt or an input changed). Diff (recorded -> now):\n{diff}\n"
                f"Resume with --from-divergence to continue live from this call.",
                call_key=key, diff=diff))
        if recorded:
            self.diverged.append(key)
            if self.emit is not None:
                self.emit("resume.diverged", {"call_key": key,
                                              "diff": self.nearest_diff(key, request)})
        return None

    def _answered(self) -> set[tuple[str, Any]]:
        """(call key, model name) of every recorded answer: a request to another model under
        the same key (a fallback's) is not a divergence."""
        if self._answered_keys is None:
            self._answered_keys = set()
            for (key, _), line in self.responses.items():
                model = _MODEL.search(line)
                self._answered_keys.add((key, json.loads(model[1]) if model else None))
        return self._answered_keys

    def tool_result(self, key: str) -> dict[str, Any] | None:
        """The recorded result of tool call `key` (None: not recorded)."""
        self._check_stopped()
        found = self.tool_results.get(key)
        if found is None:
            return None
        data = _data(found)
        if "content" not in data:  # recorded before tool results carried what the model read
            return None
        self.replayed_tools += 1
        result: dict[str, Any] = self._inflate(data)
        return result

    def tool_miss(self, key: str, tool: str) -> None:
        """Strict replay: a tool call without a recorded result stops the run."""
        if self.strict:
            self._stop(ReplayMiss(f"replay: no recorded result for tool call {key} ({tool})",
                                  call_key=key, diff=""))

    def nearest_diff(self, key: str, request: dict[str, Any]) -> str:
        """A short diff of `request` against the recorded request under `key` (or, if none,
        the recorded one whose key shares the longest prefix with it)."""
        if not self.requests:
            return "(the ledger records no model request)"
        best = key if key in self.requests else max(
            self.requests, key=lambda k: (_common_prefix(k, key), k))
        raw = json.loads(self.requests[best])["data"]
        old = {k: raw.get(k) for k in ("model", "messages", "tools", "settings")}
        return f"(recorded call {best})\n" + request_diff(old, request)

    def _check_stopped(self) -> None:
        if self.stopped is not None:
            raise self.stopped

    def _stop(self, error: RunFailed) -> None:
        if self.stopped is None:
            self.stopped = error
            if self.on_stop is not None:
                self.on_stop(error)
        raise error

    def _inflate(self, value: Any) -> Any:
        """`value` with each large-string blob reference replaced by the blob's text."""
        if isinstance(value, dict):
            if isinstance(value.get("$blob"), str):
                return read_blob(self.path, value)
            return {k: self._inflate(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._inflate(v) for v in value]
        return value


def request_diff(old: dict[str, Any], new: dict[str, Any], *, max_lines: int = 40) -> str:
    """A unified diff of two requests' JSON (sorted keys, one value per line), cut short."""
    def lines(value: dict[str, Any]) -> list[str]:
        text = json.dumps(value, sort_keys=True, indent=1, ensure_ascii=False, default=str)
        return text.splitlines()

    diff = list(difflib.unified_diff(lines(old), lines(new), "recorded", "now", n=1,
                                     lineterm=""))
    if not diff:
        return "(the requests are equal)"
    more = len(diff) - max_lines
    return "\n".join(diff[:max_lines] + ([f"... {more} more diff lines"] if more > 0 else []))


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


# ---------------------------------------------------------------------------------------------
# Reading


def read_journal(path: str | Path) -> Journal:
    """Read the ledger at `path` into a `Journal` (`ConfigError` if it is not a ledger)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the ledger {path}: {exc.strerror or exc}") from None
    journal = Journal(path=path)
    reader = _Reader(journal)
    end = raw.rfind(b"\n") + 1  # a torn last line (no newline) is not a record
    for line in raw[:end].split(b"\n")[:-1]:
        reader.line(line)
    reader.close()
    if not journal.run_id:
        raise ConfigError(f"{path}: not an agentkit ledger (no run.started record); give the "
                          f"path of a run's ledger, e.g. runs/<run id>.jsonl")
    return journal


class _Reader:
    """One pass over the lines; keeps the per-segment state (start and last timestamps)."""

    def __init__(self, journal: Journal) -> None:
        self.j = journal
        self.segment_start: float | None = None
        self.last_ts: float | None = None

    def line(self, line: bytes) -> None:
        j = self.j
        j.events += 1
        match = _KIND.search(line, max(0, len(line) - 400))
        if match is None:
            match = _KIND.search(line)
        if match is None:
            raise ConfigError(f"{j.path}: line {j.events} is not a ledger record; run "
                              f"`agentkit audit verify {j.path}`")
        kind = match[1].decode()
        stamp = _TS.search(line, match.end())
        if stamp is not None:
            self.last_ts = float(stamp[1])
        if kind in _INDEXED:
            self.index(kind, line)
            return
        if kind in _PARSED:
            record = json.loads(line)
            if kind == "run.started":
                j.run_id = str(record.get("run_id") or "")
            _APPLY[kind](self, record.get("data") or {}, record.get("node_id"))
            j.last_seq = record.get("seq", j.last_seq)

    def index(self, kind: str, line: bytes) -> None:
        """Model and tool calls: found by their call key, parsed only when looked up."""
        j = self.j
        found = _CALL_KEY.search(line)
        if kind == "tool.result":
            j.tool_calls_spent += 1
        if found is None:
            return
        key = _string(b'"' + found[1] + b'"')
        if kind == "model.request":
            j.requests[key] = line
        elif kind == "model.response":
            fingerprint = _FINGERPRINT.search(line)
            if fingerprint is not None:
                j.responses[(key, fingerprint[1].decode())] = line
        elif kind == "tool.call":
            j.tool_calls[key] = line
            if _SIDE_EFFECTS.search(line):
                j.side_effect_calls.add(key)
        else:
            j.tool_results[key] = line

    def start_segment(self) -> None:
        self.close()
        self.segment_start = self.last_ts
        self.j.finished = None
        self.j.segments += 1

    def close(self) -> None:
        if self.segment_start is not None and self.last_ts is not None:
            self.j.elapsed_s += max(0.0, self.last_ts - self.segment_start)
        self.segment_start = None


def _started(r: _Reader, data: dict[str, Any], node: str | None) -> None:
    r.start_segment()
    spec = data.get("spec")
    if isinstance(spec, dict):
        r.j.spec = spec
        r.j.task_file, r.j.task_sha256 = data.get("task_file"), data.get("task_sha256")


def _resumed(r: _Reader, data: dict[str, Any], node: str | None) -> None:
    r.start_segment()


def _finished(r: _Reader, data: dict[str, Any], node: str | None) -> None:
    r.j.finished = data


def _intent(r: _Reader, data: dict[str, Any], node: str | None) -> None:
    key = data.get("call_key")
    if isinstance(key, str):
        r.j.intents[key] = data


def _node_finished(r: _Reader, data: dict[str, Any], node: str | None) -> None:
    if node is not None:
        r.j.nodes[node] = data


def _fetched(r: _Reader, data: dict[str, Any], node: str | None) -> None:
    r.j.fetched.append(data)


_APPLY: dict[str, Callable[[_Reader, dict[str, Any], str | None], None]] = {
    "run.started": _started, "run.resumed": _resumed, "run.finished": _finished,
    "tool.intent": _intent, "node.finished": _node_finished, "url.fetched": _fetched,
}
