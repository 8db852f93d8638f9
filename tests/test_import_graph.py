"""The package's import graph: no cycles among `agentkit.*` modules, no function-local imports.

Read from the source with `ast` (nothing is imported): every ``import``/``from ... import`` of an
``agentkit`` module is an edge, including those under ``if TYPE_CHECKING:`` (a cycle the type
checker needs is still a cycle in the design). A package's ``__init__`` re-exports are edges
too. Function-local imports hide dependencies from readers and tools; only the CLI may use them
(its commands import what they need, to keep ``agentkit --help`` fast).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1] / "agentkit"
LOCAL_IMPORTS_ALLOWED = {"agentkit.cli"}


def _modules() -> dict[str, Path]:
    """Module name -> file, walking agentkit/ and the folders linked into it (tools/ ...)."""
    out: dict[str, Path] = {}
    files = [Path(d) / f for d, _, names in os.walk(ROOT, followlinks=True)
             for f in names if f.endswith(".py")]
    for path in sorted(files):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(module: str, tree: ast.Module, known: set[str]) -> set[str]:
    """agentkit modules `module` imports (a name imported from a package counts as the
    submodule when there is one)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("agentkit")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.startswith("agentkit"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return {m for m in found if m in known and m != module}


def _graph() -> nx.DiGraph:
    modules = _modules()
    graph = nx.DiGraph()
    for name, path in modules.items():
        graph.add_node(name)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for target in _imports(name, tree, set(modules)):
            graph.add_edge(name, target)
    return graph


def test_no_import_cycles_among_agentkit_modules() -> None:
    """Fails naming each cycle (e.g. agentkit.runtime -> agentkit.tools -> agentkit.runtime)."""
    graph = _graph()
    # the walk really saw the package, the symlinked folders included
    assert {"agentkit.tools.base", "agentkit.swarm.scheduler", "agentkit.sandboxes.docker"} <= set(graph)
    cycles = [" -> ".join([*c, c[0]]) for c in nx.simple_cycles(graph)]
    assert cycles == [], "import cycles:\n" + "\n".join(sorted(cycles)[:20])


def test_no_function_local_imports_outside_the_cli() -> None:
    """An import inside a function or method (outside agentkit.cli) fails, with its place."""
    offenders: list[str] = []
    for name, path in _modules().items():
        if name in LOCAL_IMPORTS_ALLOWED or name.startswith("agentkit.cli."):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    offenders.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} in {func.name}()")
    assert offenders == [], "function-local imports:\n" + "\n".join(offenders)
