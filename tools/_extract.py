"""Main-text extraction of one page with trafilatura: what `web_fetch` returns to the model.

Runs in the extraction workers (`agentkit.tools._extract_worker`) or, for comparison, in a
thread pool; never on the event loop.
"""

from __future__ import annotations

import html as html_lib
import re
from typing import Any

import trafilatura

__all__ = ["EXTRACT_OPTIONS", "extract_page", "page_title"]

#: trafilatura options (measured best F1 on the article-extraction benchmark; see docstring)
EXTRACT_OPTIONS: dict[str, Any] = {"output_format": "markdown", "favor_precision": True,
                                   "include_comments": False}

_OG_TITLE = re.compile(r"""<meta\b[^>]*?property\s*=\s*["']og:title["'][^>]*?content\s*=\s*"""
                       r"""(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_TITLE = re.compile(r"<title\b[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)


def page_title(page: str) -> str:
    """The page title (og:title, else <title>), from the head of the document."""
    head = page[:300_000]
    match = _OG_TITLE.search(head)
    if match:
        title = match.group(1) if match.group(1) is not None else match.group(2)
    else:
        found = _TITLE.search(head)
        title = found.group(1) if found else ""
    return " ".join(html_lib.unescape(title).split())[:500]


def extract_page(body: bytes, content_type: str = "text/html",
                 charset: str | None = None) -> tuple[str, str]:
    """(title, main text) of a page. Runs in an extraction worker, so decoding happens there
    too. An HTTP charset is honoured; without one trafilatura detects it from the bytes."""
    page: bytes | str = body
    if charset:
        try:
            page = body.decode(charset, "replace")
        except LookupError:
            pass
    if content_type == "text/plain":
        return "", page if isinstance(page, str) else page.decode("utf-8", "replace")
    head = page[:300_000] if isinstance(page, str) else page[:300_000].decode("utf-8", "replace")
    return page_title(head), trafilatura.extract(page, **EXTRACT_OPTIONS) or ""
