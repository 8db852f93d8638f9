"""Task files: safe strict YAML, and every bad input exits 2 with FILE:LINE:COL and a clear
message (through the real `agentkit validate` command, in-process)."""

from __future__ import annotations

import re
import textwrap
import tracemalloc
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentkit.cli import app
from agentkit.errors import TaskFileError
from agentkit.task import BudgetSpec, ModelSpec, ReasoningSpec, TaskSpec, load_task, load_task_text

GOOD = textwrap.dedent("""\
    name: demo
    goal: Summarise three pages about tide pools
    model: fast
    models:
      fast:
        provider: openai
        profile: deepseek
        base_url: https://api.deepseek.com
        model: deepseek-chat
        api_key_env: DEEPSEEK_API_KEY
        reasoning: {effort: high}
    tools: [web_search, web_fetch]
    budget: {tokens: 100000, cost_usd: 1}
    """)

runner = CliRunner()


def validate(path: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["validate", str(path)])
    return result.exit_code, result.stdout + result.stderr


def write(tmp_path: Path, text: str | bytes, name: str = "task.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


# (name, document, expected FILE:LINE, words the message must contain)
BAD_CASES = [
    ("python_tag", GOOD + "extra: !!python/object/apply:os.system ['touch PWNED']\n", 14,
     ["python/object/apply", "not allowed"]),
    ("custom_tag", GOOD + "extra: !include other.yaml\n", 14, ["!include", "not allowed"]),
    ("unknown_key", GOOD.replace("    model: deepseek-chat", "    modle: deepseek-chat"), 9,
     ["unknown key 'modle'", "did you mean 'model'", "expected one of", "models.fast.modle"]),
    ("unknown_top_key", GOOD + "goals: more\n", 14, ["unknown key 'goals'", "(field goals)"]),
    ("wrong_type", GOOD.replace("tokens: 100000", "tokens: lots"), 13,
     ["expected an integer, got string 'lots'", "budget.tokens"]),
    ("yaml11_bool", GOOD.replace("name: demo", "name: no"), 1,
     ["expected a string, got boolean False", "(field name)"]),
    ("duplicate_key", GOOD + "name: again\n", 14, ["duplicate key 'name'", "line 1"]),
    ("missing_goal", GOOD.replace("goal: Summarise three pages about tide pools\n", ""), 1,
     ["missing required key 'goal'", "(field goal)"]),
    ("undefined_model", GOOD.replace("model: fast\n", "model: slow\n", 1), 3,
     ["model 'slow' is not defined in models", "defined: fast"]),
    ("undefined_role_model", GOOD + "roles: {planner: big}\n", 14,
     ["model 'big' is not defined", "roles.planner"]),
    ("unknown_tool", GOOD.replace("web_fetch]", "web_fetc]"), 12,
     ["unknown tool 'web_fetc' (did you mean 'web_fetch'?)",
      "built-in tools: web_search, web_fetch, run_code", "tools[1]"]),
    ("unknown_mode", GOOD + "mode: swarmy\n", 14, ["unknown mode 'swarmy'", "swarm", "agent"]),
    ("not_a_mapping", "- name: demo\n- goal: x\n", 1, ["must be a mapping", "got a list"]),
    ("scalar_document", "just a sentence\n", 1, ["must be a mapping"]),
    ("empty", "", 1, ["empty"]),
    ("syntax_error", GOOD + "extra: [1, 2\nmore: {}\n", 15, ["YAML syntax error"]),
    ("two_documents", GOOD + "---\nname: other\n", 14, ["one YAML document"]),
    ("anchor", GOOD + "x: &a [1, 2]\n", 14, ["anchors (&a) are not allowed"]),
    ("merge_key", GOOD + "fetch: {<<: {allow_private: true}}\n", 14, ["'<<'", "not allowed"]),
    ("integer_key", GOOD + "prices: {1: {input: 1, output: 2}}\n", 14, ["keys must be strings"]),
    ("inline_api_key", GOOD.replace("    api_key_env: DEEPSEEK_API_KEY", "    api_key: abc123"),
     10, ["API keys may not be written in task files", "api_key_env", "models.fast.api_key"]),
    ("inline_key_in_env_field", GOOD.replace("DEEPSEEK_API_KEY", "sk-4f9c2d7e1a0b3c5d6e7f8a9b"),
     10, ["API keys may not be written in task files"]),
    ("bearer_header", GOOD.replace("    reasoning: {effort: high}",
                                   "    headers: {X-Trace: 'Bearer abcdefgh12345678'}"),
     11, ["API keys may not be written in task files", "models.fast.headers.X-Trace"]),
    ("channel_token", GOOD.replace("    reasoning: {effort: high}",
                                   "    channels: [{base_url: 'http://a', token: xyz}]"),
     11, ["API keys may not be written", "models.fast.channels[0].token"]),
    ("anthropic_key_anywhere", GOOD.replace("Summarise", "Use sk-ant-api03-abcdefghijklmnop to"), 2,
     ["API keys may not be written"]),
    ("env_name_invalid", GOOD.replace("DEEPSEEK_API_KEY", "'my key'"), 10,
     ["NAME of an environment variable", "api_key_env"]),
    ("too_deep", GOOD + "prompts: " + "[" * 40 + "]" * 40 + "\n", 14, ["deeper than 32"]),
    ("control_char", GOOD + "x: \"\x07\"\n", 14, ["not allowed in YAML"]),
]


@pytest.mark.parametrize("case", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_task_file_exits_2_naming_file_line_and_problem(tmp_path: Path,
                                                            case: tuple[str, str, int, str]) -> None:
    _, text, line, words = case
    path = write(tmp_path, text)
    code, output = validate(path)
    assert code == 2, output
    assert re.search(rf"{re.escape(str(path))}:{line}:\d+: ", output), output
    for word in words:
        assert word in output, (word, output)


def test_python_tag_runs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tag is refused at parse time, so the command in it never runs."""
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, GOOD + "extra: !!python/object/apply:os.system ['touch PWNED']\n")
    with pytest.raises(TaskFileError):
        load_task(path)
    assert not (tmp_path / "PWNED").exists()


ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True))


def test_alias_bomb_rejected_with_flat_memory(tmp_path: Path) -> None:
    """9^9 leaves if expanded; rejected at the first anchor, allocating almost nothing."""
    assert len(ALIAS_BOMB) < 400
    path = write(tmp_path, ALIAS_BOMB + "name: x\n")
    tracemalloc.start()
    try:
        with pytest.raises(TaskFileError) as info:
            load_task(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 512 * 1024, f"peak {peak} bytes"
    assert info.value.line == 1 and "anchors (&a)" in str(info.value)
    code, output = validate(path)
    assert code == 2 and f"{path}:1:" in output


def test_ten_megabyte_file_rejected_without_reading_it(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "prompts: {big: '" + "x" * 10_000_000 + "'}\n")
    tracemalloc.start()
    try:
        with pytest.raises(TaskFileError) as info:
            load_task(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes: the file was read whole"
    assert "larger than the 256 KB limit" in str(info.value)
    code, output = validate(path)
    assert code == 2 and f"{path}:1:1:" in output


@pytest.mark.parametrize("raw, words", [
    (b"name: demo\x00\x01\x02\x03binary", ["binary file"]),
    (GOOD.encode() + b"extra: caf\xe9\n", ["not valid UTF-8", "0xe9"]),
], ids=["nul_bytes", "latin1"])
def test_binary_and_non_utf8_files_rejected(tmp_path: Path, raw: bytes, words: list[str]) -> None:
    path = write(tmp_path, raw)
    code, output = validate(path)
    assert code == 2 and re.search(rf"{re.escape(str(path))}:\d+:\d+: ", output), output
    for word in words:
        assert word in output


def test_node_count_capped(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "prompts: {" + ", ".join(f"p{i}: x" for i in range(6000)) + "}\n")
    with pytest.raises(TaskFileError, match="more than 10,000 values"):
        load_task(path)


def test_all_errors_reported_in_file_order(tmp_path: Path) -> None:
    text = GOOD.replace("tokens: 100000", "tokens: lots") + "think: maybe\n"
    code, output = validate(write(tmp_path, text))
    assert code == 2
    lines = [ln for ln in output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 2 and "budget.tokens" in lines[0] and "(field think)" in lines[1]


def test_missing_file_is_bad_input(tmp_path: Path) -> None:
    code, output = validate(tmp_path / "nope.yaml")
    assert code == 2 and "cannot read the task file" in output


def test_python_spec_equals_yaml_spec(tmp_path: Path) -> None:
    """The same task built in Python and loaded from YAML is the same value."""
    built = TaskSpec(
        name="demo", goal="Summarise three pages about tide pools", model="fast",
        models={"fast": ModelSpec(provider="openai", profile="deepseek",
                                  base_url="https://api.deepseek.com", model="deepseek-chat",
                                  api_key_env="DEEPSEEK_API_KEY",
                                  reasoning=ReasoningSpec(effort="high"))},
        tools=["web_search", "web_fetch"], budget=BudgetSpec(tokens=100000, cost_usd=1))
    assert load_task(write(tmp_path, GOOD)) == built
    assert load_task_text(GOOD, "inline.yaml") == built


def test_relative_paths_resolve_against_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = tmp_path / "jobs"
    sub.mkdir()
    path = write(sub, GOOD + "workspace: ws\noutput: ../out\n")
    monkeypatch.chdir(tmp_path.parent)
    task = load_task(path)
    assert task.workspace == str(sub / "ws")
    assert task.output == str(tmp_path / "out")


def test_good_file_validates(tmp_path: Path) -> None:
    code, output = validate(write(tmp_path, GOOD))
    assert code == 0 and "valid" in output


def test_quoted_and_explicit_standard_tags_are_fine(tmp_path: Path) -> None:
    text = GOOD.replace("name: demo", "name: !!str 2024") + "think: !!bool true\n"
    task = load_task(write(tmp_path, text))
    assert task.name == "2024" and task.think is True
