"""Prompts are data: `prompts/*.yaml` in this package, overridable per task.

Each file holds named templates (``system``, ``user``, ...) with ``$name`` placeholders
(`string.Template`: JSON braces in a prompt need no escaping). A task overrides one with
``prompts: {"planner": "...", "planner.user": "..."}`` — the bare name means ``system``.
The exact rendered request reaches the ledger through the agent loop's ``model.request`` event.
"""

from __future__ import annotations

from importlib import resources
from string import Template
from typing import Any

import yaml

from agentkit.errors import ConfigError
from agentkit.task import TaskSpec

__all__ = ["PROMPT_NAMES", "Prompts"]

PROMPT_NAMES = ("planner", "worker", "synthesizer", "replanner")
#: prompt names used outside the swarm (``agent``: the system prompt of ``mode: agent``)
OTHER_PROMPTS = ("agent",)


class Prompts:
    """The templates one run uses (package defaults with the task's overrides applied)."""

    def __init__(self, templates: dict[str, str]) -> None:
        self.templates = templates

    @classmethod
    def for_task(cls, task: TaskSpec) -> Prompts:
        templates: dict[str, str] = {}
        folder = resources.files("agentkit.swarm") / "prompts"
        for name in PROMPT_NAMES:
            data = yaml.safe_load((folder / f"{name}.yaml").read_text(encoding="utf-8"))
            for part, text in data.items():
                templates[f"{name}.{part}"] = text
        for key, text in task.prompts.items():
            if key in OTHER_PROMPTS:
                continue
            full = key if "." in key else f"{key}.system"
            if full not in templates:
                raise ConfigError(f"task prompts: unknown prompt {key!r}; known: "
                                  f"{', '.join(sorted(k.removesuffix('.system') for k in templates))}")
            templates[full] = text
        return cls(templates)

    def render(self, key: str, **values: Any) -> str:
        """Fill `key`'s placeholders; a placeholder without a value is left as written."""
        return Template(self.templates[key]).safe_substitute(
            {k: str(v) for k, v in values.items()}).strip()
