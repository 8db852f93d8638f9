"""The text a program's run is shown as (the `run_code` result), and how to read it back.

One owner for the format: `run_code` renders it; the swarm reads a node's program output
from it (node outputs quote it verbatim, the consensus vote compares it, grounding ignores
failed programs) and the local model's action grammar stops a small model from answering
right after a failed program.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["exit_code", "render", "stdout_of", "succeeded"]

_HEAD = re.compile(r"^exit code (-?\d+) \(")


def render(code: int, duration_s: float, stdout: str, stderr: str, *, state_reset: bool = False,
           files: Sequence[str] = ()) -> str:
    """``exit code N (T s)``, then ``--- stdout ---`` / ``--- stderr ---`` / files sections."""
    lines = [f"exit code {code} ({duration_s:.2f} s)"]
    if state_reset:
        lines.append("note: the Python interpreter was restarted; earlier variables are gone")
    for name, text in (("stdout", stdout), ("stderr", stderr)):
        if text:
            lines += [f"--- {name} ---", text.rstrip("\n")]
    if files:
        lines += ["--- files in /workspace ---", *files]
    return "\n".join(lines)


def exit_code(content: str) -> int | None:
    """The exit code of a rendered run (None: not a program run, e.g. a tool error)."""
    match = _HEAD.match(content)
    return int(match.group(1)) if match else None


def succeeded(content: str) -> bool:
    return exit_code(content) == 0


def stdout_of(content: str) -> str:
    """What the program printed ('' if nothing)."""
    if exit_code(content) is None:
        return ""
    return content.partition("\n--- stdout ---\n")[2].split("\n--- ")[0]
