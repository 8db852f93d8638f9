"""Turning telemetry on for a run: the switch, the tracer provider, the exporter.

Configuration comes from the task (``telemetry:``) and the standard ``OTEL_*`` variables, read
from the run's environment (`Runtime.environ`, the process environment by default), so a
program that gives a run its own environment configures its telemetry the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agentkit._extras import require
from agentkit.errors import ConfigError
from agentkit.runtime import Runtime
from agentkit.task import TaskSpec
from agentkit.telemetry._spans import OtelTracer, provider_name

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

__all__ = ["RunTelemetry", "attach", "check_available", "telemetry_enabled"]

_FEATURE = "OpenTelemetry export (telemetry.otel / --otel)"
_TRUE = {"true", "1", "yes", "on"}


def telemetry_enabled(task: TaskSpec, environ: Mapping[str, str]) -> bool:
    """The task asks for traces, and ``OTEL_SDK_DISABLED`` does not turn the SDK off."""
    disabled = environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE
    return task.telemetry.otel and not disabled


def capture_content(task: TaskSpec, environ: Mapping[str, str]) -> bool:
    flag = environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "")
    return task.telemetry.capture_content or flag.strip().lower() in _TRUE


def check_available(task: TaskSpec, environ: Mapping[str, str]) -> None:
    """Before a run starts: if it asks for traces, the ``[otel]`` extra must be installed
    (a `SetupError` naming the install command otherwise) and the exporter settings valid."""
    if telemetry_enabled(task, environ):
        require("opentelemetry.sdk.trace", "otel", feature=_FEATURE)
        _protocol(environ)


class RunTelemetry:
    """The tracer a run attached, and what to do with its provider when the run ends."""

    def __init__(self, tracer: OtelTracer) -> None:
        self.tracer = tracer

    async def aclose(self) -> None:
        """Flush and shut down a provider the run made (in a thread: export is blocking I/O).
        A provider the application owns is left alone: its lifecycle is the application's."""
        if self.tracer.owned:
            provider: Any = self.tracer.provider
            await asyncio.to_thread(provider.shutdown)


def attach(runtime: Runtime) -> RunTelemetry | None:
    """Called by the run before its first event. Binds tracers the caller passed in `sinks`
    to this run; if the task turns OTel on and none was passed, adds one. None when off."""
    task, environ = runtime.task, runtime.environ
    spec = task.models.get(task.model)
    provider = provider_name(spec.profile) if spec is not None else None
    content = capture_content(task, environ)
    given = [s for s in runtime.bus.sinks if isinstance(s, OtelTracer)]
    for tracer in given:
        tracer.bind(runtime.secrets(), capture_content=content, provider=provider)
    if given or not telemetry_enabled(task, environ):
        return None
    tracer_provider, owned = _tracer_provider(environ)
    tracer = OtelTracer(tracer_provider, capture_content=content, owned=owned)
    tracer.bind(runtime.secrets(), provider=provider)
    runtime.bus.add_sink(tracer)
    return RunTelemetry(tracer)


def _tracer_provider(environ: Mapping[str, str]) -> tuple[TracerProvider, bool]:
    """The application's global provider if it installed one; else a private one for this
    run (never made global: the application's tracing setup stays the application's)."""
    trace = require("opentelemetry.trace", "otel", feature=_FEATURE)
    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider):
        return current, False
    sdk = require("opentelemetry.sdk.trace", "otel", feature=_FEATURE)
    resources = require("opentelemetry.sdk.resources", "otel", feature=_FEATURE)
    attributes = {}
    if environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = environ["OTEL_SERVICE_NAME"]
    resource = resources.Resource.create(attributes)
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(resources.Resource({"service.name": "agentkit"}))
    provider: TracerProvider = sdk.TracerProvider(resource=resource)
    processor = _processor(environ)
    if processor is not None:
        provider.add_span_processor(processor)
    return provider, True


def _processor(environ: Mapping[str, str]) -> SpanProcessor | None:
    """``OTEL_TRACES_EXPORTER``: ``otlp`` (the default), ``console`` or ``none``."""
    names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    export = require("opentelemetry.sdk.trace.export", "otel", feature=_FEATURE)
    if "otlp" in names:
        processor: SpanProcessor = export.BatchSpanProcessor(_otlp_exporter(environ))
        return processor
    if "console" in names:
        console: SpanProcessor = export.SimpleSpanProcessor(export.ConsoleSpanExporter())
        return console
    if names and set(names) <= {"none"}:
        return None
    raise ConfigError(f"OTEL_TRACES_EXPORTER={environ.get('OTEL_TRACES_EXPORTER')!r} is not "
                      f"supported by agentkit: use otlp, console or none")


def _protocol(environ: Mapping[str, str]) -> str:
    protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip()
    if protocol not in ("http/protobuf", "grpc"):
        raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: use "
                          f"http/protobuf (the [otel] extra) or grpc (pip install "
                          f"opentelemetry-exporter-otlp-proto-grpc)")
    return protocol


def _otlp_exporter(environ: Mapping[str, str]) -> Any:
    """The OTLP exporter for the configured protocol, endpoint and headers."""
    protocol = _protocol(environ)
    parse_headers = require("opentelemetry.util.re", "otel", feature=_FEATURE).parse_env_headers
    raw_headers = (environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
                   or environ.get("OTEL_EXPORTER_OTLP_HEADERS"))
    headers = parse_headers(raw_headers, liberal=True) if raw_headers else None
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if protocol == "grpc":
        grpc = require("opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "otel",
                       feature=f"{_FEATURE} over grpc (pip install "
                               f"opentelemetry-exporter-otlp-proto-grpc)")
        return grpc.OTLPSpanExporter(endpoint=endpoint or environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"), headers=headers)
    if endpoint is None and environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        # the generic endpoint is a base URL: the signal's path is appended (OTLP/HTTP rule)
        endpoint = environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    http = require("opentelemetry.exporter.otlp.proto.http.trace_exporter", "otel",
                   feature=_FEATURE)
    return http.OTLPSpanExporter(endpoint=endpoint, headers=headers)
