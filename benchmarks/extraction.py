"""Fetch + extract benchmark: web_fetch on 181 real article pages against plain trafilatura.

    python benchmarks/extraction.py [--pool thread|process] [--workers N] [--concurrency 16]

What it does, in one process invocation:
1. serves ``../shared/benchmarks/article-extraction/html/*.html.gz`` over local HTTP (a child
   process running ``http.server``; bodies sent gzip-encoded as they were stored);
2. runs the real ``web_fetch`` tool (SSRF guard, pinned connection, caps, events, extraction in
   a worker pool) on every page with `--concurrency` fetches in flight, through
   ``invoke_tool`` with a plain ``Runtime``; a ticker task measures event-loop lag meanwhile;
3. in the same run, times the baselines: plain ``trafilatura.extract(html)`` with default
   options called sequentially (the README's reference point), and the same extractor with
   web_fetch's options in the same worker pool with no framework around it — the latter is
   what "framework overhead" is measured against;
4. scores every output with the benchmark's metric (4-token shingles, per-page normalised
   tp/fp/fn, P and R averaged over pages, F1 of the averages) and prints the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import http.server
import json
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "benchmarks" / "article-extraction"
_TOKEN = re.compile(r"\w+")


# -- the benchmark's metric -------------------------------------------------------------------

def shingles(text: str | None) -> Counter[tuple[str, ...]]:
    words = _TOKEN.findall(text or "")
    return Counter(tuple(words[i:i + 4]) for i in range(len(words) - 3))


def score(predicted: dict[str, str], truth: dict[str, str]) -> tuple[float, float, float]:
    """(F1, precision, recall) as described in the benchmark README."""
    precisions, recalls = [], []
    for key, expected in truth.items():
        pred, true = shingles(predicted.get(key)), shingles(expected)
        tp = sum((pred & true).values())
        fp, fn = sum(pred.values()) - tp, sum(true.values()) - tp
        total = tp + fp + fn
        if total == 0 or (fp == 0 and fn == 0):
            precisions.append(1.0)
            recalls.append(1.0)
            continue
        tp_n, fp_n, fn_n = tp / total, fp / total, fn / total
        if tp_n + fp_n > 0:
            precisions.append(tp_n / (tp_n + fp_n))
        if tp_n + fn_n > 0:
            recalls.append(tp_n / (tp_n + fn_n))
    p, r = statistics.fmean(precisions), statistics.fmean(recalls)
    return (2 * p * r / (p + r) if p + r else 0.0), p, r


# -- the page server (child process) ----------------------------------------------------------

def serve(folder: Path) -> None:
    """Serve <folder>/<id>.html.gz at /<id>, gzip-encoded; print the port, run until killed."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            path = folder / f"{self.path.strip('/')}.html.gz"
            if not path.is_file():
                self.send_error(404)
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


# -- measurements -----------------------------------------------------------------------------

class LagTicker:
    """Wakes every `interval` s and records how late it woke (event-loop lag)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval, self.lags = interval, [0.0]

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            start = loop.time()
            await asyncio.sleep(self.interval)
            self.lags.append(max(0.0, loop.time() - start - self.interval))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_web_fetch(port: int, ids: list[str], pool: str, workers: int,
                        concurrency: int) -> dict[str, Any]:
    from agentkit.runtime import Runtime
    from agentkit.task import FetchSettings, ModelSpec, TaskSpec
    from agentkit.tools import invoke_tool
    from agentkit.tools._ssrf import StaticResolver
    from agentkit.tools.web_fetch import WebFetch

    task = TaskSpec(name="bench", goal="extraction benchmark", model="none",
                    models={"none": ModelSpec(model="none")},
                    fetch=FetchSettings(allow_hosts=["bench.test"], max_concurrency=concurrency))
    tool = WebFetch(resolver=StaticResolver({"bench.test": ["127.0.0.1"]}),
                    extract_pool="thread" if pool == "thread" else "process", workers=workers)
    texts: dict[str, str] = {}
    latencies: list[float] = []
    async with Runtime(task) as runtime:
        ctx = runtime.tool_context()
        await invoke_tool(tool, {"url": f"http://bench.test:{port}/{ids[0]}"}, ctx)  # warm-up
        queue: asyncio.Queue[str] = asyncio.Queue()
        for page_id in ids:
            queue.put_nowait(page_id)

        async def worker() -> None:
            while not queue.empty():
                page_id = queue.get_nowait()
                started = time.perf_counter()
                out = await invoke_tool(tool, {"url": f"http://bench.test:{port}/{page_id}"}, ctx)
                latencies.append(time.perf_counter() - started)
                texts[page_id] = out.data["text"]

        ticker, stop = LagTicker(), asyncio.Event()
        started, cpu_started = time.perf_counter(), time.process_time()
        async with asyncio.TaskGroup() as group:
            lag_task = group.create_task(ticker.run(stop))
            async with asyncio.TaskGroup() as workers_group:
                for _ in range(concurrency):
                    workers_group.create_task(worker())
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            stop.set()
            await lag_task
    return {"texts": texts, "elapsed": elapsed, "cpu": cpu, "latencies": latencies,
            "lags": ticker.lags}


def run_plain_sequential(pages: dict[str, bytes]) -> tuple[dict[str, str], float, float]:
    """The README's reference: trafilatura.extract(html) with defaults, one page after another."""
    import trafilatura

    trafilatura.extract(next(iter(pages.values())))  # warm-up (imports, caches)
    started, cpu_started = time.perf_counter(), time.process_time()
    texts = {k: trafilatura.extract(v) or "" for k, v in pages.items()}
    return texts, time.perf_counter() - started, time.process_time() - cpu_started


async def run_pool_direct(pages: dict[str, bytes], kind: str, workers: int,
                          concurrency: int) -> tuple[dict[str, str], float]:
    """web_fetch's extractor (same options, same pool class and size, same concurrency) called
    directly on the page bytes: no HTTP, no guard, no tool protocol, no events."""
    from agentkit.tools._extract import extract_page
    from agentkit.tools._extract_pool import ExtractPool, ProcessExtractPool, ThreadExtractPool

    pool: ExtractPool = (ThreadExtractPool(extract_page, workers) if kind == "thread"
                         else ProcessExtractPool(workers))
    try:
        await asyncio.gather(*(pool.extract(b, "text/html", None)
                               for b in list(pages.values())[:workers]))  # warm-up
        limit = asyncio.Semaphore(concurrency)

        async def one(body: bytes) -> str:
            async with limit:
                return (await pool.extract(body, "text/html", None))[1]

        started = time.perf_counter()
        texts = await asyncio.gather(*(one(b) for b in pages.values()))
        return dict(zip(pages, texts, strict=True)), time.perf_counter() - started
    finally:
        await pool.aclose()


async def run_plain_pipeline(port: int, ids: list[str], kind: str, workers: int,
                             concurrency: int) -> tuple[dict[str, str], float, float]:
    """The same job without agentkit: plain ``httpx.AsyncClient().get`` (no guard, no caps, no
    pinning), then the same extractor in the same pool, at the same concurrency."""
    import httpx

    from agentkit.tools._extract import extract_page
    from agentkit.tools._extract_pool import ExtractPool, ProcessExtractPool, ThreadExtractPool

    pool: ExtractPool = (ThreadExtractPool(extract_page, workers) if kind == "thread"
                         else ProcessExtractPool(workers))
    limit = asyncio.Semaphore(concurrency)
    try:
        async with httpx.AsyncClient() as client:
            async def one(page_id: str) -> str:
                async with limit:
                    response = await client.get(f"http://127.0.0.1:{port}/{page_id}")
                    return (await pool.extract(response.content, "text/html", None))[1]

            await asyncio.gather(*(one(i) for i in ids[:workers]))  # warm-up
            started, cpu_started = time.perf_counter(), time.process_time()
            texts = await asyncio.gather(*(one(i) for i in ids))
            return (dict(zip(ids, texts, strict=True)), time.perf_counter() - started,
                    time.process_time() - cpu_started)
    finally:
        await pool.aclose()


def report(label: str, texts: dict[str, str], truth: dict[str, str], elapsed: float) -> None:
    f1, p, r = score(texts, truth)
    print(f"{label:48s} F1 {f1:.4f}  P {p:.4f}  R {r:.4f}  {len(texts) / elapsed:6.1f} pages/s "
          f"({elapsed:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", choices=["thread", "process"], default="process")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3,
                        help="interleaved rounds; times are medians (the machine is shared)")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    folder = DATA / "html"
    truth = {k: v["articleBody"] for k, v in json.loads((DATA / "ground-truth.json").read_text()).items()}
    ids = sorted(truth)
    pages = {k: gzip.decompress((folder / f"{k}.html.gz").read_bytes()) for k in ids}
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(folder)], stdout=subprocess.PIPE,
                             text=True)
    runs: list[dict[str, Any]] = []
    plain_s: list[float] = []
    plain_cpu: list[float] = []
    direct_s: list[float] = []
    pipeline_s: list[float] = []
    pipeline_cpu: list[float] = []
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        for _ in range(args.repeat):  # interleaved, so load from other processes hits all three
            runs.append(asyncio.run(run_web_fetch(port, ids, args.pool, args.workers,
                                                  args.concurrency)))
            direct, seconds = asyncio.run(run_pool_direct(pages, args.pool, args.workers,
                                                          args.concurrency))
            direct_s.append(seconds)
            pipeline, seconds, cpu = asyncio.run(run_plain_pipeline(
                port, ids, args.pool, args.workers, args.concurrency))
            pipeline_s.append(seconds)
            pipeline_cpu.append(cpu)
            plain, seconds, cpu = run_plain_sequential(pages)
            plain_s.append(seconds)
            plain_cpu.append(cpu)
    finally:
        child.terminate()
        child.wait()
    fw_s = statistics.median(r["elapsed"] for r in runs)
    lat_ms = [x * 1000 for r in runs for x in r["latencies"]]
    lags_ms = [x * 1000 for r in runs for x in r["lags"]]
    cpu = statistics.median(r["cpu"] for r in runs)
    print(f"article-extraction benchmark: {len(ids)} pages, pool={args.pool} x{args.workers}, "
          f"concurrency {args.concurrency}, median of {args.repeat} interleaved rounds")
    report("baseline: plain trafilatura.extract, sequential", plain, truth,
           statistics.median(plain_s))
    report(f"baseline: same extractor+options, {args.pool} pool", direct, truth,
           statistics.median(direct_s))
    report("baseline: plain httpx GET + same extractor/pool", pipeline, truth,
           statistics.median(pipeline_s))
    report("agentkit web_fetch (HTTP + guard + extract)", runs[-1]["texts"], truth, fw_s)
    print(f"per page: p50 {pct(lat_ms, 0.5):.1f} ms  p99 {pct(lat_ms, 0.99):.1f} ms "
          f"(with {args.concurrency} in flight)")
    if args.pool == "process":  # with threads, extraction is in this figure too
        n, extractor = len(ids), statistics.median(plain_cpu)
        pipe = statistics.median(pipeline_cpu)
        print(f"main-process CPU per page: web_fetch {cpu / n * 1000:.2f} ms, plain httpx "
              f"pipeline {pipe / n * 1000:.2f} ms; trafilatura itself {extractor / n * 1000:.2f} "
              f"ms (sequential run)")
        print(f"framework CPU overhead (web_fetch - plain httpx pipeline, as a share of the "
              f"extractor's CPU): {(cpu - pipe) / extractor * 100:+.1f}%; all HTTP + framework "
              f"work: {cpu / extractor * 100:.1f}%")
    print(f"event-loop lag: max {max(lags_ms):.2f} ms  p99 {pct(lags_ms, 0.99):.2f} ms  "
          f"p50 {pct(lags_ms, 0.5):.2f} ms ({len(lags_ms)} ticks of 5 ms)")
    print(f"framework overhead vs plain httpx + the same extractor/pool: "
          f"{(fw_s / statistics.median(pipeline_s) - 1) * 100:+.1f}% wall time")
    print(f"web_fetch vs the extractor alone (no HTTP at all): "
          f"{(fw_s / statistics.median(direct_s) - 1) * 100:+.1f}% wall time")
    print(f"web_fetch vs sequential plain trafilatura: "
          f"{(fw_s / statistics.median(plain_s) - 1) * 100:+.1f}% wall time")


if __name__ == "__main__":
    main()
