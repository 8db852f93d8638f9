"""Audit ledger cost per event: buffered append, fsync per event, and a serialize-only baseline.

    python benchmarks/audit_overhead.py [--events 20000] [--fsync-events 2000]

The baseline serializes the same events to canonical JSON with json's C encoder (what a
ledger must do anyway) without redaction, hashing or writing. A third buffered run encodes
with that same json encoder instead of orjson, as the ledger did before issue 19: the
before/after ratio in one invocation.
The buffered runs append inside a running event loop, as a run does, so the ledger's flush
timer is armed as in a run. Two policies are compared: the default (milestones, file diffs
and side-effect tool calls written through at once, everything else within 64 events or
250 ms: what a ``kill -9`` can lose) and "milestones only" (nothing but milestones and full
64 KB batches written: the earlier, unbounded policy). Goal (issue 19): default buffered
append <= 15 us/event on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentkit.audit import Ledger
from agentkit.events import Event

SECRETS = ["sk-live-0123456789abcdef0123", "ghp_exampleexampleexample0000"]
JSON_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                                default=str)


def realistic_events(n: int, seed: int = 7) -> list[Event]:
    """A run's mix: model calls with reasoning text, tool calls and results, fetches, nodes."""
    rng = random.Random(seed)
    words = "tide pool anemone starfish barnacle kelp urchin mussel crab limpet".split()

    def text(k: int) -> str:
        return " ".join(rng.choice(words) for _ in range(k))

    events: list[Event] = []
    for seq in range(n):
        node = f"n{rng.randrange(12)}"
        roll = rng.random()
        if roll < 0.25:
            kind, data = "model.response", {
                "model": "deepseek-chat", "provider": "openai", "finish_reason": "tool_calls",
                "reasoning": text(rng.randrange(20, 200)), "text": text(rng.randrange(5, 60)),
                "tool_calls": [{"id": f"call_{seq}", "name": "web_fetch",
                                "arguments": {"url": f"https://example.org/{seq}"}}],
                "usage": {"input_tokens": rng.randrange(500, 9000),
                          "output_tokens": rng.randrange(10, 900), "reasoning_tokens": 120},
                "cost_usd": 0.00042, "latency_s": 1.234}
        elif roll < 0.42:
            kind, data = "model.request", {
                "model": "deepseek-chat", "profile": "deepseek",
                "messages": [{"role": "user", "parts": [{"kind": "text", "text": text(30)}]},
                             {"role": "assistant", "parts": [{"kind": "reasoning",
                                                              "text": text(40)}]}],
                "settings": {"max_tokens": 4096, "temperature": 0.2}}
        elif roll < 0.45:  # the rare event that carries credentials: they must be redacted
            kind, data = "retry", {
                "attempt": 2, "delay_s": 1.5, "error": "429 Too Many Requests",
                "headers": {"authorization": "Bearer sk-live-0123456789abcdef0123",
                            "set-cookie": "session=abc123", "content-type": "application/json"}}
        elif roll < 0.65:
            kind, data = "tool.call", {"tool": "web_search", "call_id": f"call_{seq}",
                                       "arguments": {"query": text(6), "max_results": 8}}
        elif roll < 0.85:
            kind, data = "tool.result", {
                "tool": "web_search", "call_id": f"call_{seq}", "ok": True, "duration_s": 0.81,
                "data": {"results": [{"title": text(6), "url": f"https://e.org/{i}",
                                      "snippet": text(25)} for i in range(5)]}}
        elif roll < 0.95:
            kind, data = "url.fetched", {"url": f"https://example.org/{seq}", "status": 200,
                                         "sha256": "ab" * 32, "bytes": 48213, "title": text(8)}
        else:
            kind, data = rng.choice(["node.started", "node.finished"]), {"goal": text(12),
                                                                         "status": "succeeded"}
        events.append(Event(kind=kind, run_id="bench", node_id=node, seq=seq, ts=1.7e9 + seq,
                            data=data))
    return events


def baseline(events: list[Event]) -> float:
    """Seconds to serialize every event as canonical JSON, in memory."""
    encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    start = time.perf_counter()
    for e in events:
        encoder.encode({"data": e.data, "kind": e.kind, "node_id": e.node_id,
                        "run_id": e.run_id, "seq": e.seq, "ts": e.ts}).encode()
    return time.perf_counter() - start


def ledger_run(events: list[Event], folder: Path, fsync: str, *, bounded: bool = True,
               json_encoder: bool = False) -> float:
    """Seconds to append every event (and close, which writes the last batch and fsyncs),
    inside a running event loop. `bounded` False: only milestones and full batches written.
    `json_encoder`: encode with json's C encoder, as the ledger did before it used orjson."""
    path = folder / f"{fsync}-{time.monotonic_ns()}.jsonl"
    options: dict[str, Any] = {} if bounded else {"flush_events": 10**9,
                                                  "flush_after_s": float("inf")}
    ledger = Ledger(path, secrets=SECRETS, fsync=fsync, **options)
    if json_encoder:
        ledger._encode = JSON_ENCODER.encode

    async def append_all() -> float:
        start = time.perf_counter()
        for e in events:
            ledger.append(e)
        ledger.close()
        return time.perf_counter() - start

    return asyncio.run(append_all())


def best_of(fn: Callable[[], float], repeats: int) -> float:
    return min(fn() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--fsync-events", type=int, default=2_000,
                        help="events for the fsync-per-event run (each one waits for the disk)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    events = realistic_events(args.events)
    mean_bytes = statistics.mean(len(json.dumps(e.data)) for e in events)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        base = best_of(lambda: baseline(events), args.repeats)
        buffered = best_of(lambda: ledger_run(events, folder, "close"), args.repeats)
        unbounded = best_of(lambda: ledger_run(events, folder, "close", bounded=False),
                            args.repeats)
        before = best_of(lambda: ledger_run(events, folder, "close", json_encoder=True),
                         args.repeats)
        synced_events = events[: args.fsync_events]
        synced = ledger_run(synced_events, folder, "always")

    def per(seconds: float, n: int) -> float:
        return seconds / n * 1e6

    b_us, l_us, s_us = per(base, len(events)), per(buffered, len(events)), per(synced, len(synced_events))
    u_us, j_us = per(unbounded, len(events)), per(before, len(events))
    print(f"events: {len(events):,} (mean payload {mean_bytes:,.0f} bytes JSON), best of {args.repeats}")
    print(f"baseline (canonical JSON, in memory): {b_us:8.2f} us/event")
    print(f"ledger, milestones only (unbounded):  {u_us:8.2f} us/event   "
          f"ratio {u_us / b_us:.2f}x baseline")
    print(f"ledger buffered, bounded (default):   {l_us:8.2f} us/event   "
          f"ratio {l_us / b_us:.2f}x baseline   {l_us / u_us:.2f}x milestones-only   "
          f"goal <= 15 us: {'met' if l_us <= 15 else 'MISSED'}")
    print(f"ledger buffered, json's C encoder:     {j_us:8.2f} us/event   "
          f"ratio {j_us / b_us:.2f}x baseline   (before orjson; default/this: {l_us / j_us:.2f}x)")
    print(f"ledger fsync per event ({len(synced_events):,} events):  {s_us:8.2f} us/event   "
          f"ratio {s_us / b_us:.1f}x baseline")


if __name__ == "__main__":
    main()
