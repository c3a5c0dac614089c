"""Real clients against a tracelake that speaks TLS: the OpenTelemetry SDK's
OTLP exporters configured as users configure them (the HTTP exporter's
`certificate_file`, `client_certificate_file` and `client_key_file`; the
gRPC exporter's OTEL_EXPORTER_OTLP_CERTIFICATE, _CLIENT_CERTIFICATE and
_CLIENT_KEY), with a token in `headers`, and the ADBC Flight SQL driver over
`grpc+tls` with the CA (and client certificate) and the token as password.

Usage: tls_clients.py <https otlp-http-url> <https otlp-grpc-endpoint>
    <grpc+tls://flight> <ca.pem> <client.pem|-> <client.key|-> <token|->
Prints one JSON object with what the test checks; exits non-zero on an
unexpected failure.
"""

import json
import logging
import os
import sys

import adbc_driver_flightsql.dbapi as flight_sql
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpExporter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult

# The exporters log refusals; the JSON on stdout is what counts.
logging.disable(logging.CRITICAL)

# Machines that name a CA bundle in the environment would otherwise decide
# what these clients trust: requests lets REQUESTS_CA_BUNDLE and
# CURL_CA_BUNDLE win over the exporter's `certificate_file` (its session's
# `verify`). Only the test's CA may count.
for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR",
            "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"):
    os.environ.pop(var, None)

http_url, grpc_endpoint, flight_uri, ca, client_cert, client_key, token = sys.argv[1:8]
client_cert = None if client_cert == "-" else client_cert
client_key = None if client_key == "-" else client_key
token = None if token == "-" else token
headers = {"authorization": f"Bearer {token}"} if token else None
out = {}


def export(exporter, service):
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    with provider.get_tracer("tls-test").start_as_current_span("GET /cart") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
    result = exporter.export([span])
    exporter.shutdown()
    return {"ok": result == SpanExportResult.SUCCESS, "trace_id": trace_id}


out["http"] = export(
    HttpExporter(
        endpoint=http_url,
        certificate_file=ca,
        client_certificate_file=client_cert,
        client_key_file=client_key,
        headers=headers,
        timeout=5,
    ),
    "otlp-http-tls",
)

os.environ["OTEL_EXPORTER_OTLP_CERTIFICATE"] = ca
if client_cert:
    os.environ["OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"] = client_cert
    os.environ["OTEL_EXPORTER_OTLP_CLIENT_KEY"] = client_key
out["grpc"] = export(
    GrpcExporter(endpoint=grpc_endpoint, headers=headers, timeout=5), "otlp-grpc-tls"
)

options = {"adbc.flight.sql.client_option.tls_root_certs": open(ca).read()}
if client_cert:
    options["adbc.flight.sql.client_option.mtls_cert_chain"] = open(client_cert).read()
    options["adbc.flight.sql.client_option.mtls_private_key"] = open(client_key).read()
if token:
    options["username"] = "analyst"
    options["password"] = token
try:
    with flight_sql.connect(flight_uri, db_kwargs=options) as conn, conn.cursor() as cur:
        cur.execute("SELECT service_name FROM spans ORDER BY service_name")
        out["flight"] = {"services": [row[0] for row in cur.fetchall()]}
except Exception as e:  # the driver raises its own error classes
    out["flight"] = {"error": str(e)}

print(json.dumps(out))
