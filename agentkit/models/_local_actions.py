"""The action format a small local model writes, its grammar, and the parser back to a `Turn`.

Why a format of our own: small models break JSON-escaped code (measured on the 1.5B default model: 28 of
35 calls broke on quotes and newlines) and, left free, write prose or invent tool output where
a call was expected. So every local step is constrained by a llama.cpp grammar (GBNF) to one of:

    Action: run_code            a code tool: the code is a raw fenced block, never a JSON string
    ```python
    print(1 + 1)
    ```

    Action: web_search          any other tool: its arguments as JSON, constrained by the
    {"query": "..."}            tool's own JSON schema

    Action: final               the answer, free text
    The answer is 2.

optionally preceded by ``<think>…</think>`` when the task asks for reasoning. The parser turns
the text into standard parts (`ReasoningPart`, `ToolCallPart`, `TextPart`), so the agent loop
and the ledger never see this format. Think tags are split by the same `ThinkSplitter` the
OpenAI-compatible adapter uses for self-hosted R1/QwQ; ``<tool_call>`` tags and fenced JSON are
accepted as well (output produced without a grammar, e.g. from a replayed transcript).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from agentkit._extras import require
from agentkit.messages import Message, Part, ReasoningPart, TextPart, ToolCallPart, ToolResultPart, ToolSpec
from agentkit.models._parsing import ThinkSplitter, extract_text_tool_calls, make_tool_call
from agentkit.models._plan_grammar import describe_plan_action, plan_rules
from agentkit.plan import PlanToolSpec

__all__ = ["action_grammar", "after_failed_program", "after_rejected_plan", "describe_actions",
           "failed_program_streak", "free_text_grammar", "is_code_tool", "parse_output",
           "reasoning_part", "render_history", "schema_grammar", "split_think"]

THINK_TAGS = (("<think>", "</think>"),)
_HEADER = re.compile(r"^\s*Action:\s*([A-Za-z0-9_.\-]+)[ \t]*\n?(.*)$", re.S)
_FENCE = re.compile(r"```[A-Za-z0-9_+\-]*\n(.*?)\n?```", re.S)
# Large length caps expand into huge grammars (one nested rule per allowed repetition) and
# mean nothing to a 1.5B model; bounds above these are dropped before conversion.
_MAX_KEPT_BOUND = 16

_GBNF_THINK = r'''ak-think ::= "<think>\n" ak-think-char* "</think>\n"
ak-think-char ::= [^<] | "<" [^/]'''
# A code line may not start with a backtick, so after a newline a backtick can only open the
# closing fence: the model cannot wander into a half fence ("``'") and keep writing prose.
_GBNF_CODE_LINE = r'''ak-line ::= ( [^`\n] [^\n]* )? "\n"'''
# Done with its program, a 1.5B model often forgets the closing fence and writes its next
# action and made-up result lines *inside* the block ("Action: final" / "Region: East, ..."; a
# SyntaxError every time, 8 of 8 calls of one measured node). Refused "Action:" by the
# grammar it wrote "Action： final" (a full-width colon), so the parser cuts the code there.
_ACTION_IN_CODE = re.compile(r"^Action\s*(?:[:：]|final\b)", re.M)
_GBNF_FINAL = r'''ak-final ::= "Action: final\n" [^\x00]+'''


def is_code_tool(tool: ToolSpec) -> bool:
    """A tool whose main argument is source code (run_code): it gets a fenced block."""
    props = tool.parameters.get("properties", {})
    return isinstance(props.get("code"), dict) and props["code"].get("type") == "string"


def _code_language(tool: ToolSpec) -> str:
    lang = tool.parameters.get("properties", {}).get("language", {})
    if "default" in lang:
        return str(lang["default"])
    enum = lang.get("enum") or []
    return str(enum[0]) if enum else "python"


def _literal(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid GBNF literal


def _simplify(schema: Any) -> Any:
    """The schema a small model fills best and a grammar checks fastest.

    - length caps above `_MAX_KEPT_BOUND` are dropped (the validator still applies them);
    - in an object, optional properties that may be null are dropped and the rest become
      required, in schema order: a fixed shape instead of every subset and permutation of
      optional keys (which made the plan grammar several times slower to sample).
    """
    if isinstance(schema, list):
        return [_simplify(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _simplify(v) for k, v in schema.items()
           if not (k in ("maxLength", "maxItems", "maxProperties")
                   and isinstance(v, int) and v > _MAX_KEPT_BOUND)}
    props = out.get("properties")
    if isinstance(props, dict) and out.get("type", "object") == "object":
        required = set(out.get("required", []))
        kept = {k: v for k, v in props.items() if k in required or not _nullable(v)}
        out["properties"], out["required"] = kept, list(kept)
        out["additionalProperties"] = False
    return out


def _shown_schema(schema: dict[str, Any]) -> str:
    """The simplified schema as the model is shown it: no titles (prompt tokens cost seconds)."""
    def strip(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k != "title"}
        return [strip(x) for x in v] if isinstance(v, list) else v
    return json.dumps(strip(_simplify(schema)))


def _nullable(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    if schema.get("type") == "null" or (isinstance(schema.get("type"), list)
                                        and "null" in schema["type"]):
        return True
    return any(_nullable(s) for s in schema.get("anyOf", []) + schema.get("oneOf", []))


def _converter() -> Any:
    """llama.cpp's JSON-schema-to-GBNF converter (from the [local] extra)."""
    grammar = require("llama_cpp.llama_grammar", "local", feature="provider: local")
    return grammar.SchemaConverter(prop_order={}, allow_fetch=False, dotall=False,
                                   raw_pattern=False)


def _visit(conv: Any, schema: dict[str, Any], name: str) -> str:
    schema = conv.resolve_refs(_simplify(schema), f"agentkit:{name}")
    return str(conv.visit(schema, name))


def schema_grammar(schema: dict[str, Any], *, think: bool) -> str:
    """GBNF for a JSON document following `schema` (optionally after a think block)."""
    conv = _converter()
    rule = _visit(conv, schema, "ak-json")
    root = f"root ::= {'ak-think ' if think else ''}{rule}"
    return "\n".join([root, conv.format_grammar(), _GBNF_THINK])


def action_grammar(tools: Sequence[ToolSpec], *, think: bool, allow_final: bool) -> str:
    """GBNF for one action: a tool call (code fenced, others JSON) or, if allowed, `final`."""
    conv = _converter()
    alternatives: list[str] = []
    rules: list[str] = [_GBNF_THINK]
    for n, tool in enumerate(tools):
        header = _literal(f"Action: {tool.name}\n")
        if isinstance(tool, PlanToolSpec):  # only plans of this request's shape
            rules += plan_rules(tool.shape, f"ak-plan-{n}")
            rules.append(f"ak-call-{n} ::= {header} ak-plan-{n}")
        elif is_code_tool(tool):
            fence = _literal(f"```{_code_language(tool)}\n")
            rules.append(f"ak-call-{n} ::= {header} {fence} ak-line+ \"```\"")
        else:
            args = _visit(conv, tool.parameters, f"ak-args-{n}")
            rules.append(f"ak-call-{n} ::= {header} {args}")
        alternatives.append(f"ak-call-{n}")
    if allow_final:
        alternatives.append("ak-final")
        rules.append(_GBNF_FINAL)
    rules.append(_GBNF_CODE_LINE)
    root = f"root ::= {'ak-think ' if think else ''}( {' | '.join(alternatives)} )"
    return "\n".join([root, *rules, conv.format_grammar()])


def describe_actions(tools: Sequence[ToolSpec], *, think: bool, allow_final: bool) -> str:
    """The system-prompt section that teaches the format (the grammar enforces it)."""
    lines = ["Reply with exactly one action in this format."]
    if think:
        lines.append("First think step by step inside <think> ... </think>, then write the action.")
    for tool in tools:
        lines.append("")
        if isinstance(tool, PlanToolSpec):
            lines += describe_plan_action(tool.name, tool.description, tool.shape)
        elif is_code_tool(tool):
            lang = _code_language(tool)
            lines += [f"To use {tool.name} ({tool.description.strip()}), write:",
                      f"Action: {tool.name}", f"```{lang}", "<the complete program>", "```",
                      "Write plain code in the block (not JSON, no escaping) and close it with "
                      "```. Only what the program prints is shown to you, in the next turn."]
        else:
            lines += [f"To use {tool.name} ({tool.description.strip()}), write:",
                      f"Action: {tool.name}",
                      f"<arguments as one JSON object following {_shown_schema(tool.parameters)}>"]
    if allow_final:
        lines += ["", "When you have the result, write:", "Action: final", "<your answer>"]
    return "\n".join(lines)


def render_call(call: ToolCallPart, tools: Sequence[ToolSpec]) -> str:
    """A past tool call written back in the action format (so history matches the prompt)."""
    spec = next((t for t in tools if t.name == call.name), None)
    if spec is not None and is_code_tool(spec):
        lang = call.arguments.get("language") or _code_language(spec)
        return f"Action: {call.name}\n```{lang}\n{call.arguments.get('code', '')}\n```"
    return f"Action: {call.name}\n{json.dumps(call.arguments)}"


def render_history(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> list[dict[str, str]]:
    """Neutral messages as plain chat-template messages.

    Reasoning is not replayed (the Qwen template strips it too); tool results become user
    messages that say which tool produced them, since the action format has no tool role.
    """
    out: list[dict[str, str]] = []
    for msg in messages:
        if msg.role in ("system", "user"):
            out.append({"role": msg.role, "content": msg.text})
        elif msg.role == "assistant":
            pieces = [msg.text.strip()] if msg.text.strip() else []
            pieces += [render_call(c, tools) for c in msg.tool_calls]
            if pieces and not msg.tool_calls and tools:
                pieces = [f"Action: final\n{pieces[0]}"]
            out.append({"role": "assistant", "content": "\n".join(pieces)})
        else:
            results = [p for p in msg.parts if isinstance(p, ToolResultPart)]
            body = "\n\n".join(f"Output of {r.name or 'the tool'}"
                               f"{' (FAILED)' if r.is_error else ''}:\n{r.content}"
                               for r in results)
            out.append({"role": "user", "content": body or msg.text})
    return out


def after_failed_program(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> bool:
    """The last message is a code tool's result whose program ran and failed.

    Then the grammar offers no `final`: left the choice, small models answered a failed run
    with numbers they made up instead of fixing the program. A tool error that is not a
    program's failure (a budget refusal, a timeout) leaves `final` open.
    """
    return failed_program_streak(messages, tools) > 0


def failed_program_streak(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> int:
    """How many tool results in a row, back from the last message, are failed programs."""
    code_tools = {t.name for t in tools if is_code_tool(t)}
    streak = 0
    for msg in reversed(messages):
        if msg.role == "assistant":
            continue
        if msg.role != "tool" or not any(isinstance(p, ToolResultPart) and p.name in code_tools
                                         and p.program_failed for p in msg.parts):
            return streak
        streak += 1
    return streak


def after_rejected_plan(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> list[ToolSpec]:
    """The plan tool alone if the last message is its error (a rejected plan), else [].

    Then the only action offered is submitting the plan again: after a rejection the 1.5B
    model answered in prose, repeating the error, and the run failed at planning.
    """
    if not messages or messages[-1].role != "tool":
        return []
    plan_tools = {t.name: t for t in tools if isinstance(t, PlanToolSpec)}
    rejected = [p.name for p in messages[-1].parts
                if isinstance(p, ToolResultPart) and p.is_error and p.name in plan_tools]
    return [plan_tools[rejected[0]]] if rejected else []


def free_text_grammar(*, think: bool) -> str:
    """No tools, no schema: free text, after a think block when asked ("" = no grammar)."""
    return f"root ::= ak-think [^\\x00]*\n{_GBNF_THINK}" if think else ""


def reasoning_part(text: str) -> ReasoningPart:
    return ReasoningPart(text=text, provider="local", field="think_tag")


def split_think(text: str) -> tuple[str, str]:
    """(reasoning, rest) using the shared think-tag splitter."""
    splitter = ThinkSplitter(THINK_TAGS)
    pieces = splitter.feed(text) + splitter.finish()
    reasoning = "".join(t for kind, t in pieces if kind == "reasoning")
    rest = "".join(t for kind, t in pieces if kind == "text")
    return reasoning.strip(), rest


def parse_output(text: str, tools: Sequence[ToolSpec], *, call_id: str) -> list[Part]:
    """Model text -> parts: reasoning, then one tool call or the final text."""
    reasoning, rest = split_think(text)
    parts: list[Part] = []
    if reasoning:
        parts.append(reasoning_part(reasoning))
    match = _HEADER.match(rest)
    by_name = {t.name: t for t in tools}
    if match and match.group(1) in by_name:
        spec, body = by_name[match.group(1)], match.group(2)
        parts.append(_call_from_body(spec, body, call_id))
        return parts
    if match and match.group(1) == "final":
        parts.append(TextPart(text=match.group(2).strip()))
        return parts
    remaining, calls = extract_text_tool_calls(rest, by_name)
    if remaining.strip():
        parts.append(TextPart(text=remaining.strip()))
    parts.extend(calls)
    return parts


def _call_from_body(spec: ToolSpec, body: str, call_id: str) -> ToolCallPart:
    if is_code_tool(spec):
        fence = _FENCE.search(body)
        code = fence.group(1) if fence else body.strip().strip("`")
        stray = _ACTION_IN_CODE.search(code)
        if stray:
            code = code[:stray.start()].rstrip()
        args: dict[str, Any] = {"code": code}
        if "language" in spec.parameters.get("properties", {}):
            args = {"language": _code_language(spec), **args}
        return ToolCallPart(id=call_id, name=spec.name, arguments=args)
    return make_tool_call(call_id, spec.name, body.strip())
