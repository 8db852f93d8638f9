"""What every command of the CLI shares: the Typer apps, exit codes, output helpers, loading a
task file with its ``--set`` overrides and pre-run checks."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

from agentkit import _yaml
from agentkit._version import __version__
from agentkit.errors import TaskFileError, UserError
from agentkit.secrets import TextRedactor
from agentkit.task import TaskSpec, load_task

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "STOP_SIGNALS", "app",
           "audit_app", "err_console", "exit_code_for_signal", "fail", "load", "load_checked",
           "out", "sandbox_app", "user_errors"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
#: the signals that stop a run cleanly, as Ctrl-C does: what `kill`, `docker stop`, systemd and
#: CI timeouts send (SIGTERM), and a closed terminal (SIGHUP)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_EXIT_HELP = ("Exit codes: 0 ok, 1 failed, 2 bad input, 130 interrupted (Ctrl-C), 143 stopped by "
              "SIGTERM, 129 by SIGHUP.")


def exit_code_for_signal(signum: int) -> int:
    """The shell's convention, 128 + the signal's number: 130 SIGINT, 143 SIGTERM, 129 SIGHUP."""
    return 128 + signum


app = typer.Typer(name="agentkit", no_args_is_help=True, add_completion=False, rich_markup_mode="markdown",
                  pretty_exceptions_enable=False,
                  help="Planner + parallel sub-agents with tools, sandboxes and an audit ledger. "
                       + _EXIT_HELP)
audit_app = typer.Typer(no_args_is_help=True, help="Check and read audit ledgers.")
sandbox_app = typer.Typer(no_args_is_help=True, help="Build the code sandbox image.")
app.add_typer(audit_app, name="audit")
app.add_typer(sandbox_app, name="sandbox")


def _show_version(value: bool) -> None:
    if value:
        out(f"agentkit {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Planner + parallel sub-agents with tools, sandboxes and an audit ledger."""


def err_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    err_console().print(f"error: {message}", markup=False)
    raise typer.Exit(code)


@contextmanager
def user_errors(redactor: TextRedactor | None = None) -> Iterator[None]:
    """Every UserError becomes its message on stderr and exit 2 (all of a file's errors)."""
    redact = (redactor or TextRedactor()).text
    try:
        yield
    except UserError as exc:
        console = err_console()
        console.print(f"error: {redact(str(exc))}", markup=False)
        for other in getattr(exc, "others", []):
            console.print(f"error: {redact(str(other))}", markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def load(task_file: Path, overrides: Sequence[str] = ()) -> TaskSpec:
    """The task file, validated, with ``--set KEY=VALUE`` overrides applied."""
    with user_errors():
        return apply_overrides(load_task(task_file), overrides)


def load_checked(task_file: Path, overrides: Sequence[str] = (), *,
                 environ: dict[str, str] | None = None) -> TaskSpec:
    """`load`, then every problem a run would meet before its first model call (unknown
    profile, bad prompt override, missing sandbox input; with `environ`, API key variables
    that are not set), all at once and located in the file."""
    from agentkit._preflight import problems

    task = load(task_file, overrides)
    found = problems(task, workspace=Path(task.workspace or ".").resolve(), environ=environ)
    if found:
        with user_errors():
            raise _located(task_file, found)
    return task


def _located(task_file: Path, found: list[tuple[tuple[str | int, ...], str]]) -> TaskFileError:
    try:
        src = _yaml.load_yaml(task_file.read_text(encoding="utf-8"), str(task_file))
        errors = [src.error(path, message) for path, message in found]
    except (OSError, UnicodeDecodeError, TaskFileError):  # the file changed under us
        errors = [TaskFileError(message, file=str(task_file), field=_yaml.format_path(path))
                  for path, message in found]
    first = errors[0]
    first.others = errors[1:]  # type: ignore[attr-defined]
    return first


# ---------------------------------------------------------------------------------------------
# --set KEY=VALUE


def apply_overrides(task: TaskSpec, overrides: Sequence[str]) -> TaskSpec:
    """``models.m.base_url=http://127.0.0.1:8000/v1``: dotted keys into the task, values read
    as YAML (``60``, ``true``, ``[run_code]``; anything that is not valid YAML is a string).
    Relative `workspace`/`output` given here resolve against the current directory."""
    if not overrides:
        return task
    data = task.model_dump(mode="python", exclude_unset=False)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise TaskFileError(f"--set {item!r}: expected KEY=VALUE, e.g. "
                                "--set models.m.base_url=http://127.0.0.1:8000/v1", file="--set")
        key = key.strip()
        value = _parse_value(raw)
        if key in ("workspace", "output") and isinstance(value, str):
            value = str(Path(value).expanduser().resolve())
        _assign(data, key, value)
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise TaskFileError(f"--set: {where}: {first['msg']}", file="--set") from None


def _parse_value(raw: str) -> Any:
    try:
        return _yaml.load_yaml(f"v: {raw}", "--set").data["v"]
    except (TaskFileError, TypeError, KeyError):
        return raw


def _assign(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part) if isinstance(node, dict) else None
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise TaskFileError(f"--set {key}: {'.'.join(parts[:i + 1])} is not a mapping "
                                f"(it is {json.dumps(child, default=str)[:60]})", file="--set")
        node = child
    node[parts[-1]] = value
