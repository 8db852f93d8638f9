"""Script files for the scripted server: the replies it gives, as JSON or YAML.

The format is described in `agentkit.testing.server.__main__` (and by
``python -m agentkit.testing.server --help``): a list of replies, or a mapping with `replies`,
`default` and `models` (replies keyed by the request's model name). Mistakes are reported as
``FILE:LINE:COL: message (field ...)``, every one at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentkit import _yaml
from agentkit.errors import TaskFileError
from agentkit.testing._script import ErrorReply, Reply, call, error, reply

__all__ = ["ScriptFile", "load_script_file"]

Path_ = tuple[str | int, ...]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CallSpec(_Spec):
    name: str = Field(min_length=1)
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    id: str | None = None


class UsageSpec(_Spec):
    """Token counts; each dialect renders them in its own fields."""

    input_tokens: int | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=0)
    reasoning_tokens: int | None = Field(default=None, ge=0)
    cached_tokens: int | None = Field(default=None, ge=0)


class ItemSpec(_Spec):
    """A reply (content, reasoning, tool_calls) or an HTTP error (error: STATUS)."""

    content: str | None = None
    reasoning: str | None = None
    tool_calls: list[CallSpec] = Field(default_factory=list)
    usage: UsageSpec | None = None
    finish_reason: str | None = None
    delay: float = Field(default=0.0, ge=0, le=3600)
    error: int | None = Field(default=None, ge=400, le=599)
    message: str | None = None
    retry_after: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_kind(self) -> ItemSpec:
        as_reply = [k for k in ("content", "reasoning", "usage", "finish_reason")
                    if getattr(self, k) is not None] + (["tool_calls"] if self.tool_calls else [])
        if self.error is not None and as_reply:
            raise ValueError(f"an item is a reply or an error, not both: drop `error` or "
                             f"{', '.join(f'`{k}`' for k in as_reply)}")
        if self.error is None and (self.message is not None or self.retry_after is not None):
            raise ValueError("`message` and `retry_after` belong to an error: add `error: STATUS`"
                             " (or write the text as `content`)")
        return self

    def answer(self) -> Reply | ErrorReply:
        if self.error is not None:
            return error(self.error, self.message, retry_after=self.retry_after, delay=self.delay)
        calls = [call(c.name, c.arguments, id=c.id) for c in self.tool_calls]
        usage = self.usage.model_dump(exclude_none=True) if self.usage else None
        return reply(self.content, reasoning=self.reasoning, tool_calls=calls, usage=usage,
                     finish_reason=self.finish_reason, delay=self.delay)


class ModelScriptSpec(_Spec):
    replies: list[ItemSpec] = Field(default_factory=list)
    default: ItemSpec | None = None


class ScriptFileSpec(_Spec):
    replies: list[ItemSpec] = Field(default_factory=list)
    default: ItemSpec | None = None
    models: dict[str, ModelScriptSpec] = Field(default_factory=dict)


@dataclass
class ScriptFile:
    """A loaded script: the shared replies, the default, and per-model (replies, default)."""

    replies: list[Reply | ErrorReply] = field(default_factory=list)
    default: Reply | ErrorReply | None = None
    models: dict[str, tuple[list[Reply | ErrorReply], Reply | ErrorReply | None]] = \
        field(default_factory=dict)


def load_script_file(path: str | Path) -> ScriptFile:
    """Read and check a script file (see the module docstring). Every mistake is reported at
    once, each as ``FILE:LINE:COL: message (field ...)``, in a `TaskFileError`."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else f"not UTF-8 ({exc.reason})"
        raise TaskFileError(f"cannot read the script file: {why or exc}", file=name) from None
    src = _normalized(_locate(text, name, json_only=name.endswith(".json")))
    try:
        spec = ScriptFileSpec.model_validate(src.data)
    except ValidationError as exc:
        errors = _yaml.validation_errors(exc, src, ScriptFileSpec)
        first = errors[0]
        first.args = ("\n".join(str(e) for e in errors),)  # every mistake, one per line
        raise first from None
    return ScriptFile(
        replies=[i.answer() for i in spec.replies],
        default=spec.default.answer() if spec.default else None,
        models={m: ([i.answer() for i in s.replies], s.default.answer() if s.default else None)
                for m, s in spec.models.items()})


def _locate(text: str, name: str, *, json_only: bool) -> _yaml.Located:
    """The data of a JSON or YAML text, with the line and column of every value and key."""
    try:
        data = json.loads(text) if json_only else yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except json.JSONDecodeError as exc:
        raise TaskFileError(f"invalid JSON: {exc.msg}", file=name, line=exc.lineno,
                            column=exc.colno) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise TaskFileError(f"invalid YAML: {getattr(exc, 'problem', None) or exc}", file=name,
                            line=mark.line + 1 if mark else None,
                            column=mark.column + 1 if mark else None) from None
    if not isinstance(data, list | dict):
        raise TaskFileError("a script file is a list of replies, or a mapping with `replies`, "
                            "`default` and `models`", file=name, line=1, column=1)
    src = _yaml.Located(data=data, filename=name)

    def walk(node: yaml.Node, path: Path_) -> None:
        src.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                src.keys[(*path, key.value)] = (key.start_mark.line + 1, key.start_mark.column + 1)
                walk(value, (*path, key.value))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i))

    if root is not None:
        walk(root, ())
    return src


def _normalized(src: _yaml.Located) -> _yaml.Located:
    """Expand the shorthands (a bare list is `replies`) and move every recorded source position
    with its value, so errors still point at the right line."""
    moves: list[tuple[Path_, Path_]] = []
    data = src.data
    if isinstance(data, list):
        data, moves = {"replies": data}, [((), ("replies",))]
    if isinstance(data, dict) and isinstance(data.get("models"), dict):
        models = dict(data["models"])
        for model, value in models.items():
            if isinstance(value, list):
                models[model] = {"replies": value}
                moves.append((("models", model), ("models", model, "replies")))
        data = {**data, "models": models}
    if not moves:
        return src

    def move(path: Path_) -> Path_:
        for old, new in moves:
            if path[:len(old)] == old and (old or not path or isinstance(path[0], int)):
                return new + path[len(old):]
        return path

    values = {move(p): pos for p, pos in src.values.items()}
    keys = {move(p): pos for p, pos in src.keys.items()}
    for old, new in moves:  # the synthesized keys point at the list they stand for
        values.setdefault(new[:-1], src.values.get(old, (1, 1)))
        values[new] = src.values.get(old, (1, 1))
    return _yaml.Located(data=data, filename=src.filename, values=values, keys=keys)
