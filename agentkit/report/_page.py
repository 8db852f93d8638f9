"""The report as one HTML file: the page, its style and script, and the run's data inline."""

from __future__ import annotations

import html
import json
import re
from importlib import resources
from typing import Any

from agentkit._version import __version__
from agentkit.report._model import RunModel

__all__ = ["render_page"]

_SLOT = re.compile(r"\{\{(\w+)\}\}")


def _asset(name: str) -> str:
    return resources.files("agentkit.report").joinpath(name).read_text(encoding="utf-8")


def script_json(value: Any) -> str:
    """JSON safe inside a <script> element: no ``<`` can end the element or open a comment
    (``<`` appears only inside JSON strings, where ``\\u003c`` reads back the same)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return text.replace("<", "\\u003c")


def render_page(model: RunModel) -> str:
    """The whole report page. Each node's conversation is its own JSON block, which the page
    parses only when that node is opened."""
    run = model.summary["run"]
    details = "".join(f'<script type="application/json" id="d{i}">{script_json(items)}</script>\n'
                      for i, items in enumerate(model.details))
    slots = {
        "title": html.escape(f"{run.get('task') or 'run'} · {run.get('id')} · agentkit report"),
        "version": __version__, "css": _asset("report.css"), "js": _asset("report.js"),
        "data": script_json(model.summary), "details": details,
    }
    # one pass: text put into a slot is never searched for slots again
    return _SLOT.sub(lambda m: slots[m.group(1)], _asset("report.html"))
