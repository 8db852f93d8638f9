"""A package users can depend on: a version printed by the CLI, type hints shipped, a licence
file that matches the metadata, a guarded ``__main__``, and the task file's JSON Schema
(shipped, described, kept in step with the code, accepted by every example)."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

import agentkit
from agentkit.cli import app
from agentkit.cli.schema import task_schema

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DIST = PYPROJECT["project"]["name"]
EXAMPLES = sorted((ROOT / "examples").glob("**/*.yaml"))
runner = CliRunner()


def test_version_is_single_sourced_and_printed() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"agentkit {agentkit.__version__}\n"
    assert importlib.metadata.version(DIST) == agentkit.__version__


def test_the_distribution_name_is_not_the_import_name_and_the_readme_says_which() -> None:
    """`agentkit` on PyPI is another project: the distribution is named apart, the import name
    stays agentkit, and the README tells users which to install."""
    assert DIST != "agentkit"
    assert f"pip install {DIST}" in (ROOT / "README.md").read_text()


def test_type_hints_ship_with_the_package() -> None:
    assert (Path(agentkit.__file__).parent / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["agentkit"]


def test_licence_file_matches_the_metadata() -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_importing_dunder_main_does_not_run_the_cli() -> None:
    """``import agentkit.__main__`` (done by tools that scan modules) must not start the CLI
    (which would print its help and exit 2); ``python -m agentkit`` still does."""
    imported = subprocess.run([sys.executable, "-c", "import agentkit.__main__"],
                              capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0 and imported.stdout == "" and imported.stderr == ""
    proc = subprocess.run([sys.executable, "-m", "agentkit", "--version"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"agentkit {agentkit.__version__}"


# -- the task file's JSON Schema -----------------------------------------------------------------


def _properties(schema: dict[str, object]) -> list[tuple[str, dict[str, object]]]:
    found = []
    defs = schema.get("$defs", {})
    assert isinstance(defs, dict)
    for owner, body in [("TaskSpec", schema), *defs.items()]:
        for name, prop in body.get("properties", {}).items():
            found.append((f"{owner}.{name}", prop))
    return found


def test_schema_command_prints_a_described_schema() -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"].endswith("2020-12/schema") and schema["required"] == ["name", "goal"]
    jsonschema.Draft202012Validator.check_schema(schema)
    undescribed = [name for name, prop in _properties(schema) if not prop.get("description")]
    assert undescribed == []
    assert len(_properties(schema)) > 100  # every nested settings model is in it


def test_the_committed_schema_is_what_the_code_says() -> None:
    """task.schema.json (what the examples point editors at) cannot drift from `TaskSpec`:
    regenerate it with ``agentkit schema > task.schema.json``."""
    committed = json.loads((ROOT / "task.schema.json").read_text())
    assert committed == task_schema()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT / "examples")))
def test_every_example_points_editors_at_the_schema_and_the_schema_accepts_it(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    match = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first)
    assert match, f"{path.name} does not start with the yaml-language-server comment"
    assert (path.parent / match.group(1)).resolve() == ROOT / "task.schema.json"
    jsonschema.validate(yaml.safe_load(path.read_text()), task_schema())


def test_the_schema_rejects_a_misspelt_key() -> None:
    """An editor flags a typo as the loader would (every model forbids unknown keys)."""
    validator = jsonschema.Draft202012Validator(task_schema())
    errors = validator.iter_errors({"name": "x", "goal": "y", "models": {"m": {"modle": "x"}}})
    assert any("'modle' was unexpected" in e.message for e in errors)
