"""Task files that used to crash or hang `agentkit validate` now fail cleanly: exit 2 and the
problem's location, through the real command in a child process.

- a 100,000-digit integer (Python refuses to read integers of over 4,300 digits: a traceback);
- a date YAML cannot build (``2024-13-45``: a traceback);
- a task "file" that is a FIFO (opening it for reading waited for a writer forever), a folder or
  a device: refused before a byte is read.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAD = "name: x\ngoal: y\nmodel: m\n"


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    # the timeout only keeps a hang (the FIFO case before the fix) from stalling the suite
    return subprocess.run([sys.executable, "-m", "agentkit", "validate", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_a_100000_digit_integer_is_an_error_at_its_position(tmp_path: Path) -> None:
    path = tmp_path / "task.yaml"
    path.write_text(HEAD + "models:\n  m: {model: x, max_tokens: " + "9" * 100_000 + "}\n")
    done = validate(path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{path}:5:29: this integer is 100,000 characters long" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_date_yaml_cannot_build_is_an_error_at_its_position(tmp_path: Path) -> None:
    path = tmp_path / "task.yaml"
    path.write_text(HEAD + "models: {m: {model: x}}\nworkspace: 2024-13-45\n")
    done = validate(path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{path}:5:12: '2024-13-45' cannot be read as a YAML timestamp" in done.stderr
    assert "quote it" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
def test_a_task_file_that_is_not_a_regular_file_is_refused_at_once(tmp_path: Path,
                                                                   kind: str) -> None:
    """A FIFO with no writer used to block `validate` forever; it, a folder and /dev/zero
    are named for what they are, exit 2."""
    path = tmp_path / "task.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        path = Path("/dev/zero")
    done = validate(path)
    assert done.returncode == 2, done.stderr[-2000:]
    what = {"fifo": "a named pipe (FIFO)", "folder": "a folder", "device": "a character device"}
    assert f"{path}: this is {what[kind]}, not a regular file" in done.stderr
