"""Hostile load: each resource case once, its time and peak memory against its bound.

    python benchmarks/hostile_load.py [--timeout 5] [--cases slowloris,gzip-bomb,...]

Every case runs in its own child process against a local hostile server (real HTTP on
127.0.0.1), and the child's peak-RSS growth over the case is measured with ``getrusage``
(imports excluded). Bounds:

- slowloris (an SSE keep-alive every 50 ms) and a byte every 2 s: the call ends at
  ``timeout_s``, the whole call's deadline (before: never; a call with ``timeout_s: 5`` was
  seen alive after 75 s);
- gzip bomb (0.5 MB inflating to 512 MiB) and a 50 MB answer (JSON and streamed): refused at
  ``max_response_bytes`` (32 MiB), peak RSS growth at most twice that (before: 1,039 MB for the
  bomb; the 50 MB answers were accepted at 163 MB and 89 MB); a 503 whose body is the bomb is
  reported from its first 64 KB (before: 1,026 MB and 62 s);
- Retry-After storm (429 with ``Retry-After: 3600`` every time, 4 attempts, ``max_delay_s`` 1):
  three waits of at most 1 s each; and the same with 10 s of the run's wall clock left and
  ``max_delay_s`` 30: no wait at all, the call fails at once (before: 3 x 3600 s);
- 30-way budget fan-out (30 nodes at once, each answer 400 + 200 tokens at $2/$8 per million):
  the token cap of 5,000 and the cost cap of $0.01 are never passed (before the budget fix:
  35,670 tokens, 7.1x; $0.3567, 35.7x).

Each line says met or MISSED, with the ratio of the figure to its bound.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from _hostile import HostileServer, gzip_bomb, measure, measure_call

from agentkit.task import ModelSpec
from agentkit.testing import ScriptedModelServer, reply

CAP_MB = ModelSpec(model="m").max_response_bytes / 2**20
MEMORY_MB = 2 * CAP_MB  # the bound on peak RSS growth for every case
USAGE = {"input_tokens": 400, "output_tokens": 200}


@dataclass
class Case:
    name: str
    run: Callable[[], dict[str, Any]]
    #: seconds the case may take
    time_bound: float
    #: (figure, bound, unit) beyond time and memory, when the case has one
    extra: Callable[[dict[str, Any]], tuple[float, float, str]] | None = None
    #: what the outcome must be (an error type, or None for an answer)
    expect: Callable[[dict[str, Any]], bool] = lambda r: True


def error_is(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda r: (r.get("error") or {}).get("type") == kind


def fanout_task(base_url: str, budget: dict[str, float]) -> dict[str, Any]:
    return {"name": "fanout", "goal": "count", "model": "m",
            "models": {"m": {"profile": "deepseek", "model": "deepseek-chat",
                             "base_url": base_url, "api_key_env": "BENCH_KEY",
                             "max_tokens": 300, "stream": False,
                             "price": {"input": 2.0, "output": 8.0}}},
            "plan": {"nodes": [{"id": f"n{i}", "goal": f"part {i}"} for i in range(30)]},
            "retry": {"attempts": 1, "node_attempts": 1, "replans": 0},
            "budget": {**budget, "max_nodes": 30, "max_agents": 30}}


def cases(hostile: HostileServer, slow: HostileServer, scripted: ScriptedModelServer,
          timeout_s: float) -> list[Case]:
    cap = f"refused at the {CAP_MB:.0f} MiB cap"
    storm = {"spec": {"model": "m", "profile": "openai", "stream": False},
             "base_url": hostile.base_url("retry-after")}
    return [
        Case(f"slowloris: SSE keep-alive every 50 ms, timeout_s {timeout_s:g}",
             lambda: measure_call(hostile.base_url("sse-drip"), stream=True, timeout_s=timeout_s),
             timeout_s * 1.1, expect=error_is("ProviderTimeout")),
        Case(f"one byte every 2 s, timeout_s {timeout_s:g}",
             lambda: measure_call(slow.base_url("byte-drip"), timeout_s=timeout_s),
             timeout_s * 1.1, expect=error_is("ProviderTimeout")),
        Case(f"gzip bomb 0.5 MB -> 512 MiB, {cap}",
             lambda: measure_call(hostile.base_url("gzip-bomb"), timeout_s=60), 60,
             expect=error_is("ProviderResponseError")),
        Case("503 whose body is the gzip bomb, read to 64 KB",
             lambda: measure_call(hostile.base_url("error-bomb"), timeout_s=60), 60,
             expect=error_is("ProviderHTTPError")),
        Case(f"50 MB JSON answer, {cap}",
             lambda: measure_call(hostile.base_url("big-json"), timeout_s=60), 60,
             expect=error_is("ProviderResponseError")),
        Case(f"50 MB streamed answer, {cap}",
             lambda: measure_call(hostile.base_url("big-sse"), stream=True, timeout_s=60), 60,
             expect=error_is("ProviderResponseError")),
        Case("Retry-After: 3600 storm, 4 attempts, max_delay_s 1",
             lambda: measure("managed", {**storm, "retry": {"attempts": 4, "max_delay_s": 1}}),
             3 * 1.0 + 1.0, expect=error_is("ProviderUnavailable")),
        Case("Retry-After: 3600 with 10 s of wall clock left, max_delay_s 30",
             lambda: measure("managed", {**storm, "retry": {"attempts": 4, "max_delay_s": 30},
                                         "wall_seconds": 10}),
             1.0, expect=error_is("ProviderUnavailable")),
        Case("30-way fan-out under a 5,000-token cap",
             lambda: measure("fanout", {"task": fanout_task(scripted.base_url,
                                                            {"tokens": 5000})}),
             120, extra=lambda r: (r["tokens"], 5000, "tokens")),
        Case("30-way fan-out under a $0.01 cost cap",
             lambda: measure("fanout", {"task": fanout_task(scripted.base_url,
                                                            {"cost_usd": 0.01})}),
             120, extra=lambda r: (r["cost_usd"], 0.01, "USD")),
    ]


def report(case: Case, result: dict[str, Any]) -> bool:
    seconds, mb = result["seconds"], result["rss_growth_mb"]
    checks = [seconds <= case.time_bound, mb <= MEMORY_MB, case.expect(result)]
    line = (f"{case.name:<62} {seconds:7.2f} s / {case.time_bound:5.1f} s "
            f"({seconds / case.time_bound:4.2f}x)   +{mb:6.1f} MB / {MEMORY_MB:.0f} MB "
            f"({mb / MEMORY_MB:4.2f}x)")
    if case.extra is not None:
        figure, bound, unit = case.extra(result)
        checks.append(figure <= bound)
        line += f"   {figure:,.4g} / {bound:,.4g} {unit} ({figure / bound:4.2f}x)"
    outcome = (result.get("error") or {}).get("type") or result.get("status") or "answered"
    print(f"{line}   {outcome:<21} {'met' if all(checks) else 'MISSED'}", flush=True)
    return all(checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="timeout_s of the slowloris cases (seconds)")
    parser.add_argument("--cases", default="", help="only the cases whose name contains one "
                                                    "of these comma-separated words")
    args = parser.parse_args()
    wanted = [w.strip().lower() for w in args.cases.split(",") if w.strip()]
    gzip_bomb()  # made once, before any case is timed
    ok = True
    with HostileServer(drip_s=0.05) as hostile, HostileServer(drip_s=2.0) as slow, \
            ScriptedModelServer("deepseek", default=reply("ok", usage=USAGE)) as scripted:
        for case in cases(hostile, slow, scripted, args.timeout):
            if wanted and not any(w in case.name.lower() for w in wanted):
                continue
            ok = report(case, case.run()) and ok
    print("all bounds met" if ok else "some bounds MISSED")


if __name__ == "__main__":
    main()
