"""What every command of the CLI shares: the Typer apps, exit codes, output helpers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console

from agentkit.errors import UserError
from agentkit.task import TaskSpec, load_task

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "app", "audit_app",
           "err_console", "fail", "load", "out", "sandbox_app", "user_errors"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
_EXIT_HELP = "Exit codes: 0 ok, 1 failed, 2 bad input, 130 interrupted."

app = typer.Typer(name="agentkit", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False,
                  help="Planner + parallel sub-agents with tools, sandboxes and an audit ledger. "
                       + _EXIT_HELP)
audit_app = typer.Typer(no_args_is_help=True, help="Check and read audit ledgers.")
sandbox_app = typer.Typer(no_args_is_help=True, help="Build the code sandbox image.")
app.add_typer(audit_app, name="audit")
app.add_typer(sandbox_app, name="sandbox")


def err_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    err_console().print(f"error: {message}", markup=False)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Every UserError becomes its message on stderr and exit 2 (all of a file's errors)."""
    try:
        yield
    except UserError as exc:
        console = err_console()
        console.print(f"error: {exc}", markup=False)
        for other in getattr(exc, "others", []):
            console.print(f"error: {other}", markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def load(task_file: Path) -> TaskSpec:
    with user_errors():
        return load_task(task_file)


