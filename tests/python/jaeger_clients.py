"""Sends spans to tracelake's Jaeger thrift receivers with the Python
jaeger-client (an OpenTracing tracer) and its generated thrift types.

Usage: jaeger_clients.py <host> <compact udp port> <binary udp port> <http port>
Prints a JSON object with the ids sent.

- jaeger-client's tracer reporting to the agent port (UDP, thrift compact);
- an Agent.emitBatch message in thrift binary over UDP (what agents speak);
- a Batch in thrift binary POSTed to /api/traces (the collector's HTTP API).
"""

import json
import random
import socket
import sys
import time
import urllib.request

from jaeger_client import Config
from jaeger_client.thrift_gen.agent import Agent
from jaeger_client.thrift_gen.jaeger import ttypes as j
from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TMessageType
from thrift.transport import TTransport

host, compact_port, binary_port, http_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
out = {}

# 1. The OpenTracing tracer over UDP compact.
config = Config(
    config={
        "sampler": {"type": "const", "param": 1},
        "local_agent": {"reporting_host": host, "reporting_port": compact_port},
        "logging": False,
        "tags": {"region": "eu-west-1"},
    },
    service_name="jaeger-py-shop",
    validate=True,
)
tracer = config.initialize_tracer()
with tracer.start_span("checkout", tags={"span.kind": "server", "http.method": "POST", "cart.items": 3}) as root:
    with tracer.start_span("charge", child_of=root, tags={"span.kind": "client", "error": True}) as child:
        child.log_kv({"event": "retry", "attempt": 2})
out["tracer_trace"] = format(root.trace_id, "032x")
out["tracer_root"] = format(root.span_id, "016x")
out["tracer_child"] = format(child.span_id, "016x")
time.sleep(0.3)
tracer.close()
time.sleep(0.5)


def batch(service, trace_low, span_id, name):
    now_us = int(time.time() * 1e6)
    return j.Batch(
        process=j.Process(serviceName=service, tags=[j.Tag(key="hostname", vType=j.TagType.STRING, vStr="host-1")]),
        spans=[
            j.Span(
                traceIdLow=trace_low,
                traceIdHigh=0,
                spanId=span_id,
                parentSpanId=0,
                operationName=name,
                flags=1,
                startTime=now_us - 5000,
                duration=4000,
                tags=[
                    j.Tag(key="span.kind", vType=j.TagType.STRING, vStr="server"),
                    j.Tag(key="http.status_code", vType=j.TagType.LONG, vLong=503),
                    j.Tag(key="ratio", vType=j.TagType.DOUBLE, vDouble=0.5),
                ],
                logs=[j.Log(timestamp=now_us - 4000, fields=[j.Tag(key="event", vType=j.TagType.STRING, vStr="cache miss")])],
            )
        ],
    )


# 2. Agent.emitBatch in thrift binary over UDP.
trace_low, span_id = random.getrandbits(62), random.getrandbits(62)
buf = TTransport.TMemoryBuffer()
proto = TBinaryProtocol.TBinaryProtocol(buf)
proto.writeMessageBegin("emitBatch", TMessageType.ONEWAY, 1)
Agent.emitBatch_args(batch=batch("jaeger-udp-binary", trace_low, span_id, "GET /stock")).write(proto)
proto.writeMessageEnd()
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.sendto(buf.getvalue(), (host, binary_port))
out["binary_trace"] = format(trace_low, "032x")
out["binary_span"] = format(span_id, "016x")

# 3. A Batch POSTed to the collector's HTTP endpoint.
trace_low, span_id = random.getrandbits(62), random.getrandbits(62)
buf = TTransport.TMemoryBuffer()
batch("jaeger-http", trace_low, span_id, "GET /price").write(TBinaryProtocol.TBinaryProtocol(buf))
request = urllib.request.Request(
    f"http://{host}:{http_port}/api/traces?format=jaeger.thrift",
    data=buf.getvalue(),
    headers={"Content-Type": "application/x-thrift"},
)
with urllib.request.urlopen(request) as response:
    out["http_status"] = response.status
out["http_trace"] = format(trace_low, "032x")
out["http_span"] = format(span_id, "016x")

print(json.dumps(out))
