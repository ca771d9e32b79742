"""A plain OpenTelemetry app pointed at evolution-store: only the OTel SDK and its OTLP
exporter, configured by the standard environment variables. Nothing here knows about the store.

    evolution-store serve &                                      # in another terminal
    export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318     # grpc: http://127.0.0.1:4317
    export OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf             # or grpc
    export OTEL_SERVICE_NAME=support-bot
    python examples/otel_app.py

It sends one agent-like trace in the GenAI semantic conventions: an `invoke_agent` span with a
`chat` LLM call (model, tokens, response id) and an `execute_tool` call, plus a
`gen_ai.evaluation.result` event on the chat span, which the store turns into a reward linked
to that span. The trace carries no task id, so the store makes it a task of its own.
"""

from __future__ import annotations

import os
import sys
import time
import uuid

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind


def otlp_exporter():
    """The exporter OTEL_EXPORTER_OTLP_PROTOCOL names; it reads the endpoint and headers itself."""
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        if protocol != "http/protobuf":  # e.g. http/json: the Python SDK ships no such exporter
            print(f"protocol {protocol!r} unsupported here; using http/protobuf", file=sys.stderr)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()


def main() -> None:
    # Resource.create() reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
    provider = TracerProvider(resource=Resource.create())
    provider.add_span_processor(BatchSpanProcessor(otlp_exporter()))
    tracer = provider.get_tracer("examples.otel_app", "1.0")

    conversation = "conv-" + uuid.uuid4().hex[:8]
    response_id = "chatcmpl-" + uuid.uuid4().hex[:12]
    with tracer.start_as_current_span(
        "invoke_agent support",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "support",
            "gen_ai.conversation.id": conversation,
        },
    ) as root:
        with tracer.start_as_current_span(
            "chat gpt-4o-mini",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                "gen_ai.response.id": response_id,
                "gen_ai.usage.input_tokens": 412,
                "gen_ai.usage.output_tokens": 37,
                "gen_ai.conversation.id": conversation,
            },
        ) as chat:
            time.sleep(0.02)  # the model "answers": look up the order
            # An evaluator scored the answer; the store turns this event into a reward.
            chat.add_event(
                "gen_ai.evaluation.result",
                {
                    "gen_ai.evaluation.name": "relevance",
                    "gen_ai.evaluation.score.value": 0.85,
                    "gen_ai.evaluation.score.label": "relevant",
                    "gen_ai.evaluation.explanation": "answers the question that was asked",
                },
            )
        with tracer.start_as_current_span(
            "execute_tool get_order",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "get_order",
                "gen_ai.tool.call.id": "call_" + uuid.uuid4().hex[:8],
            },
        ):
            time.sleep(0.01)
        trace_id = trace.format_trace_id(root.get_span_context().trace_id)

    provider.shutdown()  # flushes the batch: the spans are sent before the process exits
    print(f"trace {trace_id} (conversation {conversation}) sent")
    print(f"curl -s 'localhost:8000/api/v1/spans?trace_id={trace_id}'")


if __name__ == "__main__":
    main()
