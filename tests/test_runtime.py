"""The Runtime: explicit resources, closed in reverse order, and secrets known for redaction."""

from __future__ import annotations

from pathlib import Path

from agentkit import Runtime, TaskSpec


def _task(**model: object) -> TaskSpec:
    return TaskSpec.model_validate({"name": "t", "goal": "g", "model": "m",
                                    "models": {"m": {"model": "x", **model}}})


def test_profile_default_key_variable_is_redacted_from_the_ledger(tmp_path: Path) -> None:
    """A model that relies on its profile's key variable (no api_key_env) still gets its key
    redacted: the ledger never holds it, even when an event carries it by accident."""
    task = _task(profile="deepseek")
    runtime = Runtime(task, environ={"DEEPSEEK_API_KEY": "sk-live-123456"}, ledger_dir=tmp_path)
    path = runtime.open_ledger()
    runtime.emit("tool.call", {"arguments": {"q": "sk-live-123456"}})
    assert runtime.ledger is not None
    runtime.ledger.close()
    assert path is not None
    assert "sk-live-123456" not in path.read_text()


def test_custom_base_url_does_not_borrow_the_profile_key() -> None:
    task = _task(profile="deepseek", base_url="http://127.0.0.1:9/v1")
    assert Runtime(task, environ={"DEEPSEEK_API_KEY": "sk-other"}).secrets() == []


async def test_resources_are_made_once_and_closed_in_reverse_order() -> None:
    runtime = Runtime(_task())
    closed: list[str] = []
    made: list[str] = []

    def factory(name: str):  # type: ignore[no-untyped-def]
        async def make() -> str:
            made.append(name)
            return name
        return make

    async def close(value: str) -> None:
        closed.append(value)

    assert await runtime.resources.get("a", factory("a"), close) == "a"
    assert await runtime.resources.get("a", factory("a-again"), close) == "a"
    await runtime.resources.get("b", factory("b"), close)
    await runtime.aclose()
    assert made == ["a", "b"]
    assert closed == ["b", "a"]


async def test_a_missing_sandbox_input_is_a_config_error_before_anything_runs(tmp_path: Path) -> None:
    import pytest

    from agentkit.errors import ConfigError
    from agentkit.run import start

    task = TaskSpec.model_validate({"name": "t", "goal": "g", "model": "m",
                                    "models": {"m": {"model": "x", "base_url": "http://127.0.0.1:9"}},
                                    "tools": ["run_code"],
                                    "sandbox": {"inputs": ["sales.csv"]},
                                    "workspace": str(tmp_path)})
    with pytest.raises(ConfigError, match="'sales.csv' not found in the workspace"):
        start(task)
    (tmp_path / "sales.csv").write_text("a,b\n")
    run = start(task, ledger_dir=tmp_path / "l")
    run.cancel()
    assert (await run.result()).status == "cancelled"
