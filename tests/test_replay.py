"""`agentkit replay`: a recorded run re-executed offline, every call answered from its ledger.

The run is recorded against the scripted model server (12-node DAG, each worker calls
run_code in the fake sandbox). Then the server is stopped, so its port is closed (any HTTP
request would fail), and ``agentkit replay`` runs in a child process whose DOCKER_HOST points
at a socket that does not exist and that has no API key variable: it must still reach the
recorded answer, and leave the original ledger untouched. A ledger cut short makes replay
fail naming the first call without a recorded answer, with a diff against the nearest one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from _durable_helpers import ENV, agent_task, cut_after, ledger_in
from _ray_helpers import WRITER, worker_answer, writer_answer
from _ray_helpers import task as dag_task

from agentkit import start
from agentkit.testing import FakeSandboxClient, RecordedRequest, Reply, ScriptedModelServer, reply
from agentkit.testing._recording import RECORD_ENV, record_or_replay

CODE = {"language": "bash", "code": "echo checked"}


def serve(req: RecordedRequest) -> Reply:
    if req.body.get("model") == WRITER:
        return writer_answer(req)
    return worker_answer(req, echo_key=None, tool="run_code", arguments=CODE)


async def record(tmp_path: Path) -> tuple[Path, str]:
    ws = tmp_path / "ws"
    ws.mkdir()
    with ScriptedModelServer("deepseek", default=serve) as srv:
        spec = dag_task(srv.base_url, ws, tools=["run_code"],
                        sandbox={"persistent": False})
        handle = start(spec, ledger_dir=tmp_path / "runs",
                       environ={"AGENTKIT_RAY_TEST_KEY": "k"})
        FakeSandboxClient(spec.sandbox).install(handle.runtime)
        result = await handle.result()
    assert result.ok and result.answer is not None, result.error
    return ledger_in(tmp_path / "runs"), result.answer


def replay_cli(ledger: Path) -> tuple[int, dict[str, Any], str]:
    env = {k: v for k, v in os.environ.items() if k != "AGENTKIT_RAY_TEST_KEY"}
    env["DOCKER_HOST"] = "unix:///nonexistent/agentkit-test/docker.sock"
    proc = subprocess.run([sys.executable, "-m", "agentkit", "replay", str(ledger), "--json"],
                          capture_output=True, env=env, timeout=300)
    return proc.returncode, json.loads(proc.stdout or b"{}"), proc.stderr.decode()


async def test_replay_offline_reproduces_the_answer(tmp_path: Path) -> None:
    ledger, answer = await record(tmp_path)
    before = ledger.read_bytes()
    code, payload, err = replay_cli(ledger)
    assert code == 0, err[-3000:]
    assert payload["answer"] == answer and payload["replay"]["matches"] is True
    assert ledger.read_bytes() == before  # the original ledger is never written


async def test_replay_names_the_first_call_without_an_answer(tmp_path: Path) -> None:
    ledger, _ = await record(tmp_path)
    seen = 0

    def fifth_answer(r: dict[str, Any]) -> bool:
        nonlocal seen
        seen += r["kind"] == "model.response"
        return bool(seen == 5)

    cut_after(ledger, fifth_answer)
    code, payload, err = replay_cli(ledger)
    assert code == 1
    miss = payload["replay"]["first_miss"]
    # nodes run in parallel: the first miss is a model call (with a diff of its request
    # against the nearest recorded one) or a tool call, of a node the cut ledger left unfinished
    assert miss["call_key"] in payload["error"]["message"]
    assert "no recorded" in payload["error"]["message"]
    if miss["call_key"].endswith("/m"):
        assert "recorded call" in miss["diff"]
    assert miss["call_key"] in err


async def test_record_once_then_replay_without_the_provider(tmp_path: Path,
                                                            monkeypatch: Any) -> None:
    """`agentkit.testing`'s recorded_run: the first call records against the server, the
    second replays with the server gone; a changed task fails naming the call."""
    monkeypatch.delenv(RECORD_ENV, raising=False)
    cassette = tmp_path / "cassettes" / "hello.jsonl"
    with ScriptedModelServer("deepseek", default=reply("Hello from the model.")) as srv:
        spec = agent_task(srv.base_url, tmp_path, tools=[])
        first = await record_or_replay(cassette, spec, environ=ENV)
        assert len(srv.requests) == 1
    again = await record_or_replay(cassette, spec)
    assert again.answer == first.answer == "Hello from the model."
    changed = cassette.with_name("changed.jsonl")
    lines = cassette.read_text().splitlines(keepends=True)
    # as if the code now built another request: the recorded answer's fingerprint differs
    changed.write_text("".join(re.sub(r'"fingerprint":"[0-9a-f]{64}"', '"fingerprint":"' + "0" * 64
                                      + '"', line) if '"kind":"model.response"' in line
                               else line for line in lines))
    try:
        await record_or_replay(changed, spec)
    except AssertionError as exc:
        assert "no recorded answer for model call agent#1/agent#1/1/m" in str(exc)
    else:
        raise AssertionError("a replay whose requests differ must fail")
