"""The synthesizer: the final answer from node outputs, with citations that were really fetched.

Two checks run on the draft, both recorded as events:

- grounding: every number and URL in the answer must appear in some tool output, fetched page or
  the task itself (sub-agents' own words are no source); the rest are flagged
  (``answer.ungrounded``) and the synthesizer gets exactly one chance to fix them. What is still
  unsupported is reported in `RunResult.ungrounded`.
- citations: every URL in the answer is checked against the pages fetched in this run
  (``url.fetched``); each check is a ``url.cited`` event. A URL never fetched is removed from
  the answer and from the citations.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from agentkit.events import Emitter

__all__ = ["Ask", "Citation", "Synthesis", "check_citations", "find_ungrounded", "synthesize"]

_URL = re.compile(r"https?://[^\s\[\]()<>\"'`]+")
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?%?")
_REMOVED = "unverified source removed"
#: what follows the year of a date such as 2024-03 or 2024-03-05
_DATE_PART = re.compile(r"-\d\d")

#: the synthesizer's model call: (system prompt, user prompt, node id) -> answer text
Ask = Callable[[str, str, str], Awaitable[str]]


class Citation(BaseModel):
    url: str
    title: str | None = None
    content_hash: str | None = None


@dataclass
class Synthesis:
    answer: str
    citations: list[Citation] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    ungrounded: list[str] = field(default_factory=list)


def _norm_url(url: str) -> str:
    return url.split("#", 1)[0].rstrip("/")


def _urls(text: str) -> list[str]:
    out = []
    for match in _URL.findall(text):
        url = match.rstrip(".,;:!?")
        if url not in out:
            out.append(url)
    return out


def check_citations(answer: str, fetched: Mapping[str, Mapping[str, Any]], emit: Emitter,
                    ) -> tuple[str, list[Citation], list[str]]:
    """Keep URLs fetched in this run; remove the others from the text. One event per URL."""
    by_norm = {_norm_url(u): (u, info) for u, info in fetched.items()}
    citations: list[Citation] = []
    dropped: list[str] = []
    for url in _urls(answer):
        hit = by_norm.get(_norm_url(url))
        if hit is None:
            emit("url.cited", {"url": url, "ok": False, "reason": "not fetched in this run"})
            dropped.append(url)
            answer = answer.replace(url, _REMOVED)
            continue
        info = hit[1]
        emit("url.cited", {"url": url, "ok": True, "content_hash": info.get("content_hash")})
        citations.append(Citation(url=url, title=info.get("title"),
                                  content_hash=info.get("content_hash")))
    return answer, citations, dropped


def _squash(text: str) -> str:
    """Digits without thousands separators, so 1,234 in a page matches 1234 in the answer."""
    return re.sub(r"(?<=\d),(?=\d{3})", "", text)


def find_ungrounded(answer: str, corpus: Iterable[str]) -> list[str]:
    """Numbers (two or more digits, or with a decimal point) and URLs found in no source."""
    text = _squash("\n".join(corpus))
    urls = {_norm_url(u) for u in _urls(text)}
    out: list[str] = []
    for url in _urls(answer):
        if _norm_url(url) not in urls and url not in out:
            out.append(url)
    prose = _URL.sub(" ", answer)
    for match in _NUMBER.finditer(prose):
        raw = match.group(0)
        number = _squash(raw).lstrip("+").rstrip("%").rstrip(",")
        digits = number.lstrip("-")
        if len(digits.replace(".", "")) < 2 and "." not in digits:
            continue
        # a year standing alone is not grounded by a date (2024-03 in a result does not
        # support "March 2024": the month was rewritten, and may be wrong)
        lone_year = len(digits) == 4 and digits.isdigit() and not _DATE_PART.match(prose, match.end())
        after = r"(?!\d|-\d\d)" if lone_year else r"(?!\d)"
        if re.search(rf"(?<![\d.]){re.escape(digits)}{after}", text) is None and raw not in out:
            out.append(raw.rstrip(","))
    return out


async def synthesize(*, ask: Ask, system: str, user: str, fix_template: Callable[[list[str]], str],
                     corpus: list[str], fetched: Mapping[str, Mapping[str, Any]],
                     emit: Emitter) -> Synthesis:
    """Draft, check grounding (one fix round), then check citations."""
    answer = await ask(system, user, "synthesizer")
    ungrounded = find_ungrounded(answer, [*corpus, *fetched])
    # answer.checked is emitted on every check, so the ledger shows the check ran even when
    # it found nothing; answer.ungrounded carries what it flagged.
    emit("answer.checked", {"round": 1, "ungrounded": ungrounded}, node_id="synthesizer")
    if ungrounded:
        emit("answer.ungrounded", {"items": ungrounded, "round": 1}, node_id="synthesizer")
        fix = fix_template(ungrounded)
        answer = await ask(system, f"{user}\n\nYour previous answer:\n{answer}\n\n{fix}",
                           "synthesizer")
        ungrounded = find_ungrounded(answer, [*corpus, *fetched])
        emit("answer.checked", {"round": 2, "ungrounded": ungrounded}, node_id="synthesizer")
        if ungrounded:
            emit("answer.ungrounded", {"items": ungrounded, "round": 2, "final": True},
                 node_id="synthesizer")
    answer, citations, dropped = check_citations(answer, fetched, emit)
    return Synthesis(answer=answer, citations=citations, dropped=dropped, ungrounded=ungrounded)
