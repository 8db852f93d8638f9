"""Durable runs under fire: kill -9 at random moments of a 30-node run, then resume.

    python benchmarks/durability.py                 # 100 kill/resume cycles (a few minutes)
    python benchmarks/durability.py --cycles 10 --seed 3

Each cycle starts ``agentkit run`` on a 30-node DAG (seeded random dependencies) whose model
is the scripted server answering after a seeded latency (20-80 ms per call, two calls per
node plus the writer's). The cycle waits until the ledger holds N model answers (N seeded,
between 1 and all of them), sends SIGKILL, then runs ``agentkit resume`` to the end. Printed:

- completed runs (resume exit 0 with the uninterrupted run's answer) and ledgers that verify;
- calls re-sent: requests the server got again for a call whose answer was in the ledger at
  the kill (must be 0), and for calls that were in flight at the kill (allowed);
- time from starting ``agentkit resume`` to its first new model request (process start-up,
  journal read, replay of the recorded calls), with the uninterrupted run's time from
  ``agentkit run`` to its first request as the baseline measured in the same invocation;
- resume start-up on a 50,000-event ledger: `read_journal` plus `agentkit.resume` returning
  its handle (goal: under 2 s), against reading the same file's lines with json.loads;
- the journal's cost per call: recording a model answer written through (what a resume
  needs) against the same record buffered (the ledger alone), and a replayed call's lookup.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import statistics
import string
import subprocess
import sys
import tempfile
import time
from itertools import product
from pathlib import Path
from typing import Any

import yaml

from agentkit.audit import Ledger, verify_ledger
from agentkit.journal import Journal, read_journal
from agentkit.models.managed import request_fingerprint
from agentkit.resume import resume
from agentkit.testing import RecordedRequest, Reply, ScriptedModelServer, call, reply

WORKER, WRITER, KEY = "bench-worker", "bench-writer", "DURABLE_BENCH_KEY"
NAMES = ["".join(p) for p in product(string.ascii_lowercase, repeat=2)][:30]


def dag(rng: random.Random) -> dict[str, list[str]]:
    return {name: sorted(rng.sample(NAMES[:i], min(i, rng.randint(0, 2)))) if i else []
            for i, name in enumerate(NAMES)}


def task_file(folder: Path, base_url: str, graph: dict[str, list[str]]) -> Path:
    def model(wire: str) -> dict[str, Any]:
        return {"profile": "deepseek", "model": wire, "base_url": base_url, "api_key_env": KEY,
                "max_tokens": 256, "stream": False}
    spec = {"name": "durability-bench", "goal": "Check every node.", "model": "work",
            "models": {"work": model(WORKER), "write": model(WRITER)},
            "roles": {"worker": "work", "synthesizer": "write", "planner": "work"},
            "tools": ["list_files"], "workspace": str(folder),
            "budget": {"max_agents": 8, "max_nodes": 30, "max_steps": 6},
            "retry": {"node_attempts": 1, "attempts": 2, "base_delay_s": 0.0},
            "plan": {"nodes": [{"id": n, "goal": f"Report on node {n}.", "depends_on": d,
                                "tools": ["list_files"]} for n, d in graph.items()]}}
    path = folder / "task.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def signature(req: RecordedRequest) -> tuple[str, int]:
    msgs = req.body.get("messages") or []
    if req.body.get("model") == WRITER:
        return ("writer", 1)
    users = " ".join(str(m.get("content")) for m in msgs if m.get("role") == "user")
    node = re.search(r"Report on node ([a-z]+)\.", users)
    return (node[1] if node else "?", 1 + sum(1 for m in msgs if m.get("role") == "tool"))


def server(seed: int, arrivals: list[float]) -> ScriptedModelServer:
    """The scripted model: each request's arrival time is noted, then it is answered after
    its seeded latency."""
    async def answer(req: RecordedRequest) -> Reply:
        arrivals.append(time.monotonic())
        node, step = signature(req)
        await asyncio.sleep(random.Random(f"{seed}/{node}/{step}").uniform(0.02, 0.08))
        if node == "writer":
            users = " ".join(str(m.get("content")) for m in req.body["messages"])
            seen = sorted(set(re.findall(r"Node ([a-z]+) is ready", users)))
            return reply(f"All of {', '.join(seen)} reported ready.")
        if step == 1:
            return reply(tool_calls=[call("list_files", {})])
        return reply(f"Node {node} is ready.")
    return ScriptedModelServer("deepseek", default=answer)


def agentkit(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "agentkit", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, KEY: "k"})


def answered(ledger: Path) -> set[tuple[str, int]]:
    out = set()
    for line in ledger.read_bytes().split(b"\n")[:-1]:
        if b'"kind":"model.response"' in line:
            r = json.loads(line)
            out.add(("writer", 1) if r["data"]["model"] == "write" else
                    (r["node_id"], r["data"]["step"]))
    return out


def cycle(folder: Path, srv: ScriptedModelServer, arrivals: list[float], calls: int,
          rng: random.Random, task: Path) -> dict[str, Any]:
    runs = folder / "runs"
    first = len(srv.requests)
    proc = agentkit("run", str(task), "--ledger-dir", str(runs), "--json")
    n = rng.randint(1, calls - 1)
    while True:
        found = list(runs.glob("*.jsonl")) if runs.exists() else []
        if proc.poll() is not None or (found and found[0].read_bytes().count(
                b'"kind":"model.response"') >= n):
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    ledger = found[0]
    done, asked = answered(ledger), {signature(r) for r in srv.requests[first:]}
    before = len(srv.requests)
    started = time.monotonic()
    again = agentkit("resume", str(ledger), "--json")
    out, _ = again.communicate()
    payload = json.loads(out or b"{}")
    later = [signature(r) for r in srv.requests[before:]]
    return {"killed_at": n, "ok": again.returncode == 0, "answer": payload.get("answer"),
            "resent_completed": sum(1 for s in later if s in done),
            "resent_in_flight": sum(1 for s in later if s in asked and s not in done),
            "to_first_call": arrivals[before] - started if len(arrivals) > before else None,
            "verified": verify_ledger(ledger).ok, "ledger": ledger}


def kill_resume(cycles: int, seed: int) -> None:
    rng = random.Random(seed)
    graph = dag(rng)
    arrivals: list[float] = []
    with server(seed, arrivals) as srv:
        with tempfile.TemporaryDirectory() as base:
            task = task_file(Path(base), srv.base_url, graph)
            started = time.monotonic()
            first = agentkit("run", str(task), "--ledger-dir", str(Path(base) / "clean"), "--json")
            expected = json.loads(first.communicate()[0])["answer"]
            baseline_first = arrivals[0] - started
            calls = len(srv.requests)
            results = []
            for i in range(cycles):
                folder = Path(base) / f"c{i}"
                folder.mkdir()
                results.append(cycle(folder, srv, arrivals, calls, rng, task))
    _report_cycles(results, expected, cycles, calls, baseline_first)


def _report_cycles(results: list[dict[str, Any]], expected: str, cycles: int, calls: int,
                   baseline_first: float) -> None:
    completed = sum(1 for r in results if r["ok"] and r["answer"] == expected)
    firsts = [r["to_first_call"] for r in results if r["to_first_call"] is not None]
    print(f"kill -9 / resume cycles: {cycles} (30-node DAG, {calls} model calls per run, "
          f"killed after 1..{calls - 1} answers)")
    print(f"  completed with the uninterrupted answer: {completed}/{cycles}")
    print(f"  ledgers that verify after resume:         "
          f"{sum(r['verified'] for r in results)}/{cycles}")
    print(f"  completed calls re-sent:                  "
          f"{sum(r['resent_completed'] for r in results)} (must be 0)")
    print(f"  in-flight calls re-sent:                  "
          f"{sum(r['resent_in_flight'] for r in results)} (allowed)")
    if firsts:
        print(f"  resume -> first new call: median {statistics.median(firsts) * 1000:.0f} ms, "
              f"max {max(firsts) * 1000:.0f} ms (baseline: run -> first call "
              f"{baseline_first * 1000:.0f} ms; ratio "
              f"{statistics.median(firsts) / baseline_first:.2f})")


# ---------------------------------------------------------------------------------------------
# Resume start-up on a 50,000-event ledger, and the journal's cost per call


def big_ledger(path: Path, events: int) -> None:
    """A ledger shaped like a long run: run.started, then per call a model.request (a few KB
    of history), model.response, tool.call, tool.result."""
    spec = {"name": "big", "goal": "g", "mode": "agent", "model": "m",
            "models": {"m": {"profile": "deepseek", "model": "x", "base_url": "http://127.0.0.1:9",
                             "api_key_env": KEY}}}
    ledger = Ledger(path)
    ledger.record("run.started", {"task": "big", "spec": spec}, run_id="big", node_id=None, ts=0.0)
    history = [{"role": "user", "parts": [{"kind": "text", "text": "word " * 300}]}]
    for i in range((events - 1) // 4):
        key = f"n{i % 200}#1/n{i % 200}#1/{i // 200 + 1}/m"
        request = {"model": "m", "messages": history, "tools": [], "settings": {}}
        fp = request_fingerprint(request)
        ledger.record("model.request", {**request, "call_key": key, "fingerprint": fp},
                      run_id="big", node_id=f"n{i % 200}", ts=float(i))
        message = {"role": "assistant", "parts": [{"kind": "text", "text": "answer " * 40}]}
        ledger.record("model.response", {"model": "m", "message": message, "call_key": key,
                                          "fingerprint": fp, "usage": {"input_tokens": 900,
                                                                       "output_tokens": 40}},
                      run_id="big", node_id=f"n{i % 200}", ts=float(i))
        tkey = key[:-1] + "t0"
        ledger.record("tool.call", {"tool": "list_files", "call_key": tkey, "arguments": {}},
                      run_id="big", node_id=f"n{i % 200}", ts=float(i))
        ledger.record("tool.result", {"tool": "list_files", "call_key": tkey, "ok": True,
                                      "content": "a.txt 10\n" * 20, "data": {}},
                      run_id="big", node_id=f"n{i % 200}", ts=float(i))
    ledger.close()


async def _handle_ready(path: Path) -> float:
    """From `resume()` to its ``run.resumed`` record: the journal read, the runtime made, the
    ledger reopened, usage and budgets restored (the next step would be its first call)."""
    started = time.perf_counter()
    handle = resume(path, environ={KEY: "k"})
    async for event in handle.events():
        if event.kind == "run.resumed":
            break
    elapsed = time.perf_counter() - started
    handle.cancel("benchmark")
    await handle.result()
    return elapsed


def startup(events: int) -> None:
    with tempfile.TemporaryDirectory() as base:
        path = Path(base) / "big.jsonl"
        big_ledger(path, events)
        lines = sum(1 for _ in path.open("rb"))
        started = time.perf_counter()
        for line in path.read_bytes().split(b"\n")[:-1]:
            json.loads(line)
        plain = time.perf_counter() - started
        started = time.perf_counter()
        journal = read_journal(path)
        read = time.perf_counter() - started
        ready = asyncio.run(_handle_ready(path))  # reads the journal itself, then the runtime
        size = path.stat().st_size / 1e6
    print(f"resume start-up, {lines:,}-event ledger ({size:.0f} MB, "
          f"{len(journal.responses):,} recorded answers):")
    print(f"  resume() to its run.resumed record {ready:.2f} s (goal < 2 s), of which read_journal "
          f"{read:.2f} s; baseline json.loads of every line {plain:.2f} s "
          f"(ratio {ready / plain:.2f})")


def journal_cost(calls: int) -> None:
    data = {"model": "m", "call_key": "a#1/a#1/1/m", "fingerprint": "0" * 64,
            "message": {"role": "assistant", "parts": [{"kind": "text", "text": "x " * 200}]},
            "usage": {"input_tokens": 900, "output_tokens": 40}}
    with tempfile.TemporaryDirectory() as base:
        timings = {}
        for label, kind in (("ledger alone (buffered)", "budget.reserved"),
                            ("journal (written through)", "model.response")):
            ledger = Ledger(Path(base) / f"{kind}.jsonl")
            started = time.perf_counter()
            for i in range(calls):
                ledger.record(kind, data, run_id="r", node_id="a", ts=float(i))
            ledger.close()
            timings[label] = (time.perf_counter() - started) / calls
        journal = Journal(path=Path(base) / "none.jsonl")
        request = {"model": "m", "messages": [data["message"]] * 4, "tools": [], "settings": {}}
        started = time.perf_counter()
        for i in range(calls):
            journal.responses.get((f"k{i}", request_fingerprint(request)))
        lookup = (time.perf_counter() - started) / calls
    alone, through = timings.values()
    print(f"journal cost per model call ({calls:,} calls): ledger alone {alone * 1e6:.1f} µs, "
          f"written through {through * 1e6:.1f} µs (ratio {through / alone:.2f}); a replayed "
          f"call's lookup (fingerprint + dict) {lookup * 1e6:.1f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=100, help="kill/resume cycles (100)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--events", type=int, default=50_000, help="events in the big ledger")
    args = parser.parse_args()
    if args.cycles:
        kill_resume(args.cycles, args.seed)
    startup(args.events)
    journal_cost(5_000)


if __name__ == "__main__":
    main()
