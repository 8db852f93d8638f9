"""Python functions as tools: the `tool` decorator and import references.

    from agentkit import tool

    @tool
    def lookup(city: str, units: Literal["C", "F"] = "C") -> dict[str, float]:
        \"\"\"Current weather for a city.

        Args:
            city: The city, e.g. "Oslo".
            units: Celsius or Fahrenheit.
        \"\"\"

The name and description come from the function and its docstring (Google, NumPy or reST
style; each parameter's description too), the argument schema from the signature through
pydantic, so ``Annotated[int, Field(ge=1)]`` and pydantic models work as argument types.
Arguments are validated before the call; a bad argument goes back to the model as an
``invalid_arguments`` error it can act on. A sync function runs in a worker thread, never on
the event loop. A parameter annotated `ToolContext` receives the run's context (workspace,
``emit``, node id) and is not part of the schema.

The return value may be a str (the model reads it as is), any value pydantic can serialise
(a model, a dataclass, a dict: the model reads its JSON) or a `ToolOutput` (text for the model,
``data`` beside it for the ledger and the application). An exception is an ``exception`` tool
error with its message, and a `ToolError` keeps its own code: the run goes on.

The decorated object is a `Tool` and still a callable with the function's signature.

`load_reference` resolves the task file form ``"mypkg.weather:lookup"``.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import json
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Generic, ParamSpec, TypeVar, cast, get_type_hints, overload

import docstring_parser
import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from agentkit.errors import ConfigError, ToolError
from agentkit.tools.base import TOOL_NAME, Tool, ToolArgs, ToolContext, ToolOutput

__all__ = ["DEFAULT_MAX_RESULT_CHARS", "FunctionTool", "as_tools", "load_reference", "tool"]

P = ParamSpec("P")
R = TypeVar("R")

#: a result longer than this is a ``too_large`` error (the model cannot read 50 MB anyway)
DEFAULT_MAX_RESULT_CHARS = 200_000
#: an exception's message is cut here before the model reads it
_MAX_ERROR_CHARS = 2000


class FunctionTool(Tool, Generic[P, R]):
    """A Python function as a tool. Made by `tool`; calling it calls the function."""

    fn: ClassVar[Callable[..., Any]]
    ref: ClassVar[str]
    #: the function's parameters in order: (name, field name in args_model, positional-only)
    params: ClassVar[tuple[tuple[str, str, bool], ...]]
    context_param: ClassVar[str | None] = None
    is_async: ClassVar[bool] = False
    max_result_chars: ClassVar[int] = DEFAULT_MAX_RESULT_CHARS

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        result: R = type(self).fn(*args, **kwargs)
        return result

    def __repr__(self) -> str:
        return f"<tool {self.name!r} from {self.ref}>"

    @property
    def origin(self) -> dict[str, Any]:
        return {"source": "python", "ref": self.ref}

    async def call(self, args: Any, ctx: ToolContext) -> ToolOutput:
        positional = [getattr(args, f) for _, f, pos_only in self.params if pos_only]
        keywords = {p: getattr(args, f) for p, f, pos_only in self.params if not pos_only}
        if self.context_param is not None:
            keywords[self.context_param] = ctx
        fn = type(self).fn
        try:
            if self.is_async:
                value = await fn(*positional, **keywords)
            else:  # a thread: a slow sync function never blocks the other agents
                value = await asyncio.to_thread(fn, *positional, **keywords)
        except ToolError as err:
            err.tool = err.tool or self.name
            raise
        except Exception as exc:
            raise _exception_error(exc, self.name) from None
        return to_output(value, tool=self.name, limit=self.max_result_chars)


def _exception_error(exc: Exception, tool: str) -> ToolError:
    """The exception as the model reads it: type and message (bounded); where it was raised
    goes to the ledger only."""
    text = f"{type(exc).__name__}: {exc}"
    if len(text) > _MAX_ERROR_CHARS:
        text = text[:_MAX_ERROR_CHARS] + f"... ({len(text):,} characters in all)"
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    where = [f"{f.filename}:{f.lineno} in {f.name}" for f in frames]
    return ToolError("exception", text, tool=tool,
                     details={"exception": type(exc).__qualname__, "where": where})


def to_output(value: Any, *, tool: str, limit: int) -> ToolOutput:
    """A function's return value as a `ToolOutput` (``data["result"]`` holds the value)."""
    if isinstance(value, ToolOutput):
        out = value
    elif isinstance(value, str):
        out = ToolOutput(value, {"result": value})
    else:
        try:
            plain = pydantic_core.to_jsonable_python(value)
            text = json.dumps(plain, ensure_ascii=False)
        except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
            raise ToolError("bad_result", f"the tool returned a {type(value).__name__}, which "
                            f"cannot be turned into JSON ({exc}); return a str, a JSON value, "
                            f"a pydantic model or a ToolOutput", tool=tool) from None
        out = ToolOutput(text, {"result": plain})
    if len(out.content) > limit:
        raise ToolError("too_large", f"the result has {len(out.content):,} characters, more "
                        f"than the limit of {limit:,}; return less (filter, summarise, or take "
                        f"a page/limit argument)", tool=tool,
                        retry_hint="ask for a smaller part of the result",
                        details={"chars": len(out.content), "limit": limit})
    return out


# ---------------------------------------------------------------------------------------------
# The decorator


@overload
def tool(fn: Callable[P, R], /) -> FunctionTool[P, R]: ...


@overload
def tool(*, name: str | None = None, description: str | None = None,
         timeout: float | None = None, concurrency: int | None = None,
         side_effects: bool = False, idempotent: bool = False,
         max_result_chars: int = DEFAULT_MAX_RESULT_CHARS,
         ) -> Callable[[Callable[P, R]], FunctionTool[P, R]]: ...


def tool(fn: Callable[P, R] | None = None, /, *, name: str | None = None,
         description: str | None = None, timeout: float | None = None,
         concurrency: int | None = None, side_effects: bool = False, idempotent: bool = False,
         max_result_chars: int = DEFAULT_MAX_RESULT_CHARS,
         ) -> FunctionTool[P, R] | Callable[[Callable[P, R]], FunctionTool[P, R]]:
    """Turn a typed function (sync or async) into a tool; see the module docstring.

    Options: `name` (default: the function's name), `description` (default: the docstring
    without its parameter section), `timeout` in seconds (default 60; the call is abandoned
    with a ``timeout`` error, though a sync function's thread cannot be stopped and finishes
    in the background), `concurrency` (at most this many calls at once in a run),
    `side_effects` (the function changes something outside the run: durable runs and
    approvals use this declaration), `idempotent` (with `side_effects`: calling it twice with
    the same arguments does no more than once, so a call in flight when a run crashed may be
    re-run on resume; otherwise it is not repeated), `max_result_chars` (a longer result is a
    ``too_large`` error).
    """

    def make(func: Callable[P, R]) -> FunctionTool[P, R]:
        return _make_tool(func, name=name, description=description, timeout=timeout,
                          concurrency=concurrency, side_effects=side_effects,
                          idempotent=idempotent, max_result_chars=max_result_chars)

    return make(fn) if fn is not None else make


def _make_tool(func: Callable[P, R], *, name: str | None, description: str | None,
               timeout: float | None, concurrency: int | None, side_effects: bool,
               idempotent: bool, max_result_chars: int) -> FunctionTool[P, R]:
    if isinstance(func, Tool):
        raise ConfigError(f"{func!r} is a tool already; apply @tool once")
    if not callable(func):
        raise ConfigError(f"@tool needs a function, not a {type(func).__name__}")
    ref = _ref(func)
    tool_name = str(name or getattr(func, "__name__", "") or "")
    if not TOOL_NAME.match(tool_name):
        raise ConfigError(f"tool name {tool_name!r} (from {ref}) is not allowed: models accept "
                          f"1-64 letters, digits, '_' or '-'; pass @tool(name=...)")
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"@tool(timeout=...) of {ref} must be a positive number of seconds")
    if concurrency is not None and concurrency < 1:
        raise ConfigError(f"@tool(concurrency=...) of {ref} must be at least 1")
    doc = docstring_parser.parse(inspect.getdoc(func) or "")
    args_model, params, context_param = _signature(func, tool_name, ref, doc)
    text = description or doc.description or ""
    attrs: dict[str, Any] = {
        "name": tool_name, "description": text.strip() or f"The {tool_name} tool.",
        "args_model": args_model, "fn": staticmethod(func), "ref": ref, "params": params,
        "context_param": context_param, "is_async": inspect.iscoroutinefunction(func),
        "side_effects": side_effects, "idempotent": idempotent,
        "max_result_chars": max_result_chars,
        "__doc__": inspect.getdoc(func)}
    if timeout is not None:
        attrs["timeout_s"] = float(timeout)
    if concurrency is not None:
        attrs["concurrency_class"] = f"tool:{tool_name}"
        attrs["concurrency_limit"] = concurrency
    cls = type(f"FunctionTool[{tool_name}]", (FunctionTool,), attrs)
    made: FunctionTool[P, R] = cls()
    return made


def _ref(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", None) or "?"
    return f"{module}:{getattr(func, '__qualname__', repr(func))}"


def _signature(func: Callable[..., Any], tool_name: str, ref: str, doc: docstring_parser.Docstring
               ) -> tuple[type[ToolArgs], tuple[tuple[str, str, bool], ...], str | None]:
    """The arguments model, the parameters in call order, and the context parameter."""
    try:
        sig = inspect.signature(func)
        hints = get_type_hints(func, include_extras=True)
    except (TypeError, ValueError, NameError) as exc:
        raise ConfigError(f"cannot read the signature of {ref} for @tool: {exc}") from None
    described = {p.arg_name: p.description for p in doc.params if p.description}
    fields: dict[str, Any] = {}
    params: list[tuple[str, str, bool]] = []
    context: str | None = None
    for param in sig.parameters.values():
        hint = hints.get(param.name, Any)
        if _is_context(hint):
            context = param.name
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigError(f"@tool {ref}: *{param.name} / **{param.name} cannot be described "
                              f"to a model; list each argument")
        field_name = param.name if _safe_field(param.name) else f"arg_{param.name}"
        # a description given with Annotated[..., Field(description=...)] wins over the docstring
        own = any(isinstance(m, FieldInfo) and m.description
                  for m in getattr(hint, "__metadata__", ()))
        extra: dict[str, Any] = {}
        if field_name != param.name:
            extra["alias"] = param.name
        if not own and param.name in described:
            extra["description"] = described[param.name]
        default = ... if param.default is param.empty else param.default
        fields[field_name] = (hint, Field(default, **extra))
        params.append((param.name, field_name, param.kind == param.POSITIONAL_ONLY))
    model = create_model(f"{tool_name}_args", __base__=ToolArgs, __doc__=None, **fields)
    model.model_config = ConfigDict(extra="forbid", populate_by_name=True)
    model.model_rebuild(force=True)
    return cast(type[ToolArgs], model), tuple(params), context


def _is_context(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, ToolContext)


def _safe_field(name: str) -> bool:
    """Whether `name` can be a pydantic field as is (not a BaseModel attribute or private)."""
    return not (name.startswith(("_", "model_")) or hasattr(BaseModel, name))


# ---------------------------------------------------------------------------------------------
# Tools from objects and import references


def as_tools(obj: Any, source: str) -> list[Tool]:
    """`obj` as tools: a Tool, a Tool class (instantiated), a function (wrapped with `tool`),
    or a list/tuple of these. `source` names where it came from in error messages."""
    if isinstance(obj, Tool):
        return [obj]
    if isinstance(obj, type) and issubclass(obj, Tool):
        try:
            return [obj()]
        except TypeError as exc:
            raise ConfigError(f"{source}: the tool class {obj.__name__} cannot be made without "
                              f"arguments ({exc}); export an instance instead") from None
    if isinstance(obj, list | tuple):
        return [t for item in obj for t in as_tools(item, source)]
    if callable(obj):
        return [tool(obj)]
    raise ConfigError(f"{source} is a {type(obj).__name__}, not a tool: export a function, a "
                      f"@tool, a Tool instance or class, or a list of them")


def load_reference(ref: str, search_path: str | Path | None = None) -> list[Tool]:
    """The tools behind ``"package.module:attribute"``. The module is imported normally; if it
    is not importable, `search_path` (the task file's folder) is tried too, so a task file
    can sit next to its tools module."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"tool reference {ref!r} must look like 'package.module:function'")
    try:
        with _searching(search_path, module_name):
            module = importlib.import_module(module_name)
    except ImportError as exc:
        where = f" or in {search_path}" if search_path else ""
        raise ConfigError(f"tools: cannot import {module_name!r} for {ref!r} ({exc}); the "
                          f"module must be installed, on PYTHONPATH{where}") from None
    except Exception as exc:  # the user's module failed while importing
        raise ConfigError(f"tools: importing {module_name!r} for {ref!r} failed: "
                          f"{type(exc).__name__}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"tools: {module_name!r} has no {attr!r} (for {ref!r})") from None
    return as_tools(obj, f"tools: {ref!r}")


@contextmanager
def _searching(folder: str | Path | None, module_name: str) -> Iterator[None]:
    """Put `folder` first on sys.path during the import, if the module's top package is
    there and not importable otherwise."""
    top = module_name.split(".", 1)[0]
    base = Path(folder) if folder is not None else None
    usable = base is not None and top not in sys.modules and (
        (base / f"{top}.py").is_file() or (base / top / "__init__.py").is_file())
    if not usable or importlib.util.find_spec(top) is not None:
        yield
        return
    entry = str(base)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        if entry in sys.path:
            sys.path.remove(entry)


def iter_tools(items: Iterable[Any], source: str) -> Iterator[Tool]:
    """Each item of `items` as tools (see `as_tools`)."""
    for item in items:
        yield from as_tools(item, source)
