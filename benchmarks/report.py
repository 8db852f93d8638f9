"""The run report at scale: build time, file size and time to first paint in headless Chromium.

    python benchmarks/report.py                          # 1,000 nodes, ~50,000 events (~1-2 min)
    python benchmarks/report.py --nodes 100 --calls 3    # quicker
    python benchmarks/report.py --screenshots docs --ledger runs/<quickstart run>.jsonl

A 1,000-node swarm runs through the real engine against the simulated model
(`_report_sim`: layered DAG, 20 tool calls per node, retries, fetched pages), writing a real
ledger. Then, in this process:

- build: reading, verifying and folding the ledger and writing the page (best of 3), beside
  the baseline measured in the same run, ``verify_ledger`` alone (what ``agentkit audit
  verify`` costs: the report adds its fold and page to that one pass);
- size: the page's bytes beside the ledger's;
- first paint: Debian's headless Chromium over CDP, network off, median of 3 loads: first
  contentful paint (the page's script draws the header, answer, DAG and timeline before it),
  the script's own "rendered" mark, the load event, and opening one node's conversation;
  beside the same figures for the 4-node report of a small run (the baseline).

``--screenshots DIR`` writes the PNGs the README shows instead: a 100-node simulated run, and
a quickstart run: the ledger given with ``--ledger``, else ``examples/quickstart.yaml`` run with
a scripted model in place of the local one (its programs run in the real Docker sandbox).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _chromium import Browser
from _report_sim import quickstart_run, simulated_run

from agentkit.audit import verify_ledger
from agentkit.report import write_report

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart.yaml"
RENDERED = ("new Promise(r => document.body.dataset.rendered ? r(true) : "
            "document.addEventListener('agentkit:rendered', () => r(true)))")


def best_of(n: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def folder(path: Path) -> Path:
    """`path` made (if need be) and absolute (a file URI needs an absolute path)."""
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def count_lines(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    return data.count(b"\n"), len(data)


async def page_times(page: Path, loads: int = 3) -> dict[str, float]:
    """Median over `loads` fresh navigations (one browser)."""
    runs: list[dict[str, float]] = []
    async with Browser() as browser:
        for _ in range(loads):
            times = await browser.open(page)
            await browser.eval(RENDERED)
            times["rendered"] = await browser.eval(
                "performance.getEntriesByName('agentkit-rendered')[0].startTime")
            middle = await browser.eval("Math.floor(rows.length / 2)")
            times["open_node"] = await browser.eval(
                f"(() => {{ const t = performance.now(); openRow({middle});"
                f" document.body.offsetHeight; return performance.now() - t; }})()")
            runs.append(times)
        assert browser.errors() == [], browser.errors()
        assert browser.requests == [page.as_uri()] * loads, browser.requests
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


async def measure(args: argparse.Namespace, tmp: Path) -> None:
    start = time.perf_counter()
    big = await simulated_run(tmp / "big", nodes=args.nodes, calls=args.calls)
    simulated = time.perf_counter() - start
    small = await simulated_run(tmp / "small", nodes=4, calls=1)
    assert big.ledger is not None and small.ledger is not None
    ledger = Path(big.ledger)
    events, ledger_bytes = count_lines(ledger)
    page = tmp / "big.html"
    build = best_of(3, lambda: write_report(ledger, page))
    verify = best_of(3, lambda: verify_ledger(ledger))
    made = write_report(ledger, page)
    small_page = write_report(small.ledger, tmp / "small.html").path
    big_t, small_t = await page_times(page), await page_times(small_page)
    print(f"run: {args.nodes} nodes, {events:,} events, ledger {ledger_bytes / 1e6:.1f} MB "
          f"(simulated through the real engine in {simulated:.0f} s; status {big.status})")
    print(f"build: {build:.2f} s (read + verify + fold + page); baseline verify_ledger alone "
          f"{verify:.2f} s; ratio {build / verify:.2f}×")
    print(f"size: {made.bytes / 1e6:.2f} MB page for a {ledger_bytes / 1e6:.1f} MB ledger "
          f"({made.bytes / ledger_bytes:.2f}×)")
    for name, t in (("page", big_t), ("baseline 4-node page", small_t)):
        print(f"{name}: first paint {t['first_paint']:.0f} ms, script done {t['rendered']:.0f} ms, "
              f"load {t['load']:.0f} ms, open a node {t['open_node']:.0f} ms "
              f"(headless Chromium, median of 3)")
    print(f"first paint ratio vs the 4-node page: {big_t['first_paint'] / small_t['first_paint']:.1f}×")


async def screenshots(out: Path, ledger: str | None, tmp: Path) -> None:
    """The README's pictures: a 100-node simulated run, and a quickstart run's report."""
    sim = await simulated_run(tmp / "shots", nodes=100, calls=3, latency=0.05, fail_job=87)
    assert sim.ledger is not None
    shots: list[tuple[Path, str, str | None]] = [
        (write_report(sim.ledger, tmp / "sim100.html").path, "report-100-nodes", "n54")]
    if ledger is None:  # the quickstart task with a scripted model (the real sandbox runs)
        quick = await quickstart_run(tmp / "quickstart", QUICKSTART)
        assert quick.status == "succeeded" and quick.ledger is not None, quick.error
        ledger = quick.ledger
    shots.append((write_report(ledger, out / "quickstart-report.html").path,
                  "report-quickstart", None))
    for page, name, node in shots:
        async with Browser(width=1400, height=1500) as browser:
            await browser.open(page)
            await browser.eval(RENDERED)
            await browser.screenshot(out / f"{name}.png", full_page=False)
            pick = node or await browser.eval("rows.find(r => r.kind === 'node').id")
            await browser.click(f"#timeline .tl-row:has(.nb[data-node='{pick}']) .tl-label")
            await browser.eval("document.querySelectorAll('#calls details').forEach("
                               "d => d.open = !d.querySelector('.role'))")
            await browser.screenshot(out / f"{name}-node.png", full_page=False)
            assert browser.errors() == [], browser.errors()
        print(f"wrote {out / name}.png and {out / name}-node.png")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=20, help="tool calls per node")
    parser.add_argument("--screenshots", type=Path, help="write the README's PNGs here")
    parser.add_argument("--ledger", help="with --screenshots: a real run's ledger to show")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        if args.screenshots is not None:
            await screenshots(folder(args.screenshots), args.ledger, Path(name))
            return
        await measure(args, Path(name))


if __name__ == "__main__":
    asyncio.run(main())
