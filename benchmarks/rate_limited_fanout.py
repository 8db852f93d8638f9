"""200 parallel model calls against a server enforcing RPM/TPM: agentkit's limiter vs naive gather.

    python benchmarks/rate_limited_fanout.py                 # ~30-40 s in all
    python benchmarks/rate_limited_fanout.py --calls 400 --tpm 360000

The `ScriptedModelServer` (OpenAI dialect, real HTTP on 127.0.0.1) counts every request against
a sliding window the way providers do: prompt estimate + ``max_tokens`` at arrival; over the
limit it answers 429 with ``Retry-After``. Each reply reports as usage exactly what the server
counted, and takes `--latency` seconds. To keep the run short the window is `--window` seconds
instead of 60, with the per-minute limits scaled to it on both sides (client and server).

Runners, same calls, same process:

- agentkit: `build_model` (RateLimiter reserving max_tokens + prompt estimate, FIFO admission,
  the one retry owner) under one `asyncio.TaskGroup`;
- naive: ``asyncio.gather`` of the bare adapter with a simple retry loop (sleep Retry-After,
  up to 20 tries), i.e. what most hand-written fan-outs do.

Figures: 429 answers, retries, makespan, and the physical limit. Under a sliding window of W s
allowing L tokens, about L*(1 + t/W) tokens can pass by time t, so the fastest possible
makespan for T tokens is T_phys = W*(T/L - 1) + latency; TPM utilisation = T_phys / makespan.
Also printed: makespan / (tokens / TPM), the plain ratio the issue asks for (below 1 because
the first window may be used at once). Goal: no 429 storm, >= 90 % of TPM used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time
from dataclasses import dataclass
from typing import Any

from agentkit.clock import SystemClock
from agentkit.errors import ProviderError
from agentkit.messages import Message
from agentkit.models import build_model
from agentkit.models.openai_compat import OpenAICompatModel
from agentkit.models.profiles import get_profile
from agentkit.models.ratelimit import RateLimits
from agentkit.retry import RetryPolicy
from agentkit.runtime import Runtime
from agentkit.task import ModelSpec, RetrySpec, TaskSpec
from agentkit.testing import RecordedRequest, Reply, ScriptedModelServer, reply


@dataclass
class Outcome:
    name: str
    makespan: float
    ok: int
    failed: int
    rate_limited: int
    retries: int
    tokens: int


def counted(body: dict[str, Any]) -> tuple[int, int]:
    """What the server charges a request: (prompt estimate, max_tokens)."""
    limit = body.get("max_tokens") or body.get("max_completion_tokens") or 0
    return math.ceil(len(json.dumps(body.get("messages") or [])) / 4), int(limit)


def make_server(args: argparse.Namespace, tokens: list[int]) -> ScriptedModelServer:
    def answer(req: RecordedRequest) -> Reply:
        prompt, completion = counted(req.body)
        tokens.append(prompt + completion)
        return reply("ok", usage={"input_tokens": prompt, "output_tokens": completion},
                     delay=args.latency)

    per_window = args.tpm * args.window / 60
    return ScriptedModelServer("openai", default=answer, tpm=int(per_window),
                               rpm=max(1, int(args.rpm * args.window / 60)), window_s=args.window)


def prompts(n: int, seed: int = 7) -> list[list[Message]]:
    rng = random.Random(seed)
    return [[Message.user(f"Question {i}: " + "lorem ipsum " * rng.randint(5, 40))]
            for i in range(n)]


def spec(base_url: str, args: argparse.Namespace) -> ModelSpec:
    return ModelSpec(model="gpt-5-mini", profile="openai", base_url=base_url, stream=False,
                     max_tokens=args.max_tokens, tpm=args.tpm, rpm=args.rpm,
                     max_concurrency=args.concurrency)


async def run_agentkit(args: argparse.Namespace, calls: list[list[Message]]) -> Outcome:
    tokens: list[int] = []
    retries = 0

    def sink(event: Any) -> None:
        nonlocal retries
        retries += event.kind == "retry"

    async with make_server(args, tokens) as srv:
        task = TaskSpec(name="bench", goal="g", model="m", models={"m": spec(srv.base_url, args)},
                        retry=RetrySpec(attempts=20, base_delay_s=0.5, max_delay_s=10))
        clock = SystemClock()
        async with Runtime(task, clock=clock, sinks=[sink],
                           rate_limits=RateLimits(clock, window_s=args.window)) as rt:
            spec_ = task.models["m"]
            model = build_model("m", spec_, clock=rt.clock, events=rt.emit, usage=rt.usage,
                                policy=RetryPolicy(attempts=20, max_delay=10,
                                                   breaker_threshold=10_000),
                                rate_limits=rt.rate_limits)
            results: list[bool] = []

            async def one(messages: list[Message]) -> None:
                try:
                    await model.turn(messages)
                    results.append(True)
                except ProviderError:
                    results.append(False)

            start = time.perf_counter()
            async with asyncio.TaskGroup() as group:
                for messages in calls:
                    group.create_task(one(messages))
            makespan = time.perf_counter() - start
            await model.aclose()
        return Outcome("agentkit", makespan, sum(results), results.count(False),
                       srv.stats.rate_limited, retries, sum(tokens))


async def run_naive(args: argparse.Namespace, calls: list[list[Message]]) -> Outcome:
    tokens: list[int] = []
    retries = 0
    async with make_server(args, tokens) as srv:
        adapter = OpenAICompatModel(spec(srv.base_url, args), name="m", api_key=None,
                                    base_url=srv.base_url, profile=get_profile("openai"))

        async def one(messages: list[Message]) -> bool:
            nonlocal retries
            for attempt in range(20):
                try:
                    await adapter.turn(messages)
                    return True
                except ProviderError as err:
                    if not err.retryable or attempt == 19:
                        return False
                    retries += 1
                    await asyncio.sleep(err.retry_after if err.retry_after is not None else 1.0)
            return False

        start = time.perf_counter()
        results = await asyncio.gather(*(one(m) for m in calls))
        makespan = time.perf_counter() - start
        await adapter.aclose()
    return Outcome("naive gather", makespan, sum(results), results.count(False),
                   srv.stats.rate_limited, retries, sum(tokens))


def report(out: Outcome, args: argparse.Namespace) -> None:
    per_window = args.tpm * args.window / 60
    ideal = out.tokens / args.tpm * 60
    t_phys = max(args.latency, args.window * (out.tokens / per_window - 1) + args.latency)
    print(f"{out.name:>13}: ok {out.ok}/{out.ok + out.failed}, 429s {out.rate_limited:4d}, "
          f"retries {out.retries:4d}, makespan {out.makespan:6.2f} s, tokens {out.tokens}, "
          f"makespan/(tokens/TPM) {out.makespan / ideal:5.2f}, "
          f"TPM utilisation {t_phys / out.makespan:6.1%}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--tpm", type=int, default=150_000, help="tokens per minute")
    parser.add_argument("--rpm", type=int, default=6_000, help="requests per minute")
    parser.add_argument("--window", type=float, default=2.0, help="seconds the limits count over")
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per reply")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="agentkit's max_concurrency (below httpx's pool of 100, so an "
                             "admitted request is sent at once, not queued in the pool)")
    args = parser.parse_args()
    calls = prompts(args.calls)
    print(f"{args.calls} calls, TPM {args.tpm}, RPM {args.rpm}, window {args.window:g} s, "
          f"max_tokens {args.max_tokens}, reply latency {args.latency:g} s")
    ours = await run_agentkit(args, calls)
    report(ours, args)
    naive = await run_naive(args, calls)
    report(naive, args)
    print(f"429s: agentkit {ours.rate_limited} vs naive {naive.rate_limited}; makespan ratio "
          f"naive/agentkit {naive.makespan / ours.makespan:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
