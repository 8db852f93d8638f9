"""The type checker sees across the package: `agentkit.tools`, `agentkit.swarm` and
`agentkit.sandboxes` (top-level folders linked into `agentkit/`) are real types to mypy, not
`Any`. A snippet that misuses them must fail the project's own mypy configuration, and the same
snippet used correctly must pass (so the failure is the misuse, not the set-up)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

GOOD = """
from agentkit.tools import ToolOutput
from agentkit.swarm import NodeOutput
from agentkit.sandboxes import ExecResult

out = ToolOutput(content="text", data={"exit_code": 0})
node = NodeOutput(output=out.content)
result = ExecResult(exit_code=0, stdout="", stderr="", duration_s=0.1)
"""

BAD = """
from agentkit.tools import ToolOutput
from agentkit.swarm import NodeOutput
from agentkit.sandboxes import ExecResult

out = ToolOutput(content=42)
node = NodeOutput(output=out.data)
result = ExecResult(exit_code="zero", stdout="", stderr="", duration_s=0.1)
"""


def _mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(source)
    # the project's config (strict, the symlinked folders) and its cache (warm after CI's mypy)
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                           str(snippet)], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_mypy_rejects_misused_agentkit_types_across_the_linked_folders(tmp_path: Path) -> None:
    good = _mypy(tmp_path, GOOD)
    assert good.returncode == 0, good.stdout + good.stderr
    bad = _mypy(tmp_path, BAD)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    for line in (6, 7, 8):  # one error per misuse: tools, swarm, sandboxes
        assert f"snippet.py:{line}: error" in bad.stdout, bad.stdout
