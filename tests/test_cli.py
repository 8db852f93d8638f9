"""The `agentkit` command: exit codes and output contracts of run, validate, tool, audit and
sandbox. Runs go against real local sockets (a refused port, a server that never answers)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agentkit.audit import verify_ledger
from agentkit.cli import app
from agentkit.errors import SetupError

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def task_file(tmp_path: Path, base_url: str, extra: str = "") -> Path:
    path = tmp_path / "task.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: cli-test
        goal: say hello
        mode: agent
        model: m
        models:
          m:
            base_url: {base_url}
            model: x
            timeout_s: 60
        retry: {{attempts: 1, node_attempts: 1, replans: 0, plan_attempts: 1}}
        """) + extra)
    return path


def refused_url() -> str:
    """A port on 127.0.0.1 that refuses connections (bound, never listening)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def silent_server() -> Iterator[tuple[str, threading.Event]]:
    """Accepts connections and never answers: a model call hangs until cancelled. The event is
    set once a connection has arrived."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop, connected = threading.Event(), threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
                connected.set()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/v1", connected
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


# -- run -----------------------------------------------------------------------------------------


def test_run_bad_task_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ngoal: y\nmodel: m\nmodels: {m: {model: x}}\nmode: swarmy\n")
    result = runner.invoke(app, ["run", str(path), "--json"])
    assert result.exit_code == 2
    assert f"{path}:5:7: unknown mode 'swarmy'" in result.stderr
    assert result.stdout == ""  # nothing on stdout: no half JSON for a script to misread


def test_run_missing_file_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2 and "cannot read the task file" in result.stderr


def test_failed_run_exits_1_with_one_json_object_and_a_verified_ledger(tmp_path: Path) -> None:
    path = task_file(tmp_path, refused_url())
    result = runner.invoke(app, ["run", str(path), "--json", "--ledger-dir", str(tmp_path / "led")])
    assert result.exit_code == 1, result.stderr
    payload = json.loads(result.stdout)  # exactly one JSON document on stdout
    assert payload["status"] == "failed"
    assert {"run_id", "status", "answer", "citations", "ledger", "usage", "cost_usd", "error"} <= set(payload)
    assert "connect" in json.dumps(payload["error"]).lower()
    ledger = Path(payload["ledger"])
    assert ledger.parent == tmp_path / "led"
    kinds = [json.loads(line)["kind"] for line in ledger.read_text().splitlines()]
    assert kinds[0] == "run.started" and kinds[-1] == "run.finished"
    assert verify_ledger(ledger).ok
    verified = runner.invoke(app, ["audit", "verify", str(ledger)])
    assert verified.exit_code == 0


def test_missing_api_key_variable_is_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused before the run starts, like a bad task file: exit 2, the variable named at its
    model's line on stderr, nothing on stdout and no ledger (no run happened)."""
    monkeypatch.delenv("AGENTKIT_TEST_UNSET_KEY", raising=False)
    path = task_file(tmp_path, refused_url())
    path.write_text(path.read_text().replace("    model: x\n",
                                             "    model: x\n    api_key_env: AGENTKIT_TEST_UNSET_KEY\n"))
    result = runner.invoke(app, ["run", str(path), "--json", "--ledger-dir", str(tmp_path / "led")])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert f"{path}:9:18:" in result.stderr and "AGENTKIT_TEST_UNSET_KEY" in result.stderr
    assert not (tmp_path / "led").exists()


def test_failed_run_human_output_and_default_ledger_dir(tmp_path: Path) -> None:
    path = task_file(tmp_path, refused_url())
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(path), "--output", str(out)])
    assert result.exit_code == 1
    assert "failed: run" in result.stderr and "ledger" in result.stderr
    ledgers = list(out.glob("*.jsonl"))
    assert len(ledgers) == 1 and verify_ledger(ledgers[0]).ok


def test_ctrl_c_cancels_cleanly_exits_130_and_closes_the_ledger(tmp_path: Path,
                                                                 silent_server: tuple[str, Any]) -> None:
    url, connected = silent_server
    path = task_file(tmp_path, url)
    led = tmp_path / "led"
    proc = subprocess.Popen([sys.executable, "-m", "agentkit", "run", str(path), "--json",
                             "--ledger-dir", str(led)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            # as at a terminal: a CI shell running us in the background
                            # ignores SIGINT, and children inherit that (Ctrl-C then did nothing)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # the limit only keeps a broken run from hanging the test
        assert connected.wait(60), "the run never reached the model call"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert json.loads(stdout)["status"] == "cancelled"
    ledger = next(led.glob("*.jsonl"))
    assert verify_ledger(ledger).ok
    assert json.loads(ledger.read_text().splitlines()[-1])["kind"] == "run.finished"


def test_successful_swarm_run_prints_answer_dag_timings_and_ledger(tmp_path: Path) -> None:
    """A hand-written two-branch plan against the scripted DeepSeek server: exit 0, one JSON
    object with the answer, per-node timings and the ungrounded numbers; the human output
    shows each node of the DAG with its timing and the ledger path."""
    from agentkit.testing import ScriptedModelServer, reply

    with ScriptedModelServer("deepseek") as srv:
        srv.default = lambda req: reply("The total is 42.", reasoning="Sum it.")
        plan = textwrap.dedent("""\
            tools: []
            plan:
              nodes:
                - {id: left, goal: add the left numbers}
                - {id: right, goal: add the right numbers}
                - {id: total, goal: add both sums, depends_on: [left, right]}
            """)
        path = task_file(tmp_path, srv.base_url, plan).read_text().replace("mode: agent\n", "")
        (tmp_path / "swarm.yaml").write_text(path)
        env = {**os.environ, "DEEPSEEK_API_KEY": "sk-cli-test-000"}
        args = [sys.executable, "-m", "agentkit", "run", str(tmp_path / "swarm.yaml"),
                "--ledger-dir", str(tmp_path / "l")]
        as_json = subprocess.run([*args, "--json"], capture_output=True, text=True, env=env, timeout=120)
        human = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert as_json.returncode == 0, as_json.stderr
    payload = json.loads(as_json.stdout)
    assert payload["status"] == "succeeded" and payload["answer"] == "The total is 42."
    assert payload["ungrounded"] == ["42"]  # no tool produced 42: flagged, not hidden
    nodes = payload["nodes"]
    assert set(nodes) == {"left", "right", "total"}
    assert all(n["status"] == "succeeded" and n["duration_s"] >= 0 for n in nodes.values())
    assert nodes["total"]["start_s"] >= max(nodes["left"]["start_s"], nodes["right"]["start_s"])
    assert verify_ledger(payload["ledger"]).ok
    assert human.returncode == 0 and human.stdout.strip() == "The total is 42."
    for node_id in ("left", "right", "total"):
        assert f"node {node_id}" in human.stderr
    assert "ledger " in human.stderr and "ungrounded (no tool produced these): 42" in human.stderr


# -- validate ------------------------------------------------------------------------------------


def test_every_example_validates() -> None:
    examples = sorted((ROOT / "examples").glob("**/*.yaml"))
    assert examples, "examples/ has no task files"
    for path in examples:
        result = runner.invoke(app, ["validate", str(path)])
        assert result.exit_code == 0, f"{path.name}: {result.stderr}"


# -- tool ----------------------------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text("tide pools hold anemones\n")
    return ws


def tool(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["tool", *args])
    return result.exit_code, result.stdout, result.stderr


def test_tool_ok_prints_content_or_data(workspace: Path) -> None:
    code, out, _ = tool("read_file", "--args", '{"path": "notes.txt"}', "--workspace", str(workspace))
    assert code == 0 and out == "tide pools hold anemones\n"
    code, out, _ = tool("read_file", "--json", "--args", '{"path": "notes.txt"}',
                        "--workspace", str(workspace))
    data = json.loads(out)
    assert code == 0 and data["path"] == "notes.txt" and data["size"] == 25


def test_tool_error_exits_1_with_error_object(workspace: Path) -> None:
    code, out, _ = tool("read_file", "--args", '{"path": "missing.txt"}', "--workspace", str(workspace))
    assert code == 1
    error = json.loads(out)["error"]
    assert error["code"] == "not_found" and error["tool"] == "read_file"


@pytest.mark.parametrize("args, words", [
    (["no_such_tool"], ["unknown tool 'no_such_tool'", "read_file"]),
    (["read_file", "--args", '{"path": '], ["--args is not valid JSON", "line 1 column 10"]),
    (["read_file", "--args", "[1, 2]"], ["must be a JSON object"]),
])
def test_tool_bad_input_exits_2(args: list[str], words: list[str]) -> None:
    code, _, err = tool(*args)
    assert code == 2
    for word in words:
        assert word in err


def test_tool_invalid_arguments_exit_2_with_schema(workspace: Path) -> None:
    code, out, _ = tool("read_file", "--args", '{"file": "x"}', "--workspace", str(workspace))
    assert code == 2
    error = json.loads(out)["error"]
    assert error["code"] == "invalid_arguments" and "path" in error["message"]


def test_tool_with_task_file(tmp_path: Path, workspace: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [\n")
    code, _, err = tool("read_file", "--task", str(bad), "--args", "{}")
    assert code == 2 and f"{bad}:" in err
    path = task_file(tmp_path, refused_url(), extra=f"tools: [read_file]\nworkspace: {workspace}\n")
    code, out, _ = tool("read_file", "--task", str(path), "--args", '{"path": "notes.txt"}')
    assert code == 0 and "anemones" in out
    code, _, err = tool("list_files", "--task", str(path), "--args", "{}")
    assert code == 2 and "not enabled" in err


def test_tool_ledger_only_when_asked(tmp_path: Path, workspace: Path) -> None:
    led = tmp_path / "led"
    code, _, _ = tool("read_file", "--args", '{"path": "notes.txt"}', "--workspace", str(workspace),
                      "--ledger-dir", str(led))
    assert code == 0
    ledger = next(led.glob("*.jsonl"))
    kinds = [json.loads(line)["kind"] for line in ledger.read_text().splitlines()]
    assert kinds == ["tool.call", "tool.result"] and verify_ledger(ledger).ok


# -- audit / sandbox / entry points ---------------------------------------------------------------


def test_audit_verify_missing_file_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["audit", "verify", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2 and "no such ledger" in result.stderr


def _fake_image_module(monkeypatch: pytest.MonkeyPatch, build: object) -> None:
    module = types.ModuleType("agentkit.sandboxes.image")
    module.build_image = build  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "agentkit.sandboxes.image", module)


def test_sandbox_build_passes_options_and_prints_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's side of the contract with the image builder (the builder has its own tests)."""
    calls: list[dict[str, object]] = []

    def build(*, extra_packages: list[str], force: bool, log: object) -> str:
        calls.append({"extra_packages": extra_packages, "force": force})
        log("step 1/2")  # type: ignore[operator]
        return "agentkit-sandbox:abc123"

    _fake_image_module(monkeypatch, build)
    result = runner.invoke(app, ["sandbox", "build", "--python-packages", "numpy, pandas", "--force"])
    assert result.exit_code == 0 and result.stdout.strip() == "agentkit-sandbox:abc123"
    assert calls == [{"extra_packages": ["numpy", "pandas"], "force": True}]
    assert "step 1/2" in result.stderr


def test_sandbox_build_setup_error_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    def build(**_: object) -> str:
        raise SetupError("mmdebstrap is not installed; run: apt-get install mmdebstrap")

    _fake_image_module(monkeypatch, build)
    result = runner.invoke(app, ["sandbox", "build"])
    assert result.exit_code == 2 and "apt-get install mmdebstrap" in result.stderr


def test_python_dash_m_agentkit_and_help_documents_exit_codes() -> None:
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "agentkit", "run", "--help"], capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "0 succeeded, 1 run failed, 2 bad input" in text and "130 interrupted" in text
    usage = subprocess.run([sys.executable, "-m", "agentkit", "validate"], capture_output=True,
                           text=True, timeout=60, env=env)
    assert usage.returncode == 2  # a missing argument is bad input too


def test_validate_catches_what_run_would_refuse(tmp_path: Path) -> None:
    """An unknown profile validated before and failed at run time; now `validate` refuses it
    at its line, with the other pre-run problems of the file (a bad prompt placeholder, a
    missing sandbox input), all at once."""
    path = tmp_path / "task.yaml"
    path.write_text(textwrap.dedent("""\
        name: typo
        goal: check the checks
        models:
          m: {profile: deepsek, model: x}
        tools: [run_code]
        sandbox: {inputs: [missing.csv]}
        prompts: {worker: "Do $gaol now."}
        """))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and result.stdout == ""
    errors = result.stderr.splitlines()
    assert f"{path}:4:16: unknown model profile 'deepsek'" in errors[0]
    assert "known profiles:" in errors[0] and "deepseek" in errors[0]
    assert any("$gaol" in e and ":7:" in e for e in errors)
    assert any("'missing.csv' not found in the workspace" in e and ":6:" in e for e in errors)


def test_validate_reports_every_error_of_a_file_at_once(tmp_path: Path) -> None:
    """An inline key no longer hides the file's other errors (before: only the key)."""
    path = tmp_path / "task.yaml"
    path.write_text(textwrap.dedent("""\
        name: several
        goal: g
        model: m
        models:
          m: {model: x, api_key: abc123}
        budget: {tokens: lots}
        mode: swarmy
        """))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    errors = result.stderr.splitlines()
    assert "API keys may not be written in task files" in errors[0] and ":5:" in errors[0]
    assert any("budget.tokens" in e and ":6:" in e for e in errors)
    assert any("unknown mode 'swarmy'" in e and ":7:" in e for e in errors)
    assert not any("unknown key 'api_key'" in e for e in errors)  # reported once, as a key


def test_validate_notes_an_unset_key_without_failing(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTKIT_TEST_UNSET_KEY", raising=False)
    path = task_file(tmp_path, refused_url())
    path.write_text(path.read_text().replace("    model: x\n",
                                             "    model: x\n    api_key_env: AGENTKIT_TEST_UNSET_KEY\n"))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0 and "valid" in result.stdout
    assert "note:" in result.stderr and "AGENTKIT_TEST_UNSET_KEY" in result.stderr


def test_a_task_for_tools_needs_no_model(tmp_path: Path, workspace: Path) -> None:
    """`agentkit tool --task` with a task that only configures tools (no model, no models)."""
    path = tmp_path / "tools.yaml"
    path.write_text(f"name: files\ngoal: read notes\ntools: [read_file]\nworkspace: {workspace}\n")
    code, out, err = tool("read_file", "--task", str(path), "--args", '{"path": "notes.txt"}')
    assert code == 0 and "anemones" in out, err


def test_tool_help_lists_the_tools() -> None:
    result = runner.invoke(app, ["tool", "--help"], env={"COLUMNS": "200"})
    text = " ".join(result.stdout.split())
    assert result.exit_code == 0
    for name in ("web_search", "web_fetch", "run_code", "read_file", "write_file", "list_files"):
        assert name in text
    assert re.search(r"--args\W+JSON", text) and re.search(r"--task\W+TASK\.yaml", text)
