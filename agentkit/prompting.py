"""Prompts are data: `agentkit/prompts/*.yaml`, overridable per task, rendered strictly.

Each file is one prompt family (``agent``, ``planner``, ``worker``, ``synthesizer``,
``replanner``): named templates (``system``, ``user``, ...) with ``$name`` placeholders
(`string.Template`: JSON braces in a prompt need no escaping; ``$$`` is a dollar sign) and a
``placeholders`` list, the values the engine fills in for every template of the family. A task
overrides one template with ``prompts: {"planner": "...", "planner.user": "..."}`` (the bare
family name means ``system``).

Rendering is strict: an override naming an unknown template or using a placeholder the engine
does not fill (``$gaol``) is a `ConfigError` when the task's prompts are loaded, before any
model is called, never text the model reads. The exact rendered request reaches the ledger
through the ``model.request`` event.
"""

from __future__ import annotations

from importlib import resources
from string import Template
from typing import Any

import yaml

from agentkit.errors import ConfigError
from agentkit.task import TaskSpec

__all__ = ["PROMPT_FAMILIES", "Prompts"]

PROMPT_FAMILIES = ("agent", "planner", "worker", "synthesizer", "replanner")


class Prompts:
    """The templates one run uses: package defaults with the task's overrides applied."""

    def __init__(self, templates: dict[str, Template], placeholders: dict[str, frozenset[str]]) -> None:
        self.templates = templates
        #: family -> the placeholders the engine fills for its templates
        self.placeholders = placeholders

    @classmethod
    def defaults(cls) -> Prompts:
        templates: dict[str, Template] = {}
        placeholders: dict[str, frozenset[str]] = {}
        folder = resources.files("agentkit") / "prompts"
        for family in PROMPT_FAMILIES:
            data = yaml.safe_load((folder / f"{family}.yaml").read_text(encoding="utf-8"))
            placeholders[family] = frozenset(data.pop("placeholders"))
            for part, text in data.items():
                templates[f"{family}.{part}"] = Template(text)
        prompts = cls(templates, placeholders)
        for key, template in templates.items():  # the package's own files obey the same rule
            prompts._check(key, template, "agentkit/prompts")
        return prompts

    @classmethod
    def for_task(cls, task: TaskSpec) -> Prompts:
        """The defaults with `task.prompts` applied; a bad override is a `ConfigError`."""
        prompts = cls.defaults()
        for key, text in task.prompts.items():
            full = key if "." in key else f"{key}.system"
            if full not in prompts.templates:
                known = ", ".join(sorted(k.removesuffix(".system") for k in prompts.templates))
                raise ConfigError(f"task prompts: unknown prompt {key!r}; known: {known}")
            template = Template(text)
            prompts._check(full, template, f"task prompts.{key}")
            prompts.templates[full] = template
        return prompts

    def _check(self, key: str, template: Template, where: str) -> None:
        allowed = self.placeholders[key.split(".", 1)[0]]
        if not template.is_valid():
            raise ConfigError(f"{where}: invalid placeholder syntax (write $name or ${{name}}, "
                              f"and $$ for a dollar sign)")
        unknown = sorted(set(template.get_identifiers()) - allowed)
        if unknown:
            raise ConfigError(f"{where}: unknown placeholder(s) {', '.join('$' + u for u in unknown)}"
                              f"; this prompt can use: {', '.join('$' + a for a in sorted(allowed))}")

    def render(self, key: str, **values: Any) -> str:
        """Fill `key`'s placeholders from `values` (every one it uses must be given)."""
        try:
            return self.templates[key].substitute({k: str(v) for k, v in values.items()}).strip()
        except KeyError as exc:  # the engine did not pass a value it declared: a bug here
            raise ConfigError(f"prompt {key!r} uses ${exc.args[0]}, which was not provided") from None
