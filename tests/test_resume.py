"""Resume after a crash: a 12-node DAG run (a real ``agentkit run`` child process) is killed
with SIGKILL at seeded random moments and resumed with ``agentkit resume``, several times in a
row, then once more to the end.

What it proves: the resumed run ends with the answer of an uninterrupted run; no model call
whose answer was in the ledger at a kill is sent to the server again (the server records every
request; each is identified by its node and step, which the ledger's ``model.response``
records carry too); the ledger, appended to by every segment, verifies as one chain; the
killed processes are gone. Kill moments are chosen by events, not time: the test waits until
the ledger holds the Nth ``model.response`` (N from a seeded RNG), then kills.

Also: divergence (the goal edited between a stop and the resume) stops with an error naming
the first differing call, and ``--from-divergence`` continues live; resuming a finished run
says so and exits 0; a run stopped by its wall-clock budget continues with a raised limit.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from _durable_helpers import ENV, agent_task, ledger_in, records
from _ray_helpers import WRITER, node_of, tool_results, worker_answer, writer_answer
from _ray_helpers import task as dag_task

from agentkit import DivergenceError, arun, resume, start
from agentkit.audit import verify_ledger
from agentkit.testing import RecordedRequest, Reply, ScriptedModelServer, call, reply

CALLS = 12 * 2 + 1  # two turns per node, one for the writer


def wait_until(condition: Callable[[], bool], what: str, limit_s: float = 120.0) -> None:
    """Return as soon as `condition()` holds (checked every 2 ms); the limit only keeps a
    broken build from hanging the test."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.002)


def signature(req: RecordedRequest) -> tuple[str, int]:
    """Which call a request is: (node, step); the writer's is ("writer", 1)."""
    if req.body.get("model") == WRITER:
        return ("writer", 1)
    return (node_of(req), tool_results(req) + 1)


def answered(ledger: Path) -> set[tuple[str, int]]:
    """The calls whose answers the ledger holds, by the same signature."""
    out = set()
    for r in records(ledger):
        if r["kind"] == "model.response":
            out.add(("writer", 1) if r["data"]["model"] == "write"
                    else (r["node_id"], r["data"]["step"]))
    return out


def serve(req: RecordedRequest) -> Reply:
    return writer_answer(req) if req.body.get("model") == WRITER else \
        worker_answer(req, echo_key=None)


def write_task(tmp_path: Path, base_url: str) -> Path:
    workspace = tmp_path / "ws"
    workspace.mkdir(exist_ok=True)
    spec = dag_task(base_url, workspace)
    path = tmp_path / "dag.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_defaults=True)))
    return path


def cli(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "agentkit", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **ENV, "AGENTKIT_RAY_TEST_KEY": "k"})


def count(ledger: Path, kind: str) -> int:
    if not ledger.exists():
        return 0
    return ledger.read_bytes().count(b'"kind":"%s"' % kind.encode())


def kill_after(proc: subprocess.Popen[bytes], ledger_of: Callable[[], Path | None],
               n: int, resumed: int = 0) -> None:
    """SIGKILL `proc` once the ledger holds `n` model answers and, for the `resumed`-th
    resume, that segment's ``run.resumed`` (or it ended first). Without the second condition
    a segment could be killed before it wrote anything, when the one before it had already run
    past `n` (the test polls; under load the killed process may write a few more answers)."""
    def ready() -> bool:
        ledger = ledger_of()
        return proc.poll() is not None or (
            ledger is not None and count(ledger, "run.resumed") >= resumed
            and count(ledger, "model.response") >= n)
    wait_until(ready, f"{n} model responses")
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]  # killed mid-run


def first_ledger(folder: Path) -> Callable[[], Path | None]:
    def find() -> Path | None:
        found = list(folder.glob("*.jsonl"))
        return found[0] if found else None
    return find


def no_process_mentions(marker: str) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline and entry.name != str(os.getpid()):
                return False
    return True


@pytest.mark.parametrize("seed", [7, 2026])
def test_kill_9_and_resume_many_times_gives_the_uninterrupted_answer(tmp_path: Path,
                                                                    seed: int) -> None:
    rng = random.Random(seed)
    runs = tmp_path / "runs"
    with ScriptedModelServer("deepseek", default=serve) as srv:
        task_file = write_task(tmp_path, srv.base_url)
        proc = cli("run", str(task_file), "--ledger-dir", str(runs))
        moments = sorted(rng.sample(range(1, CALLS), 3))
        kill_after(proc, first_ledger(runs), moments[0])
        ledger = ledger_in(runs)
        kills = [(len(srv.requests), answered(ledger))]
        for segment, n in enumerate(moments[1:], start=1):
            proc = cli("resume", str(ledger))
            kill_after(proc, lambda: ledger, n, resumed=segment)
            kills.append((len(srv.requests), answered(ledger)))
        final = cli("resume", str(ledger), "--json")
        out, err = final.communicate(timeout=300)
        assert final.returncode == 0, err.decode()[-3000:]
        payload = json.loads(out)
        requests = list(srv.requests)
    with ScriptedModelServer("deepseek", default=serve) as fresh:
        expected = _uninterrupted(tmp_path, fresh)
    assert payload["answer"] == expected
    assert payload["run_id"] == ledger.stem
    for i, (sent_before, done) in enumerate(kills):
        again = [signature(r) for r in requests[sent_before:] if signature(r) in done]
        assert again == [], f"after kill {i + 1}, completed calls were sent again: {again}"
    assert verify_ledger(ledger).ok
    recs = records(ledger)
    kinds = [r["kind"] for r in recs]
    assert kinds.count("run.resumed") == 3 and kinds[-1] == "run.finished"
    assert kinds.count("run.finished") == 1  # the killed segments never finished
    picked_up = [r["data"]["recorded_model_calls"] for r in recs if r["kind"] == "run.resumed"]
    assert picked_up == sorted(picked_up) and picked_up[0] >= moments[0]
    assert no_process_mentions(str(tmp_path))


def _uninterrupted(tmp_path: Path, srv: ScriptedModelServer) -> str:
    ws = tmp_path / "ws2"
    ws.mkdir()
    result = asyncio.run(arun(dag_task(srv.base_url, ws), ledger_dir=None,
                              environ={"AGENTKIT_RAY_TEST_KEY": "k"}))
    assert result.ok, result.error
    assert result.answer is not None
    return result.answer


async def test_an_edited_goal_stops_the_resume_at_the_first_differing_call(
        tmp_path: Path) -> None:
    """Stopped after its first answer (as Ctrl-C stops it), the run is resumed with another
    goal: the first model call's request differs from the recorded one, so the resume fails
    naming that call, with the old and new goal in the diff, and sends nothing. With
    from_divergence it continues live from that call."""
    with ScriptedModelServer("deepseek") as srv:
        srv.script(reply(tool_calls=[call("list_files", {})]))
        spec = agent_task(srv.base_url, tmp_path / "ws", tools=["list_files"],
                          goal="Count apples.")
        (tmp_path / "ws").mkdir()
        handle = start(spec, ledger_dir=tmp_path / "runs", environ=ENV)
        async for event in handle.events():
            if event.kind == "model.response":
                handle.cancel("test")
        assert (await handle.result()).status == "cancelled"
        ledger = ledger_in(tmp_path / "runs")
        sent = len(srv.requests)
        edited = spec.model_copy(update={"goal": "Count pears."})
        result = await resume(ledger, task=edited, environ=ENV).result()
        assert result.status == "failed" and result.error is not None
        assert result.error.type == "DivergenceError"
        assert result.error.details["call_key"] == "agent#1/agent#1/1/m"
        assert "Count apples." in result.error.details["diff"]
        assert "Count pears." in result.error.details["diff"]
        assert len(srv.requests) == sent
        with pytest.raises(DivergenceError):
            result.raise_for_status()
        srv.script(reply("Pears counted."))
        live = await resume(ledger, task=edited, environ=ENV, from_divergence=True).result()
    assert live.ok and live.answer == "Pears counted."
    assert len(srv.requests) == sent + 1
    diverged = [r["data"] for r in records(ledger) if r["kind"] == "resume.diverged"]
    assert [d["call_key"] for d in diverged] == ["agent#1/agent#1/1/m"]
    assert "Count pears." in diverged[0]["diff"]
    assert verify_ledger(ledger).ok


async def test_a_run_stopped_by_its_wall_clock_continues_with_a_raised_limit(
        tmp_path: Path) -> None:
    """A run stopped by budget.wall_seconds (its second model call never answers) resumes
    with ``agentkit resume --set budget.wall_seconds=120``: the first call is answered from
    the ledger, the second is made."""
    async def hold(req: RecordedRequest) -> Reply:
        await asyncio.get_running_loop().create_future()
        return reply("never")

    (tmp_path / "ws").mkdir()
    with ScriptedModelServer("deepseek") as srv:
        srv.script(reply(tool_calls=[call("list_files", {})]), hold)
        spec = agent_task(srv.base_url, tmp_path / "ws", tools=["list_files"],
                          extra={"budget": {"wall_seconds": 1.0}})
        first = await arun(spec, ledger_dir=tmp_path / "runs", environ=ENV)
        assert first.error is not None and first.error.type == "BudgetExceeded"
        ledger = ledger_in(tmp_path / "runs")
        srv.script(reply("Done in time."))
        proc = cli("resume", str(ledger), "--set", "budget.wall_seconds=120", "--json")
        out, err = await asyncio.to_thread(proc.communicate, timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert json.loads(out)["answer"] == "Done in time."
    assert [signature_of(r) for r in srv.requests] == [1, 2, 2]
    resumed = [r for r in records(ledger) if r["kind"] == "run.resumed"]
    assert resumed[0]["data"]["limits"]["wall_seconds"] == 120.0


def signature_of(req: RecordedRequest) -> int:
    return tool_results(req) + 1


def test_resuming_a_finished_run_says_so_and_exits_0(tmp_path: Path) -> None:
    with ScriptedModelServer("deepseek", default=reply("Done.")) as srv:
        spec = agent_task(srv.base_url, tmp_path, tools=[])
        assert asyncio.run(arun(spec, ledger_dir=tmp_path / "runs", environ=ENV)).ok
        sent = len(srv.requests)
        ledger = ledger_in(tmp_path / "runs")
        proc = cli("resume", str(ledger), "--json")
        out, err = proc.communicate(timeout=120)
        assert len(srv.requests) == sent
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["already_finished"] is True
    assert b"already finished" in err


async def test_a_ledger_still_being_written_is_not_resumed(tmp_path: Path) -> None:
    """While a process holds the ledger (a run still alive), resume refuses with a
    ConfigError naming the file; the lock goes with the holder (kill -9 included)."""
    import fcntl

    from agentkit import ConfigError

    with ScriptedModelServer("deepseek", default=reply("Done.")) as srv:
        spec = agent_task(srv.base_url, tmp_path, tools=[])
        handle = start(spec, ledger_dir=tmp_path / "runs", environ=ENV)
        await handle.result()
    ledger = ledger_in(tmp_path / "runs")
    with ledger.open("rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(ConfigError, match="being written by a live process"):
            resume(ledger, environ=ENV)
    resume(ledger, environ=ENV).cancel()  # released: accepted again


async def test_a_torn_tail_is_ignored_by_the_journal_and_cut_by_the_resume(
        tmp_path: Path) -> None:
    """A crash mid-write leaves half a line: the journal reads the complete lines only, and
    the resumed run's ledger cuts the torn bytes, records them in ``recovered`` and goes on;
    the whole file verifies."""
    (tmp_path / "ws").mkdir()
    with ScriptedModelServer("deepseek") as srv:
        srv.script(reply(tool_calls=[call("list_files", {})]))
        spec = agent_task(srv.base_url, tmp_path / "ws", tools=["list_files"])
        handle = start(spec, ledger_dir=tmp_path / "runs", environ=ENV)
        async for event in handle.events():
            if event.kind == "tool.result":
                handle.cancel("test")
        await handle.result()
        ledger = ledger_in(tmp_path / "runs")
        with ledger.open("ab") as fh:
            fh.write(b'{"data":{"call_key":"agent#1/agent#1/2/m","fing')
        srv.script(reply("Finished."))
        result = await resume(ledger, environ=ENV).result()
    assert result.ok and result.answer == "Finished."
    assert len(srv.requests) == 2  # step 1 answered from the ledger, step 2 made
    kinds = [r["kind"] for r in records(ledger)]
    assert "recovered" in kinds and kinds.index("recovered") < kinds.index("run.resumed")
    assert verify_ledger(ledger).ok
