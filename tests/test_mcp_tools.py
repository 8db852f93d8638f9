"""MCP servers as tools, against real servers: the reference servers published on PyPI
(``mcp-server-time``; ``mcp-server-git`` on a repository made here) over stdio, a
streamable-HTTP server built with the SDK and served by uvicorn, and a hostile stdio server
(tests/data/mcp/hostile_server.py). Nothing of the SDK or the servers is mocked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _mcp_helpers import KEY_ENV, alive, hostile, http_server

from agentkit.audit import read_blob, verify_ledger
from agentkit.errors import ConfigError, SetupError, TaskFileError, ToolError
from agentkit.events import Event
from agentkit.runtime import Runtime
from agentkit.task import TaskSpec, load_task_text
from agentkit.tools import ToolRegistry, invoke_tool, tool
from agentkit.tools.base import TOOL_NAME, ToolOutput
from agentkit.tools.mcp import model_name

MODEL = {"m": {"model": "unused"}}


def task(servers: dict[str, Any], tools: list[str], tmp_path: Path, **extra: Any) -> TaskSpec:
    return TaskSpec.model_validate({"name": "t", "goal": "g", "model": "m", "models": MODEL,
                                    "mcp_servers": servers, "tools": tools,
                                    "workspace": str(tmp_path), **extra})


async def call(rt: Runtime, name: str, args: dict[str, Any]) -> ToolOutput:
    tool = rt.tools.get(name)
    return await invoke_tool(tool, args, rt.tool_context(node_id="n", call_id=f"c-{name}"))


TIME = {"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]}


async def test_time_server_from_pypi_over_stdio(tmp_path: Path) -> None:
    """The reference time server: its tools get provider-safe prefixed names, read-only hints
    become side_effects=False, structured content is kept beside the text, isError is a
    `tool_error`, a bad argument is refused before the call, and the ledger events name the
    command but no environment value."""
    events: list[Event] = []
    spec = task({"time": TIME}, ["time"], tmp_path)
    async with Runtime(spec, sinks=[events.append], environ=KEY_ENV) as rt:
        registry = await rt.prepare_tools()
        assert registry.names() == ["time_convert_time", "time_get_current_time"]
        assert registry.groups == {"time": ("time_get_current_time", "time_convert_time")}
        tool = registry.get("time_get_current_time")
        assert tool.side_effects is False and tool.spec().parameters["required"] == ["timezone"]
        out = await call(rt, "time_get_current_time", {"timezone": "Europe/Paris"})
        assert out.data["structured"]["timezone"] == "Europe/Paris"
        assert out.data["structured"]["day_of_week"] in out.content
        with pytest.raises(ToolError) as bad_tz:
            await call(rt, "time_get_current_time", {"timezone": "Nowhere/Atlantis"})
        with pytest.raises(ToolError) as missing:
            await call(rt, "time_get_current_time", {})
    assert bad_tz.value.code == "tool_error" and "Invalid timezone" in bad_tz.value.message
    assert missing.value.code == "invalid_arguments" and "'timezone' is a required" in str(
        missing.value)
    kinds = [e.kind for e in events]
    assert kinds[0] == "mcp.started" and kinds[-1] == "mcp.stopped"
    started = events[0].data
    assert started["command"] == [sys.executable, "-m", "mcp_server_time", "--local-timezone",
                                  "UTC"]
    assert started["server_info"]["name"] == "mcp-time" and started["env"] == []
    calls = [e.data for e in events if e.kind == "tool.call"]
    assert calls[0]["server"] == "time" and calls[0]["remote_tool"] == "get_current_time"
    assert KEY_ENV["MCP_TEST_KEY"] not in json.dumps([e.data for e in events])


def make_repo(repo: Path) -> Path:
    """A git repository with one commit ("add tide tables") and one untracked file."""
    repo.mkdir()
    for args in (["init", "-q"], ["config", "user.email", "t@example.org"],
                 ["config", "user.name", "Tester"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    (repo / "tides.txt").write_text("high water 06:12\n")
    subprocess.run(["git", "add", "tides.txt"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "add tide tables"], cwd=repo, check=True)
    (repo / "draft.txt").write_text("not committed\n")
    return repo


async def test_git_server_from_pypi_on_a_repository_made_here(tmp_path: Path) -> None:
    """The reference git server on a real repository: "server.tool" entries offer only the
    tools picked, a write tool is marked as having side effects, and the log shows the
    commit made here."""
    repo = make_repo(tmp_path / "repo")
    servers = {"git": {"command": sys.executable, "args": ["-m", "mcp_server_git", "--repository",
                                                            str(repo)]}}
    spec = task(servers, ["git.git_log", "git.git_status", "git.git_commit"], tmp_path)
    async with Runtime(spec) as rt:
        registry = await rt.prepare_tools()
        assert registry.names() == ["git_git_commit", "git_git_log", "git_git_status"]
        assert registry.get("git_git_commit").side_effects is True
        assert registry.get("git_git_log").side_effects is False
        log = await call(rt, "git_git_log", {"repo_path": str(repo)})
        status = await call(rt, "git_git_status", {"repo_path": str(repo)})
    assert "add tide tables" in log.content and "Tester" in log.data["text"]
    assert "draft.txt" in status.data["text"]


async def test_streamable_http_server_behind_the_address_guard(tmp_path: Path) -> None:
    """An SDK-built streamable-HTTP server on 127.0.0.1: refused without allow_hosts (like
    web_fetch refuses loopback), reached with it; the Authorization header comes from the
    variable headers_env names and never appears in the ledger."""
    token = "notes-token-0123456789abcdef"
    with http_server(token) as (url, guard):
        refused = task({"notes": {"url": url, "headers_env": {"Authorization": "NOTES_AUTH"}}},
                       ["notes"], tmp_path)
        async with Runtime(refused, environ={"NOTES_AUTH": f"Bearer {token}"}) as rt:
            with pytest.raises(ConfigError) as blocked:
                await rt.prepare_tools()
        assert "loopback" in str(blocked.value) and "allow_hosts" in str(blocked.value)
        assert guard.seen == []  # refused before any connection

        allowed = task({"notes": {"url": url, "headers_env": {"Authorization": "NOTES_AUTH"},
                                  "allow_hosts": ["127.0.0.1"]}}, ["notes"], tmp_path)
        ledger = tmp_path / "ledger"
        async with Runtime(allowed, environ={"NOTES_AUTH": f"Bearer {token}"},
                           ledger_dir=ledger) as rt:
            await rt.prepare_tools()
            await call(rt, "notes_add_note", {"title": "tide", "text": "high water 06:12"})
            got = await call(rt, "notes_get_note", {"title": "tide"})
        assert got.data["structured"] == {"title": "tide", "text": "high water 06:12"}
        assert guard.seen and all(h == f"Bearer {token}".encode() for h in guard.seen)
        text = next(ledger.glob("*.jsonl")).read_text()
        assert token not in text and '"headers":["Authorization"]' in text

        missing = task({"notes": {"url": url, "headers_env": {"Authorization": "NOTES_AUTH"},
                                  "allow_hosts": ["127.0.0.1"]}}, ["notes"], tmp_path)
        async with Runtime(missing, environ={}) as rt:
            with pytest.raises(ConfigError, match="NOTES_AUTH, which is not set"):
                await rt.prepare_tools()


async def test_only_listed_environment_reaches_a_stdio_server(tmp_path: Path) -> None:
    """A stdio server gets what `env` sets and `pass_env` names (plus the SDK's PATH/HOME
    basics), never the rest of the run's environment, such as an API key."""
    environ = {**KEY_ENV, "GIT_AUTHOR_NAME": "Tester"}
    spec = task({"h": hostile(env={"TZ": "UTC"}, pass_env=["GIT_AUTHOR_NAME"])}, ["h.env"],
                tmp_path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MCP_TEST_KEY", KEY_ENV["MCP_TEST_KEY"])  # in this process's own environment too
        async with Runtime(spec, environ=environ) as rt:
            await rt.prepare_tools()
            names = (await call(rt, "h_env", {})).data["structured"]["result"]
    assert {"TZ", "GIT_AUTHOR_NAME", "PATH"} <= set(names)
    assert "MCP_TEST_KEY" not in names


def test_secret_env_values_are_refused_in_task_files(tmp_path: Path) -> None:
    """A secret-looking variable written into a server's `env` is a task-file error pointing
    at its line; the way to pass it is pass_env."""
    text = ("name: t\ngoal: g\nmodel: m\nmodels: {m: {model: x}}\nmcp_servers:\n  gh:\n"
            "    command: gh-mcp\n    env:\n      GITHUB_TOKEN: abc\ntools: [gh]\n")
    with pytest.raises(TaskFileError) as err:
        load_task_text(text, "t.yaml")
    assert err.value.line == 9 and "pass_env" in str(err.value)


async def test_hostile_server_each_failure_is_a_typed_error_and_the_session_goes_on(
        tmp_path: Path) -> None:
    """isError, a hang past the per-call timeout, a 50 MB result (dropped by the launcher
    before the client reads it), garbage and invalid UTF-8 on stdout, and a crash mid-call:
    each is a bounded, typed ToolError and the next call works (the crashed server is
    restarted once); a second crash leaves its tools unavailable with a clear error."""
    events: list[Event] = []
    # the hang gets a server of its own with a short deadline; the others keep the default,
    # so a slow machine cannot turn a normal call into a timeout
    spec = task({"h": hostile(), "t": hostile(timeout_s=1.0)}, ["h", "t.hang"], tmp_path)
    async with Runtime(spec, sinks=[events.append]) as rt:
        await rt.prepare_tools()
        errors: dict[str, ToolError] = {}
        cases: list[tuple[str, dict[str, Any]]] = [
            ("h_fails", {"reason": "no"}), ("t_hang", {}), ("h_big", {"mb": 50})]
        for name, args in cases:
            with pytest.raises(ToolError) as err:
                await call(rt, name, args)
            errors[name] = err.value
        assert (await call(rt, "h_garbage", {})).data["text"] == "answered after the garbage"
        first_pid = (await call(rt, "h_pid", {})).data["structured"]["result"]
        with pytest.raises(ToolError) as crash:
            await call(rt, "h_crash", {})
        assert (await call(rt, "h_echo", {"text": "still here"})).data["text"] == "still here"
        second_pid = (await call(rt, "h_pid", {})).data["structured"]["result"]
        with pytest.raises(ToolError) as crash2:
            await call(rt, "h_crash", {})
        with pytest.raises(ToolError) as after:
            await call(rt, "h_echo", {"text": "x"})
    assert errors["h_fails"].code == "tool_error" and "refused: no" in errors["h_fails"].message
    assert errors["t_hang"].code == "timeout"
    assert errors["h_big"].code == "too_large" and errors["h_big"].details["limit"] == 4 * 2**20
    assert crash.value.code == "server_crashed" and "restarted" in crash.value.message
    assert "crashing on purpose" in crash.value.message  # the server's stderr explains it
    assert first_pid != second_pid and not alive(first_pid)
    assert crash2.value.code == "server_crashed" and "unavailable" in crash2.value.message
    assert after.value.code == "server_unavailable" and "unavailable" in after.value.message
    stops = [e.data["reason"] for e in events if e.kind == "mcp.stopped" and e.data["server"] == "h"]
    assert stops == ["crashed", "crashed"]
    assert [e.data["restart"] for e in events
            if e.kind == "mcp.started" and e.data["server"] == "h"] == [0, 1]


async def test_a_large_result_goes_to_the_ledger_blob_store(tmp_path: Path) -> None:
    """A 1 MB result under the server's limit: the model reads it, and the ledger keeps it as
    a content-addressed blob (the ledger moves strings over 64 KB there) that reads back."""
    ledger_dir = tmp_path / "ledger"
    spec = task({"h": hostile(max_result_chars=2_000_000)}, ["h.big"], tmp_path)
    async with Runtime(spec, ledger_dir=ledger_dir) as rt:
        await rt.prepare_tools()
        out = await call(rt, "h_big", {"mb": 1})
    assert out.data["text"] == "x" * 2**20
    ledger = next(ledger_dir.glob("*.jsonl"))
    result = next(json.loads(line)["data"] for line in ledger.read_text().splitlines()
                  if json.loads(line)["kind"] == "tool.result")
    ref = result["data"]["text"]
    assert set(ref) >= {"$blob", "size"} and read_blob(ledger, ref) == "x" * 2**20
    assert verify_ledger(ledger).ok


async def test_content_blocks_are_mapped_faithfully(tmp_path: Path) -> None:
    """Text, an image and an embedded resource: the model reads the text, a line naming the
    image's type and size, and the resource with its URI; the ledger record keeps the image
    data. Results are shown inside untrusted-content markers."""
    spec = task({"h": hostile()}, ["h.picture"], tmp_path)
    async with Runtime(spec) as rt:
        await rt.prepare_tools()
        out = await call(rt, "h_picture", {})
    assert "untrusted" in out.content and "[image image/png, 66 bytes" in out.content
    assert "[resource file:///note.txt (text/plain)]\nthe note's text" in out.content
    kinds = [c["type"] for c in out.data["content"]]
    assert kinds == ["text", "image", "resource"] and out.data["content"][1]["data"]


async def test_a_thousand_tools_and_a_name_taken_by_a_built_in(tmp_path: Path) -> None:
    """A server listing 1,000 tools offers only max_tools of them (one can still be picked by
    name); a tool whose name is a built-in's gets a hashed name, the built-in keeps its own."""
    events: list[Event] = []
    servers = {"many": hostile("--tools", "1000", max_tools=20),
               "clash": hostile("--name-clash", prefix="")}
    spec = task(servers, ["many", "clash.web_fetch", "web_fetch"], tmp_path)
    async with Runtime(spec, sinks=[events.append]) as rt:
        registry = await rt.prepare_tools()
        assert len(registry.groups["many"]) == 20
        clash = registry.groups["clash"][0]
        assert clash.startswith("web_fetch_") and len(clash) == len("web_fetch_") + 8
        assert registry.get("web_fetch").origin == {}  # still the built-in
        out = await call(rt, clash, {"url": "http://example.org/"})
    assert out.data["text"] == "not really fetching http://example.org/"
    listed = {e.data["server"]: e.data for e in events if e.kind == "mcp.tools"}
    assert listed["many"]["listed"] == 1011 and listed["many"]["truncated"] is True
    assert listed["clash"]["renamed"] == {clash: "web_fetch"}

    pick = task({"many": hostile("--tools", "1000")}, ["many.t999"], tmp_path)
    async with Runtime(pick) as rt:
        assert (await rt.prepare_tools()).names() == ["many_t999"]


async def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    """A missing module: SetupError naming the command and quoting the server's stderr."""
    spec = task({"broken": {"command": sys.executable, "args": ["-m", "no_such_mcp_server"]}},
                ["broken"], tmp_path)
    async with Runtime(spec) as rt:
        with pytest.raises(SetupError) as err:
            await rt.prepare_tools()
    assert "no_such_mcp_server" in str(err.value) and "No module named" in str(err.value)


def test_unknown_server_and_tool_entries_are_task_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'nope', which is not defined"):
        task({}, ["nope.tool"], tmp_path)
    with pytest.raises(ValueError, match="is the name of a built-in"):
        task({"web_fetch": TIME}, [], tmp_path)
    with pytest.raises(ValueError, match="either `command`"):
        task({"x": {"command": "a", "url": "http://h/"}}, [], tmp_path)


def test_model_names_are_provider_safe_and_unique() -> None:
    """Characters outside [A-Za-z0-9_-] become '_', a name over 64 characters is cut and given
    a hash, and a taken name gets a hash suffix (different for each server)."""
    assert model_name("fs", "read.file/v2", "fs", set()) == "fs_read_file_v2"
    long = model_name("srv", "x" * 100, "srv", set())
    assert len(long) == 64 and TOOL_NAME.match(long)
    taken = {"web_fetch"}
    a = model_name("", "web_fetch", "one", taken)
    b = model_name("", "web_fetch", "two", taken | {a})
    assert len({a, b, "web_fetch"}) == 3 and all(TOOL_NAME.match(n) for n in (a, b))


def test_a_group_name_in_an_allow_list_brings_its_tools() -> None:
    def noop() -> str:
        return "x"

    one, two, other = (tool(name=n)(noop) for n in ("h_one", "h_two", "other"))
    registry = ToolRegistry([one, two, other], groups={"h": ("h_one", "h_two")})
    assert registry.only(["h"]).names() == ["h_one", "h_two"]
    assert registry.only(["h", "other"]).groups == {"h": ("h_one", "h_two")}
    assert registry.only(["h_one"]).groups == {}
