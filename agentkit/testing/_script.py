"""What a `ScriptedModelServer` answers: replies, errors, resets, delays (plain values).

Build them with the helpers: ``reply(reasoning=..., content=..., tool_calls=[call(...)])``,
``error(429, retry_after=7)``, ``reset()``. A callable ``request -> item`` is also accepted in a
script, for answers that depend on the request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ErrorReply", "Raw", "RecordedRequest", "Reply", "Reset", "ScriptItem", "ScriptedCall",
           "call", "error", "message_text", "raw", "reply", "reset"]


@dataclass(frozen=True)
class ScriptedCall:
    """A tool call the scripted model makes. `id` defaults to the dialect's own id style
    (``call_01``, Kimi ``functions.get_weather:0``, Anthropic ``toolu_01`` ...)."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | int | None = None


@dataclass(frozen=True)
class Reply:
    """One assistant turn, rendered in the server's dialect (JSON or SSE as requested).

    `reset_after`: cut the connection (TCP reset) after that many SSE events, or that many
    body bytes for JSON. `keepalives`: `: keep-alive` comments before the first event.
    `delay`: seconds before answering. `signature`: the thinking signature to issue
    (Anthropic/OpenRouter/Gemini; for the Responses API the `encrypted_content`, and ``""``
    issues a reasoning item without one); `redacted`: an Anthropic ``redacted_thinking``
    block, streamed first. `usage` keys: ``input_tokens``, ``output_tokens``,
    ``reasoning_tokens``, ``cached_tokens``, ``cache_write_tokens`` (Anthropic) and
    ``cost_micro_usd`` (OpenRouter's reported cost). Arguments given as a str can carry
    invalid JSON on purpose.
    """

    content: str | None = None
    reasoning: str | None = None
    tool_calls: tuple[ScriptedCall, ...] = ()
    usage: Mapping[str, int] | None = None
    finish_reason: str | None = None
    reset_after: int | None = None
    keepalives: int = 0
    delay: float = 0.0
    signature: str | None = None
    redacted: str | None = None
    #: extra keys merged into the rendered message (non-stream) / first delta (stream)
    extra: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ErrorReply:
    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Reset:
    """Reset the connection after `after_bytes` bytes of the response (0: before any)."""

    after_bytes: int = 0
    delay: float = 0.0


@dataclass(frozen=True)
class Raw:
    """Bytes on the wire exactly as given, for shapes no dialect renders (recorded traffic,
    odd gateways). `events`: SSE frames, each a JSON-able value (sent as ``data: <json>``) or
    a str sent verbatim (include the blank line yourself); `body`: a JSON body.
    `content_type` overrides the media type (``application/x-ndjson``)."""

    events: tuple[Any, ...] | None = None
    body: Any = None
    status: int = 200
    content_type: str | None = None
    delay: float = 0.0


@dataclass(frozen=True)
class RecordedRequest:
    """A request the server received; `body` is the parsed JSON (None if not JSON)."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    status: int = 0

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list((self.body or {}).get("messages") or [])

    def texts(self, role: str) -> list[str]:
        """The text of each message of `role` ("user", "tool", ...), in order."""
        return [message_text(m) for m in self.messages if m.get("role") == role]


def message_text(message: dict[str, Any]) -> str:
    """A wire message's text: its content as a string, or its text parts joined."""
    content = message.get("content") or ""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


ScriptItem = (Reply | ErrorReply | Reset | Raw
              | Callable[[RecordedRequest], "Reply | ErrorReply | Reset | Raw"])


def call(name: str, arguments: Mapping[str, Any] | str | None = None, *,
         id: str | int | None = None) -> ScriptedCall:
    return ScriptedCall(name=name, arguments=arguments if arguments is not None else {}, id=id)


def reply(content: str | None = None, *, reasoning: str | None = None,
          tool_calls: Sequence[ScriptedCall] = (), usage: Mapping[str, int] | None = None,
          finish_reason: str | None = None, reset_after: int | None = None, keepalives: int = 0,
          delay: float = 0.0, signature: str | None = None, redacted: str | None = None,
          extra: Mapping[str, Any] | None = None) -> Reply:
    return Reply(content=content, reasoning=reasoning, tool_calls=tuple(tool_calls), usage=usage,
                 finish_reason=finish_reason, reset_after=reset_after, keepalives=keepalives,
                 delay=delay, signature=signature, redacted=redacted, extra=extra)


def error(status: int, message: str | None = None, *, body: Any = None,
          retry_after: float | None = None, headers: Mapping[str, str] | None = None,
          delay: float = 0.0) -> ErrorReply:
    """An HTTP error. Without `body`, an OpenAI-style ``{"error": {"message": ...}}``."""
    hdrs = dict(headers or {})
    if retry_after is not None:
        hdrs["Retry-After"] = f"{retry_after:g}"
    if body is None:
        body = {"error": {"message": message or f"scripted error {status}", "type": "error",
                          "code": status}}
    return ErrorReply(status=status, body=body, headers=hdrs, delay=delay)


def raw(events: Sequence[Any] | None = None, *, body: Any = None, status: int = 200,
        content_type: str | None = None, delay: float = 0.0) -> Raw:
    return Raw(events=tuple(events) if events is not None else None, body=body, status=status,
               content_type=content_type, delay=delay)


def reset(after_bytes: int = 0, *, delay: float = 0.0) -> Reset:
    return Reset(after_bytes=after_bytes, delay=delay)
