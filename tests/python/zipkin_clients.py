"""Sends spans to tracelake's Zipkin endpoint with two real Zipkin clients.

Usage: zipkin_clients.py <zipkin base url, e.g. http://127.0.0.1:9411>
Prints a JSON object with the trace ids each client produced.

- the OpenTelemetry Python SDK with its Zipkin JSON exporter (v2 JSON);
- py_zipkin, a Zipkin-native tracer, with its HTTP transport (v2 JSON).
"""

import json
import sys
from urllib.parse import urlparse

from opentelemetry import trace
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from py_zipkin import Encoding, Kind
from py_zipkin.transport import SimpleHTTPTransport
from py_zipkin.zipkin import zipkin_span

base = sys.argv[1]
out = {}

# OpenTelemetry SDK -> Zipkin JSON exporter.
provider = TracerProvider(resource=Resource.create({"service.name": "otel-zipkin-shop"}))
provider.add_span_processor(SimpleSpanProcessor(ZipkinExporter(endpoint=f"{base}/api/v2/spans")))
tracer = provider.get_tracer("zipkin-interop", "1.2.3")
with tracer.start_as_current_span(
    "GET /orders/{id}", kind=SpanKind.SERVER, attributes={"http.route": "/orders/{id}", "order.items": 3}
) as root:
    with tracer.start_as_current_span(
        "SELECT orders", kind=SpanKind.CLIENT, attributes={"db.system": "postgresql", "peer.service": "orders-db"}
    ) as child:
        child.add_event("retry", {"attempt": 2})
        child.set_status(Status(StatusCode.ERROR, "deadlock detected"))
    out["otel_trace_id"] = format(root.get_span_context().trace_id, "032x")
    out["otel_root_id"] = format(root.get_span_context().span_id, "016x")
    out["otel_child_id"] = format(child.get_span_context().span_id, "016x")
provider.shutdown()

# py_zipkin with its HTTP transport.
url = urlparse(base)
transport = SimpleHTTPTransport(url.hostname, url.port)
with zipkin_span(
    service_name="py-zipkin-billing",
    span_name="charge card",
    transport_handler=transport,
    sample_rate=100.0,
    encoding=Encoding.V2_JSON,
    kind=Kind.SERVER,
    binary_annotations={"payment.provider": "acme"},
) as server:
    with zipkin_span(
        service_name="py-zipkin-billing",
        span_name="call bank",
        kind=Kind.CLIENT,
        binary_annotations={"error": "card declined"},
    ) as client:
        out["pyzipkin_trace_id"] = server.zipkin_attrs.trace_id
        out["pyzipkin_server_id"] = server.zipkin_attrs.span_id
        out["pyzipkin_client_id"] = client.zipkin_attrs.span_id

# py_zipkin again, speaking Zipkin v1 JSON (to /api/v1/spans).
with zipkin_span(
    service_name="py-zipkin-legacy",
    span_name="ship order",
    transport_handler=transport,
    sample_rate=100.0,
    encoding=Encoding.V1_JSON,
    kind=Kind.SERVER,
    binary_annotations={"carrier": "dhl"},
) as legacy:
    with zipkin_span(service_name="py-zipkin-legacy", span_name="print label", kind=Kind.CLIENT) as label:
        out["v1_trace_id"] = legacy.zipkin_attrs.trace_id
        out["v1_server_id"] = legacy.zipkin_attrs.span_id
        out["v1_client_id"] = label.zipkin_attrs.span_id

print(json.dumps(out))
