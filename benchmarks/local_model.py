"""The embedded local model: speed, plan validity, and quickstart correctness.

Prints:
- load time of the default GGUF (assembly and hash check excluded: cached after first use);
- prompt and generation tokens/s, free vs grammar-constrained (the ratio is the cost of the
  constraint, measured in the same run);
- the turn after a failed program, its previous turn cached: seconds and prompt tokens
  evaluated with the system message kept (as `LocalModel` builds it) against the same turn
  with the system message changed (as it was built before);
- plan validity over N seeded planning requests (the planner's `submit_plan` action, validated
  by `validate_plan`; valid = accepted, >= 3 nodes, >= 2 of them runnable in parallel);
- quickstart correctness over N seeded full runs (planner -> sandboxed nodes -> synthesizer);
  the expected numbers are computed here from the CSV with the csv module, and a run is correct
  when the answer contains every one of them; plus the wall time split into planning,
  execution and synthesis (from the run's events);
- with ``--family``, instead: the task family of `_local_family` (other files and question
  kinds, written with the default prompts, the quickstart's model, consensus and budget),
  --runs seeds per task, correctness per task and overall.

Usage (from the repository root, sandbox image built):
    python benchmarks/local_model.py [--plans 10] [--runs 10] [--skip-speed]
    python benchmarks/local_model.py --family [--runs 10] [--first-seed 0] [--only orders,staff]
Each run takes minutes on 2 shared cores; use --runs 1 for a quick look.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _local_family import DATA, FAMILY, FamilyTask, check  # noqa: E402  (beside this file)

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
CSV = ROOT / "examples" / "data" / "sales.csv"


# ---------------------------------------------------------------------------------------------
# Ground truth, computed independently of any model


def expected_facts(path: Path = CSV) -> dict[str, Any]:
    revenue: dict[str, float] = defaultdict(float)
    month: dict[str, float] = defaultdict(float)
    units: Counter[str] = Counter()
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            value = int(row["units"]) * float(row["unit_price"])
            revenue[row["region"]] += value
            month[row["date"][:7]] += value
            units[row["product"]] += int(row["units"])
    best_month = max(month, key=lambda m: month[m])
    top_product, top_units = units.most_common(1)[0]
    return {"revenue": dict(revenue), "best_month": best_month,
            "best_month_revenue": month[best_month], "top_product": top_product,
            "top_units": top_units}


def _numbers(text: str) -> list[float]:
    return [float(n.replace(",", "")) for n in re.findall(r"\d[\d,]*(?:\.\d+)?", text)]


def check_answer(answer: str, facts: dict[str, Any]) -> list[str]:
    """What is missing or wrong in `answer` (empty list: correct)."""
    nums = _numbers(answer or "")
    problems = []

    def has(value: float) -> bool:
        return any(abs(n - value) < 0.006 for n in nums)

    for region, value in facts["revenue"].items():
        if region not in answer or not has(value):
            problems.append(f"revenue {region}={value:.2f}")
    if facts["best_month"] not in answer or not has(facts["best_month_revenue"]):
        problems.append(f"best month {facts['best_month']}={facts['best_month_revenue']:.2f}")
    if facts["top_product"] not in answer or not has(facts["top_units"]):
        problems.append(f"top product {facts['top_product']}={facts['top_units']}")
    return problems


# ---------------------------------------------------------------------------------------------
# Speed


def speed() -> None:
    """Load time, prompt rate, generation rates, and what the decoder's two savings buy.

    Baselines measured in the same run: llama-cpp-python's `create_completion` (the grammar
    applied to the whole vocabulary before every token, as agentkit sampled until now) and a
    cold prompt (nothing cached) beside the same prompt with its prefix in the KV cache.
    """
    from llama_cpp.llama_grammar import LlamaGrammar

    from agentkit.messages import ToolSpec
    from agentkit.models._llama_decode import Sampling
    from agentkit.models._local_actions import action_grammar, describe_actions
    from agentkit.models.local import LoadedModels, LoadKey
    from agentkit.models.weights import DEFAULT_LOCAL_MODEL, resolve_model_path
    from agentkit.tools.run_code import RunCode

    path = resolve_model_path(DEFAULT_LOCAL_MODEL)
    registry = LoadedModels()
    t0 = time.perf_counter()
    loaded = registry.get(LoadKey(str(path), 4096, 2))
    load_s = time.perf_counter() - t0
    llm, decoder = loaded.llm, loaded.decoder

    def timed(prompt: str, max_tokens: int, grammar: str = "", *, cold: bool = True) -> tuple[float, int]:
        if cold:
            decoder.forget()
        t = time.perf_counter()
        gen = decoder.generate(prompt, grammar, Sampling(max_tokens, 0.2, 0.95, 1, ()),
                               threading.Event())
        return time.perf_counter() - t, gen.completion_tokens

    def timed_baseline(prompt: str, max_tokens: int, grammar: str) -> tuple[float, int]:
        decoder.forget()
        t = time.perf_counter()
        out = llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.2, seed=1,
                                    grammar=LlamaGrammar.from_string(grammar, verbose=False))
        return time.perf_counter() - t, out["usage"]["completion_tokens"]

    long_prompt = loaded.formatter(messages=[{"role": "user", "content": CSV.read_text()[:2500]}]).prompt
    n_long = len(llm.tokenize(long_prompt.encode(), special=True))
    prompt_s, _ = timed(long_prompt, 1)
    code = RunCode()
    tool = ToolSpec(name=code.name, description=code.description,
                    parameters=code.args_model.model_json_schema())
    prompt = loaded.formatter(messages=[
        {"role": "system", "content": describe_actions([tool], think=False, allow_final=False)},
        {"role": "user", "content": "Write Python that reads sales.csv with the csv module and "
                                    "prints the sum of the units column."}]).prompt
    base_s, _ = timed(prompt, 1)
    warm_s, _ = timed(prompt, 1, cold=False)
    grammar = action_grammar([tool], think=False, allow_final=False)
    runs: dict[str, tuple[float, int]] = {
        "free": timed(prompt, 64), "grammar, whole vocabulary": timed_baseline(prompt, 64, grammar),
        "grammar, checked": timed(prompt, 64, grammar)}
    rates = {label: (n - 1) / max(secs - base_s, 1e-9) for label, (secs, n) in runs.items()}
    fix = fix_turn(loaded, tool)
    registry.unload_all()
    free = rates["free"]
    print(f"load time:                 {load_s:6.2f} s  ({path.name}, weights cached)")
    print(f"prompt processing:         {n_long / prompt_s:6.1f} tokens/s  ({n_long} tokens)")
    print(f"same prompt, prefix cached:{warm_s:6.2f} s  against {base_s:.2f} s cold "
          f"(ratio {warm_s / base_s:.2f})")
    print(f"generation, free:          {free:6.2f} tokens/s")
    for label in ("grammar, whole vocabulary", "grammar, checked"):
        print(f"generation, {label + ':':26s}{rates[label]:6.2f} tokens/s  "
              f"(ratio to free: {rates[label] / free:.2f})")
    print(f"grammar-checked / whole-vocabulary: "
          f"{rates['grammar, checked'] / rates['grammar, whole vocabulary']:.2f}x", flush=True)
    (kept_s, kept_n), (changed_s, changed_n) = fix
    print(f"turn after a failed program: {kept_s:.2f} s, {kept_n} tokens evaluated (system "
          f"message kept) against {changed_s:.2f} s, {changed_n} tokens (system message changed, "
          f"as before): ratio {kept_s / changed_s:.2f}", flush=True)


def fix_turn(loaded: Any, tool: Any) -> tuple[tuple[float, int], tuple[float, int]]:
    """(seconds, prompt tokens evaluated) of a worker's turn after its program failed, the
    previous turn's prompt in the cache: as `LocalModel` builds it (the system message as on
    every turn), and with the system message's action guide changed to withhold `final` (how
    it was built until the grammar alone withheld it). One token is generated."""
    from agentkit.messages import Message, ToolCallPart, ToolResultPart
    from agentkit.models._llama_decode import Sampling
    from agentkit.models._local_actions import describe_actions
    from agentkit.models.base import ModelSettings
    from agentkit.models.local import LocalModel
    from agentkit.prompting import Prompts
    from agentkit.task import ModelSpec

    model = LocalModel(ModelSpec(provider="local", model="m"))
    system = Prompts.defaults().render("worker.system", tools=tool.name)
    task = [Message.system(system), Message.user(
        "Your sub-task: From sales.csv (columns date, region, product, units, unit_price), "
        f"compute the total revenue of each region.\n{CSV.read_text()[:300]}")]
    call = ToolCallPart(id="c1", name=tool.name, arguments={
        "code": "import csv\nrows = list(csv.DictReader(open('sales.csv')))\nprint(rows[0]['city'])"})
    failed = ToolResultPart(call_id="c1", name=tool.name, is_error=True,
                            content="exit code 1\n--- stderr ---\nKeyError: 'city'",
                            metadata={"exit_code": 1, "stdout": ""})
    after = [*task, Message(role="assistant", parts=(call,)), Message(role="tool", parts=(failed,))]
    kept = model._request(after, [tool], ModelSettings())[0]
    ends, withholds = (describe_actions([tool], think=False, allow_final=f) for f in (True, False))
    changed = [{**kept[0], "content": kept[0]["content"].replace(ends, withholds)}, *kept[1:]]
    previous = model._request(task, [tool], ModelSettings())[0]

    def timed(chat: list[dict[str, str]]) -> tuple[float, int]:
        loaded.decoder.forget()
        loaded.decoder.generate(loaded.formatter(messages=previous).prompt, "",
                                Sampling(1, 0.2, 0.95, 1, ()), threading.Event())
        t = time.perf_counter()
        gen = loaded.decoder.generate(loaded.formatter(messages=chat).prompt, "",
                                      Sampling(1, 0.2, 0.95, 1, ()), threading.Event())
        return time.perf_counter() - t, gen.prompt_tokens - gen.cached_tokens
    return timed(kept), timed(changed)


# ---------------------------------------------------------------------------------------------
# Plans and full runs


def _task(seed: int) -> Any:
    from agentkit.task import load_task

    task = load_task(QUICKSTART)
    models = dict(task.models)
    local = models["local"]
    models["local"] = local.model_copy(update={"extra_body": {**local.extra_body, "seed": seed}})
    return task.model_copy(update={"models": models})


async def plan_once(seed: int) -> tuple[bool, str, float]:
    from agentkit.budget import Budget
    from agentkit.runtime import Runtime
    from agentkit.swarm.agents import Planner
    from agentkit.swarm.context import SwarmContext

    task = _task(seed)
    t0 = time.perf_counter()
    async with Runtime(task) as rt:
        ctx = SwarmContext(runtime=rt,
                           budget=Budget.root(task.budget, emit=rt.emit, clock=rt.clock))
        try:
            graph = await Planner(ctx).plan()
        except Exception as exc:  # an invalid plan is a measured outcome, not a crash
            return False, f"{type(exc).__name__}: {str(exc)[:160]}", time.perf_counter() - t0
    summary = graph.summary()
    ok = len(graph.nodes) >= 3 and summary.get("width", 0) >= 2
    info = f"{len(graph.nodes)} nodes, width {summary.get('width')}, depth {summary.get('depth')}"
    return ok, info, time.perf_counter() - t0


def _family_task(seed: int, item: FamilyTask) -> Any:
    """The quickstart's task (model, consensus, budget, sandbox) with another goal and files,
    and the default prompts."""
    task = _task(seed)
    sandbox = task.sandbox.model_copy(update={"inputs": list(item.inputs)})
    return task.model_copy(update={"name": f"family-{item.name}", "goal": item.goal,
                                   "workspace": str(DATA), "sandbox": sandbox, "prompts": {}})


async def _timed_run(task: Any) -> tuple[Any, list[Any], float]:
    from agentkit.run import arun

    events: list[Any] = []
    t0 = time.perf_counter()
    result = await arun(task, sinks=[events.append],
                        ledger_dir=tempfile.mkdtemp(prefix="agentkit-bench-"))
    return result, events, time.perf_counter() - t0


def _split(events: list[Any]) -> dict[str, float]:
    """Planning, execution and synthesis seconds, from the run's events."""
    ts = {e.kind: e.ts for e in events if e.kind in ("run.started", "plan.created")}
    node_end = max((e.ts for e in events if e.kind in ("node.finished", "node.failed")), default=None)
    finished = next((e.ts for e in events if e.kind == "run.finished"), None)
    if "plan.created" in ts and node_end is not None and finished is not None:
        return {"planning": ts["plan.created"] - ts["run.started"],
                "execution": node_end - ts["plan.created"], "synthesis": finished - node_end}
    return {}


async def family_once(seed: int, item: FamilyTask) -> dict[str, Any]:
    result, events, wall = await _timed_run(_family_task(seed, item))
    problems = check(result.answer or "", item.facts())
    plans = [e.data for e in events if e.kind == "plan.created"]
    return {"seed": seed, "status": result.status, "correct": not problems, "problems": problems,
            "wall": wall, "split": _split(events),
            "nodes": len(plans[0]["nodes"]) if plans else 0,
            "rejected": sum(1 for e in events if e.kind == "plan.rejected"),
            "answer": (result.answer or str(result.error or ""))[:400]}


def print_row(label: str, row: dict[str, Any], extra: str) -> None:
    """One seeded run: status, correctness, wall time and its split, `extra`, what was
    missing, and the answer when it was wrong."""
    split = " ".join(f"{k} {v:.0f}s" for k, v in row["split"].items())
    print(f"{label}: {row['status']:9s} correct={row['correct']} wall {row['wall']:.0f}s "
          f"[{split}] {extra} missing={row['problems']}", flush=True)
    if not row["correct"]:
        print("    answer: " + row["answer"].replace("\n", " | "), flush=True)


async def family(runs: int, only: list[str], first_seed: int = 0) -> None:
    chosen = [t for t in FAMILY if not only or t.name in only]
    totals = []
    for item in chosen:
        print(f"task {item.name}: {item.goal}\n  expected: "
              f"{'; '.join(f'{f.label}={f.value:g}' for f in item.facts())}", flush=True)
        rows = []
        for seed in range(first_seed, first_seed + runs):
            row = await family_once(seed, item)
            rows.append(row)
            print_row(f"  {item.name} seed={seed}", row,
                      f"nodes={row['nodes']} plan_rejections={row['rejected']}")
        correct = sum(r["correct"] for r in rows)
        totals.append((correct, len(rows)))
        print(f"  {item.name}: {correct}/{len(rows)} correct, median wall "
              f"{statistics.median(r['wall'] for r in rows):.0f} s", flush=True)
    correct, n = sum(c for c, _ in totals), sum(k for _, k in totals)
    print(f"family: {correct}/{n} seeded runs correct over {len(totals)} tasks "
          f"(goal: >= 8/10 per task on average)")


async def run_once(seed: int, facts: dict[str, Any]) -> dict[str, Any]:
    result, events, wall = await _timed_run(_task(seed))
    split = _split(events)
    starts = {e.node_id: e.ts for e in events if e.kind == "node.started"}
    ends = {e.node_id: e.ts for e in events if e.kind in ("node.finished", "node.failed")}
    overlap = any(starts[a] < ends.get(b, 0) and starts[b] < ends.get(a, 0)
                  for a in starts for b in starts if a < b)
    problems = check_answer(result.answer or "", facts)
    return {"seed": seed, "status": result.status, "correct": not problems, "problems": problems,
            "wall": wall, "split": split, "overlap": overlap,
            "ungrounded": len(result.ungrounded), "answer": (result.answer or "")[:400]}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=10)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--family", action="store_true",
                        help="run the task family (default prompts) instead, --runs seeds each")
    parser.add_argument("--only", default="", help="family tasks to run, comma-separated")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="family: seeds first-seed .. first-seed + runs - 1 (to add runs)")
    args = parser.parse_args()
    if args.family:
        await family(args.runs, [n for n in args.only.split(",") if n], args.first_seed)
        return 0
    if not args.skip_speed:
        speed()
    if args.plans:
        outcomes = []
        for seed in range(args.plans):
            ok, info, secs = await plan_once(seed)
            outcomes.append((ok, info, secs))
            print(f"plan seed={seed}: {'valid' if ok else 'INVALID'} in {secs:5.1f} s  {info}", flush=True)
        valid = sum(ok for ok, _, _ in outcomes)
        flat = sum(ok and "depth 1" in info for ok, info, _ in outcomes)
        median = statistics.median(s for _, _, s in outcomes)
        print(f"plan validity: {valid}/{len(outcomes)}  (median {median:.1f} s per plan; "
              f"{flat} with every node independent, as the quickstart's questions are)")
    if args.runs:
        facts = expected_facts()
        print(f"expected: {json.dumps(facts)}")
        rows = []
        for seed in range(args.runs):
            row = await run_once(seed, facts)
            rows.append(row)
            print_row(f"run seed={seed}", row,
                      f"overlap={row['overlap']} ungrounded={row['ungrounded']}")
        correct = sum(r["correct"] for r in rows)
        print(f"quickstart correctness: {correct}/{len(rows)} (goal >= 9/10)")
        for part in ("planning", "execution", "synthesis"):
            vals = [r["split"][part] for r in rows if r["split"]]
            if vals:
                print(f"  median {part}: {statistics.median(vals):.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
