"""Puts spans on Kafka as the OpenTelemetry Collector's Kafka exporter and
Zipkin's Kafka collector do, with a real Kafka client (kafka-python) and the
OpenTelemetry SDK's own encoders (kafka.rs).

Usage:
  kafka_produce.py BOOTSTRAP create TOPIC PARTITIONS
  kafka_produce.py BOOTSTRAP produce TOPIC ENCODING FIRST COUNT [BAD_EVERY]
  kafka_produce.py BOOTSTRAP consume TOPIC COUNT

With KAFKA_TLS_CA_FILE set, the brokers are reached over TLS, their
certificates checked against that file. With KAFKA_SASL_USERNAME and
KAFKA_SASL_PASSWORD set, the client authenticates with SASL/PLAIN.

`produce` sends COUNT traces of three spans (service `kafka-<encoding>`),
keyed by trace id, one message per trace (one per span for Jaeger's
encodings); trace ids are FIRST, FIRST+1, ... (as 128-bit integers). With
BAD_EVERY, every BAD_EVERY-th trace is replaced by one message of bytes that
decode in no encoding. Encodings: otlp_proto, otlp_json (OTLP/JSON: hex
ids, enums as integers), zipkin_json (Zipkin v2 JSON list), zipkin_proto
(Zipkin proto3 ListOfSpans, by py_zipkin's encoder), jaeger_proto
and jaeger_json (one jaeger.api_v2.Span with its process, in protobuf and
in protobuf's JSON mapping; the message types are built at run time from
model.proto's field numbers, and encoded by the protobuf library). Prints
{"messages", "bad", "spans", "traces": [hex ids]}. `consume` prints the
first COUNT messages of TOPIC (all partitions, from their start, no
consumer group) with their keys and values in hex and their headers.
"""

import base64
import json
import os
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.json_format import MessageToDict, MessageToJson
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.zipkin.json.v2 import JsonV2Encoder
from opentelemetry.exporter.zipkin.node_endpoint import NodeEndpoint
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind
from py_zipkin import Kind
from py_zipkin.encoding._helpers import Span as ZipkinSpan, create_endpoint
from py_zipkin.encoding.protobuf import create_protobuf_span, encode_pb_list


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


def jaeger_model():
    """jaeger.api_v2 Span (model.proto, the fields tracelake reads)."""
    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="tracelake_test_jaeger_model.proto",
        package="jaeger.api_v2",
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto", "google/protobuf/duration.proto"],
    )
    enums = {"ValueType": ["STRING", "BOOL", "INT64", "FLOAT64", "BINARY"],
             "SpanRefType": ["CHILD_OF", "FOLLOWS_FROM"]}
    for name, values in enums.items():
        enum = file.enum_type.add(name=name)
        for number, value in enumerate(values):
            enum.value.add(name=value, number=number)
    messages = {
        "KeyValue": [("key", 1, F.TYPE_STRING, None), ("v_type", 2, F.TYPE_ENUM, ".jaeger.api_v2.ValueType"),
                     ("v_str", 3, F.TYPE_STRING, None), ("v_bool", 4, F.TYPE_BOOL, None),
                     ("v_int64", 5, F.TYPE_INT64, None), ("v_float64", 6, F.TYPE_DOUBLE, None),
                     ("v_binary", 7, F.TYPE_BYTES, None)],
        "SpanRef": [("trace_id", 1, F.TYPE_BYTES, None), ("span_id", 2, F.TYPE_BYTES, None),
                    ("ref_type", 3, F.TYPE_ENUM, ".jaeger.api_v2.SpanRefType")],
        "Process": [("service_name", 1, F.TYPE_STRING, None),
                    ("tags", 2, -F.TYPE_MESSAGE, ".jaeger.api_v2.KeyValue")],
        "Span": [("trace_id", 1, F.TYPE_BYTES, None), ("span_id", 2, F.TYPE_BYTES, None),
                 ("operation_name", 3, F.TYPE_STRING, None),
                 ("references", 4, -F.TYPE_MESSAGE, ".jaeger.api_v2.SpanRef"),
                 ("flags", 5, F.TYPE_UINT32, None),
                 ("start_time", 6, F.TYPE_MESSAGE, ".google.protobuf.Timestamp"),
                 ("duration", 7, F.TYPE_MESSAGE, ".google.protobuf.Duration"),
                 ("tags", 8, -F.TYPE_MESSAGE, ".jaeger.api_v2.KeyValue"),
                 ("process", 10, F.TYPE_MESSAGE, ".jaeger.api_v2.Process")],
    }
    for name, fields in messages.items():
        message = file.message_type.add(name=name)
        for field, number, kind, type_name in fields:
            repeated = kind < 0
            f = message.field.add(name=field, number=number, type=abs(kind),
                                  label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
            if type_name:
                f.type_name = type_name
    pool = descriptor_pool.Default()
    from google.protobuf import duration_pb2, timestamp_pb2  # noqa: F401 (registers them)
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("jaeger.api_v2.Span"))


def jaeger_span(model, span):
    """An SDK span as Jaeger's collector writes it."""
    out = model()
    out.trace_id = span.context.trace_id.to_bytes(16, "big")
    out.span_id = span.context.span_id.to_bytes(8, "big")
    out.operation_name = span.name
    out.flags = 1
    if span.parent is not None:
        ref = out.references.add()
        ref.trace_id = out.trace_id
        ref.span_id = span.parent.span_id.to_bytes(8, "big")
    out.start_time.FromNanoseconds(span.start_time)
    out.duration.FromNanoseconds(span.end_time - span.start_time)
    kind = {1: "server", 2: "client"}.get(span.kind.value)
    if kind:
        out.tags.add(key="span.kind", v_str=kind)
    for key, value in span.attributes.items():
        tag = out.tags.add(key=key)
        if isinstance(value, bool):
            tag.v_type, tag.v_bool = 1, value
        elif isinstance(value, int):
            tag.v_type, tag.v_int64 = 2, value
        else:
            tag.v_str = str(value)
    out.process.service_name = span.resource.attributes["service.name"]
    return out


def encode(encoding, spans):
    """The messages of one trace."""
    if encoding in ("jaeger_proto", "jaeger_json"):
        model = jaeger_model()
        if encoding == "jaeger_proto":
            return [jaeger_span(model, s).SerializeToString() for s in spans]
        return [MessageToJson(jaeger_span(model, s)).encode() for s in spans]
    return [encode_one(encoding, spans)]


def encode_one(encoding, spans):
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
    if encoding == "zipkin_proto":
        # Zipkin's proto3 ListOfSpans, by py_zipkin's protobuf encoder (the
        # spans made from the SDK's, as its Zipkin exporter maps them).
        service = spans[0].resource.attributes["service.name"]
        endpoint = create_endpoint(port=0, service_name=service, host="127.0.0.1")
        kinds = {SpanKind.SERVER: Kind.SERVER, SpanKind.CLIENT: Kind.CLIENT}
        return encode_pb_list(
            [
                create_protobuf_span(
                    ZipkinSpan(
                        trace_id=f"{s.context.trace_id:032x}",
                        name=s.name,
                        parent_id=f"{s.parent.span_id:016x}" if s.parent else None,
                        span_id=f"{s.context.span_id:016x}",
                        kind=kinds.get(s.kind, Kind.LOCAL),
                        timestamp=s.start_time / 1e9,
                        duration=(s.end_time - s.start_time) / 1e9,
                        local_endpoint=endpoint,
                        tags={k: str(v) for k, v in s.attributes.items()},
                    )
                )
                for s in spans
            ]
        )
    raise SystemExit(f"unknown encoding {encoding}")


def connection():
    """The client settings for the brokers: TLS trusting KAFKA_TLS_CA_FILE
    when it is set, SASL/PLAIN as KAFKA_SASL_USERNAME with
    KAFKA_SASL_PASSWORD when they are set, else plain text."""
    ca = os.environ.get("KAFKA_TLS_CA_FILE")
    user = os.environ.get("KAFKA_SASL_USERNAME")
    settings = {}
    if ca:
        settings.update(security_protocol="SSL", ssl_cafile=ca)
    if user:
        settings.update(
            security_protocol="SASL_SSL" if ca else "SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_plain_username=user,
            sasl_plain_password=os.environ["KAFKA_SASL_PASSWORD"],
        )
    return settings


def main():
    bootstrap, command = sys.argv[1:3]
    if command == "create":
        topic, partitions = sys.argv[3], int(sys.argv[4])
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="tracelake-tests", **connection()
        )
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        admin.close()
        print(json.dumps({"created": topic}))
        return
    if command == "consume":
        # Every message of the topic, from its start, with no consumer group.
        topic, expected = sys.argv[3], int(sys.argv[4])
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **connection()
        )
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        out = []
        deadline = time.monotonic() + 30
        while len(out) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    out.append(
                        {
                            "partition": r.partition,
                            "offset": r.offset,
                            "key": r.key.hex() if r.key is not None else None,
                            "value": r.value.hex() if r.value is not None else None,
                            "headers": {k: v.decode() for k, v in r.headers},
                        }
                    )
        # Anything beyond what was expected shows too.
        for records in consumer.poll(timeout_ms=1000).values():
            out.extend({"partition": r.partition, "offset": r.offset} for r in records)
        consumer.close()
        print(json.dumps(out))
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
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, **connection()
    )
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
            values = [b"\xff\x00 not a message in any encoding"]
            sent["bad"] += 1
        else:
            values = encode(encoding, spans)
            sent["spans"] += len(spans)
            sent["traces"].append(trace.hex())
        for value in values:
            futures.append(producer.send(topic, key=trace, value=value))
            sent["messages"] += 1
    producer.flush()
    for future in futures:
        future.get(timeout=30)
    producer.close()
    print(json.dumps(sent))


if __name__ == "__main__":
    main()
