"""What a run checks before it calls any model: everything it would otherwise refuse half-way.

`problems` lists every problem of a task at once, each with the field it concerns, so
``agentkit validate`` and ``agentkit run`` can point at ``FILE:LINE:COL`` and `start()` can
refuse with one `ConfigError` naming them all:

- a model whose profile does not exist (``profile: deepsek``), or that has no endpoint;
- a prompt override that does not fit its template (unknown prompt, unknown ``$placeholder``);
- sandbox inputs missing from the workspace;
- ``approval`` with ``executor: ray`` (a Ray worker cannot wait for the driver's approvals);
- (with `environ`) an API key variable that is not set, for every model the run will call:
  the roles' models, a hand-written plan's node models and their fallbacks. A swarm whose key
  is missing fails here, naming the variable, instead of failing each node with an HTTP 401
  or a node error.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Literal

from agentkit.errors import ConfigError
from agentkit.models import api_key_envs
from agentkit.models.profiles import PROFILES
from agentkit.prompting import Prompts
from agentkit.task import TaskSpec

__all__ = ["ROLES", "FieldPath", "Problem", "Role", "models_used", "problems", "raise_problems"]

Role = Literal["planner", "worker", "synthesizer"]
ROLES: tuple[Role, ...] = ("planner", "worker", "synthesizer")
FieldPath = tuple[str | int, ...]
#: (the field it concerns, what is wrong and what to do)
Problem = tuple[FieldPath, str]


def problems(task: TaskSpec, *, workspace: Path | None = None,
             environ: Mapping[str, str] | None = None,
             replaced: Collection[Role] = ()) -> list[Problem]:
    """Every configuration problem of `task`; API keys are checked only when `environ` is
    given. `replaced`: roles whose model the run will not call (`start(executor=...)` etc.)."""
    used = models_used(task, replaced)
    found = _profile_problems(task) + _endpoint_problems(task, used)
    try:
        Prompts.for_task(task)
    except ConfigError as exc:
        found.append((("prompts",), str(exc)))
    if workspace is not None:
        missing = [p for p in task.sandbox.inputs if not (workspace / p).is_file()]
        if missing:
            found.append((("sandbox", "inputs"),
                          f"{', '.join(map(repr, missing))} not found in the workspace "
                          f"{str(workspace)!r} (workspace paths in a task file are relative to "
                          f"the file)"))
    if environ is not None:
        found += _key_problems(task, used, environ)
    if task.approval is not None and task.executor.kind == "ray":
        found.append((("approval",), "approvals need executor kind local: a node on a Ray "
                      "worker cannot wait for a decision made on the driver; remove approval "
                      "or run with --executor local"))
    return found


def raise_problems(found: list[Problem]) -> None:
    """One `ConfigError` naming every problem (none: return)."""
    if not found:
        return
    lines = [f"{_dotted(path)}: {message}" for path, message in found]
    raise ConfigError(lines[0] if len(lines) == 1 else
                      f"{len(lines)} problems:\n" + "\n".join(f"- {line}" for line in lines))


def models_used(task: TaskSpec, replaced: Collection[Role] = ()) -> list[str]:
    """The models a run of `task` is set up to call: the roles' models (agent mode: the
    worker's; the planner's also re-plans a hand-written plan), a hand-written plan's node
    models, and every fallback of those."""
    roles: tuple[Role, ...] = ("worker",) if task.mode == "agent" else ROLES
    if task.mode == "swarm" and task.plan is not None and task.retry.replans == 0:
        roles = ("worker", "synthesizer")  # a hand-written plan that is never re-planned
    names = [task.model_for(role) for role in roles if role not in replaced]
    if task.mode == "swarm" and task.plan is not None and "worker" not in replaced:
        names += [n.model for n in task.plan.nodes if n.model]
    seen: list[str] = []
    while names:
        name = names.pop(0)
        if name in seen or name not in task.models:
            continue
        seen.append(name)
        names += task.models[name].fallbacks
    return seen


def _profile_problems(task: TaskSpec) -> list[Problem]:
    """A misspelt profile is an error in any model entry, used or not."""
    known = ", ".join(sorted(PROFILES))
    return [(("models", name, "profile"), f"unknown model profile {spec.profile!r}; known "
                                          f"profiles: {known}")
            for name, spec in task.models.items() if spec.profile not in PROFILES]


def _endpoint_problems(task: TaskSpec, used: list[str]) -> list[Problem]:
    found: list[Problem] = []
    for name in used:
        spec = task.models[name]
        profile = PROFILES.get(spec.profile)
        if spec.provider == "local" or profile is None or spec.base_url or spec.channels:
            continue
        if not profile.base_url:
            found.append((("models", name),
                          f"model {name!r} has no base_url and profile {spec.profile!r} has no "
                          f"default endpoint: set models.{name}.base_url"))
    return found


def _key_problems(task: TaskSpec, used: list[str], environ: Mapping[str, str]) -> list[Problem]:
    """One problem per variable that is not set, naming every model that needs it."""
    needing: dict[str, list[str]] = {}
    for name in used:
        for env in sorted(api_key_envs(task.models[name])):
            if not environ.get(env):
                needing.setdefault(env, []).append(name)
    found: list[Problem] = []
    for env, names in needing.items():
        who = f"model {names[0]!r} needs" if len(names) == 1 else \
            f"models {', '.join(map(repr, names))} need"
        spec = task.models[names[0]]
        where: FieldPath = ("models", names[0], "api_key_env") if spec.api_key_env == env \
            else ("models", names[0])
        found.append((where,
                      f"{who} an API key in the environment variable {env}, which is not set: "
                      f"export {env}=... (or remove api_key_env for a server that needs no key)"))
    return found


def _dotted(path: FieldPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out
