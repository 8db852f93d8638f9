"""The own-tools examples run as written, with their model swapped for the scripted server:
the decorator example, the YAML import reference and the MCP time server block each reach
their tool and the answer uses its result."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from _mcp_helpers import KEY_ENV

from agentkit import load_task, run_sync
from agentkit.task import ModelSpec, TaskSpec
from agentkit.testing import ScriptedModelServer, call, reply

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def scripted(srv: ScriptedModelServer) -> dict[str, Any]:
    return {"profile": "deepseek", "model": "deepseek-chat", "base_url": srv.base_url,
            "api_key_env": "MCP_TEST_KEY", "stream": False}


def with_model(task: TaskSpec, srv: ScriptedModelServer, **update: Any) -> TaskSpec:
    return task.model_copy(update={"models": {task.model: ModelSpec(**scripted(srv))}, **update})


def tool_result(srv: ScriptedModelServer) -> str:
    return str(next(m for m in srv.requests[1].messages if m["role"] == "tool")["content"])


def test_decorator_example(tmp_path: Path, monkeypatch: Any) -> None:
    spec = importlib.util.spec_from_file_location("own_tools_example", EXAMPLES / "own_tools.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for key, value in KEY_ENV.items():
        monkeypatch.setenv(key, value)
    with ScriptedModelServer("deepseek") as srv:
        srv.script(reply(tool_calls=[call("tide_times", {"port": "Bergen"})]),
                   reply("06:12 and 18:31"))
        result = module.main(scripted(srv), ledger_dir=str(tmp_path))
    assert result.status == "succeeded" and '"06:12", "18:31"' in tool_result(srv)
    offered = sorted(t["function"]["name"] for t in srv.requests[0].body["tools"])
    assert offered == ["ports", "tide_times"]


def test_yaml_import_reference_example(tmp_path: Path) -> None:
    task = load_task(EXAMPLES / "own_tools.yaml")
    with ScriptedModelServer("deepseek") as srv:
        srv.script(reply(tool_calls=[call("tide_times", {"port": "Oslo", "kind": "low"})]),
                   reply("03:30 and 15:51"))
        result = run_sync(with_model(task, srv), environ=KEY_ENV, ledger_dir=tmp_path)
    assert result.status == "succeeded" and '"03:30", "15:51"' in tool_result(srv)


def test_mcp_server_example(tmp_path: Path) -> None:
    task = load_task(EXAMPLES / "mcp_time.yaml")
    server = task.mcp_servers["time"]
    assert server.command == "python"  # here: this interpreter, which has the server installed
    servers = {"time": server.model_copy(update={"command": sys.executable})}
    with ScriptedModelServer("deepseek") as srv:
        srv.script(reply(tool_calls=[call("time_get_current_time", {"timezone": "Asia/Tokyo"})]),
                   reply("It is late in Tokyo."))
        result = run_sync(with_model(task, srv, mcp_servers=servers), environ=KEY_ENV,
                          ledger_dir=tmp_path)
    assert result.status == "succeeded" and '"timezone": "Asia/Tokyo"' in tool_result(srv)
