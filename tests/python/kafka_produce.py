"""Puts spans on Kafka as the OpenTelemetry Collector's Kafka exporter and
Zipkin's Kafka collector do, with a real Kafka client (kafka-python) and the
OpenTelemetry SDK's own encoders (kafka.rs).

Usage:
  kafka_produce.py BOOTSTRAP create TOPIC PARTITIONS
  kafka_produce.py BOOTSTRAP produce TOPIC ENCODING FIRST COUNT [BAD_EVERY]

`produce` sends COUNT messages, each one trace of three spans (service
`kafka-<encoding>`), keyed by trace id; trace ids are FIRST, FIRST+1, ...
(as 128-bit integers). With BAD_EVERY, every BAD_EVERY-th message is
replaced by bytes that decode in no encoding. Encodings: otlp_proto,
otlp_json (OTLP/JSON: hex ids, enums as integers), zipkin_json (Zipkin v2
JSON list). Prints {"messages", "bad", "spans", "traces": [hex ids]}.
"""

import base64
import json
import sys

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.zipkin.json.v2 import JsonV2Encoder
from opentelemetry.exporter.zipkin.node_endpoint import NodeEndpoint
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind


class Sequential(IdGenerator):
    """Trace ids FIRST, FIRST+1, ...; span ids counting from 1."""

    def __init__(self, first):
        self.trace = first
        self.span = 0

    def generate_trace_id(self):
        trace, self.trace = self.trace, self.trace + 1
        return trace

    def generate_span_id(self):
        self.span += 1
        return self.span


def hex_ids(value):
    """OTLP/JSON ids are hex, where protobuf's JSON mapping gives base64."""
    if isinstance(value, dict):
        return {
            k: (base64.b64decode(v).hex() if k in ("traceId", "spanId", "parentSpanId") else hex_ids(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [hex_ids(v) for v in value]
    return value


def encode(encoding, spans):
    if encoding == "otlp_proto":
        return encode_spans(spans).SerializeToString()
    if encoding == "otlp_json":
        body = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
        return json.dumps(hex_ids(body)).encode()
    if encoding == "zipkin_json":
        # As OpenTelemetry's Zipkin exporter does: the local endpoint is the
        # resource's service.
        endpoint = NodeEndpoint()
        endpoint.service_name = spans[0].resource.attributes["service.name"]
        return JsonV2Encoder().serialize(spans, endpoint).encode()
    raise SystemExit(f"unknown encoding {encoding}")


def main():
    bootstrap, command = sys.argv[1:3]
    if command == "create":
        topic, partitions = sys.argv[3], int(sys.argv[4])
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="tracelake-tests")
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        admin.close()
        print(json.dumps({"created": topic}))
        return
    topic, encoding, first, count = sys.argv[3], sys.argv[4], int(sys.argv[5], 0), int(sys.argv[6])
    bad_every = int(sys.argv[7]) if len(sys.argv) > 7 else 0
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"kafka-{encoding}"}),
        id_generator=Sequential(first),
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tracelake-kafka-test")
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    sent = {"messages": 0, "bad": 0, "spans": 0, "traces": []}
    futures = []
    for i in range(count):
        exporter.clear()
        with tracer.start_as_current_span("checkout", kind=SpanKind.SERVER) as root:
            root.set_attribute("message.index", i)
            with tracer.start_as_current_span("charge", kind=SpanKind.CLIENT):
                pass
            with tracer.start_as_current_span("reserve"):
                pass
        spans = exporter.get_finished_spans()
        trace = spans[0].context.trace_id.to_bytes(16, "big")
        if bad_every and (i + 1) % bad_every == 0:
            value = b"\xff\x00 not a message in any encoding"
            sent["bad"] += 1
        else:
            value = encode(encoding, spans)
            sent["spans"] += len(spans)
            sent["traces"].append(trace.hex())
        futures.append(producer.send(topic, key=trace, value=value))
        sent["messages"] += 1
    producer.flush()
    for future in futures:
        future.get(timeout=30)
    producer.close()
    print(json.dumps(sent))


if __name__ == "__main__":
    main()
