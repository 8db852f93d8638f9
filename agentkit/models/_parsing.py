"""Parsing that survives real servers: think tags, text tool calls, tool-call fragments.

- `ThinkSplitter` splits `<think>`-style reasoning out of streamed content, surviving tags
  split across chunks and a missing opening tag (R1, V3.1, Qwen3-Thinking-2507 emit only
  ``</think>``).
- `extract_text_tool_calls` finds ``<tool_call>{json}</tool_call>`` and fenced JSON calls in
  content, for servers started without a tool-call parser.
- `parse_arguments` turns tool arguments into a dict: empty/null -> {}, objects pass through,
  invalid JSON is repaired only when the repair is unambiguous, else reported.
- `ToolCallAccumulator` assembles streamed tool-call fragments (missing or reused `index`,
  id only on the first fragment, names resent on every fragment, integer ids, object args,
  empty ids).
- `content_pieces` reads `content` sent as a list of typed chunks (Mistral: ``thinking``
  chunks holding reasoning, ``text`` chunks holding the answer).
- `stable_id` makes a tool-call id where the provider gave none (Gemini sends ``""``): derived
  from the response, so a replayed history and its ledger always show the same id.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agentkit.messages import ToolCallPart

__all__ = ["ThinkSplitter", "ToolCallAccumulator", "content_pieces", "extract_text_tool_calls",
           "parse_arguments", "stable_id"]

Piece = tuple[Literal["reasoning", "text"], str]


def content_pieces(chunks: list[Any]) -> list[tuple[Literal["reasoning", "text"], str,
                                                    dict[str, Any]]]:
    """(kind, text, chunk attributes) for content sent as a list of typed chunks.

    A ``thinking`` chunk's `thinking` is itself a list of text chunks (or a string); its other
    keys (``closed``) come back as attributes so the chunk can be rebuilt for replay. Any other
    chunk carrying `text` is answer text; plain strings in the list are text too.
    """
    out: list[tuple[Literal["reasoning", "text"], str, dict[str, Any]]] = []
    for chunk in chunks:
        if isinstance(chunk, str):
            out.append(("text", chunk, {}))
        elif isinstance(chunk, dict) and chunk.get("type") == "thinking":
            inner = chunk.get("thinking")
            parts = inner if isinstance(inner, list) else [inner]
            text = "".join(p if isinstance(p, str) else str(p.get("text") or "")
                           for p in parts if isinstance(p, str | dict))
            attrs = {k: v for k, v in chunk.items() if k not in ("thinking", "type")}
            out.append(("reasoning", text, attrs))
        elif isinstance(chunk, dict) and isinstance(chunk.get("text"), str):
            out.append(("text", chunk["text"], {}))
    return out


def stable_id(*seed: Any) -> str:
    """A tool-call id derived from `seed` (same seed, same id), for calls issued without one."""
    digest = hashlib.sha256("\x1f".join(str(s) for s in seed).encode()).hexdigest()
    return f"call_{digest[:24]}"


class ThinkSplitter:
    """Incremental splitter of think tags in content.

    Until a tag decides it, leading text is held back: it may be reasoning whose opening tag
    the model never wrote. A lone close tag makes everything before it reasoning. After a
    close tag, content flows straight through (a later opening tag starts reasoning again).
    """

    def __init__(self, tags: Sequence[tuple[str, str]], *, implicit_open: bool = False) -> None:
        self._tags = tuple(tags)
        self._implicit = implicit_open
        self._mode: Literal["undecided", "reasoning", "text"] = "undecided"
        self._close = ""
        self._buf = ""
        self._strip = False
        #: undecided text is held, so searches resume where the last one stopped (no O(n^2))
        self._from = 0
        self._longest = max((len(t) for pair in self._tags for t in pair), default=1)
        #: undecided chunks with no tag in reach, kept as a list (appending to one string
        #: would copy the whole held text on every chunk: quadratic on a long answer)
        self._pending: list[str] = []
        #: the last characters held, where a tag split across chunks may have begun
        self._tail = ""

    def feed(self, text: str) -> list[Piece]:
        window = self._tail + text
        self._tail = window[-self._longest:]
        if self._mode == "undecided" and not any(t in window for pair in self._tags for t in pair):
            self._pending.append(text)
            return []
        self._take_pending()
        self._buf += text
        out: list[Piece] = []
        while self._buf and self._step(out):
            pass
        return out

    def _take_pending(self) -> None:
        if self._pending:
            self._buf += "".join(self._pending)
            self._pending.clear()

    def assume_text(self) -> list[Piece]:
        """Stop waiting for a lone close tag (the server has a reasoning parser: reasoning
        arrives in its own field), so held content flows out now."""
        if self._mode != "undecided":
            return []
        self._mode = "text"
        self._take_pending()
        return self.feed("")

    def finish(self, *, truncated: bool = False) -> list[Piece]:
        """Flush the rest. Undecided text is content, unless the model never writes an opening
        tag and was cut off by the length limit (then it was still thinking)."""
        self._take_pending()
        rest, self._buf = self._buf, ""
        if not rest:
            return []
        if self._mode == "undecided":
            kind: Literal["reasoning", "text"] = (
                "reasoning" if self._implicit and truncated else "text")
        else:
            kind = self._mode
        return self._emit([], kind, rest)

    def _emit(self, out: list[Piece], kind: Literal["reasoning", "text"], text: str) -> list[Piece]:
        if kind == "text" and self._strip:
            text = text.lstrip()
            self._strip = not text
        if text:
            out.append((kind, text))
        return out

    def _step(self, out: list[Piece]) -> bool:
        if self._mode == "reasoning":
            return self._seek_close(out)
        start = self._from if self._mode == "undecided" else 0
        opens = [(p, o, c) for o, c in self._tags if (p := self._buf.find(o, start)) >= 0]
        closes = [(p, c) for _, c in self._tags if (p := self._buf.find(c, start)) >= 0] \
            if self._mode == "undecided" else []
        first_open = min(opens) if opens else None
        first_close = min(closes) if closes else None
        self._from = 0 if (first_open or first_close) else max(0, len(self._buf) - self._longest)
        if first_close is not None and (first_open is None or first_close[0] < first_open[0]):
            pos, tag = first_close
            self._emit(out, "reasoning", self._buf[:pos])
            self._buf = self._buf[pos + len(tag):]
            self._mode, self._strip = "text", True
            return True
        if first_open is not None:
            pos, open_tag, close_tag = first_open
            self._emit(out, "text", self._buf[:pos])
            self._buf = self._buf[pos + len(open_tag):]
            self._mode, self._close = "reasoning", close_tag
            return True
        if self._mode == "text":
            keep = _partial_suffix(self._buf, [o for o, _ in self._tags])
            self._emit(out, "text", self._buf[:len(self._buf) - keep])
            self._buf = self._buf[len(self._buf) - keep:]
        return False

    def _seek_close(self, out: list[Piece]) -> bool:
        pos = self._buf.find(self._close)
        if pos >= 0:
            self._emit(out, "reasoning", self._buf[:pos])
            self._buf = self._buf[pos + len(self._close):]
            self._mode, self._strip = "text", True
            return True
        keep = _partial_suffix(self._buf, [self._close])
        self._emit(out, "reasoning", self._buf[:len(self._buf) - keep])
        self._buf = self._buf[len(self._buf) - keep:]
        return False


def _partial_suffix(buf: str, tags: Iterable[str]) -> int:
    """Length of the longest end of `buf` that is the start of one of `tags`."""
    best = 0
    for tag in tags:
        for n in range(min(len(tag) - 1, len(buf)), best, -1):
            if tag.startswith(buf[-n:]):
                best = n
                break
    return best


# ---------------------------------------------------------------------------------------------
# Tool-call arguments


def parse_arguments(raw: Any) -> tuple[dict[str, Any], str | None]:
    """(arguments, error). Never raises; an error goes back to the model as a tool error."""
    if raw is None:
        return {}, None
    if isinstance(raw, dict):
        return raw, None
    if not isinstance(raw, str):
        return {}, f"tool arguments must be a JSON object, got {type(raw).__name__}"
    text = raw.strip()
    if not text or text == "null":
        return {}, None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        repaired = _repair(text)
        if repaired is not None:
            return repaired, None
        return {}, f"tool arguments are not valid JSON ({exc.msg} at char {exc.pos}): {text[:200]}"
    if isinstance(value, str):  # double-encoded JSON, seen from some gateways
        inner, err = parse_arguments(value)
        return (inner, None) if err is None and value.strip().startswith("{") else (
            {}, "tool arguments must be a JSON object, got a string")
    if value is None:
        return {}, None
    if not isinstance(value, dict):
        return {}, f"tool arguments must be a JSON object, got {type(value).__name__}"
    return value, None


def _repair(text: str) -> dict[str, Any] | None:
    """Repairs with exactly one reading: trailing garbage after one complete object (not a
    second object), or a single missing final brace."""
    decoder = json.JSONDecoder()
    try:
        value, end = decoder.raw_decode(text)
    except json.JSONDecodeError:
        value, end = None, 0
    if isinstance(value, dict) and "{" not in text[end:]:
        return value
    if text.startswith("{") and not text.endswith("}"):
        try:
            fixed = json.loads(text + "}")
        except json.JSONDecodeError:
            return None
        return fixed if isinstance(fixed, dict) else None
    return None


def make_tool_call(id_: str, name: str, raw: Any, extra: dict[str, Any] | None = None
                   ) -> ToolCallPart:
    arguments, error = parse_arguments(raw)
    raw_text = raw if isinstance(raw, str) else json.dumps(raw) if raw is not None else None
    return ToolCallPart(id=id_, name=name, arguments=arguments,
                        raw_arguments=raw_text if error else None, parse_error=error, extra=extra)


# ---------------------------------------------------------------------------------------------
# Streamed tool-call fragments


@dataclass
class _Slot:
    index: int | None
    id: str | None = None
    name: str = ""
    text: str = ""
    obj: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ToolCallAccumulator:
    """Collects OpenAI-style `tool_calls` fragments into complete calls.

    A fragment joins the open call with the same `index` unless it carries a different id (then
    it is a new call: Ollama reuses index 0). A fragment without `index` (Gemini) starts a new
    call when it carries a new id, else continues the last one. Names are assigned, not
    appended (some gateways resend the full name on every fragment).
    """

    def __init__(self) -> None:
        self._slots: list[_Slot] = []

    def __bool__(self) -> bool:
        return bool(self._slots)

    def add(self, fragment: dict[str, Any]) -> int:
        """Add one fragment; returns the position of the call it belongs to."""
        slot = self._slot_for(fragment)
        fn = fragment.get("function") or {}
        if fn.get("name"):
            slot.name = str(fn["name"])
        args = fn.get("arguments")
        if isinstance(args, dict):
            slot.obj = args
        elif isinstance(args, str):
            slot.text += args
        if isinstance(fragment.get("extra_content"), dict):
            slot.extra["extra_content"] = merge_extra(slot.extra.get("extra_content"),
                                                      fragment["extra_content"])
        if isinstance(fragment.get("thought_signature"), str) and fragment["thought_signature"]:
            slot.extra["thought_signature"] = fragment["thought_signature"]  # Gemini duplicate
        return self._slots.index(slot)

    def _slot_for(self, fragment: dict[str, Any]) -> _Slot:
        raw_id = fragment.get("id")
        id_ = str(raw_id) if raw_id not in (None, "") else None
        index = fragment.get("index")
        if index is not None:
            same = [s for s in self._slots if s.index == index]
            if same and (id_ is None or same[-1].id in (None, id_)):
                slot = same[-1]
                slot.id = slot.id or id_
                return slot
        elif self._slots and (id_ is None or self._slots[-1].id == id_) \
                and not _starts_new_call(self._slots[-1], fragment):
            return self._slots[-1]
        slot = _Slot(index=index, id=id_)
        self._slots.append(slot)
        return slot

    def calls(self, provider: str | None = None, *, seed: str = "") -> list[ToolCallPart]:
        """The assembled calls. A call that came without an id gets `stable_id` of `seed`
        (the response id), its position, name and arguments."""
        out = []
        for n, s in enumerate(self._slots):
            extra = {"provider": provider, **s.extra} if s.extra else None
            raw = s.obj if s.obj is not None else s.text
            id_ = s.id or stable_id(seed, n, s.name, json.dumps(raw, sort_keys=True))
            out.append(make_tool_call(id_, s.name, raw, extra))
        return out


def _starts_new_call(last: _Slot, fragment: dict[str, Any]) -> bool:
    """An index-less fragment naming a function while the open call already has a name and
    arguments is the next call (Gemini sends whole calls, several per chunk, ids ``""``)."""
    name = (fragment.get("function") or {}).get("name")
    return bool(name) and bool(last.name) and (last.obj is not None or bool(last.text))


def merge_extra(old: Any, new: dict[str, Any]) -> dict[str, Any]:
    """Provider extras merged key by key one level down (``{"google": {...}}`` fragments)."""
    out = dict(old) if isinstance(old, dict) else {}
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out




# ---------------------------------------------------------------------------------------------
# Tool calls written as text in content

_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
_FENCED = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.S)
#: Llama 3.x ``<function=name>{json}</function>`` and Qwen3-Coder ``<parameter=k>v</parameter>``
_FUNCTION = re.compile(r"<function=([\w.\-]+)>\s*(.*?)\s*</function>", re.S)
_PARAMETER = re.compile(r"<parameter=([\w.\-]+)>\s*(.*?)\s*</parameter>", re.S)
#: Kimi K2 special tokens; the id ``functions.name:idx`` is kept exactly
_KIMI = re.compile(r"<\|tool_call_begin\|>\s*((?:functions\.)?([\w\-]+)(?::\d+)?)\s*"
                   r"<\|tool_call_argument_begin\|>\s*(.*?)\s*<\|tool_call_end\|>", re.S)
_LEFTOVERS = re.compile(r"<\|tool_calls_section_(?:begin|end)\|>|<tool_call>\s*</tool_call>")


def extract_text_tool_calls(text: str, tool_names: Iterable[str], *, seed: str = ""
                            ) -> tuple[str, list[ToolCallPart]]:
    """(remaining text, calls) for servers without a tool-call parser. Kimi tokens,
    ``<function=...>`` and ``<tool_call>`` blocks are always calls; a fenced JSON block is one
    only if it names an offered tool, so ordinary JSON in an answer stays text."""
    names = set(tool_names)
    calls: list[ToolCallPart] = []

    def kimi(m: re.Match[str]) -> str:
        calls.append(make_tool_call(m.group(1), m.group(2), m.group(3)))
        return ""

    def function(m: re.Match[str]) -> str:
        body = m.group(2)
        params = {k: _scalar(v) for k, v in _PARAMETER.findall(body)}
        raw: Any = params if params or not body else body
        calls.append(make_tool_call(stable_id(seed, len(calls), m.group(0)), m.group(1), raw))
        return ""

    def tagged(m: re.Match[str], require_known: bool) -> str:
        call = _call_from_json(m.group(1), stable_id(seed, len(calls), m.group(0)))
        if call is None or (require_known and call.name not in names):
            return m.group(0)
        calls.append(call)
        return ""

    if "<|tool_call_begin|>" in text:
        text = _KIMI.sub(kimi, text)
    if "<function=" in text:
        text = _FUNCTION.sub(function, text)
    if "<tool_call>" in text:
        text = _TAGGED.sub(lambda m: tagged(m, False) if m.group(1) else "", text)
    if "```" in text and names:
        text = _FENCED.sub(lambda m: tagged(m, True), text)
    if calls:
        text = _LEFTOVERS.sub("", text).strip()
    return text, calls


def _scalar(value: str) -> Any:
    """A `<parameter>` value: JSON when it parses (numbers, lists), else the text."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _call_from_json(body: str, id_: str) -> ToolCallPart | None:
    try:
        obj = json.loads(body)
    except json.JSONDecodeError:
        obj = _repair(body.strip())
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", obj.get("parameters"))
    return make_tool_call(id_, obj["name"], args)
