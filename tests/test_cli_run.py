"""`agentkit run` as a user meets it: the real command in a child process, real signals, a
scripted model server over real HTTP, the real ledger. What leaves the run (stdout, stderr,
``--json``, the head sidecar) is checked against the ledger it describes."""

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
from typer.testing import CliRunner

from agentkit.audit import verify_ledger
from agentkit.cli import app
from agentkit.testing import RecordedRequest, ScriptedModelServer, call, error, reply

runner = CliRunner()
KEY = "zq-test-key-7c1f9e22b0a4"  # the shape of no known provider: only its value can hide it


def write_task(folder: Path, base_url: str, body: str = "mode: agent\n", *,
               key_env: str = "CLI_RUN_KEY", name: str = "task.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(f"""\
        name: cli-run
        goal: say hello
        model: m
        models:
          m: {{profile: deepseek, model: worker, base_url: {base_url}, api_key_env: {key_env},
               stream: false, timeout_s: 60}}
        retry: {{attempts: 1, base_delay_s: 0, node_attempts: 1, replans: 0, plan_attempts: 1}}
        workspace: .
        """) + textwrap.dedent(body))
    return path


def child(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
          ) -> subprocess.Popen[str]:
    """`python -m agentkit ...` with SIGINT and SIGHUP as at a terminal (a CI shell running us
    in the background may have set them to be ignored, and children inherit that)."""
    def as_at_a_terminal() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)

    return subprocess.Popen([sys.executable, "-m", "agentkit", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, preexec_fn=as_at_a_terminal)


def finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=120)  # a safety net: a broken run must not hang the suite
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def records(ledger: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(ledger).read_text().splitlines()]


@pytest.fixture
def held_server() -> Iterator[tuple[ScriptedModelServer, threading.Event]]:
    """A DeepSeek server that holds every request unanswered until the client hangs up; the
    event is set once a request is being held (the run is inside a model call)."""
    arrived = threading.Event()

    async def hold(req: RecordedRequest) -> Any:
        arrived.set()
        await asyncio.Event().wait()  # answered never: the client hangs up when cancelled

    with ScriptedModelServer("deepseek", default=hold) as srv:
        yield srv, arrived


# -- signals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129),
                                       (signal.SIGINT, 130)])
def test_a_stop_signal_cancels_the_run_cleanly(tmp_path: Path, held_server: Any,
                                               sig: signal.Signals, code: int) -> None:
    """SIGTERM (kill, docker stop, systemd, CI timeouts) and SIGHUP are handled as Ctrl-C is:
    the in-flight model call is cancelled and recorded, the ledger ends with run.finished
    (status cancelled, naming the signal) and verifies against the head the CLI printed and
    saved, and the exit code is 128 + the signal's number. Before, SIGTERM/SIGHUP killed the
    process at once: no run.finished, no summary."""
    srv, arrived = held_server
    path = write_task(tmp_path, srv.base_url)
    proc = child(["run", str(path), "--json"], env={"CLI_RUN_KEY": KEY}, cwd=tmp_path)
    assert arrived.wait(60), "the run never reached its model call"
    proc.send_signal(sig)
    stdout, stderr = finish(proc)
    assert proc.returncode == code, stderr
    payload = json.loads(stdout)
    assert payload["status"] == "cancelled" and sig.name in payload["error"]["message"]
    lines = records(payload["ledger"])
    kinds = [r["kind"] for r in lines]
    assert "model.request" in kinds  # the call that was in flight is in the ledger
    assert lines[-1]["kind"] == "run.finished" and lines[-1]["data"]["status"] == "cancelled"
    assert sig.name in lines[-1]["data"]["error"]["message"]
    assert verify_ledger(payload["ledger"], expected_head=payload["ledger_head"]).ok
    assert Path(payload["head_file"]).read_text().split()[0] == payload["ledger_head"]


def test_sigterm_human_output_says_cancelled_and_prints_the_summary(tmp_path: Path,
                                                                    held_server: Any) -> None:
    """After a stop signal the user still gets the summary, the ledger path and its head."""
    srv, arrived = held_server
    path = write_task(tmp_path, srv.base_url)
    proc = child(["run", str(path)], env={"CLI_RUN_KEY": KEY}, cwd=tmp_path)
    assert arrived.wait(60), "the run never reached its model call"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = finish(proc)
    assert proc.returncode == 143, stderr
    assert "SIGTERM: cancelling the run" in stderr
    assert "cancelled: run " in stderr and "\nledger " in stderr and "\nhead " in stderr
    assert "Traceback" not in stderr and stdout == ""


def test_an_ignored_sighup_stays_ignored(tmp_path: Path, held_server: Any) -> None:
    """Under `nohup` (SIGHUP ignored) a closed terminal must not stop the run: the CLI only
    handles the signals its parent left on."""
    srv, arrived = held_server
    path = write_task(tmp_path, srv.base_url)
    proc = subprocess.Popen([sys.executable, "-m", "agentkit", "run", str(path), "--json"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "CLI_RUN_KEY": KEY},
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    assert arrived.wait(60), "the run never reached its model call"
    proc.send_signal(signal.SIGHUP)  # ignored: the run goes on
    proc.send_signal(signal.SIGTERM)  # stops it; had SIGHUP counted, this would force-quit
    stdout, stderr = finish(proc)
    assert proc.returncode == 143, stderr
    assert "SIGHUP" not in stderr and json.loads(stdout)["status"] == "cancelled"


# -- one redaction for every way out ---------------------------------------------------------------


def test_a_key_the_model_echoes_appears_nowhere(tmp_path: Path) -> None:
    """The model echoes the API key in a tool call's arguments and in its answer, and a tool
    error quotes it: it is in none of stdout, stderr (human and --json runs) or the ledger.
    Before, the ledger hid it but stdout and --json printed it in clear."""
    with ScriptedModelServer("deepseek") as srv:
        srv.default = lambda req: (
            reply(f"The key is {KEY}.", reasoning=f"echo {KEY}")
            if any(m.get("role") == "tool" for m in req.messages) else
            reply(reasoning="look", tool_calls=[call("read_file", {"path": f"{KEY}.txt"})]))
        path = write_task(tmp_path, srv.base_url, "mode: agent\ntools: [read_file]\n")
        runs = [subprocess.run([sys.executable, "-m", "agentkit", "run", str(path), *extra],
                               capture_output=True, text=True, cwd=tmp_path, timeout=120,
                               env={**os.environ, "CLI_RUN_KEY": KEY}) for extra in ([], ["--json"])]
    human, as_json = runs
    assert human.returncode == 0 and as_json.returncode == 0, human.stderr + as_json.stderr
    assert "The key is [REDACTED]." in human.stdout
    assert "read_file" in human.stderr  # the agent's tool call was shown (redacted)
    payload = json.loads(as_json.stdout)
    assert payload["answer"] == "The key is [REDACTED]."
    ledgers = list((tmp_path / "runs").glob("*.jsonl"))
    assert len(ledgers) == 2
    for text in (human.stdout, human.stderr, as_json.stdout, as_json.stderr,
                 *(p.read_text() for p in ledgers)):
        assert KEY not in text


# -- API keys: every mode fails before its first model call ---------------------------------------


@pytest.mark.parametrize("body", [
    "mode: agent\n",
    "plan: {nodes: [{id: a, goal: one}, {id: b, goal: two, depends_on: [a]}]}\n",
    "mode: swarm\n",
], ids=["agent", "swarm-hand-written-plan", "swarm-planner"])
def test_a_missing_key_is_bad_input_naming_the_variable_in_every_mode(tmp_path: Path,
                                                                     body: str) -> None:
    """Exit 2, the variable and the model named at the task file's line, no model called.
    Before, a swarm with a hand-written plan failed each node and exited 1 without the name."""
    with ScriptedModelServer("deepseek", default=reply("hi")) as srv:
        path = write_task(tmp_path, srv.base_url, body, key_env="CLI_RUN_UNSET_KEY")
        env = {k: v for k, v in os.environ.items() if k != "CLI_RUN_UNSET_KEY"}
        proc = subprocess.run([sys.executable, "-m", "agentkit", "run", str(path), "--json"],
                              capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
        assert srv.requests == []
    assert proc.returncode == 2, proc.stderr
    assert "CLI_RUN_UNSET_KEY" in proc.stderr and "model 'm'" in proc.stderr
    assert f"{path}:5:" in proc.stderr and proc.stdout == ""


# -- the ledger's head leaves the run ---------------------------------------------------------------


def test_the_head_is_in_json_the_summary_and_a_sidecar_that_verify_takes(tmp_path: Path) -> None:
    """The head hash is printed (JSON and human), saved beside the ledger as ``.head``, and
    `audit verify --expect-head` takes the hash or the sidecar (copied elsewhere): both pass
    on the intact ledger, both catch the last line cut off (which the chain alone cannot)."""
    with ScriptedModelServer("deepseek", default=reply("Hello.")) as srv:
        path = write_task(tmp_path, srv.base_url)
        result = runner.invoke(app, ["run", str(path), "--json"], env={"CLI_RUN_KEY": KEY})
        human = runner.invoke(app, ["run", str(path)], env={"CLI_RUN_KEY": KEY})
    assert result.exit_code == 0 and human.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    ledger, head = Path(payload["ledger"]), payload["ledger_head"]
    assert ledger.parent == tmp_path / "runs" and len(head) == 64
    assert payload["head_file"] == str(ledger) + ".head"
    kept = tmp_path / "elsewhere.head"
    kept.write_text(Path(payload["head_file"]).read_text())
    assert kept.read_text() == f"{head}  {ledger.name}\n"
    assert "\nhead " in human.stderr and ".jsonl.head" in human.stderr
    for expect in (head, str(kept)):
        ok = runner.invoke(app, ["audit", "verify", str(ledger), "--expect-head", expect])
        assert ok.exit_code == 0, ok.stdout
    ledger.write_bytes(b"".join(ledger.read_bytes().splitlines(keepends=True)[:-1]))
    assert verify_ledger(ledger).ok  # cut at a line boundary: the chain alone cannot tell
    for expect in (head, str(kept)):
        cut = runner.invoke(app, ["audit", "verify", str(ledger), "--expect-head", expect])
        assert cut.exit_code == 1 and "expected head" in cut.stdout


def test_expect_head_that_is_neither_a_hash_nor_a_file_is_bad_input(tmp_path: Path) -> None:
    ledger = tmp_path / "l.jsonl"
    ledger.write_text("")
    result = runner.invoke(app, ["audit", "verify", str(ledger), "--expect-head", "abc"])
    assert result.exit_code == 2 and "64 hex digits" in result.stderr


# -- failures the user can diagnose --------------------------------------------------------------


def test_node_errors_reach_json_and_the_human_output(tmp_path: Path) -> None:
    """A worker's HTTP 503 is in the node's entry (type, message, provider, attempts) in
    --json and under the node in the human output, not only in the ledger."""
    with ScriptedModelServer("deepseek") as srv:
        srv.default = lambda req: (error(503, "the pool is drained")
                                   if "goal two" in json.dumps(req.body) else reply("one is done"))
        body = "plan: {nodes: [{id: a, goal: goal one}, {id: b, goal: goal two}]}\n"
        path = write_task(tmp_path, srv.base_url, body)
        as_json = runner.invoke(app, ["run", str(path), "--json"], env={"CLI_RUN_KEY": KEY})
        human = runner.invoke(app, ["run", str(path)], env={"CLI_RUN_KEY": KEY})
    assert as_json.exit_code == 1, as_json.stderr
    node = json.loads(as_json.stdout)["nodes"]["b"]
    assert node["status"] == "failed" and node["attempts"] == 1
    assert node["error"]["provider"] == "deepseek" and "503" in node["error"]["message"]
    assert "the pool is drained" in node["error"]["message"]
    assert human.exit_code == 1
    assert "node b" in human.stderr and "the pool is drained" in human.stderr
    assert "provider deepseek" in human.stderr and "1 attempt" in human.stderr


def test_a_connection_error_names_the_endpoint_and_the_provider(tmp_path: Path) -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # bound once, never listening: connections are refused
    path = write_task(tmp_path, f"http://127.0.0.1:{port}/v1")
    result = runner.invoke(app, ["run", str(path), "--json"], env={"CLI_RUN_KEY": KEY})
    assert result.exit_code == 1
    err = json.loads(result.stdout)["error"]
    assert f"http://127.0.0.1:{port}/v1/chat/completions" in err["message"]
    assert err["provider"] == "deepseek"


def test_set_overrides_the_base_url_so_a_task_runs_against_a_local_server(tmp_path: Path) -> None:
    """The task names an endpoint that refuses; ``--set`` (or AGENTKIT_SET) points the model at
    the scripted server without editing the file; a bad --set is exit 2 naming the field."""
    with ScriptedModelServer("deepseek", default=reply("Hello from the test server.")) as srv:
        path = write_task(tmp_path, "http://127.0.0.1:9/v1")
        flag = runner.invoke(app, ["run", str(path), "--json", "--set",
                                   f"models.m.base_url={srv.base_url}"], env={"CLI_RUN_KEY": KEY})
        env = runner.invoke(app, ["run", str(path), "--json"],
                            env={"CLI_RUN_KEY": KEY, "AGENTKIT_SET": f"models.m.base_url={srv.base_url}"})
    for result in (flag, env):
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["answer"] == "Hello from the test server."
    bad = runner.invoke(app, ["validate", str(path), "--set", "budget.wall_seconds=soon"])
    assert bad.exit_code == 2 and "budget.wall_seconds" in bad.stderr


def _containers_of_process(pid: int) -> list[Any]:
    """Sandbox containers owned by process `pid` (their owner label is host:pid:start time)."""
    import docker

    client = docker.from_env()
    try:
        return [c for c in client.containers.list(all=True, filters={"label": "agentkit.run"})
                if (c.labels.get("agentkit.owner") or "").split(":")[1:2] == [str(pid)]]
    finally:
        client.close()


def _running_command(containers: list[Any], needle: str) -> bool:
    for container in containers:
        try:
            top = container.top()
        except Exception:  # not running yet, or gone
            continue
        if any(needle in " ".join(row) for row in top.get("Processes") or []):
            return True
    return False


@pytest.mark.docker
def test_sigterm_during_sandboxed_code_leaves_no_container(tmp_path: Path) -> None:
    """The run is inside `run_code` (a program sleeping in its container) when SIGTERM
    arrives: the exit is 143, the ledger records the sandbox's removal and ends with
    run.finished, and no container of the run is left on the engine (before: the process died
    at once and its containers stayed until some later run's sweep)."""
    from agentkit.testing import call

    with ScriptedModelServer("deepseek") as srv:
        srv.script(reply(reasoning="Run it.", tool_calls=[call("run_code", {
            "language": "bash", "code": "sleep 7321", "timeout_s": 600})]))
        srv.default = reply("done")
        path = write_task(tmp_path, srv.base_url, "mode: agent\ntools: [run_code]\n"
                          "sandbox: {pool_size: 0, timeout_s: 600}\n")
        proc = child(["run", str(path), "--json"], env={"CLI_RUN_KEY": KEY}, cwd=tmp_path)
        try:
            # the engine is the only witness of the program running: poll it, bounded
            deadline = 120
            while not _running_command(_containers_of_process(proc.pid), "sleep 7321"):
                assert proc.poll() is None, proc.communicate()[1]
                deadline -= 1
                assert deadline > 0, "the sandboxed program never started"
                threading.Event().wait(0.5)  # between polls of the engine, not a synchronisation
            proc.send_signal(signal.SIGTERM)
            stdout, stderr = finish(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 143, stderr
    payload = json.loads(stdout)
    kinds = [r["kind"] for r in records(payload["ledger"])]
    assert "sandbox.created" in kinds and "sandbox.removed" in kinds and kinds[-1] == "run.finished"
    assert _containers_of_process(proc.pid) == []


async def test_ctrl_c_at_a_terminal_prints_no_traceback_from_extraction_workers(
        tmp_path: Path) -> None:
    """A terminal's Ctrl-C goes to the whole foreground process group. The run fetched a page,
    so its text-extraction worker processes are up; they must not die printing
    KeyboardInterrupt tracebacks (they live in a session of their own and exit when the run
    closes them); the run itself reports `cancelled` and exits 130."""
    from _fetch_server import FetchTestServer, static

    page = (b"<html><head><title>Tides</title></head><body><article><p>"
            + b"Tide pools hold anemones and small crabs at low tide. " * 20
            + b"</p></article></body></html>")
    arrived = threading.Event()

    async def fetch_then_hold(req: RecordedRequest) -> Any:
        if not any(m.get("role") == "tool" for m in req.messages):
            return reply(reasoning="Read it.", tool_calls=[call("web_fetch", {"url": url})])
        arrived.set()  # the page was fetched and extracted: the workers are running
        await asyncio.Event().wait()

    async with FetchTestServer(routes={"/tides": static(page)}) as pages:
        url = pages.url("/tides")
        with ScriptedModelServer("deepseek", default=fetch_then_hold) as srv:
            path = write_task(tmp_path, srv.base_url, "mode: agent\ntools: [web_fetch]\n"
                              "fetch: {allow_hosts: [127.0.0.1]}\n")
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "agentkit", "run", str(path), cwd=tmp_path,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "CLI_RUN_KEY": KEY}, start_new_session=True,
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
            try:
                assert await asyncio.to_thread(arrived.wait, 60), "the run never fetched the page"
                os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
                stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
    text = stderr.decode()
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    assert "cancelled: run " in text
