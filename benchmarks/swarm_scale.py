"""100 sub-agents making 1,500 tool calls: scheduler efficiency, peak memory, ledger rate.

    python benchmarks/swarm_scale.py                       # ~10 s
    python benchmarks/swarm_scale.py --agents 100 --calls 15 --latency 0.5
    python benchmarks/swarm_scale.py --profile /tmp/swarm.prof  # cProfile of the ledger-on run

The whole stack runs for real: a hand-written 100-node plan (planner skipped, so the figure is
the engine's), the real agent loop, the DeepSeek wire adapter and resilience layer over HTTP to
a `ScriptedModelServer` on 127.0.0.1 in a child process (it answers every model turn after
`--latency` seconds: the simulated model; its CPU is kept out of the measured process), the
real `list_files` tool (fast), the hash-chained ledger. Each agent makes
`--calls` tool calls, 5 per model turn, then answers; the synthesizer answers last.

Physical limit: T_phys = (turns per agent + 1 synthesizer turn) × latency (tools are ~0);
η = T_phys / makespan. Baseline in the same run: the same workload with the ledger off, so the
ledger's cost shows as a makespan ratio. Floor in the same run: the same conversations with
httpx and json alone (`bare_httpx`), the most any framework on httpx could reach on this
machine; agentkit's η is printed as a fraction of the floor's too. Peak RSS is this process
(the server is a child). CPU seconds are this process's, per run.

Peer: the same workload run by pydantic-ai (if installed: ``pip install
'pydantic-ai-slim[openai]'``) against the same server: the same agents, tool, number of turns
and synthesizer turn, ``asyncio.gather``-ed; both makespans and CPU seconds are printed with
their ratio (goal: agentkit ≤ 1.0× while it also keeps the ledger, budgets and rate limits).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import math
import multiprocessing
import pstats
import resource
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from _swarm_sim import ROLES, WORKER, WRITER, number_in, role_models, tool_results

from agentkit import RunResult, arun
from agentkit.task import TaskSpec
from agentkit.testing import RecordedRequest, ScriptedModelServer, call, reply
from agentkit.tools._workspace import Workspace

PER_TURN = 5


def worker(latency: float, calls: int) -> Any:
    """Every agent: list the workspace `calls` times, PER_TURN calls a turn, then answer."""
    def answer(req: RecordedRequest) -> Any:
        done = tool_results(req)
        if done < calls:
            n = min(PER_TURN, calls - done)
            return reply(reasoning=f"List again ({done} done).", delay=latency,
                         tool_calls=[call("list_files", {}) for _ in range(n)])
        job = number_in(req, r"job (\d+)")
        return reply(f"job {job}: listed {done} times.", reasoning="Done.", delay=latency)
    return answer


def task(base_url: str, agents: int, workspace: Path) -> TaskSpec:
    return TaskSpec.model_validate({
        "name": "scale", "goal": "List the workspace many times.", "model": "work",
        "models": role_models(base_url, "SIM_KEY"), "roles": ROLES,
        "tools": ["list_files"], "workspace": str(workspace),
        "budget": {"max_agents": agents, "max_nodes": agents, "max_steps": 50},
        "plan": {"nodes": [{"id": f"a{i}", "goal": f"List the workspace (job {i}).",
                            "tools": ["list_files"]} for i in range(agents)]},
    })


def serve(latency: float, calls: int, conn: Connection) -> None:
    """The simulated model in its own process (its CPU is not the framework's)."""

    async def run() -> None:
        async with ScriptedModelServer("deepseek") as srv:
            srv.route(WORKER, default=worker(latency, calls))
            srv.route(WRITER, default=reply("All agents finished.", reasoning="Summarise.",
                                            delay=latency))
            conn.send(srv.base_url)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until told to stop

    asyncio.run(run())


async def one_run(base_url: str, args: argparse.Namespace, tmp: Path, ledger: bool,
                  profile: cProfile.Profile | None = None) -> tuple[RunResult, float, float]:
    """(result, makespan, CPU seconds of this process) of one run; `profile` sees it whole."""
    spec = task(base_url, args.agents, tmp)
    cpu, start = time.process_time(), time.perf_counter()
    if profile is not None:
        profile.enable()
    try:
        result = await arun(spec, ledger_dir=tmp / "ledger" if ledger else None,
                            environ={"SIM_KEY": "sk-sim"})
    finally:
        if profile is not None:
            profile.disable()
    return result, time.perf_counter() - start, time.process_time() - cpu


PeerRun = Callable[[str, int, Path], Awaitable[int]]


def pydantic_ai_runner() -> PeerRun | None:
    """The same workload on pydantic-ai (``pip install pydantic-ai-slim[openai]``; skipped if
    absent): `agents` agents with the same `list_files` (the same workspace listing, in a worker
    thread; agentkit lists a folder this small on the event loop: `Workspace.small_listing`)
    on the same scripted server, ``asyncio.gather``-ed, then one
    synthesizer turn over their answers. No ledger, budgets or rate limits."""
    try:
        from pydantic_ai import Agent
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider
        from pydantic_ai.settings import ModelSettings
    except ImportError:
        return None

    async def run(base_url: str, agents: int, workspace: Path) -> int:
        provider = OpenAIProvider(base_url=base_url, api_key="sk-sim")
        settings = ModelSettings(max_tokens=256)
        ws = Workspace(workspace, tool="list_files")
        worker = Agent(OpenAIChatModel(WORKER, provider=provider), model_settings=settings,
                       system_prompt="You are a sub-agent. Use the tools, then answer.")

        @worker.tool_plain  # type: ignore[untyped-decorator, unused-ignore]  # Any without pydantic-ai
        async def list_files() -> str:
            """List files and folders in the workspace (sizes in bytes; folders end in /)."""
            entries = await asyncio.to_thread(ws.listing, ".", recursive=False, max_entries=1000)
            return "\n".join(entries) or "(empty)"

        results = await asyncio.gather(*(worker.run(f"List the workspace (job {i}).")
                                         for i in range(agents)))
        writer = Agent(OpenAIChatModel(WRITER, provider=provider), model_settings=settings)
        await writer.run("\n".join(r.output for r in results))
        return sum(sum(1 for m in r.all_messages() for p in m.parts
                       if p.part_kind == "tool-return") for r in results)

    return run


async def bare_httpx(base_url: str, agents: int, workspace: Path) -> int:
    """The floor: the same conversations with nothing but httpx and json. Each agent is a
    coroutine with its own client of one kept-alive connection (one pool shared by 100
    connections costs far more: httpcore scans its pool on every request), posting its growing
    history and running the same listing for every call, on the loop, until the model answers;
    then the synthesizer turn. Its makespan is what this machine's HTTP client and event loop
    cost on this workload: T_phys / that makespan is the η ceiling of a framework on httpx."""
    ws = Workspace(workspace, tool="list_files")
    tool = {"type": "function", "function": {
        "name": "list_files", "description": "List files and folders in the workspace.",
        "parameters": {"type": "object", "properties": {}}}}
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # plain http: no CA bundle to load per client
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    auth = {"Authorization": "Bearer sk-sim"}

    async def turn(client: httpx.AsyncClient, model: str,
                   messages: list[dict[str, Any]]) -> dict[str, Any]:
        body = {"model": model, "messages": messages, "max_tokens": 256, "tools": [tool]}
        resp = await client.post(f"{base_url}/chat/completions", json=body)
        resp.raise_for_status()
        message: dict[str, Any] = resp.json()["choices"][0]["message"]
        return message

    async def agent(job: int) -> tuple[str, int]:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": "You are a sub-agent. Use the tools, then answer."},
            {"role": "user", "content": f"List the workspace (job {job})."}]
        calls = 0
        async with httpx.AsyncClient(limits=one, verify=tls, timeout=60.0, headers=auth) as client:
            while (message := await turn(client, WORKER, messages)).get("tool_calls"):
                messages.append(message)
                for tc in message["tool_calls"]:
                    listing = "\n".join(ws.listing(".", recursive=False, max_entries=1000))
                    messages.append({"role": "tool", "tool_call_id": tc["id"], "content": listing})
                    calls += 1
        return str(message.get("content")), calls

    results = await asyncio.gather(*(agent(i) for i in range(agents)))
    async with httpx.AsyncClient(verify=tls, headers=auth) as client:
        await turn(client, WRITER, [{"role": "user", "content": "\n".join(r[0] for r in results)}])
    return sum(r[1] for r in results)


async def timed(work: Awaitable[Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of this process) of `work`."""
    cpu, start = time.process_time(), time.perf_counter()
    result = await work
    return result, time.perf_counter() - start, time.process_time() - cpu


def read_lines(path: str | None) -> list[str]:
    return Path(path or "").read_text().splitlines()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--calls", type=int, default=15, help="tool calls per agent")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per model turn")
    parser.add_argument("--profile", metavar="FILE",
                        help="cProfile the ledger-on run; stats to FILE, top entries printed")
    args = parser.parse_args()
    profile = cProfile.Profile() if args.profile else None
    turns = math.ceil(args.calls / PER_TURN) + 1
    t_phys = (turns + 1) * args.latency
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        (tmp / "data.txt").write_text("x\n")
        mine, theirs = multiprocessing.get_context("spawn").Pipe()
        server = multiprocessing.get_context("spawn").Process(
            target=serve, args=(args.latency, args.calls, theirs), daemon=True)
        server.start()
        try:
            url = await asyncio.to_thread(mine.recv)
            await one_run(url, args, tmp, ledger=False)  # warm-up (imports, first connections)
            await bare_httpx(url, args.agents, tmp)
            floor_calls, floor_t, floor_cpu = await timed(bare_httpx(url, args.agents, tmp))
            base, base_t, base_cpu = await one_run(url, args, tmp, ledger=False)
            result, took, cpu = await one_run(url, args, tmp, ledger=True, profile=profile)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the peer
            peer = pydantic_ai_runner()
            if peer is not None:
                await peer(url, args.agents, tmp)  # warm-up, as for agentkit
                peer_calls, peer_t, peer_cpu = await timed(peer(url, args.agents, tmp))
        finally:
            mine.send("stop")
            server.join(10)
        assert result.status == base.status == "succeeded", (result.error, base.error)
        lines = read_lines(result.ledger)
        kinds = [json.loads(x)["kind"] for x in lines]
    tool_calls = sum(1 for k in kinds if k == "tool.result")
    print(f"{args.agents} agents, {tool_calls} tool calls, {kinds.count('model.request')} model "
          f"calls, model latency {args.latency} s/turn, {turns} turns per agent")
    print(f"T_phys {t_phys:.2f} s (({turns} agent turns + 1 synthesizer turn) × latency)")
    print(f"ledger off: makespan {base_t:.2f} s  η {t_phys / base_t:.3f}  CPU {base_cpu:.2f} s")
    print(f"ledger on : makespan {took:.2f} s  η {t_phys / took:.3f}  CPU {cpu:.2f} s  "
          f"(ledger on / off makespan {took / base_t:.3f}×, goal ≤ 1.05; η goal ≥ 0.90)")
    print(f"floor, bare httpx (same conversations, no framework; {floor_calls} tool calls): "
          f"makespan {floor_t:.2f} s  η {t_phys / floor_t:.3f}  CPU {floor_cpu:.2f} s")
    print(f"agentkit (ledger on) / floor: makespan {took / floor_t:.3f}×, "
          f"η {floor_t / took:.3f} of the floor's")
    print(f"ledger: {len(lines)} events, {len(lines) / took:.0f} events/s over the run")
    print(f"peak RSS {peak:.0f} MB (this process: engine, agents, HTTP clients, ledger; the "
          f"simulated model runs in a child process; goal ≤ 300 MB)")
    if peer is None:
        print("pydantic-ai is not installed: comparison skipped "
              "(pip install 'pydantic-ai-slim[openai]')")
    else:
        print(f"pydantic-ai (same agents, tool, turns and server; {peer_calls} tool calls, no "
              f"ledger/budgets/rate limits): makespan {peer_t:.2f} s  CPU {peer_cpu:.2f} s")
        print(f"agentkit (ledger on) / pydantic-ai: makespan {took / peer_t:.3f}× (goal ≤ 1.0), "
              f"CPU {cpu / peer_cpu:.3f}×")
    if profile is not None:
        profile.dump_stats(args.profile)
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    asyncio.run(main())
