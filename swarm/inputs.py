"""What the task's input files look like, for the planner's and the workers' prompts (``$files``).

Why: a small model writes correct code for a data file only when it knows the file's exact
shape; told only "sales.csv", the 1.5B default model guessed column names and types, and the
planner had to be given the header in task-specific prompt text. So the default prompts show,
for each ``sandbox.inputs`` file, its kind, size in rows or items, header or keys and first
record, read here from the workspace (the first `PREVIEW_BYTES` only). The preview is file
content, so it is marked untrusted like any other.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["PREVIEW_BYTES", "describe_inputs"]

PREVIEW_BYTES = 65_536
_CELL = 60  # characters kept of one value or record in the preview


def describe_inputs(workspace: Path, names: Sequence[str]) -> str:
    """One line per input file, inside ``<untrusted>`` tags ("" when there are none)."""
    root = workspace.resolve()
    lines = []
    for name in names:
        path = (root / name).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            continue  # the sandbox reports a missing input; nothing to show here
        with path.open("rb") as fh:
            head = fh.read(PREVIEW_BYTES + 1)
        complete = len(head) <= PREVIEW_BYTES
        text = head[:PREVIEW_BYTES].decode("utf-8", errors="replace")
        lines.append(f"- {name}: {_describe(name, text, complete, path)}")
    if not lines:
        return ""
    return ("Input files (in the working directory of run_code):\n<untrusted>\n"
            + "\n".join(lines) + "\n</untrusted>")


def _describe(name: str, text: str, complete: bool, path: Path) -> str:
    suffix = name.lower().rsplit(".", 1)[-1]
    if suffix in ("csv", "tsv"):
        return _csv(text, complete, path, "\t" if suffix == "tsv" else ",")
    if suffix == "json" and complete:
        try:
            return _json(json.loads(text))
        except ValueError:
            pass
    first = text.splitlines()[0][:_CELL * 2] if text.strip() else ""
    return f"text, {path.stat().st_size} bytes; first line: {first!r}"


def _csv(text: str, complete: bool, path: Path, delimiter: str) -> str:
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    if not rows:
        return "CSV, empty"
    if complete:
        count = f"{len(rows) - 1} data rows"
    else:  # count the rest without holding it: lines, an estimate for quoted newlines
        with path.open("rb") as fh:
            count = f"about {sum(1 for _ in fh) - 1} data rows"
    header = delimiter.join(rows[0])
    first = f"; first row: {delimiter.join(rows[1])[:_CELL * 3]}" if len(rows) > 1 else ""
    return f"CSV, {count}; header: {header}{first}"


def _json(value: Any) -> str:
    if isinstance(value, list):
        first = f"; first item: {json.dumps(value[0])[:_CELL * 4]}" if value else ""
        keys = (f"; keys of each item: {', '.join(map(str, value[0]))}"
                if value and isinstance(value[0], dict) else "")
        return f"JSON list of {len(value)} items{keys}{first}"
    if isinstance(value, dict):
        parts = []
        for key, item in list(value.items())[:12]:
            kind = f"list of {len(item)}" if isinstance(item, list) else type(item).__name__
            parts.append(f"{key} ({kind})")
        return f"JSON object with keys: {', '.join(parts)}; starts: {json.dumps(value)[:_CELL * 4]}"
    return f"JSON {type(value).__name__}: {json.dumps(value)[:_CELL * 2]}"
