"""``python -m agentkit.testing.server`` as a user runs it: a real child process, a real HTTP
request to the URL it prints, shut down by a real signal."""

from __future__ import annotations

import select
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

import agentkit.testing.server.__main__ as cli
from agentkit.testing import ScriptedModelServer

SCRIPT = """\
models:
  planner-model:
    - reasoning: Split it.
      tool_calls: [{name: submit_plan, arguments: {nodes: []}}]
"""


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "agentkit.testing.server", *args]


@contextmanager
def _server(*args: str, ignore_sigint: bool = False) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start the command; yield it with the base URL it printed first. `ignore_sigint` starts it
    the way a background CI shell does (SIGINT ignored, inherited by children)."""
    preexec = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
    proc = subprocess.Popen(_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=preexec)
    try:
        assert proc.stdout is not None
        # a hang guard only: the line normally comes within a second
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "the server printed no base URL"
        yield proc, proc.stdout.readline().strip()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serves_a_script_over_http_until_a_signal(tmp_path: Path, stop_with: signal.Signals) -> None:
    """The printed URL answers in the dialect's wire format: the planner model from its routed
    script, any other model with --default-text; the signal (SIGINT even when the parent
    ignored it) stops the server cleanly with exit code 0 and a request log on stderr."""
    script = tmp_path / "replies.yaml"
    script.write_text(SCRIPT)
    with _server("--dialect", "deepseek", "--port", "0", "--script", str(script),
                 "--default-text", "plain answer", ignore_sigint=stop_with == signal.SIGINT) as (proc, url):
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        with httpx.Client() as client:
            plan = client.post(url + "/chat/completions", json={
                "model": "planner-model", "messages": [{"role": "user", "content": "go"}]}).json()
            other = client.post(url + "/chat/completions", json={
                "model": "other", "messages": [{"role": "user", "content": "hi"}]}).json()
        proc.send_signal(stop_with)
        _, stderr = proc.communicate(timeout=60)
    message = plan["choices"][0]["message"]
    assert message["reasoning_content"] == "Split it."  # DeepSeek's own reasoning field
    assert message["tool_calls"][0]["function"]["name"] == "submit_plan"
    assert other["choices"][0]["message"]["content"] == "plain answer"
    assert proc.returncode == 0, stderr
    assert "model=planner-model -> 200" in stderr and "stopped after 2 requests" in stderr


def test_a_bad_script_is_exit_2_with_file_line_and_field(tmp_path: Path) -> None:
    script = tmp_path / "replies.yaml"
    script.write_text("- content: hi\n- {content: x, tool_cals: []}\n")
    done = subprocess.run(_command("--port", "0", "--script", str(script)), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert f"{script}:2:16: unknown key 'tool_cals' (did you mean 'tool_calls'?)" in done.stderr


def test_a_port_in_use_is_exit_2_saying_so() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(_command("--port", str(port)), capture_output=True, text=True,
                              timeout=60)
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "--port" in done.stderr


def test_the_documented_script_example_loads_and_routes(tmp_path: Path) -> None:
    """The example in the module docstring (also printed by --help) is a valid script that
    does what its comments say."""
    doc = cli.__doc__ or ""
    block = doc[doc.index("::\n\n") + 4:doc.index("\n\nA reply may")]
    script = tmp_path / "example.yaml"
    script.write_text(textwrap.dedent(block))
    with ScriptedModelServer("deepseek") as srv, httpx.Client() as client:
        srv.load_script(script)

        def ask(model: str) -> httpx.Response:
            return client.post(srv.base_url + "/chat/completions",
                               json={"model": model, "messages": [{"role": "user", "content": "q"}]})

        first, second, limited, after = (ask("any") for _ in range(4))
        planner, worker = ask("planner-model"), ask("worker-model")
    assert first.json()["choices"][0]["message"]["content"] == "Hello!"
    assert second.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    assert after.json()["choices"][0]["message"]["content"] == "Nothing more to say."
    assert planner.json()["choices"][0]["message"]["content"] == "..."
    assert worker.json()["choices"][0]["message"]["content"] == "done"
