"""Choosing where nodes run, without a cluster: the task field, the CLI flags, the Python API,
and the error a user meets when the Ray extra is not installed (simulated by hiding the
installed ``ray`` package from imports)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentkit import start
from agentkit.cli import app
from agentkit.errors import ConfigError, SetupError, TaskFileError
from agentkit.task import ExecutorSpec, TaskSpec, load_task, load_task_text

runner = CliRunner()


def swarm_yaml(executor: str = "") -> str:
    return textwrap.dedent("""\
        name: choose
        goal: say hello
        model: m
        models:
          m: {profile: deepseek, model: worker, base_url: "http://127.0.0.1:9/v1",
               api_key_env: CHOICE_KEY, stream: false}
        plan: {nodes: [{id: a, goal: say hello}]}
        """) + executor


def test_task_file_chooses_the_executor_and_defaults_to_local() -> None:
    """`executor:` is read from the file with its defaults; leaving it out means local."""
    spec = load_task_text(swarm_yaml("executor: {kind: ray, address: '127.0.0.2:6379'}\n"))
    assert spec.executor == ExecutorSpec(kind="ray", address="127.0.0.2:6379", workers_per_node=1)
    assert load_task_text(swarm_yaml()).executor.kind == "local"


def test_unknown_executor_kind_names_the_field_and_line() -> None:
    with pytest.raises(TaskFileError) as caught:
        load_task_text(swarm_yaml("executor: {kind: dask}\n"), "t.yaml")
    assert caught.value.line == 8 and caught.value.field == "executor.kind"
    assert "'local', 'ray'" in str(caught.value)


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Imports of ray fail, as on an install without the extra."""
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.delitem(sys.modules, "agentkit.swarm.ray_executor", raising=False)


async def test_ray_without_the_extra_is_refused_before_the_run_starts(
        no_ray: None, tmp_path: Path) -> None:
    """From the task and from `start(executor=ExecutorSpec(...))` alike: a `SetupError` that
    names the extra and the pip command, raised by `start` itself (no run, no ledger)."""
    spec = load_task_text(swarm_yaml("executor: {kind: ray}\n"))
    for task, executor in ((spec, None), (spec.model_copy(update={"executor": ExecutorSpec()}),
                                          ExecutorSpec(kind="ray"))):
        with pytest.raises(SetupError) as caught:
            start(task, executor=executor, ledger_dir=tmp_path, environ={"CHOICE_KEY": "k-1"})
        assert "[ray]" in str(caught.value) and "pip install 'agentkit-swarm[ray]'" in str(caught.value)
    assert _files(tmp_path) == []


async def test_agent_mode_cannot_use_a_remote_executor(tmp_path: Path) -> None:
    task = TaskSpec.model_validate({**load_task_text(swarm_yaml()).model_dump(exclude={"plan"}),
                                    "mode": "agent", "executor": {"kind": "ray"}})
    with pytest.raises(ConfigError, match="mode: agent"):
        start(task, ledger_dir=tmp_path, environ={"CHOICE_KEY": "k-1"})


def test_cli_executor_ray_without_the_extra_exits_2_naming_it(no_ray: None, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "task.yaml"
    path.write_text(swarm_yaml())
    monkeypatch.setenv("CHOICE_KEY", "k-1")
    out = runner.invoke(app, ["run", str(path), "--executor", "ray"])
    assert out.exit_code == 2, out.output
    assert "[ray]" in out.output


@pytest.mark.parametrize("args, words", [
    (["--executor", "dask"], "--executor must be local or ray"),
    (["--executor", "local", "--ray-address", "127.0.0.2:1"], "--ray-address needs --executor ray"),
])
def test_cli_rejects_bad_executor_flags(args: list[str], words: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "task.yaml"
    path.write_text(swarm_yaml())
    monkeypatch.setenv("CHOICE_KEY", "k-1")
    out = runner.invoke(app, ["run", str(path), *args])
    assert out.exit_code == 2 and words in out.output


def test_ray_address_implies_the_ray_executor(tmp_path: Path) -> None:
    """--ray-address alone picks ray (the flags map onto the task's field)."""
    from agentkit.cli.run import _with_executor

    spec = load_task(_write(tmp_path, swarm_yaml()))
    chosen = _with_executor(spec, None, "127.0.0.2:6379")
    assert chosen.executor == ExecutorSpec(kind="ray", address="127.0.0.2:6379")
    assert _with_executor(spec, "ray", None).executor == ExecutorSpec(kind="ray")


def _files(folder: Path) -> list[Path]:
    return list(folder.iterdir())


def _write(folder: Path, text: str) -> Path:
    path = folder / "task.yaml"
    path.write_text(text)
    return path
