"""Safe, strict YAML for task files, with a source position for every value.

`yaml.safe_load` is safe against code execution but not against everything a hostile or
careless task file can do: an alias bomb of a few hundred bytes parses in milliseconds and then
explodes into millions of nodes on the first walk, duplicate keys silently keep the last value,
and errors lose their line numbers once pydantic sees plain dicts. So this module reads the
*event* stream of the libyaml parser (pure-Python fallback) and builds plain data itself:

- anchors and aliases are rejected at the first event that carries one, before anything is
  built, so a bomb costs nothing;
- only the standard scalar and collection tags are accepted (no ``!!python/...``, no custom
  ``!tag``, no ``!!binary``/``!!set``/merge keys);
- only a regular file is read (a FIFO or a device would block or never end), and its size is
  checked before parsing; nesting depth, node count and integer length are capped;
- duplicate keys and non-string keys are errors;
- every value's path (``("models", "fast", "base_url")``) maps to its `yaml.Mark`, so that
  `validation_errors` can turn pydantic's ``loc`` into ``FILE:LINE:COL``.
"""

from __future__ import annotations

import difflib
import os
import stat
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

import yaml
from pydantic import BaseModel, ValidationError

from agentkit.errors import TaskFileError

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_INT_CHARS", "MAX_NODES", "Located", "format_path",
           "load_yaml", "read_task_file", "validation_errors"]

MAX_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_NODES = 10_000
#: the longest integer literal accepted (sign and base prefix included)
MAX_INT_CHARS = 40

Path_ = tuple[str | int, ...]

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp")}
_MAP_TAG, _SEQ_TAG = _TAG + "map", _TAG + "seq"


@dataclass
class Located:
    """Plain data from a YAML document plus where each value (and each key) came from."""

    data: Any
    filename: str
    #: path -> (line, column), 1-based, of the value at that path
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    #: path -> (line, column) of the key that introduces the value at that path
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path_, *, key: bool = False) -> tuple[int, int]:
        """The position of `path`, or of its nearest existing ancestor."""
        table = self.keys if key else self.values
        while path:
            if path in table:
                return table[path]
            if key and path in self.values:
                return self.values[path]
            path = path[:-1]
        return self.values.get((), (1, 1))

    def error(self, path: Path_, message: str, *, key: bool = False,
              field: Path_ | None = None) -> TaskFileError:
        line, col = self.where(path, key=key)
        return TaskFileError(message, file=self.filename, line=line, column=col,
                             field=format_path(path if field is None else field) or None)


def format_path(path: Path_) -> str:
    """``("models", "a", "channels", 2, "base_url")`` -> ``models.a.channels[2].base_url``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _pos(mark: Any) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1)


# ---------------------------------------------------------------------------------------------
# Reading: bytes -> text -> events -> plain data


def read_task_file(path: str, filename: str) -> bytes:
    """The bytes of a task file, at most `MAX_BYTES` + 1 of them. Anything but a regular file
    is refused before a byte is read: it is opened non-blocking (opening a FIFO for reading
    would otherwise wait for a writer forever) and checked with ``fstat`` on that descriptor."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise TaskFileError(f"cannot read the task file: {exc.strerror or exc}",
                            file=filename) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise TaskFileError(f"this is {_file_kind(mode)}, not a regular file; a task file "
                                "must be a YAML file on disk", file=filename)
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_BYTES and (chunk := os.read(fd, MAX_BYTES + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise TaskFileError(f"cannot read the task file: {exc.strerror or exc}",
                            file=filename) from None
    finally:
        os.close(fd)


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def decode(raw: bytes, filename: str) -> str:
    """Check size and encoding before any parsing. Binary and non-UTF-8 files are refused."""
    if len(raw) > MAX_BYTES:
        raise TaskFileError(f"the task file is larger than the {MAX_BYTES // 1024} KB limit "
                            f"({len(raw):,} bytes read); task files hold settings, not data",
                            file=filename, line=1, column=1)
    if b"\x00" in raw:
        _raise_at(raw, raw.index(b"\x00"), filename,
                         "this is a binary file (NUL byte), not a YAML task file")
    try:
        text: str = raw.decode("utf-8-sig")
        return text
    except UnicodeDecodeError as exc:
        _raise_at(raw, exc.start, filename,
                         f"the task file is not valid UTF-8 (byte 0x{raw[exc.start]:02x}); "
                         "save it as UTF-8")


def _raise_at(raw: bytes, offset: int, filename: str, message: str) -> NoReturn:
    line = raw.count(b"\n", 0, offset) + 1
    col = offset - (raw.rfind(b"\n", 0, offset) + 1) + 1
    raise TaskFileError(message, file=filename, line=line, column=col)


def load_yaml(text: str, filename: str) -> Located:
    """Parse one YAML document into plain data, refusing anything unsafe. See module doc."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        decode(text.encode("utf-8", "surrogatepass"), filename)  # raises the size error
    loader = _Loader(text)
    try:
        return _Builder(loader, filename).document()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = _pos(mark) if mark is not None else (1, 1)
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        raise TaskFileError(f"YAML syntax error: {what}", file=filename, line=line,
                            column=col) from None
    except yaml.reader.ReaderError as exc:  # control characters and the like
        before = text[:exc.position]
        line, col = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        raise TaskFileError(f"character {exc.character!r} is not allowed in YAML ({exc.reason})",
                            file=filename, line=line, column=col) from None
    finally:
        loader.dispose()


class _Builder:
    """Builds plain data from parser events, one event at a time, with every limit enforced
    on the event that would break it."""

    def __init__(self, loader: Any, filename: str) -> None:
        self.loader, self.out = loader, Located(None, filename)
        self.nodes = 0

    def fail(self, event: Any, message: str) -> TaskFileError:
        line, col = _pos(event.start_mark)
        return TaskFileError(message, file=self.out.filename, line=line, column=col)

    def next(self) -> Any:
        event = self.loader.get_event()
        if isinstance(event, yaml.AliasEvent):
            raise self.fail(event, f"YAML aliases (*{event.anchor}) are not allowed in task "
                                   "files; write the value out in full")
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise self.fail(event, f"YAML anchors (&{anchor}) are not allowed in task files; "
                                   "write the value out in full")
        tag = getattr(event, "tag", None)
        if isinstance(event, yaml.ScalarEvent | yaml.CollectionStartEvent):
            self.nodes += 1
            if self.nodes > MAX_NODES:
                raise self.fail(event, f"the task file has more than {MAX_NODES:,} values")
            if tag is not None and tag not in (_SCALAR_TAGS | {_MAP_TAG, _SEQ_TAG}):
                shown = tag.replace(_TAG, "!!")
                why = " (Python tags can run code)" if "python" in tag else ""
                raise self.fail(event, f"the YAML tag {shown!r} is not allowed in task files"
                                       f"{why}; use plain strings, numbers, booleans, null, lists "
                                       "and mappings")
        return event

    def document(self) -> Located:
        self.next()  # StreamStart
        event = self.next()
        if isinstance(event, yaml.StreamEndEvent):
            raise self.fail(event, "the task file is empty; expected a mapping with at least "
                                   "name and goal")
        event = self.next()  # first event inside the document
        if not isinstance(event, yaml.MappingStartEvent):
            got = "a list" if isinstance(event, yaml.SequenceStartEvent) else (
                "nothing" if isinstance(event, yaml.DocumentEndEvent) else f"{event.value!r}")
            raise self.fail(event, f"a task file must be a mapping of keys (name, goal, model, "
                                   f"models, ...), got {got}")
        self.out.data = self.value(event, (), 1)
        self.next()  # DocumentEnd
        extra = self.next()
        if not isinstance(extra, yaml.StreamEndEvent):
            raise self.fail(extra, "a task file holds one YAML document; remove the '---' "
                                   "and everything after it")
        return self.out

    def value(self, event: Any, path: Path_, depth: int) -> Any:
        self.out.values[path] = _pos(event.start_mark)
        if depth > MAX_DEPTH:
            raise self.fail(event, f"the task file nests deeper than {MAX_DEPTH} levels")
        if isinstance(event, yaml.ScalarEvent):
            return self.scalar(event)
        if isinstance(event, yaml.SequenceStartEvent):
            items: list[Any] = []
            while not isinstance(child := self.next(), yaml.SequenceEndEvent):
                items.append(self.value(child, (*path, len(items)), depth + 1))
            return items
        return self.mapping(path, depth)

    def mapping(self, path: Path_, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        while not isinstance(key_event := self.next(), yaml.MappingEndEvent):
            if not isinstance(key_event, yaml.ScalarEvent):
                raise self.fail(key_event, "mapping keys must be plain strings, not lists or "
                                           "mappings")
            key = self.scalar(key_event)
            if not isinstance(key, str):
                raise self.fail(key_event, f"mapping keys must be strings, got "
                                           f"{type_name(key)} {key_event.value!r}; quote it")
            child_path = (*path, key)
            if key in result:
                first = self.out.keys[child_path][0]
                raise self.fail(key_event, f"duplicate key {key!r} (first written on line "
                                           f"{first}); each key may appear once")
            self.out.keys[child_path] = _pos(key_event.start_mark)
            result[key] = self.value(self.next(), child_path, depth + 1)
        return result

    def scalar(self, event: Any) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        kind = tag.rsplit(":", 1)[-1]
        if tag not in _SCALAR_TAGS:  # e.g. the implicit merge key '<<'
            raise self.fail(event, f"{event.value!r} (YAML {kind}) is not allowed in task files")
        if tag == _TAG + "int" and len(event.value) > MAX_INT_CHARS:
            # Python refuses to read (or print) integers of over 4,300 digits, and none of a
            # task's settings needs more than a few
            raise self.fail(event, f"this integer is {len(event.value):,} characters long; task "
                                   f"files take integers of at most {MAX_INT_CHARS} characters")
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        try:
            return self.loader.yaml_constructors[tag](self.loader, node)
        except (ValueError, OverflowError) as exc:  # e.g. a date like 2024-13-45
            shown = event.value if len(event.value) <= 40 else event.value[:40] + "..."
            raise self.fail(event, f"{shown!r} cannot be read as a YAML {kind} ({exc}); quote "
                                   "it to make it a string") from None


# ---------------------------------------------------------------------------------------------
# pydantic errors -> FILE:LINE:COL messages


_EXPECTED = {
    "int_type": "an integer", "int_from_float": "an integer", "int_parsing": "an integer",
    "string_type": "a string", "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false", "dict_type": "a mapping",
    "list_type": "a list", "model_type": "a mapping", "model_attributes_type": "a mapping",
    "none_required": "null",
}


def type_name(value: Any) -> str:
    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
                       (dict, "mapping"), (list, "list"), (type(None), "null")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def validation_errors(exc: ValidationError, src: Located,
                      model: type[BaseModel]) -> list[TaskFileError]:
    """One `TaskFileError` per field pydantic rejected, in file order."""
    by_path: dict[Path_, list[dict[str, Any]]] = {}
    for err in exc.errors():
        by_path.setdefault(_real_path(src.data, err["loc"]), []).append(dict(err))
    found = [_one_error(path, errs, src, model) for path, errs in by_path.items()]
    # a typo gives "unknown key" and "missing key" together: the unknown one explains both
    return sorted(found, key=lambda e: (e.message.startswith("missing"), e.line or 0,
                                        e.column or 0))


def _real_path(data: Any, loc: tuple[Any, ...]) -> Path_:
    """Drop the parts of a pydantic ``loc`` that name union members rather than data."""
    path: list[str | int] = []
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        elif isinstance(data, dict) and isinstance(part, str) and not _looks_like_member(part):
            path.append(part)  # a missing or unknown key: keep it, stop descending
            data = None
            continue
        else:
            continue
        path.append(part)
    return tuple(path)


def _looks_like_member(part: str) -> bool:
    return part.startswith(("literal[", "function-")) or part in (
        "bool", "int", "float", "str", "dict", "list") or part[:1].isupper()


def _one_error(path: Path_, errs: list[dict[str, Any]], src: Located,
               model: type[BaseModel]) -> TaskFileError:
    err = errs[0]
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        allowed = sorted(_fields_at(model, path[:-1]))
        close = difflib.get_close_matches(str(path[-1]), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return src.error(path, f"unknown key {path[-1]!r}{hint}; expected one of: "
                               f"{', '.join(allowed)}", key=True)
    if kind == "missing":
        return src.error(path[:-1], f"missing required key {path[-1]!r}", field=path)
    expected = [_expected(e) for e in errs]
    message = " or ".join(dict.fromkeys(x for x in expected if x))
    if kind == "value_error":
        return src.error(path, message)
    return src.error(path, f"expected {message}, got {_show(value)}")


def _expected(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind in _EXPECTED:
        return _EXPECTED[kind]
    if kind == "literal_error":
        return "one of: " + str(err["ctx"]["expected"]).replace(" or ", ", ")
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    msg = str(err["msg"]).removeprefix("Input should be ")
    return msg[:1].lower() + msg[1:]


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f"string {value[:60]!r}" if len(value) <= 60 else f"a string of {len(value)} chars"
    if isinstance(value, dict | list):
        return f"a {type_name(value)}"
    return f"{type_name(value)} {value!r}"


def _fields_at(model: type[BaseModel], path: Path_) -> list[str]:
    """The keys allowed in the mapping at `path` (walking the model's annotations)."""
    tp: Any = model
    for part in path:
        tp = _step(tp, part)
        if tp is None:
            return []
    models = [t for t in _flatten(tp) if isinstance(t, type) and issubclass(t, BaseModel)]
    return list(models[0].model_fields) if models else []


def _step(tp: Any, part: str | int) -> Any:
    for t in _flatten(tp):
        if isinstance(t, type) and issubclass(t, BaseModel) and isinstance(part, str):
            if part in t.model_fields:
                return t.model_fields[part].annotation
        origin = typing.get_origin(t)
        if origin is dict:
            return typing.get_args(t)[1]
        if origin is list and isinstance(part, int):
            return typing.get_args(t)[0]
    return None


def _flatten(tp: Any) -> Iterator[Any]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            yield from _flatten(arg)
    else:
        yield tp
