"""An MCP tool result as the model reads it, and as the ledger keeps it.

Every content block is kept: text as it is; an embedded text resource with its URI; images,
audio and binary resources as a line naming their type and size (the message model has no
image parts yet, so no model is shown the pixels; the base64 data goes to the ledger, which
moves strings over 64 KB to its blob store); a resource link with its URI. A result with only
structured content is shown as its JSON. ``isError`` results are `ToolError` ``tool_error``
with the server's text.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import mcp_types as types

from agentkit.errors import ToolError
from agentkit.tools._untrusted import wrap_untrusted
from agentkit.tools.base import ToolOutput

__all__ = ["render_result"]


def _size(b64: str) -> int:
    try:
        return len(base64.b64decode(b64, validate=False))
    except (binascii.Error, ValueError):
        return len(b64) * 3 // 4


def _block(block: types.ContentBlock) -> tuple[str, dict[str, Any]]:
    """One content block: the text the model reads, and its record."""
    if isinstance(block, types.TextContent):
        return block.text, {"type": "text", "text": block.text}
    if isinstance(block, types.ImageContent | types.AudioContent):
        kind = "image" if isinstance(block, types.ImageContent) else "audio"
        size = _size(block.data)
        return (f"[{kind} {block.mime_type}, {size:,} bytes: not shown to the model]",
                {"type": kind, "mime_type": block.mime_type, "bytes": size, "data": block.data})
    if isinstance(block, types.EmbeddedResource):
        res = block.resource
        mime = f" ({res.mime_type})" if res.mime_type else ""
        if isinstance(res, types.TextResourceContents):
            return (f"[resource {res.uri}{mime}]\n{res.text}",
                    {"type": "resource", "uri": res.uri, "mime_type": res.mime_type,
                     "text": res.text})
        size = _size(res.blob)
        return (f"[resource {res.uri}{mime}, {size:,} bytes of binary data: not shown]",
                {"type": "resource", "uri": res.uri, "mime_type": res.mime_type, "bytes": size,
                 "blob": res.blob})
    about = " - ".join(x for x in (block.name, block.description) if x)  # a resource link
    mime = f" ({block.mime_type})" if block.mime_type else ""
    return (f"[resource link {block.uri}{mime}: {about}]",
            {"type": "resource_link", "uri": block.uri, "name": block.name,
             "mime_type": block.mime_type, "description": block.description})


def render_result(result: types.CallToolResult, *, server: str, tool: str, untrusted: bool,
                  limit: int) -> ToolOutput:
    """The model's text and the ledger's record of `result` (or the error it reports)."""
    parts, records = [], []
    for block in result.content:
        text, record = _block(block)
        parts.append(text)
        records.append(record)
    text = "\n".join(parts)
    structured = result.structured_content
    if not parts and structured is not None:
        text = json.dumps(structured, ensure_ascii=False, indent=1)
    if result.is_error:
        raise ToolError("tool_error", (text or "the tool reported an error without a message")
                        [:4000], details={"server": server, "remote_tool": tool})
    if len(text) > limit:
        raise ToolError("too_large", f"the result has {len(text):,} characters, more than the "
                        f"limit of {limit:,} (mcp_servers.{server}.max_result_chars)",
                        retry_hint="ask for a smaller result", details={
                            "server": server, "chars": len(text), "limit": limit})
    data: dict[str, Any] = {"server": server, "remote_tool": tool, "text": text,
                            "content": records}
    if structured is not None:
        data["structured"] = structured
    shown = wrap_untrusted(text, f"MCP server {server}, tool {tool}") if untrusted and text \
        else text
    return ToolOutput(shown or "(the tool returned nothing)", data)
