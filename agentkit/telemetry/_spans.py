"""`OtelTracer`: the run's events as OpenTelemetry spans (GenAI semantic conventions).

Spans are opened and closed as the events arrive, with the events' timestamps as their start
and end times. Pairs are matched by what the events already carry: a node's attempt runs from
``node.started`` to ``node.finished``/``node.failed``; a model call from ``model.request`` to
``model.response``/``model.error`` (same ``call_key``); a tool call from ``tool.call`` to
``tool.result`` (same node and ``call_id``). Agents that have no node events of their own
(planner, re-planner, synthesizer, the agent of ``mode: agent``) get a span from their first
event to their last.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentkit._extras import require
from agentkit._version import __version__
from agentkit.events import Event
from agentkit.secrets import TextRedactor

if TYPE_CHECKING:
    from opentelemetry.trace import Span, TracerProvider

__all__ = ["OtelTracer", "provider_name"]

_log = logging.getLogger("agentkit.telemetry")

#: agentkit profile -> the conventions' well-known `gen_ai.provider.name` (others keep their name)
_PROVIDERS = {
    "openai": "openai", "openai-responses": "openai", "anthropic": "anthropic",
    "deepseek": "deepseek", "deepseek-reasoner": "deepseek", "deepseek-hybrid": "deepseek",
    "kimi": "moonshot_ai", "mistral": "mistral_ai", "groq": "groq", "gemini": "gcp.gemini",
    "xai": "x_ai",
}
#: a delegated sub-team's node ids: "<parent>.sub<n>.<id>"
_SUBTEAM = re.compile(r"^(?P<parent>.+?)\.sub\d+\.")
#: kinds recorded as span events (on the innermost open span of their node)
_SPAN_EVENTS = frozenset({"retry", "fallback", "breaker.open", "breaker.closed",
                          "budget.exceeded", "url.fetched", "url.blocked", "url.cited",
                          "file.diff", "answer.ungrounded", "answer.empty", "plan.created",
                          "plan.rejected", "plan.replanned", "node.skipped", "node.sample",
                          "node.consensus", "recovered"})


def provider_name(profile: str | None) -> str:
    """The `gen_ai.provider.name` for an agentkit profile (its own name when the conventions
    list no well-known value for it)."""
    return _PROVIDERS.get(profile or "", profile or "_OTHER")


def _ns(ts: float) -> int:
    return int(ts * 1_000_000_000)


@dataclass
class _Agent:
    span: Span
    last_ts: float
    #: opened from a node.started (ends with its node.finished/failed), else implicit
    explicit: bool
    usage: dict[str, int] = field(default_factory=dict)
    provider_set: bool = False


class OtelTracer:
    """An `EventBus` sink exporting one run as a trace, to `tracer_provider`.

    `capture_content` adds messages, reasoning and tool arguments/results (opt-in), redacted
    by shape and by the run's secret values (`secrets`; the run supplies them when it attaches
    the tracer). A failure inside the tracer is logged once and turns it off: telemetry never
    stops a run.
    """

    def __init__(self, tracer_provider: TracerProvider, *, capture_content: bool = False,
                 secrets: Iterable[str] = (), owned: bool = False) -> None:
        self._trace = require("opentelemetry.trace", "otel", feature="OpenTelemetry export")
        self.provider = tracer_provider
        self._tracer = tracer_provider.get_tracer("agentkit", __version__)
        self.capture_content = capture_content
        self._redactor = TextRedactor(secrets)
        #: True when the run made the provider (it then shuts it down at the end)
        self.owned = owned
        self._lock = threading.Lock()
        self._broken = False
        self._run: Span | None = None
        self._run_id = ""
        self._default_provider = "_OTHER"
        self._agents: dict[str, _Agent] = {}
        self._chats: dict[str, tuple[Span, str]] = {}  # call_key -> (span, node)
        self._chat_of_agent: dict[tuple[str, str | None], str] = {}  # (node, agent) -> call_key
        self._tools: dict[tuple[str, str | None], tuple[Span, str]] = {}  # (node, call) -> (span, tool)

    def bind(self, secrets: Iterable[str], *, capture_content: bool = False,
             provider: str | None = None) -> None:
        """Before the run's first event: its secret values, whether the task opted in to
        content, and the provider of its default model (agent spans carry it from the start;
        each agent's own is set at its first model call)."""
        self._redactor = TextRedactor(secrets)
        self.capture_content = self.capture_content or capture_content
        self._default_provider = provider or self._default_provider

    # -- the sink ------------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        if self._broken:
            return
        with self._lock:
            try:
                self._on(event)
            except Exception:  # a bug here must not stop the run; say so once
                self._broken = True
                _log.warning("OpenTelemetry export stopped after an internal error on event "
                             "%s #%s", event.kind, event.seq, exc_info=True)

    def _on(self, event: Event) -> None:
        kind, node = event.kind, event.node_id
        if kind == "run.started":
            self._start_run(event)
            return
        if self._run is None:
            return
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, event)
        elif kind in _SPAN_EVENTS:
            self._span_event(event)
        if node is not None and node in self._agents:
            self._agents[node].last_ts = max(self._agents[node].last_ts, event.ts)

    # -- spans ---------------------------------------------------------------------------------

    def _attrs(self, operation: str, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"gen_ai.operation.name": operation,
                               "gen_ai.conversation.id": self._run_id}
        out.update({k.replace("__", "."): v for k, v in extra.items() if v is not None})
        return out

    def _start(self, name: str, parent: Span | None, ts: float, kind: str,
               attributes: dict[str, Any]) -> Span:
        context = self._trace.set_span_in_context(parent) if parent is not None else None
        span: Span = self._tracer.start_span(
            name, context=context, kind=getattr(self._trace.SpanKind, kind),
            attributes=attributes, start_time=_ns(ts))
        return span

    def _fail(self, span: Span, error_type: str, message: str) -> None:
        span.set_attribute("error.type", error_type)
        span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, message[:500]))

    def _start_run(self, event: Event) -> None:
        self._run_id = event.run_id
        task = str(event.data.get("task") or "run")
        self._run = self._start(f"invoke_agent {task}", None, event.ts, "INTERNAL", self._attrs(
            "invoke_agent", gen_ai__agent__name=task, gen_ai__provider__name=self._default_provider,
            agentkit__run__id=event.run_id, agentkit__task__mode=event.data.get("mode")))

    def _parent_of(self, node: str) -> Span | None:
        """A sub-team node's parent is the `delegate` call that spawned it; others the run."""
        match = _SUBTEAM.match(node)
        if match is not None:
            parent = match.group("parent")
            for (owner, _), (span, tool) in reversed(list(self._tools.items())):
                if owner == parent and tool == "delegate":
                    return span
            if parent in self._agents:
                return self._agents[parent].span
        return self._run

    def _agent(self, node: str, ts: float) -> _Agent:
        """The open agent span of `node`, opened now (implicit) if there is none."""
        agent = self._agents.get(node)
        if agent is None:
            agent = self._open_agent(node, ts, explicit=False, attempt=None)
        return agent

    def _open_agent(self, node: str, ts: float, *, explicit: bool, attempt: int | None) -> _Agent:
        span = self._start(f"invoke_agent {node}", self._parent_of(node), ts, "INTERNAL",
                           self._attrs("invoke_agent", gen_ai__agent__name=node,
                                       gen_ai__provider__name=self._default_provider,
                                       agentkit__node__attempt=attempt))
        agent = _Agent(span=span, last_ts=ts, explicit=explicit)
        self._agents[node] = agent
        return agent

    def _close_agent(self, node: str, ts: float) -> None:
        agent = self._agents.pop(node, None)
        if agent is None:
            return
        for key, value in agent.usage.items():
            agent.span.set_attribute(key, value)
        agent.span.end(end_time=_ns(ts))

    def _innermost(self, event: Event) -> Span | None:
        """Where a span event goes: the open tool or model call it belongs to, else its
        node's agent span, else the run's span."""
        node, data = event.node_id, event.data
        if node is not None:
            tool = self._tools.get((node, data.get("call_id")))
            if tool is not None:
                return tool[0]
            key = self._chat_of_agent.get((node, data.get("agent_id")))
            if key is not None and key in self._chats:
                return self._chats[key][0]
            if node in self._agents:
                return self._agents[node].span
        return self._run

    def _span_event(self, event: Event) -> None:
        span = self._innermost(event)
        if span is not None:
            span.add_event(event.kind, self._redactor.value(_event_attributes(event)),
                           timestamp=_ns(event.ts))

    # -- content (opt-in) ----------------------------------------------------------------------

    def _content(self, value: Any) -> str:
        return json.dumps(self._redactor.value(value), ensure_ascii=False, default=str)


# ---------------------------------------------------------------------------------------------
# Event handlers


def _node_started(t: OtelTracer, event: Event) -> None:
    node = event.node_id or "-"
    if node in t._agents:  # a previous attempt left open (cannot normally happen)
        t._close_agent(node, event.ts)
    agent = t._open_agent(node, event.ts, explicit=True, attempt=event.data.get("attempt"))
    deps = event.data.get("depends_on") or []
    agent.span.set_attribute("agentkit.node.depends_on", [str(d) for d in deps])


def _node_finished(t: OtelTracer, event: Event) -> None:
    t._close_agent(event.node_id or "-", event.ts)


def _node_failed(t: OtelTracer, event: Event) -> None:
    node = event.node_id or "-"
    agent = t._agents.get(node)
    if agent is None:
        return
    error = event.data.get("error") or {}
    t._fail(agent.span, str(error.get("type") or "_OTHER"), str(error.get("message") or ""))
    agent.span.add_event("node.failed", {"will_retry": bool(event.data.get("will_retry"))},
                         timestamp=_ns(event.ts))
    t._close_agent(node, event.ts)


def _model_request(t: OtelTracer, event: Event) -> None:
    node, data = event.node_id or "-", event.data
    agent = t._agent(node, event.ts)
    model = str(data.get("provider_model") or data.get("model") or "")
    provider = provider_name(data.get("profile"))
    if not agent.provider_set:  # the agent's provider is the one it calls
        agent.span.set_attribute("gen_ai.provider.name", provider)
        agent.span.set_attribute("gen_ai.request.model", model)
        agent.provider_set = True
    settings = data.get("settings") or {}
    attrs = t._attrs("chat", gen_ai__provider__name=provider, gen_ai__request__model=model,
                     gen_ai__request__max_tokens=settings.get("max_tokens"),
                     gen_ai__request__temperature=settings.get("temperature"),
                     agentkit__model=data.get("model"), agentkit__call_key=data.get("call_key"))
    if t.capture_content:
        attrs["gen_ai.input.messages"] = t._content(
            [_otel_message(m) for m in data.get("messages") or []])
        if data.get("tools"):
            attrs["gen_ai.tool.definitions"] = t._content(
                [{"type": "function", **tool} for tool in data["tools"]])
    span = t._start(f"chat {model}", agent.span, event.ts, "CLIENT", attrs)
    key = str(data.get("call_key") or f"{node}/{data.get('agent_id')}")
    t._chats[key] = (span, node)
    t._chat_of_agent[(node, data.get("agent_id"))] = key


def _chat_span(t: OtelTracer, event: Event) -> tuple[Span, str] | None:
    data = event.data
    key = str(data.get("call_key") or f"{event.node_id or '-'}/{data.get('agent_id')}")
    return t._chats.pop(key, None)


def _model_response(t: OtelTracer, event: Event) -> None:
    found = _chat_span(t, event)
    if found is None:
        return
    span, node = found
    data = event.data
    usage = data.get("usage") or {}
    finish = _finish_reason(data.get("finish_reason"))
    attrs: dict[str, Any] = {
        "gen_ai.response.model": data.get("provider_model"),
        "gen_ai.response.id": data.get("response_id"),
        "gen_ai.response.finish_reasons": [finish] if finish else None,
        "gen_ai.usage.input_tokens": usage.get("input_tokens"),
        "gen_ai.usage.output_tokens": usage.get("output_tokens"),
        "gen_ai.usage.reasoning.output_tokens": usage.get("reasoning_tokens") or None,
        "gen_ai.usage.cache_read.input_tokens": usage.get("cached_tokens") or None,
        "agentkit.cost_usd": data.get("cost_usd")}
    if t.capture_content:
        attrs["gen_ai.output.messages"] = t._content(
            [{**_otel_message(data.get("message") or {}), "finish_reason": finish or "stop"}])
    span.set_attributes({k: v for k, v in attrs.items() if v is not None})
    span.end(end_time=_ns(event.ts))
    agent = t._agents.get(node)
    if agent is not None:
        for name in ("input_tokens", "output_tokens"):
            key = f"gen_ai.usage.{name}"
            agent.usage[key] = agent.usage.get(key, 0) + int(usage.get(name) or 0)


def _model_error(t: OtelTracer, event: Event) -> None:
    found = _chat_span(t, event)
    if found is None:
        return
    span, _ = found
    error = event.data.get("error") or {}
    status = error.get("status")
    t._fail(span, str(status) if status else str(error.get("type") or "_OTHER"),
            str(error.get("message") or ""))
    span.end(end_time=_ns(event.ts))


def _tool_call(t: OtelTracer, event: Event) -> None:
    node, data = event.node_id or "-", event.data
    agent = t._agent(node, event.ts)
    tool = str(data.get("tool") or "")
    attrs = t._attrs("execute_tool", gen_ai__tool__name=tool, gen_ai__tool__type="function",
                     gen_ai__tool__call__id=data.get("call_id"))
    if t.capture_content:
        attrs["gen_ai.tool.call.arguments"] = t._content(data.get("arguments") or {})
    span = t._start(f"execute_tool {tool}", agent.span, event.ts, "INTERNAL", attrs)
    t._tools[(node, data.get("call_id"))] = (span, tool)


def _tool_result(t: OtelTracer, event: Event) -> None:
    found = t._tools.pop((event.node_id or "-", event.data.get("call_id")), None)
    if found is None:
        return
    span, _ = found
    data = event.data
    if not data.get("ok", True):
        error = data.get("error") or {}
        t._fail(span, str(error.get("code") or error.get("type") or "_OTHER"),
                str(error.get("message") or ""))
    elif t.capture_content:
        span.set_attribute("gen_ai.tool.call.result", t._content(data.get("data") or {}))
    span.end(end_time=_ns(event.ts))


def _run_finished(t: OtelTracer, event: Event) -> None:
    """End everything still open (cancelled or failed work) and then the run's span."""
    ts = event.ts
    for span, _ in list(t._tools.values()) + list(t._chats.values()):
        t._fail(span, "cancelled", "the run ended while this was in progress")
        span.end(end_time=_ns(ts))
    t._tools.clear()
    t._chats.clear()
    for node, agent in list(t._agents.items()):
        if agent.explicit:
            t._fail(agent.span, "cancelled", "the run ended while this node was running")
        t._close_agent(node, ts if agent.explicit else agent.last_ts)
    run = t._run
    assert run is not None
    data = event.data
    usage = data.get("usage") or {}
    run.set_attribute("gen_ai.usage.input_tokens", int(usage.get("input_tokens") or 0))
    run.set_attribute("gen_ai.usage.output_tokens", int(usage.get("output_tokens") or 0))
    run.set_attribute("agentkit.cost_usd", float(data.get("cost_usd") or 0.0))
    run.set_attribute("agentkit.run.status", str(data.get("status")))
    error = data.get("error")
    if data.get("status") != "succeeded":
        t._fail(run, str((error or {}).get("type") or data.get("status") or "_OTHER"),
                str((error or {}).get("message") or data.get("status")))
    run.end(end_time=_ns(ts))
    t._run = None


_HANDLERS = {
    "node.started": _node_started, "node.finished": _node_finished, "node.failed": _node_failed,
    "model.request": _model_request, "model.response": _model_response,
    "model.error": _model_error, "tool.call": _tool_call, "tool.result": _tool_result,
    "run.finished": _run_finished,
}


# ---------------------------------------------------------------------------------------------
# Values


def _finish_reason(reason: Any) -> str | None:
    """agentkit's normalised finish reason in the conventions' words (``tool_call``)."""
    if not reason:
        return None
    return "tool_call" if reason == "tool_calls" else str(reason)


def _otel_message(message: dict[str, Any]) -> dict[str, Any]:
    """An agentkit message dump in the conventions' message shape (role + typed parts)."""
    parts: list[dict[str, Any]] = []
    for part in message.get("parts") or []:
        kind = part.get("kind")
        if kind == "text":
            parts.append({"type": "text", "content": part.get("text", "")})
        elif kind == "reasoning":
            parts.append({"type": "reasoning", "content": part.get("text", "")})
        elif kind == "tool_call":
            parts.append({"type": "tool_call", "id": part.get("id"), "name": part.get("name"),
                          "arguments": part.get("arguments")})
        elif kind == "tool_result":
            parts.append({"type": "tool_call_response", "id": part.get("call_id"),
                          "response": part.get("content")})
    return {"role": message.get("role", "assistant"), "parts": parts}


#: which fields of a span event's payload become its attributes (small, never content)
_EVENT_FIELDS = ("attempt", "model", "channel", "next_channel", "delay_s", "status",
                 "error_type", "kind", "from", "to", "budget", "scope", "limit", "url",
                 "content_hash", "ok", "path", "source", "failed", "sample", "chosen",
                 "failures", "cooldown_s")


def _event_attributes(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _EVENT_FIELDS:
        value = event.data.get(name)
        if isinstance(value, bool | int | float | str):
            out[f"agentkit.{name}"] = value
    if event.kind == "answer.ungrounded":
        out["agentkit.items"] = [str(i) for i in event.data.get("items") or []]
    return out
