"""The jaeger-client tracer with a remote sampler polling tracelake's
sampling port for its strategy, as Jaeger SDKs poll an agent.

Usage: sampling_client.py <host> <sampling port> <service>...
Prints one JSON object with, per service, the sampler its tracer ended up
with, its parameters, and the fraction of 20,000 traces (of operation
"GET /cart") it sampled.
"""

import json
import random
import sys
import time

from jaeger_client import Config
from jaeger_client.sampler import (
    AdaptiveSampler,
    ProbabilisticSampler,
    RateLimitingSampler,
)

host, port, services = sys.argv[1], int(sys.argv[2]), sys.argv[3:]


def probe(service):
    config = Config(
        config={
            # No "sampler": the remote sampler, which starts at
            # probability 0.001 until its first answer.
            "sampling_refresh_interval": 1,
            "local_agent": {"reporting_host": host, "reporting_port": 9, "sampling_port": port},
            "logging": False,
        },
        service_name=service,
        validate=True,
    )
    tracer = config.new_tracer()
    remote = tracer.sampler

    def arrived():
        inner = remote.sampler
        if isinstance(inner, (AdaptiveSampler, RateLimitingSampler)):
            return True
        return isinstance(inner, ProbabilisticSampler) and inner.rate != 0.001

    deadline = time.time() + 20
    while time.time() < deadline and not arrived():
        time.sleep(0.1)
    inner = remote.sampler
    out = {"sampler": type(inner).__name__}
    if isinstance(inner, ProbabilisticSampler):
        out["rate"] = inner.rate
    elif isinstance(inner, RateLimitingSampler):
        out["max_traces_per_second"] = inner.traces_per_second
    elif isinstance(inner, AdaptiveSampler):
        out["default_rate"] = inner.default_sampler.rate
        out["operations"] = {op: s.rate for op, s in inner.samplers.items()}
    rng = random.Random(7)
    sampled = sum(
        1 for _ in range(20000) if remote.is_sampled(rng.getrandbits(64), "GET /cart")[0]
    )
    out["sampled_fraction"] = sampled / 20000
    tracer.close()
    return out


print(json.dumps({service: probe(service) for service in services}))
