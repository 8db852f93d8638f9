"""Optional extras, imported on first use through one door.

A feature that needs an optional dependency (the embedded model needs ``llama_cpp`` from the
``[local]`` extra; later Ray, OpenTelemetry, MCP) calls `require` when it is first used, so
that importing agentkit never imports them and a missing extra is a `SetupError` naming the
``pip install`` command, never an ``ImportError`` from deep inside a run.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from agentkit.errors import SetupError

__all__ = ["require"]


def require(module: str, extra: str, *, feature: str) -> ModuleType:
    """Import `module` (part of the `extra`), or explain which extra to install for `feature`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SetupError(f"{feature} needs the optional extra [{extra}]: pip install "
                         f"'agentkit-swarm[{extra}]' (or pip install -e '.[{extra}]' in a checkout); "
                         f"importing {module} failed: {exc}") from None
