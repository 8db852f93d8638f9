"""The provider-neutral, lossless message model.

A conversation is a list of `Message`s; each has a role and a list of parts. Adapters in
`agentkit.models` translate to and from each provider's wire format. Nothing a provider needs
replayed is dropped: `ReasoningPart.signature` / `opaque` keep Anthropic signatures and
redacted blocks, OpenRouter `reasoning_details` (verbatim, in order), Gemini
`thought_signature` (kept on the `ToolCallPart`), and tool-call ids exactly as issued.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Message",
    "Part",
    "ReasoningPart",
    "TextPart",
    "ToolCallPart",
    "ToolResultPart",
    "ToolSpec",
    "Turn",
    "Usage",
]


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True)


class TextPart(_Part):
    kind: Literal["text"] = "text"
    text: str


class ReasoningPart(_Part):
    """Model reasoning. `provider` says whose it is: opaque data is replayed only to it.

    - `text`: readable reasoning (may be empty when the provider hides it).
    - `signature`: Anthropic thinking signature, or any per-block signature.
    - `opaque`: provider payload to replay verbatim (Anthropic ``redacted_thinking`` block,
      OpenRouter ``reasoning_details`` list, encrypted reasoning).
    - `field`: the wire field it came from (``reasoning_content``, ``reasoning``, ``think_tag``,
      ``thinking`` ...), so replay can use the name the server reads.
    """

    kind: Literal["reasoning"] = "reasoning"
    text: str = ""
    signature: str | None = None
    opaque: Any = None
    provider: str | None = None
    field: str | None = None


class ToolCallPart(_Part):
    """A call the model asked for. `id` is kept exactly as issued (Kimi ``functions.x:0``).

    `arguments` is the parsed JSON object; `raw_arguments` the text as received, kept when it
    could not be parsed (the agent loop then reports the error to the model). `extra` keeps
    provider data that must be echoed on replay (Gemini ``extra_content.thought_signature``).
    """

    kind: Literal["tool_call"] = "tool_call"
    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    raw_arguments: str | None = None
    parse_error: str | None = None
    extra: dict[str, Any] | None = None


class ToolResultPart(_Part):
    """A tool's answer. `content` is what the model reads; `metadata` is the tool's structured
    result (a program's ``exit_code`` and ``stdout``, a page's ``content_hash`` ...) kept beside
    it for the application (consensus, grounding, the local model's grammar) and never sent to
    a model: nothing has to parse the rendered text back."""

    kind: Literal["tool_result"] = "tool_result"
    call_id: str
    name: str = ""
    content: str
    is_error: bool = False
    #: excluded from dumps: the ledger records it once, in the call's ``tool.result`` event
    metadata: dict[str, Any] | None = Field(default=None, exclude=True)

    @property
    def program_failed(self) -> bool:
        """A program ran and exited non-zero (not a tool error in which no program ran)."""
        return self.metadata is not None and self.metadata.get("exit_code") not in (None, 0)


Part = Annotated[TextPart | ReasoningPart | ToolCallPart | ToolResultPart,
                 Field(discriminator="kind")]


class Message(BaseModel):
    """One message. Roles: ``system``, ``user``, ``assistant``, ``tool`` (tool results)."""

    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant", "tool"]
    parts: tuple[Part, ...]
    #: provider data attached to the whole message that must be replayed (e.g. a Gemini
    #: message-level signature); keyed by provider name.
    extra: dict[str, Any] | None = None

    @classmethod
    def system(cls, text: str) -> Message:
        return cls(role="system", parts=(TextPart(text=text),))

    @classmethod
    def user(cls, text: str) -> Message:
        return cls(role="user", parts=(TextPart(text=text),))

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def reasoning(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, ReasoningPart))

    @property
    def tool_calls(self) -> list[ToolCallPart]:
        return [p for p in self.parts if isinstance(p, ToolCallPart)]


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(input_tokens=self.input_tokens + other.input_tokens,
                     output_tokens=self.output_tokens + other.output_tokens,
                     reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
                     cached_tokens=self.cached_tokens + other.cached_tokens)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class Turn(BaseModel):
    """One assistant turn as returned by a model (streamed or not, the same value).

    `finish_reason` is normalised: ``stop``, ``tool_calls``, ``length``, ``content_filter``,
    or the provider's own word. Whether tools were called is decided by `message.tool_calls`,
    never by `finish_reason`.
    """

    message: Message
    usage: Usage = Field(default_factory=Usage)
    finish_reason: str | None = None
    model: str | None = None
    provider: str | None = None
    response_id: str | None = None
    #: what the provider itself says the call cost in USD (OpenRouter ``usage.cost``, plus the
    #: upstream cost of a bring-your-own-key call), recorded beside agentkit's own estimate
    provider_cost_usd: float | None = None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class ToolSpec(BaseModel):
    """What a model is told about a tool: name, description and a JSON Schema."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    parameters: dict[str, Any]

