"""The README's examples are tested: every YAML block is a valid task (loader, pre-run checks
and the shipped JSON Schema agree), the task-file reference lists every field the schema has,
every Python block compiles and its imports resolve, and every `agentkit ...` command line
names a real command with real options."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from agentkit._preflight import problems
from agentkit.cli import app
from agentkit.cli.schema import task_schema
from agentkit.task import load_task_text

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = [(m.group(1), m.group(2), README[:m.start()].count("\n") + 2)
          for m in re.finditer(r"^```(\w+)\n(.*?)^```$", README, re.S | re.M)]


def blocks(lang: str) -> list[tuple[str, int]]:
    return [(text, line) for kind, text, line in BLOCKS if kind == lang]


def test_the_readme_has_the_blocks_this_file_checks() -> None:
    assert len(blocks("yaml")) >= 1 and len(blocks("python")) >= 1 and len(blocks("bash")) >= 3


#: a YAML block that starts with this is part of a task file: it is checked inside a minimal one
FRAGMENT = "# part of a task file"
MINIMAL = "name: readme\ngoal: check a fragment of the README\n"


@pytest.mark.parametrize("text, line", blocks("yaml"), ids=[f"line{n}" for _, n in blocks("yaml")])
def test_every_yaml_block_is_a_valid_task(text: str, line: int, tmp_path: Path) -> None:
    """Before, the reference block was invalid (roles.planner named an undefined model).
    Fragments (marked by their first line) are checked as part of a minimal task."""
    if text.startswith(FRAGMENT):
        text = MINIMAL + text
        (tmp_path / "harbour_tools.py").write_text("def tide_times() -> str:\n    return ''\n")
    spec = load_task_text(text, f"README.md (block at line {line})", base_dir=tmp_path)
    assert problems(spec) == []
    jsonschema.validate(yaml.safe_load(text), task_schema())


def _fields_seen(schema: dict[str, Any], node: dict[str, Any], data: Any,
                 seen: set[tuple[str, str]]) -> None:
    """Walk `data` along the schema, noting each (model, field) it sets."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        _fields_seen(schema, {**schema["$defs"][name], "title": name}, data, seen)
        return
    for option in node.get("anyOf", []):
        _fields_seen(schema, option, data, seen)
    if isinstance(data, dict) and "properties" in node:
        for key, value in data.items():
            if key in node["properties"]:
                seen.add((node.get("title", "TaskSpec"), key))
                _fields_seen(schema, node["properties"][key], value, seen)
    elif isinstance(data, dict) and isinstance(node.get("additionalProperties"), dict):
        for value in data.values():
            _fields_seen(schema, node["additionalProperties"], value, seen)
    elif isinstance(data, list) and isinstance(node.get("items"), dict):
        for value in data:
            _fields_seen(schema, node["items"], value, seen)


def test_the_task_file_reference_lists_every_field() -> None:
    """Before, retry.plan_attempts, fetch.max_text_chars, context_tokens, temperature, most
    of sandbox.* and search.* and the worker.user prompt were missing."""
    schema = task_schema()
    every = {("TaskSpec", f) for f in schema["properties"]} | {
        (name, f) for name, body in schema["$defs"].items() for f in body.get("properties", {})}
    reference = [text for text, _ in blocks("yaml") if text.startswith("# yaml-language-server")]
    assert len(reference) == 1, "the README has one task-file reference block"
    seen: set[tuple[str, str]] = set()
    _fields_seen(schema, {**schema, "title": "TaskSpec"}, yaml.safe_load(reference[0]), seen)
    assert sorted(every - seen) == []
    assert "worker.user" in reference[0]


@pytest.mark.parametrize("text, line", blocks("python"),
                         ids=[f"line{n}" for _, n in blocks("python")])
def test_every_python_block_compiles_and_its_imports_resolve(text: str, line: int) -> None:
    tree = ast.parse(text, f"README.md:{line}")
    compile(tree, f"README.md:{line}", "exec")
    imports: list[ast.stmt] = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    assert imports
    exec(compile(ast.Module(body=imports, type_ignores=[]), f"README.md:{line}", "exec"), {})


def _agentkit_commands() -> list[list[str]]:
    found = []
    for text, _ in blocks("bash"):
        for raw in text.splitlines():
            command = raw.split("#", 1)[0].strip().rstrip("&").strip()
            words = shlex.split(command) if command else []
            while words and "=" in words[0] and not words[0].startswith("-"):
                words = words[1:]  # VAR=value prefixes
            if words[:1] == ["agentkit"]:
                found.append(words[1:])
            elif "&& agentkit" in command:
                found += [shlex.split(part.strip())[1:] for part in command.split("&&")
                          if part.strip().startswith("agentkit")]
    return found


@pytest.mark.parametrize("words", _agentkit_commands(), ids=" ".join)
def test_every_agentkit_command_line_in_the_readme_exists(words: list[str]) -> None:
    """Parsed as the CLI would (with --help, so nothing runs): unknown commands or options in
    the README fail here."""
    result = CliRunner().invoke(app, [*words, "--help"])
    assert result.exit_code == 0, result.output
