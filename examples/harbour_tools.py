"""Python tools for the examples: high and low water at a few Norwegian ports.

Used two ways: `own_tools.py` imports them and passes them to `run_sync(..., tools=[...])`;
`own_tools.yaml` names one in its `tools` list as the import reference
"harbour_tools:tide_times" (the module sits next to the task file, where the run looks for it).
The table is made up for the example: the point is the wiring, not the oceanography.
"""

from __future__ import annotations

from typing import Literal

from agentkit import tool

Port = Literal["Bergen", "Oslo", "Stavanger"]

_TIDES: dict[str, dict[str, list[str]]] = {
    "Bergen": {"high": ["06:12", "18:31"], "low": ["00:05", "12:20"]},
    "Oslo": {"high": ["09:47", "22:02"], "low": ["03:30", "15:51"]},
    "Stavanger": {"high": ["05:40", "17:58"], "low": ["11:49", "23:59"]},
}


@tool
def tide_times(port: Port, kind: Literal["high", "low"] = "high") -> dict[str, object]:
    """High or low water times at a Norwegian port today (local time).

    Args:
        port: The port: Bergen, Oslo or Stavanger.
        kind: "high" for high water, "low" for low water.
    """
    return {"port": port, "kind": kind, "times": _TIDES[port][kind]}


@tool
def ports() -> list[str]:
    """The ports tide_times knows."""
    return sorted(_TIDES)
