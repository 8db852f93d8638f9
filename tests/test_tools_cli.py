"""`agentkit tools`, `agentkit tool` for every kind of tool, and `agentkit mcp serve` (a task
as an MCP tool, called here through agentkit's own MCP client over stdio)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from _mcp_helpers import HOSTILE, KEY_ENV
from typer.testing import CliRunner

from agentkit import verify_ledger
from agentkit.cli import app
from agentkit.runtime import Runtime
from agentkit.task import TaskSpec
from agentkit.testing import ScriptedModelServer, reply
from agentkit.tools import invoke_tool

runner = CliRunner()

TIDES = '''
from agentkit import tool


@tool(side_effects=False)
def tide(port: str) -> str:
    """High water at a port."""
    return f"high water at {port}: 06:12"
'''


def task_file(tmp_path: Path) -> Path:
    (tmp_path / "tides_cli_test_mod.py").write_text(TIDES)
    path = tmp_path / "task.yaml"
    path.write_text(
        "name: t\ngoal: g\nmodel: m\nmodels: {m: {model: x}}\n"
        f"mcp_servers:\n  h:\n    command: {json.dumps(sys.executable)}\n"
        f"    args: [{json.dumps(str(HOSTILE))}]\n"
        "tools: [read_file, 'tides_cli_test_mod:tide', h.echo, h.pid]\n")
    return path


def test_tools_lists_every_kind_with_source_name_and_schema(tmp_path: Path) -> None:
    result = runner.invoke(app, ["tools", "--task", str(task_file(tmp_path)), "--json"])
    assert result.exit_code == 0, result.output
    listed = {t["name"]: t for t in json.loads(result.stdout)["tools"]}
    assert sorted(listed) == ["h_echo", "h_pid", "read_file", "tide"]
    assert listed["read_file"]["source"] == "builtin"
    assert listed["tide"]["source"] == "python" and listed["tide"]["ref"] == "tides_cli_test_mod:tide"
    assert listed["h_echo"] | {"parameters": None} == {
        "name": "h_echo", "source": "mcp", "server": "h", "remote_tool": "echo",
        "description": "Return the text unchanged.", "side_effects": True, "timeout_s": 60.0,
        "parameters": None}
    assert listed["h_echo"]["parameters"]["required"] == ["text"]
    human = runner.invoke(app, ["tools", "--task", str(task_file(tmp_path))])
    assert human.exit_code == 0 and "mcp h.echo" in human.stdout and "python tides_cli_test_mod:tide" in (
        human.stdout)


def test_tool_runs_python_and_mcp_tools(tmp_path: Path) -> None:
    path = task_file(tmp_path)
    py = runner.invoke(app, ["tool", "tide", "--task", str(path), "--args", '{"port": "Bergen"}'])
    assert py.exit_code == 0 and py.stdout == "high water at Bergen: 06:12\n"
    for name in ("h.echo", "h_echo"):  # "server.tool" or the name a model sees
        mcp = runner.invoke(app, ["tool", name, "--task", str(path), "--json",
                                  "--args", '{"text": "ahoy"}'])
        assert mcp.exit_code == 0, mcp.output
        assert json.loads(mcp.stdout)["text"] == "ahoy"
    bad = runner.invoke(app, ["tool", "h.echo", "--task", str(path), "--args", "{}"])
    assert bad.exit_code == 2 and json.loads(bad.stdout)["error"]["code"] == "invalid_arguments"
    unknown = runner.invoke(app, ["tool", "h.nope", "--task", str(path), "--args", "{}"])
    assert unknown.exit_code == 2 and "the MCP server 'h' has no tool 'nope'" in unknown.stderr


def test_lone_surrogates_in_args_are_a_clean_exit_2() -> None:
    """A lone surrogate (from an undecodable byte in argv, or a \\ud800 escape) is bad input
    with a message, never a traceback."""
    for args in ('{"path": "\udcff"}', '{"path": "\\ud800"}'):
        result = runner.invoke(app, ["tool", "read_file", "--args", args])
        assert result.exit_code == 2, result.output
        assert "surrogate" in result.stderr and result.exception is None or isinstance(
            result.exception, SystemExit)


async def test_mcp_serve_exposes_a_task_to_mcp_clients(tmp_path: Path) -> None:
    """`agentkit mcp serve` runs as a real child process; agentkit's own MCP client calls the
    task's tool with a goal and gets the answer and the path of a ledger that verifies."""
    async with ScriptedModelServer("deepseek") as srv:
        srv.script(reply("The Sognefjord is 205 km long."))
        served = tmp_path / "served.yaml"
        served.write_text(
            "name: fjord facts\ngoal: How long is a fjord?\nmode: agent\nmodel: m\n"
            f"models:\n  m: {{profile: deepseek, model: deepseek-chat, base_url: '{srv.base_url}', "
            f"api_key_env: MCP_TEST_KEY, stream: false}}\noutput: {json.dumps(str(tmp_path))}\n")
        client = TaskSpec.model_validate({
            "name": "client", "goal": "g", "model": "m", "models": {"m": {"model": "x"}},
            "mcp_servers": {"kit": {"command": sys.executable, "pass_env": ["MCP_TEST_KEY"],
                                    "args": ["-m", "agentkit", "mcp", "serve", str(served)],
                                    "timeout_s": 120}},
            "tools": ["kit"], "workspace": str(tmp_path)})
        async with Runtime(client, environ=KEY_ENV) as rt:
            registry = await rt.prepare_tools()
            assert registry.names() == ["kit_fjord_facts"]
            assert "fjord facts" in registry.get("kit_fjord_facts").description
            out = await invoke_tool(registry.get("kit_fjord_facts"),
                                    {"goal": "How long is the Sognefjord?"}, rt.tool_context())
    answer = out.data["structured"]
    assert answer["status"] == "succeeded" and answer["answer"] == "The Sognefjord is 205 km long."
    check = verify_ledger(answer["ledger"])  # a missing file fails this too
    assert check.ok and check.count > 2
    assert srv.requests[0].messages[-1]["content"] == "How long is the Sognefjord?"
