"""Fetch + extract benchmark (B6): web_fetch on 181 real article pages against plain trafilatura.

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
from collections.abc import Callable
from concurrent.futures import Executor
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
    from agentkit.tools import ToolContext, invoke_tool
    from agentkit.tools._ssrf import StaticResolver
    from agentkit.tools.web_fetch import WebFetch

    from agentkit.runtime import Runtime
    from agentkit.task import TaskSpec

    task = TaskSpec(name="bench", goal="extraction benchmark", model="none",
                    models={"none": {"model": "none"}},
                    fetch={"allow_hosts": ["bench.test"], "max_concurrency": concurrency})
    tool = WebFetch(resolver=StaticResolver({"bench.test": ["127.0.0.1"]}),
                    extract_pool=pool, workers=workers)  # type: ignore[arg-type]
    texts: dict[str, str] = {}
    latencies: list[float] = []
    async with Runtime(task) as runtime:
        ctx = ToolContext(runtime)
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


def _extract_with_options(html: bytes) -> str:
    import trafilatura
    from agentkit.tools.web_fetch import EXTRACT_OPTIONS

    return trafilatura.extract(html, **EXTRACT_OPTIONS) or ""


def run_plain_sequential(pages: dict[str, bytes]) -> tuple[dict[str, str], float]:
    """The README's reference: trafilatura.extract(html) with defaults, one page after another."""
    import trafilatura

    trafilatura.extract(next(iter(pages.values())))  # warm-up (imports, caches)
    started = time.perf_counter()
    texts = {k: trafilatura.extract(v) or "" for k, v in pages.items()}
    return texts, time.perf_counter() - started


def run_pool_direct(pages: dict[str, bytes],
                    make_pool: Callable[[], Executor]) -> tuple[dict[str, str], float]:
    """The same extractor and options in the same kind of pool, without the framework."""
    with make_pool() as pool:
        list(pool.map(_extract_with_options, list(pages.values())[:4]))  # warm-up
        started = time.perf_counter()
        texts = dict(zip(pages, pool.map(_extract_with_options, pages.values()), strict=True))
        return texts, time.perf_counter() - started


def pool_factory(kind: str, workers: int) -> Callable[[], Executor]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    if kind == "thread":
        return lambda: ThreadPoolExecutor(workers)
    return lambda: ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def report(label: str, texts: dict[str, str], truth: dict[str, str], elapsed: float) -> None:
    f1, p, r = score(texts, truth)
    print(f"{label:44s} F1 {f1:.4f}  P {p:.4f}  R {r:.4f}  {len(texts) / elapsed:6.1f} pages/s "
          f"({elapsed:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", choices=["thread", "process"], default="process")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
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
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        fw = asyncio.run(run_web_fetch(port, ids, args.pool, args.workers, args.concurrency))
    finally:
        child.terminate()
        child.wait()
    plain, plain_s = run_plain_sequential(pages)
    direct, direct_s = run_pool_direct(pages, pool_factory(args.pool, args.workers))
    lat_ms = [x * 1000 for x in fw["latencies"]]
    lags_ms = [x * 1000 for x in fw["lags"]]
    print(f"article-extraction benchmark: {len(ids)} pages, pool={args.pool} x{args.workers}, "
          f"concurrency {args.concurrency}")
    report("baseline: plain trafilatura.extract, sequential", plain, truth, plain_s)
    report(f"baseline: same options, {args.pool} pool, no framework", direct, truth, direct_s)
    report("agentkit web_fetch (HTTP + guard + extract)", fw["texts"], truth, fw["elapsed"])
    print(f"per page: p50 {pct(lat_ms, 0.5):.1f} ms  p99 {pct(lat_ms, 0.99):.1f} ms "
          f"(with {args.concurrency} in flight)")
    print(f"main-process CPU during the web_fetch run: {fw['cpu']:.2f} s "
          f"({fw['cpu'] / len(ids) * 1000:.2f} ms/page; with a process pool this is all "
          f"framework + HTTP client work)")
    print(f"event-loop lag: max {max(lags_ms):.2f} ms  p99 {pct(lags_ms, 0.99):.2f} ms  "
          f"({len(lags_ms)} ticks of 5 ms)")
    print(f"framework overhead vs same-options pool baseline: "
          f"{(fw['elapsed'] / direct_s - 1) * 100:+.1f}%  "
          f"(vs sequential plain trafilatura: {(fw['elapsed'] / plain_s - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
