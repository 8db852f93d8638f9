"""The ``agentkit`` command line: run, resume, replay, approve, validate, schema, report,
audit, tool, tools, mcp, sandbox.

Exit codes, the same for every command:

    0    success (run succeeded, file valid, ledger intact, tool ok)
    1    the work failed (run failed, ledger tampered, tool returned an error)
    2    bad input (task file, arguments, unknown tool, missing setup): the message says what
    130  interrupted (Ctrl-C = SIGINT)
    143  stopped by SIGTERM (kill, docker stop, systemd, CI timeouts)
    129  stopped by SIGHUP (the terminal closed)

For the last three (128 + the signal's number, the shell's convention) the run is cancelled
cleanly: sub-agents, HTTP streams and containers are stopped and the ledger is closed with its
``run.finished`` record.

Machine-readable output (``--json``) goes to stdout as one JSON object; progress and human
messages go to stderr, so ``agentkit run task.yaml --json | jq`` works.
"""

from __future__ import annotations

import sys

# each command module registers its commands on the shared app when imported
from agentkit.cli import approve, audit, mcp, report, resume, run, sandbox, schema, tool, tools
from agentkit.cli._app import EXIT_INTERRUPTED, app, err_console

__all__ = ["app", "main"]

#: the command modules (imported for their registrations on `app`)
COMMANDS = (approve, audit, mcp, report, resume, run, sandbox, schema, tool, tools)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err_console().print("interrupted", markup=False)
        sys.exit(EXIT_INTERRUPTED)

