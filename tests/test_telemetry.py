"""OpenTelemetry export: a real swarm run against the scripted model server, traced.

The run (planner -> nodes a, b -> synthesizer with a fix round; b's first request gets a 503
that is retried) goes over real HTTP; spans are checked against the GenAI semantic
conventions: span names (``invoke_agent {agent}``, ``chat {request model}``,
``execute_tool {tool}``), kinds, parents (one trace per run), and the ``gen_ai.*`` attributes.
The OTLP test sends to a receiver on 127.0.0.1 that decodes the protobuf as a collector would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _observed_run import ENV, PLANNER, SECRET, USAGE, WORKER, WRITER, observed_run
from _otlp_receiver import Receiver
from opentelemetry import trace
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from agentkit import RunResult, start
from agentkit.errors import ConfigError
from agentkit.telemetry import OtelTracer
from agentkit.testing import ScriptedModelServer

TESTS = Path(__file__).resolve().parent

#: every span the scenario must produce, by name (b's retried call is one span)
EXPECTED_SPANS = Counter({
    "invoke_agent observed": 1, "invoke_agent planner": 1, "invoke_agent a": 1,
    "invoke_agent b": 1, "invoke_agent synthesizer": 1, f"chat {PLANNER}": 1,
    f"chat {WORKER}": 3, f"chat {WRITER}": 2, "execute_tool submit_plan": 1,
    "execute_tool list_files": 1})


def memory_tracer() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def parent_name(span: ReadableSpan, spans: list[ReadableSpan]) -> str | None:
    if span.parent is None:
        return None
    return next(s.name for s in spans if s.context.span_id == span.parent.span_id)


def ledger_response(result: RunResult, node: str) -> dict[str, Any]:
    """The first model.response of `node` in the run's ledger."""
    assert result.ledger is not None
    lines = [json.loads(line) for line in Path(result.ledger).read_text().splitlines()]
    data: dict[str, Any] = next(e["data"] for e in lines
                                if e["kind"] == "model.response" and e["node_id"] == node)
    return data


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_swarm_run_is_one_genai_trace_with_conventional_names_parents_and_attributes(
        tmp_path: Path) -> None:
    """Proves: one trace per run; run invoke_agent -> node invoke_agent -> chat/execute_tool;
    chat spans named after the provider's model id with provider, request/response model,
    usage and finish reasons; tool spans with tool name and call id; the 503 retry is a span
    event; every span carries the run id as gen_ai.conversation.id; no content by default."""
    provider, exporter = memory_tracer()
    async with ScriptedModelServer("deepseek") as srv:
        result = await observed_run(srv, tmp_path, sinks=[OtelTracer(provider)])
    assert result.status == "succeeded", result.error
    spans = list(exporter.get_finished_spans())
    assert Counter(s.name for s in spans) == EXPECTED_SPANS
    assert len({s.context.trace_id for s in spans}) == 1  # one trace per run

    root = [s for s in spans if s.parent is None]
    assert [s.name for s in root] == ["invoke_agent observed"]
    for span in spans:
        assert attrs(span)["gen_ai.conversation.id"] == result.run_id
        op = attrs(span)["gen_ai.operation.name"]
        expected_parent = {"invoke_agent": "invoke_agent observed"}.get(op)
        if span is root[0]:
            continue
        if expected_parent is not None:
            assert parent_name(span, spans) == expected_parent, span.name
            assert span.kind == SpanKind.INTERNAL
            assert attrs(span)["gen_ai.agent.name"] == span.name.removeprefix("invoke_agent ")
        assert not any(k in attrs(span) for k in ("gen_ai.input.messages",
                                                  "gen_ai.output.messages",
                                                  "gen_ai.tool.call.arguments"))

    def children(agent: str) -> list[ReadableSpan]:
        return sorted((s for s in spans if parent_name(s, spans) == f"invoke_agent {agent}"),
                      key=lambda s: s.start_time or 0)

    assert [s.name for s in children("planner")] == [f"chat {PLANNER}", "execute_tool submit_plan"]
    assert [s.name for s in children("a")] == [f"chat {WORKER}", "execute_tool list_files",
                                               f"chat {WORKER}"]
    assert [s.name for s in children("b")] == [f"chat {WORKER}"]
    assert [s.name for s in children("synthesizer")] == [f"chat {WRITER}"] * 2

    first_a, _, second_a = children("a")
    chat = attrs(first_a)
    assert first_a.kind == SpanKind.CLIENT
    assert chat["gen_ai.operation.name"] == "chat" and chat["gen_ai.provider.name"] == "deepseek"
    # request model: the id agentkit asked for; response model: the one the server says answered
    assert chat["gen_ai.request.model"] == WORKER
    assert chat["gen_ai.response.model"] == ledger_response(result, "a")["provider_model"]
    assert chat["gen_ai.request.max_tokens"] == 256
    assert (chat["gen_ai.usage.input_tokens"], chat["gen_ai.usage.output_tokens"],
            chat["gen_ai.usage.reasoning.output_tokens"]) == USAGE["a1"]
    assert tuple(chat["gen_ai.response.finish_reasons"]) == ("tool_call",)
    assert tuple(attrs(second_a)["gen_ai.response.finish_reasons"]) == ("stop",)

    tool = attrs(children("a")[1])
    assert tool["gen_ai.operation.name"] == "execute_tool"
    assert tool["gen_ai.tool.name"] == "list_files" and tool["gen_ai.tool.call.id"] == "call_ls"

    retried = children("b")[0]
    assert [e.name for e in retried.events] == ["retry"]
    assert retried.events[0].attributes is not None
    assert retried.events[0].attributes["agentkit.status"] == 503
    assert retried.status.status_code != StatusCode.ERROR

    node_a = next(s for s in spans if s.name == "invoke_agent a")
    assert attrs(node_a)["gen_ai.provider.name"] == "deepseek"
    assert attrs(node_a)["gen_ai.usage.input_tokens"] == USAGE["a1"][0] + USAGE["a2"][0]
    assert tuple(attrs(next(s for s in spans if s.name == "invoke_agent b"))[
        "agentkit.node.depends_on"]) == ("a",)
    run = attrs(root[0])
    assert run["gen_ai.usage.input_tokens"] == sum(u[0] for u in USAGE.values())
    assert run["gen_ai.agent.name"] == "observed" and run["agentkit.run.status"] == "succeeded"
    # spans are as long as the ledger says: each child lies within its parent
    by_id = {s.context.span_id: s for s in spans}
    for span in spans:
        if span.parent is not None:
            parent = by_id[span.parent.span_id]
            assert (parent.start_time or 0) <= (span.start_time or 0)
            assert (span.end_time or 0) <= (parent.end_time or 0), span.name
    synth = next(s for s in spans if s.name == "invoke_agent synthesizer")
    assert [e.name for e in synth.events].count("answer.ungrounded") == 2


async def test_content_is_recorded_only_on_opt_in_and_redacted_like_the_ledger(
        tmp_path: Path) -> None:
    """Proves: with telemetry.capture_content the chat spans carry input/output messages in
    the conventions' shape (reasoning as a reasoning part) and tool spans their arguments and
    results; the run's secret value a model repeated is replaced by [REDACTED] everywhere."""
    provider, exporter = memory_tracer()
    async with ScriptedModelServer("deepseek") as srv:
        result = await observed_run(srv, tmp_path, sinks=[OtelTracer(provider)],
                                    telemetry={"capture_content": True})
    assert result.status == "succeeded", result.error
    spans = list(exporter.get_finished_spans())
    dumped = json.dumps([attrs(s) for s in spans], default=list)
    assert SECRET not in dumped
    b_chat = next(s for s in spans if s.name == f"chat {WORKER}"
                  and parent_name(s, spans) == "invoke_agent b")
    output = json.loads(attrs(b_chat)["gen_ai.output.messages"])
    assert output[0]["role"] == "assistant" and output[0]["finish_reason"] == "stop"
    assert {"type": "reasoning", "content": "Count."} in output[0]["parts"]
    assert "[REDACTED]" in next(p["content"] for p in output[0]["parts"] if p["type"] == "text")
    inputs = json.loads(attrs(b_chat)["gen_ai.input.messages"])
    assert [m["role"] for m in inputs] == ["system", "user"]
    assert "Describe the files." in inputs[1]["parts"][0]["content"]
    listing = next(s for s in spans if s.name == "execute_tool list_files")
    assert json.loads(attrs(listing)["gen_ai.tool.call.arguments"]) == {}
    assert "notes.txt" in attrs(listing)["gen_ai.tool.call.result"]


# ---------------------------------------------------------------------------------------------
# OTLP/HTTP to a local receiver


def value(v: AnyValue) -> Any:
    field = v.WhichOneof("value")
    if field == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, field) if field else None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


async def test_otlp_http_export_reaches_a_local_receiver(tmp_path: Path, receiver: Receiver) -> None:
    """Proves: `telemetry: {otel: true}` with the standard OTEL_* variables (endpoint, headers,
    service name) exports the whole trace over OTLP/HTTP protobuf by the time the run returns;
    what arrives decodes to the same tree and gen_ai attributes; the application's global
    tracer provider is never installed or replaced."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_SERVICE_NAME": "obs-test",
           "OTEL_EXPORTER_OTLP_HEADERS": "x-team=observability"}
    async with ScriptedModelServer("deepseek") as srv:
        result = await observed_run(srv, tmp_path, environ=env, telemetry={"otel": True})
    assert result.status == "succeeded", result.error
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)  # not installed
    assert receiver.requests, "nothing arrived at the OTLP receiver"
    assert all(h["x-team"] == "observability" for h, _ in receiver.requests)
    assert all(h["content-type"] == "application/x-protobuf" for h, _ in receiver.requests)
    spans: list[dict[str, Any]] = []
    for _, request in receiver.requests:
        for rs in request.resource_spans:
            resource = {a.key: value(a.value) for a in rs.resource.attributes}
            assert resource["service.name"] == "obs-test"
            for ss in rs.scope_spans:
                assert ss.scope.name == "agentkit"
                spans += [{"name": s.name, "id": s.span_id, "parent": s.parent_span_id,
                           "trace": s.trace_id, "start": s.start_time_unix_nano,
                           "attrs": {a.key: value(a.value) for a in s.attributes}}
                          for s in ss.spans]
    assert Counter(s["name"] for s in spans) == EXPECTED_SPANS
    assert len({s["trace"] for s in spans}) == 1
    names = {s["id"]: s["name"] for s in spans}
    tree = Counter((names.get(s["parent"]), s["name"]) for s in spans)
    assert tree[("invoke_agent a", "execute_tool list_files")] == 1
    assert tree[("invoke_agent a", f"chat {WORKER}")] == 2
    assert tree[("invoke_agent observed", "invoke_agent synthesizer")] == 1
    assert tree[(None, "invoke_agent observed")] == 1
    write = sorted((s for s in spans if s["name"] == f"chat {WRITER}"), key=lambda s: s["start"])
    assert write[1]["attrs"]["gen_ai.usage.input_tokens"] == USAGE["fix"][0]
    assert write[1]["attrs"]["gen_ai.conversation.id"] == result.run_id
    assert write[1]["attrs"]["gen_ai.response.finish_reasons"] == ["stop"]


async def test_unsupported_otlp_protocol_is_refused_before_the_run(tmp_path: Path) -> None:
    """Proves: a protocol the Python exporter cannot speak is a ConfigError naming the
    variable and the choices, raised by start() before any model is called."""
    async with ScriptedModelServer("deepseek") as srv:
        from _observed_run import task_for

        task = task_for(srv, tmp_path, telemetry={"otel": True})
        with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL='http/json'.*grpc"):
            start(task, environ={**ENV, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
        assert srv.requests == []


# ---------------------------------------------------------------------------------------------
# In a fresh interpreter: what is imported, and whose provider is used

CHILD = """
import asyncio, json, sys, tempfile
from pathlib import Path
from _observed_run import observed_run
from agentkit.testing import ScriptedModelServer

async def main(otel):
    with tempfile.TemporaryDirectory() as d:
        async with ScriptedModelServer("deepseek") as srv:
            return await observed_run(srv, Path(d), telemetry={"otel": otel})

mode = sys.argv[1]
if mode == "off":
    result = asyncio.run(main(False))
    print(json.dumps({"status": result.status,
                      "otel": sorted(m for m in sys.modules if m.startswith("opentelemetry"))}))
else:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    exporter = InMemorySpanExporter()
    app_provider = TracerProvider()
    app_provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(app_provider)
    result = asyncio.run(main(True))
    print(json.dumps({"status": result.status,
                      "same_provider": trace.get_tracer_provider() is app_provider,
                      "spans": len(exporter.get_finished_spans()),
                      "names": sorted({s.name for s in exporter.get_finished_spans()})}))
"""


def run_child(mode: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def test_with_telemetry_off_nothing_of_opentelemetry_is_imported() -> None:
    """Proves: a whole run with telemetry off (the default) imports no opentelemetry module."""
    out = run_child("off")
    assert out == {"status": "succeeded", "otel": []}


def test_an_applications_global_tracer_provider_is_used_and_kept() -> None:
    """Proves: when the application installed a global tracer provider, the run's spans go to
    it (its exporter receives all of them) and it is still the global provider afterwards."""
    out = run_child("global")
    assert out["status"] == "succeeded" and out["same_provider"] is True
    assert out["spans"] == sum(EXPECTED_SPANS.values())
    assert set(out["names"]) == set(EXPECTED_SPANS)
