"""The Python API behaves like the CLI: the ledger goes where the task's `output` says (paths in
a task file relative to the file), configuration problems are refused before any model call,
a stopped run still returns a full result, and an embedder can stop a run on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentkit import ConfigError, TaskSpec, arun, load_task, run_sync, start
from agentkit.audit import verify_ledger
from agentkit.run import head_file
from agentkit.testing import RecordedRequest, ScriptedModelServer, reply

ENV = {"API_TEST_KEY": "kq-api-test-5d1e"}


def model(base_url: str) -> dict[str, Any]:
    return {"profile": "deepseek", "model": "worker", "base_url": base_url,
            "api_key_env": "API_TEST_KEY", "stream": False}


@pytest.fixture
def held() -> Iterator[tuple[ScriptedModelServer, threading.Event]]:
    """Every request is held unanswered; the event says one arrived."""
    arrived = threading.Event()

    async def hold(req: RecordedRequest) -> Any:
        arrived.set()
        await asyncio.Event().wait()

    with ScriptedModelServer("deepseek", default=hold) as srv:
        yield srv, arrived


def test_the_ledger_goes_where_the_task_file_says_from_any_directory(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`output: results` in a task file means the file's folder/results, whatever the current
    directory (before: the API wrote no ledger unless `ledger_dir` was passed)."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    with ScriptedModelServer("deepseek", default=reply("Hi.")) as srv:
        (project / "task.yaml").write_text(textwrap.dedent(f"""\
            name: api
            goal: say hi
            mode: agent
            models: {{m: {json.dumps(model(srv.base_url))}}}
            output: results
            """))
        monkeypatch.chdir(elsewhere)
        result = run_sync(load_task(project / "task.yaml"), environ=ENV)
    assert result.status == "succeeded" and result.ledger is not None
    ledger = Path(result.ledger)
    assert ledger.parent == project / "results" and ledger.is_absolute()
    assert verify_ledger(ledger, expected_head=result.ledger_head).ok
    assert head_file(ledger).read_text().split()[0] == result.ledger_head
    assert not list(elsewhere.iterdir())


async def test_a_task_built_in_python_writes_to_runs_and_none_writes_nothing(tmp_path: Path) -> None:
    """Relative paths given in Python resolve against the current directory (here: the test's
    own); `ledger_dir=None` is the one way to run without a ledger file."""
    with ScriptedModelServer("deepseek", default=reply("Hi.")) as srv:
        spec = TaskSpec.model_validate({"name": "api", "goal": "say hi", "mode": "agent",
                                        "models": {"m": model(srv.base_url)}})
        default = await arun(spec, environ=ENV)
        none = await arun(spec, environ=ENV, ledger_dir=None)
    assert default.ledger is not None and Path(default.ledger).parent == Path.cwd() / "runs"
    assert none.ledger is None and none.ledger_head is None
    assert len(list((Path.cwd() / "runs").glob("*.jsonl"))) == 1


def test_a_task_with_only_name_and_goal_uses_the_embedded_model() -> None:
    spec = TaskSpec(name="hello", goal="say hello")
    assert spec.model == "local" and spec.models["local"].provider == "local"
    assert spec.model_for("planner") == "local"


async def test_start_refuses_a_missing_key_before_any_model_call(tmp_path: Path) -> None:
    """A swarm with a hand-written plan whose model's key variable is not set: `start()`
    raises ConfigError naming the variable, and no request reaches the server (before: each
    node failed with the error and the run ended `failed`)."""
    with ScriptedModelServer("deepseek", default=reply("hi")) as srv:
        spec = TaskSpec.model_validate({
            "name": "api", "goal": "g", "models": {"m": model(srv.base_url)},
            "plan": {"nodes": [{"id": "a", "goal": "one"}, {"id": "b", "goal": "two"}]}})
        with pytest.raises(ConfigError, match="API_TEST_KEY"):
            start(spec, environ={})
        assert srv.requests == []


async def test_a_timed_out_or_cancelled_run_still_returns_its_ledger(tmp_path: Path,
                                                                     held: Any) -> None:
    srv, arrived = held
    spec = TaskSpec.model_validate({"name": "api", "goal": "g", "mode": "agent",
                                    "models": {"m": model(srv.base_url)},
                                    "budget": {"wall_seconds": 0.5}})
    timed_out = await arun(spec, environ=ENV)
    assert timed_out.status == "failed" and timed_out.error is not None
    assert timed_out.error.type == "BudgetExceeded" and timed_out.ledger_head is not None
    assert verify_ledger(timed_out.ledger or "", expected_head=timed_out.ledger_head).ok
    run = start(spec.model_copy(update={"budget": spec.budget.model_copy(
        update={"wall_seconds": 600.0})}), environ=ENV)
    await asyncio.to_thread(arrived.wait, 60)
    run.cancel("shutting down")
    cancelled = await run.result()
    assert cancelled.status == "cancelled" and cancelled.error is not None
    assert "shutting down" in cancelled.error.message
    assert verify_ledger(cancelled.ledger or "", expected_head=cancelled.ledger_head).ok


EMBEDDER = """
import asyncio, signal, sys, json
from agentkit import TaskSpec, start

async def main():
    spec = TaskSpec.model_validate(json.loads(sys.argv[1]))
    run = start(spec, environ={"API_TEST_KEY": "k-embedded"})
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGHUP):      # the recipe in Run.cancel's docstring
        loop.add_signal_handler(sig, run.cancel, sig.name)
    result = await run.result()
    print(json.dumps({"status": result.status, "ledger": result.ledger,
                      "message": result.error.message if result.error else None}))

asyncio.run(main())
"""


def test_an_embedder_wires_sigterm_to_run_cancel(tmp_path: Path, held: Any) -> None:
    """A worker process (as under docker stop or systemd) that wires SIGTERM to `run.cancel`
    as documented ends the run cleanly: status cancelled, the signal named, the ledger closed
    with run.finished and verifiable."""
    srv, arrived = held
    spec = {"name": "worker", "goal": "g", "mode": "agent", "models": {"m": model(srv.base_url)}}
    proc = subprocess.Popen([sys.executable, "-c", EMBEDDER, json.dumps(spec)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ})
    try:
        assert arrived.wait(60), "the run never reached its model call"
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    out = json.loads(stdout)
    assert out["status"] == "cancelled" and "SIGTERM" in out["message"]
    lines = Path(out["ledger"]).read_text().splitlines()
    assert json.loads(lines[-1])["kind"] == "run.finished" and verify_ledger(out["ledger"]).ok
