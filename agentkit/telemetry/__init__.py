"""OpenTelemetry traces of a run, after the GenAI semantic conventions (the ``[otel]`` extra).

Off by default: nothing of OpenTelemetry is imported or sent unless the task says
``telemetry: {otel: true}`` (``agentkit run --otel`` sets it). Then one more consumer of the
run's events (`OtelTracer`, an `EventBus` sink) turns them into one trace per run:

    invoke_agent {task}                 the run (gen_ai.conversation.id = run id)
      invoke_agent {node}               one per node attempt, planner, synthesizer
        chat {provider model id}        one per model call (usage, finish reasons)
        execute_tool {tool}             one per tool call (tool name, call id)
          invoke_agent {node.subN.x}    a delegated sub-team's nodes, under their delegate call

Retries, fallbacks, breaker changes and budget stops are span events. Span times are the
events' own timestamps, so a span is as long as the ledger says the work took.

Where spans go: a tracer provider the application already installed globally is used as it
is (agentkit never installs one); without one the run gets a private provider exporting over
OTLP as configured by the standard variables (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``..._HEADERS``, ``..._PROTOCOL``, ``OTEL_SERVICE_NAME``,
``OTEL_TRACES_EXPORTER``, ``OTEL_SDK_DISABLED``), flushed and shut down when the run ends. An
application with a provider of its own that is not global passes ``OtelTracer(provider)`` in
the run's `sinks`.

Message, reasoning and tool content is recorded only when the user opts in
(``telemetry.capture_content`` or ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``),
and always through the same redaction as the ledger (`agentkit.secrets`).
"""

from __future__ import annotations

from agentkit.telemetry._setup import attach, check_available, telemetry_enabled
from agentkit.telemetry._spans import OtelTracer, provider_name

__all__ = ["OtelTracer", "attach", "check_available", "provider_name", "telemetry_enabled"]
