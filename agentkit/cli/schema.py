"""`agentkit schema`: the task file's JSON Schema, for editors that check and complete YAML.

    agentkit schema > task.schema.json

and start a task file with ``# yaml-language-server: $schema=task.schema.json`` (the
yaml-language-server comment, understood by VS Code's YAML extension, Neovim, Helix, ...). Every
field carries its description. The schema describes the shape; `agentkit validate` remains the
full check (model names that must exist, profiles, keys in the environment, ...).
"""

from __future__ import annotations

import json
from typing import Any

from agentkit.cli._app import app, out

__all__ = ["task_schema"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def task_schema() -> dict[str, Any]:
    """The JSON Schema of a task file (what `TaskSpec` accepts from YAML)."""
    from agentkit.task import TaskSpec

    schema = TaskSpec.model_json_schema(mode="validation")
    return {"$schema": SCHEMA_DIALECT, "title": "agentkit task file",
            **{k: v for k, v in schema.items() if k != "title"}}


@app.command()
def schema() -> None:
    """Print the task file's JSON Schema (fields with descriptions), for editors:
    ``agentkit schema > task.schema.json``. Exit code: 0."""
    out(json.dumps(task_schema(), indent=2, ensure_ascii=False))
