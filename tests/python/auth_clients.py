"""Real clients against a tracelake that requires tokens: the OpenTelemetry
SDK's OTLP exporters (HTTP and gRPC) with `headers`, its Zipkin exporter
with HTTP Basic credentials (a requests session's `auth`), and the ADBC
Flight SQL driver with username/password (Flight SQL's handshake: Basic in,
bearer token out).

Usage: auth_clients.py <otlp-http-url> <otlp-grpc-endpoint> <grpc://flight>
    <ingest-token> <query-token> <zipkin-spans-url>
Prints one JSON object with what the test checks; exits non-zero on an
unexpected failure.
"""

import json
import logging
import sys

import adbc_driver_flightsql.dbapi as flight_sql
import requests
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpExporter,
)
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult

# The exporters log refusals; the JSON on stdout is what counts.
logging.disable(logging.CRITICAL)

http_url, grpc_endpoint, flight_uri, ingest, query, zipkin_url = sys.argv[1:7]
out = {}


def one_span(service):
    """A finished span of `service`, and its trace id in hex."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    tracer = provider.get_tracer("auth-test")
    with tracer.start_as_current_span("GET /cart") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
    return span, trace_id


def export(exporter, service):
    span, trace_id = one_span(service)
    result = exporter.export([span])
    exporter.shutdown()
    return {"ok": result == SpanExportResult.SUCCESS, "trace_id": trace_id}


for name, token in [("right", ingest), ("wrong", "not-a-token"), ("query", query)]:
    headers = {"authorization": f"Bearer {token}"}
    out[f"http_{name}"] = export(
        HttpExporter(endpoint=http_url, headers=headers, timeout=5), f"otlp-http-{name}"
    )
    out[f"grpc_{name}"] = export(
        GrpcExporter(endpoint=grpc_endpoint, insecure=True, headers=headers, timeout=5),
        f"otlp-grpc-{name}",
    )


for name, token in [("right", ingest), ("wrong", "not-a-token")]:
    session = requests.Session()
    session.auth = ("zipkin-reporter", token)
    out[f"zipkin_{name}"] = export(
        ZipkinExporter(endpoint=zipkin_url, session=session, timeout=5), f"zipkin-{name}"
    )


def flight(password):
    try:
        with flight_sql.connect(
            flight_uri, db_kwargs={"username": "analyst", "password": password}
        ) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) AS n FROM spans")
            return {"rows": cur.fetchone()[0]}
    except Exception as e:  # the driver raises its own error classes
        return {"error": str(e)}


out["flight_right"] = flight(query)
out["flight_wrong"] = flight("not-a-token")
out["flight_ingest"] = flight(ingest)

print(json.dumps(out))
