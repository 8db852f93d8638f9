"""The public surface is exactly what each package's `__all__` lists (httpx's guard): a name
added to an ``__init__`` without `__all__`, or listed but missing, fails here."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGES = ["agentkit", "agentkit.tools", "agentkit.swarm", "agentkit.sandboxes", "agentkit.testing"]


def public_names(init: Path, package: str) -> set[str]:
    """Public names bound at the top level of an ``__init__.py``: its classes, functions and
    assignments, and names it imports from inside agentkit (not stdlib helpers it uses)."""
    names: set[str] = set()
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            internal = node.level > 0 or (node.module or "").startswith("agentkit")
            if internal:
                names.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return {n for n in names if not n.startswith("_") or n == "__version__"}


@pytest.mark.parametrize("package", PACKAGES)
def test_all_matches_what_init_exports(package: str) -> None:
    module = importlib.import_module(package)
    declared = getattr(module, "__all__", None)
    if declared is None:
        assert package != "agentkit", "agentkit has no __all__"
        return  # a subpackage without __all__ (yet) exports nothing by contract
    assert module.__file__ is not None
    exported = public_names(Path(module.__file__), package)
    assert sorted(declared) == sorted(exported), (
        f"{package}: only in __all__: {sorted(set(declared) - exported)}; "
        f"exported but not in __all__: {sorted(exported - set(declared))}")
    assert len(declared) == len(set(declared)), f"{package}: duplicates in __all__"
    for name in declared:
        assert getattr(module, name, None) is not None, f"{package}.{name} does not resolve"


def test_top_level_all_is_sorted() -> None:
    import agentkit

    assert list(agentkit.__all__) == sorted(agentkit.__all__)
