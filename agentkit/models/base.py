"""The `ChatModel` protocol every wire adapter implements (at most three methods).

One adapter per wire API lives in its own file (`openai_compat.py`, `anthropic.py`,
`local.py`); provider-family quirks live in profiles (`profiles.py`), not in the adapters.
Adapters never retry: the retry owner (`agentkit.models.resilient`) decides from the facts on
`ProviderError` (retryable, status, retry_after).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from agentkit.messages import Message, ToolSpec, Turn

__all__ = ["ChatModel", "Delta", "DeltaCallback", "ModelSettings"]


class ModelSettings(BaseModel):
    """Per-request settings. Parameters a profile says the provider refuses are never sent."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    #: which independent sample of the same request this is (node self-consistency); a model
    #: that seeds itself (the local one) draws sample n with a seed of its own
    sample: int = Field(default=0, ge=0)
    stop: list[str] | None = None
    tool_choice: Literal["auto", "none", "required"] | None = None
    #: JSON schema constraining the output (local models use it as a grammar).
    response_schema: dict[str, Any] | None = None
    extra_body: dict[str, Any] = Field(default_factory=dict)


class Delta(BaseModel):
    """A streamed fragment, for live display. The assembled `Turn` is what counts."""

    kind: Literal["text", "reasoning", "tool_call"]
    text: str = ""
    tool_call_index: int | None = None


DeltaCallback = Callable[[Delta], None]


@runtime_checkable
class ChatModel(Protocol):
    """A model endpoint. `turn` returns the same `Turn` whether it streams or not."""

    name: str

    async def turn(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                   settings: ModelSettings | None = None, *,
                   on_delta: DeltaCallback | None = None) -> Turn:
        """Send one request and return the assembled assistant turn."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
