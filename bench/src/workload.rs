//! A deterministic, seeded workload of realistic traces.
//!
//! The topology is fixed by the seed: tens of services, each with a handful
//! of operations (a few hundred in all), in tiers (edge -> API -> domain ->
//! data); an operation calls a few operations of lower tiers. A trace walks
//! that graph from an edge operation: HTTP server spans, RPC client/server
//! pairs, database client spans and messaging producer/consumer spans, with
//! their semantic-convention attributes, errors that propagate upward, and
//! log-normal durations. Traces have 5 to about 500 spans (a trace's budget
//! is at most 460; a call in progress may add a few more).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Http,
    Rpc,
    Db,
    Queue,
}

#[derive(Debug, Clone)]
struct Operation {
    service: usize,
    name: String,
    kind: Kind,
    /// Operations it calls (indices), lower tiers only.
    calls: Vec<usize>,
    /// Median self duration in ns.
    median_ns: f64,
    error_rate: f64,
}

#[derive(Debug, Clone)]
struct Service {
    name: String,
    tier: usize,
    resource: Vec<KeyValue>,
}

/// The services and operations a workload walks.
#[derive(Debug, Clone)]
pub struct Topology {
    services: Vec<Service>,
    operations: Vec<Operation>,
    entry: Vec<usize>,
}

fn kv(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Any::StringValue(value.into())),
        }),
        key_strindex: 0,
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Any::IntValue(value)),
        }),
        key_strindex: 0,
    }
}

const DOMAINS: [&str; 12] = [
    "cart",
    "checkout",
    "payment",
    "shipping",
    "catalog",
    "search",
    "user",
    "auth",
    "pricing",
    "inventory",
    "recommend",
    "notify",
];
const ROUTES: [&str; 10] = [
    "/api/{v}/{d}",
    "/api/{v}/{d}/{id}",
    "/api/{v}/{d}/{id}/items",
    "/api/{v}/{d}/search",
    "/api/{v}/{d}/{id}/status",
    "/api/{v}/{d}/batch",
    "/api/{v}/{d}/export",
    "/api/{v}/{d}/{id}/history",
    "/api/{v}/{d}/summary",
    "/api/{v}/{d}/{id}/settings",
];
const VERBS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];

impl Topology {
    /// 4 tiers: 4 edge, 12 API, 12 domain and 6 data services (34 in all),
    /// about 300 operations.
    pub fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x7072_6163_656c_616b);
        let mut services = Vec::new();
        let tiers = [(0, 4, "edge"), (1, 12, "api"), (2, 12, "svc"), (3, 6, "db")];
        for (tier, count, prefix) in tiers {
            for i in 0..count {
                let domain = DOMAINS[(i * 7 + tier) % DOMAINS.len()];
                let name = format!("{prefix}-{domain}-{i}");
                let resource = vec![
                    kv("service.name", name.clone()),
                    kv(
                        "service.version",
                        format!("1.{}.{}", rng.random_range(0..20), rng.random_range(0..10)),
                    ),
                    kv(
                        "service.instance.id",
                        format!("{name}-{:08x}", rng.random::<u32>()),
                    ),
                    kv(
                        "host.name",
                        format!(
                            "ip-10-0-{}-{}",
                            rng.random_range(0..8),
                            rng.random_range(1..250)
                        ),
                    ),
                    kv("deployment.environment.name", "production"),
                    kv(
                        "cloud.region",
                        ["eu-west-1", "us-east-1", "ap-south-1"][i % 3],
                    ),
                    kv(
                        "telemetry.sdk.language",
                        ["java", "go", "python", "nodejs"][i % 4],
                    ),
                    kv("telemetry.sdk.name", "opentelemetry"),
                    kv("telemetry.sdk.version", "1.40.0"),
                    kv(
                        "k8s.pod.name",
                        format!("{name}-7d9f{:04x}", rng.random::<u16>()),
                    ),
                ];
                services.push(Service {
                    name,
                    tier,
                    resource,
                });
            }
        }
        let mut operations = Vec::new();
        for (s, service) in services.iter().enumerate() {
            let count = match service.tier {
                0 => 14,
                1 => 12,
                2 => 8,
                _ => 4,
            };
            for o in 0..count {
                let domain = DOMAINS[(s + o) % DOMAINS.len()];
                let (kind, name) = match service.tier {
                    0 | 1 => {
                        let route = ROUTES[o % ROUTES.len()]
                            .replace("{v}", &format!("v{}", 1 + o % 2))
                            .replace("{d}", domain);
                        (Kind::Http, format!("{} {route}", VERBS[o % VERBS.len()]))
                    }
                    2 if o % 4 == 3 => (Kind::Queue, format!("{domain}.events process")),
                    2 => (
                        Kind::Rpc,
                        format!(
                            "{domain}.{}Service/{}",
                            capitalise(domain),
                            ["Get", "List", "Update", "Create"][o % 4]
                        ),
                    ),
                    _ => (
                        Kind::Db,
                        format!(
                            "{} {domain}_{}",
                            ["SELECT", "INSERT", "UPDATE", "SELECT"][o % 4],
                            ["orders", "items", "users", "events"][o % 4]
                        ),
                    ),
                };
                operations.push(Operation {
                    service: s,
                    name,
                    kind,
                    calls: Vec::new(),
                    median_ns: f64::from(rng.random_range(200..4000u32)) * 1_000.0,
                    error_rate: if rng.random_bool(0.2) { 0.05 } else { 0.002 },
                });
            }
        }
        // Calls to a few operations of lower tiers.
        let by_tier: Vec<Vec<usize>> = (0..4)
            .map(|t| {
                (0..operations.len())
                    .filter(|&o| services[operations[o].service].tier == t)
                    .collect()
            })
            .collect();
        for o in 0..operations.len() {
            let tier = services[operations[o].service].tier;
            if tier == 3 {
                continue;
            }
            let n = rng.random_range(1..=4);
            for _ in 0..n {
                let t = rng.random_range(tier + 1..=3.min(tier + 2));
                let pick = by_tier[t][rng.random_range(0..by_tier[t].len())];
                operations[o].calls.push(pick);
            }
        }
        let entry = by_tier[0].clone();
        Self {
            services,
            operations,
            entry,
        }
    }

    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    pub fn operation_count(&self) -> usize {
        self.operations.len()
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// A standard normal sample (Box-Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Generates traces over a topology, deterministically from a seed.
pub struct Generator {
    topology: Topology,
    rng: StdRng,
    next_trace: u64,
    /// Start of the next trace, Unix ns.
    clock: u64,
    /// Mean time between two traces' starts, ns.
    interval: u64,
}

struct Built {
    /// (service, span)
    spans: Vec<(usize, Span)>,
}

impl Generator {
    /// Traces start at `start_unix_ns` and follow each other by ~1 ms.
    pub fn new(topology: Topology, seed: u64, start_unix_ns: u64) -> Self {
        Self {
            topology,
            rng: StdRng::seed_from_u64(seed),
            next_trace: 0,
            clock: start_unix_ns,
            interval: 1_500_000,
        }
    }

    /// Traces start `mean_ns` apart on average (uniformly 0.5x to 1.5x).
    pub fn with_trace_interval(mut self, mean_ns: u64) -> Self {
        self.interval = mean_ns.max(2);
        self
    }

    /// Traces generated so far.
    pub fn traces(&self) -> u64 {
        self.next_trace
    }

    /// Start of the next trace, Unix ns.
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// One OTLP request holding whole traces, at least `spans` spans.
    pub fn request(&mut self, spans: usize) -> (ExportTraceServiceRequest, usize) {
        let mut built = Built { spans: Vec::new() };
        while built.spans.len() < spans {
            self.trace(&mut built);
        }
        let count = built.spans.len();
        (self.group(built), count)
    }

    fn trace(&mut self, out: &mut Built) {
        self.next_trace += 1;
        let mut trace_id = [0u8; 16];
        self.rng.fill(&mut trace_id[..]);
        let entry = self.topology.entry[self.rng.random_range(0..self.topology.entry.len())];
        let start = self.clock;
        self.clock += self.interval / 2 + self.rng.random_range(0..self.interval);
        // Fan-out grows with a per-trace factor: 5 to 500 spans.
        let budget = (5.0 * (self.rng.random::<f64>() * 4.6).exp()).min(460.0) as usize;
        let mut remaining = budget.max(5);
        self.span(out, &trace_id, entry, None, start, 0, &mut remaining);
    }

    #[allow(clippy::too_many_arguments)]
    fn span(
        &mut self,
        out: &mut Built,
        trace_id: &[u8; 16],
        op: usize,
        parent: Option<[u8; 8]>,
        start: u64,
        depth: usize,
        remaining: &mut usize,
    ) -> (u64, bool) {
        let operation = self.topology.operations[op].clone();
        let mut span_id = [0u8; 8];
        self.rng.fill(&mut span_id[..]);
        span_id[0] |= 1;
        let index = out.spans.len();
        out.spans.push((operation.service, Span::default()));
        *remaining = remaining.saturating_sub(1);
        let self_ns = (operation.median_ns * (0.6 * normal(&mut self.rng)).exp()) as u64;
        let mut cursor = start + self_ns / 3;
        let mut failed = self.rng.random_bool(operation.error_rate);
        // Children: the operation's calls, repeated while the budget lasts.
        // Calls: the entry span calls (cycling through its callees) until
        // the trace's budget is spent, at least twice, so a trace has at
        // least 5 spans; deeper spans make their calls once or twice.
        let planned: Vec<usize> = if depth == 0 || depth >= 8 || operation.calls.is_empty() {
            Vec::new()
        } else {
            let rounds = 1 + usize::from(self.rng.random_bool(0.3));
            (0..rounds)
                .flat_map(|_| operation.calls.iter().copied())
                .collect()
        };
        let mut made = 0usize;
        loop {
            let callee = if depth == 0 {
                if operation.calls.is_empty() || (*remaining < 2 && made >= 2) {
                    break;
                }
                operation.calls[made % operation.calls.len()]
            } else {
                match planned.get(made) {
                    Some(&c) if *remaining >= 2 => c,
                    _ => break,
                }
            };
            made += 1;
            let callee_service = self.topology.operations[callee].service;
            let callee_kind = self.topology.operations[callee].kind;
            // A client span on our side, the callee's span under it.
            let mut client_id = [0u8; 8];
            self.rng.fill(&mut client_id[..]);
            client_id[0] |= 1;
            let client_index = out.spans.len();
            out.spans.push((operation.service, Span::default()));
            *remaining = remaining.saturating_sub(1);
            let net = self.rng.random_range(100_000..600_000u64);
            let (end, child_failed) = if callee_kind == Kind::Db {
                let d = (self.topology.operations[callee].median_ns
                    * (0.8 * normal(&mut self.rng)).exp()) as u64;
                (
                    cursor + d,
                    self.rng
                        .random_bool(self.topology.operations[callee].error_rate),
                )
            } else {
                self.span(
                    out,
                    trace_id,
                    callee,
                    Some(client_id),
                    cursor + net / 2,
                    depth + 1,
                    remaining,
                )
            };
            let client_end = end + net / 2;
            let async_queue = callee_kind == Kind::Queue;
            out.spans[client_index].1 = self.client_span(
                trace_id,
                client_id,
                span_id,
                callee,
                cursor,
                client_end,
                child_failed,
                callee_service,
            );
            failed |= child_failed && !async_queue && self.rng.random_bool(0.7);
            cursor = if async_queue {
                cursor + net
            } else {
                client_end
            };
        }
        let end = cursor + self_ns * 2 / 3;
        out.spans[index].1 = self.server_span(trace_id, span_id, parent, op, start, end, failed);
        (end, failed)
    }

    #[allow(clippy::too_many_arguments)]
    fn client_span(
        &mut self,
        trace_id: &[u8; 16],
        id: [u8; 8],
        parent: [u8; 8],
        callee: usize,
        start: u64,
        end: u64,
        failed: bool,
        callee_service: usize,
    ) -> Span {
        let callee_op = &self.topology.operations[callee];
        let peer = self.topology.services[callee_service].name.clone();
        let (kind, name, attributes) = match callee_op.kind {
            Kind::Db => {
                let table = callee_op.name.split(' ').nth(1).unwrap_or("t").to_string();
                let verb = callee_op
                    .name
                    .split(' ')
                    .next()
                    .unwrap_or("SELECT")
                    .to_string();
                (
                    SpanKind::Client,
                    callee_op.name.clone(),
                    vec![
                        kv("db.system", "postgresql"),
                        kv("db.namespace", peer.clone()),
                        kv("db.operation.name", verb.clone()),
                        kv("db.collection.name", table.clone()),
                        kv(
                            "db.query.text",
                            format!("{verb} * FROM {table} WHERE id = $1 AND tenant_id = $2"),
                        ),
                        kv("server.address", format!("{peer}.db.internal")),
                        int("server.port", 5432),
                        kv("peer.service", peer),
                    ],
                )
            }
            Kind::Queue => (
                SpanKind::Producer,
                format!(
                    "{} publish",
                    callee_op.name.split(' ').next().unwrap_or("events")
                ),
                vec![
                    kv("messaging.system", "kafka"),
                    kv("messaging.operation.type", "publish"),
                    kv(
                        "messaging.destination.name",
                        callee_op
                            .name
                            .split(' ')
                            .next()
                            .unwrap_or("events")
                            .to_string(),
                    ),
                    int(
                        "messaging.kafka.message.offset",
                        self.rng.random_range(0..10_000_000),
                    ),
                ],
            ),
            Kind::Rpc => (
                SpanKind::Client,
                callee_op.name.clone(),
                vec![
                    kv("rpc.system", "grpc"),
                    kv(
                        "rpc.service",
                        callee_op.name.split('/').next().unwrap_or("").to_string(),
                    ),
                    kv(
                        "rpc.method",
                        callee_op.name.split('/').nth(1).unwrap_or("").to_string(),
                    ),
                    kv("server.address", format!("{peer}.svc.cluster.local")),
                    int("server.port", 8080),
                    int("rpc.grpc.status_code", if failed { 14 } else { 0 }),
                ],
            ),
            Kind::Http => {
                let (verb, route) = callee_op.name.split_once(' ').unwrap_or(("GET", "/"));
                (
                    SpanKind::Client,
                    verb.to_string(),
                    vec![
                        kv("http.request.method", verb.to_string()),
                        kv(
                            "url.full",
                            format!(
                                "http://{peer}.svc.cluster.local:8080{}",
                                route.replace(
                                    "{id}",
                                    &self.rng.random_range(1..100_000u32).to_string()
                                )
                            ),
                        ),
                        kv("server.address", format!("{peer}.svc.cluster.local")),
                        int("http.response.status_code", if failed { 503 } else { 200 }),
                    ],
                )
            }
        };
        let mut attributes = attributes;
        // The callee's pod: each service runs three replicas behind its
        // cluster address, and a call lands on one of them.
        attributes.push(kv(
            "network.peer.address",
            format!(
                "10.{}.{}.{}",
                self.topology.services[callee_service].tier,
                callee_service,
                10 + self.rng.random_range(0..3)
            ),
        ));
        attributes.push(int("network.peer.port", self.rng.random_range(1024..65535)));
        attributes.push(kv(
            "thread.name",
            format!(
                "pool-{}-thread-{}",
                self.rng.random_range(1..8),
                self.rng.random_range(1..64)
            ),
        ));
        Span {
            trace_id: trace_id.to_vec(),
            span_id: id.to_vec(),
            parent_span_id: parent.to_vec(),
            name,
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end.max(start + 1_000),
            attributes,
            status: failed.then(|| Status {
                code: StatusCode::Error as i32,
                message: String::new(),
            }),
            flags: 0x301,
            ..Default::default()
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn server_span(
        &mut self,
        trace_id: &[u8; 16],
        id: [u8; 8],
        parent: Option<[u8; 8]>,
        op: usize,
        start: u64,
        end: u64,
        failed: bool,
    ) -> Span {
        let operation = &self.topology.operations[op];
        let (kind, attributes) = match operation.kind {
            Kind::Http => {
                let (verb, route) = operation.name.split_once(' ').unwrap_or(("GET", "/"));
                let status = if failed {
                    500
                } else {
                    [200, 200, 200, 201, 204, 404][self.rng.random_range(0..6)]
                };
                (
                    SpanKind::Server,
                    vec![
                        kv("http.request.method", verb.to_string()),
                        kv("http.route", route.to_string()),
                        kv(
                            "url.path",
                            route
                                .replace("{id}", &self.rng.random_range(1..100_000u32).to_string()),
                        ),
                        kv("url.scheme", "https"),
                        int("http.response.status_code", status),
                        kv(
                            "user_agent.original",
                            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/130.0",
                        ),
                        kv(
                            "client.address",
                            format!(
                                "10.{}.{}.{}",
                                self.rng.random_range(0..4),
                                self.rng.random_range(0..255),
                                self.rng.random_range(1..255)
                            ),
                        ),
                        kv("network.protocol.version", "1.1"),
                        kv(
                            "http.request.header.x-request-id",
                            format!(
                                "{:016x}{:016x}",
                                self.rng.random::<u64>(),
                                self.rng.random::<u64>()
                            ),
                        ),
                        kv(
                            "code.function",
                            format!("handle_{}", operation.name.len() % 17),
                        ),
                        kv(
                            "thread.name",
                            format!("http-nio-8080-exec-{}", self.rng.random_range(1..200)),
                        ),
                    ],
                )
            }
            Kind::Queue => (
                SpanKind::Consumer,
                vec![
                    kv("messaging.system", "kafka"),
                    kv("messaging.operation.type", "process"),
                    kv(
                        "messaging.destination.name",
                        operation
                            .name
                            .split(' ')
                            .next()
                            .unwrap_or("events")
                            .to_string(),
                    ),
                    kv(
                        "messaging.consumer.group.name",
                        format!(
                            "{}-consumers",
                            self.topology.services[operation.service].name
                        ),
                    ),
                ],
            ),
            _ => (
                SpanKind::Server,
                vec![
                    kv("rpc.system", "grpc"),
                    kv(
                        "rpc.service",
                        operation.name.split('/').next().unwrap_or("").to_string(),
                    ),
                    kv(
                        "rpc.method",
                        operation.name.split('/').nth(1).unwrap_or("").to_string(),
                    ),
                    int("rpc.grpc.status_code", if failed { 13 } else { 0 }),
                    kv(
                        "code.function",
                        format!(
                            "{}Impl.handle",
                            operation.name.split('/').nth(1).unwrap_or("rpc")
                        ),
                    ),
                    kv(
                        "thread.name",
                        format!("grpc-default-executor-{}", self.rng.random_range(1..64)),
                    ),
                    kv(
                        "network.peer.address",
                        format!(
                            "10.{}.{}.{}",
                            self.rng.random_range(0..4),
                            self.rng.random_range(0..255),
                            self.rng.random_range(1..255)
                        ),
                    ),
                ],
            ),
        };
        let events = if failed {
            vec![Event {
                time_unix_nano: end.saturating_sub(1_000),
                name: "exception".into(),
                attributes: vec![
                    kv("exception.type", "java.lang.IllegalStateException"),
                    kv("exception.message", "upstream unavailable"),
                ],
                dropped_attributes_count: 0,
            }]
        } else {
            Vec::new()
        };
        Span {
            trace_id: trace_id.to_vec(),
            span_id: id.to_vec(),
            parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: operation.name.clone(),
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end.max(start + 1_000),
            attributes,
            events,
            status: failed.then(|| Status {
                code: StatusCode::Error as i32,
                message: "upstream unavailable".into(),
            }),
            flags: 0x301,
            ..Default::default()
        }
    }

    fn group(&self, built: Built) -> ExportTraceServiceRequest {
        let mut per_service: Vec<Vec<Span>> = vec![Vec::new(); self.topology.services.len()];
        for (service, span) in built.spans {
            per_service[service].push(span);
        }
        ExportTraceServiceRequest {
            resource_spans: per_service
                .into_iter()
                .enumerate()
                .filter(|(_, spans)| !spans.is_empty())
                .map(|(s, spans)| ResourceSpans {
                    resource: Some(Resource {
                        attributes: self.topology.services[s].resource.clone(),
                        dropped_attributes_count: 0,
                        entity_refs: Vec::new(),
                    }),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "io.opentelemetry.instrumentation".into(),
                            version: "2.10.0".into(),
                            attributes: Vec::new(),
                            dropped_attributes_count: 0,
                        }),
                        spans,
                        schema_url: "https://opentelemetry.io/schemas/1.27.0".into(),
                    }],
                    schema_url: String::new(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn topology_size() {
        let t = Topology::new(1);
        assert_eq!(t.service_count(), 34);
        assert!(
            (250..=400).contains(&t.operation_count()),
            "{}",
            t.operation_count()
        );
    }

    #[test]
    fn deterministic_and_realistic() {
        let make = || {
            let mut g = Generator::new(Topology::new(7), 7, 1_800_000_000_000_000_000);
            (0..20)
                .map(|_| g.request(2_000).0.encode_to_vec())
                .collect::<Vec<_>>()
        };
        let a = make();
        assert_eq!(a, make(), "the same seed gives the same bytes");
        let mut g = Generator::new(Topology::new(7), 7, 1_800_000_000_000_000_000);
        let mut spans = 0;
        let mut bytes = 0;
        let mut per_trace: std::collections::HashMap<Vec<u8>, usize> = Default::default();
        for _ in 0..20 {
            let (r, n) = g.request(2_000);
            spans += n;
            bytes += r.encoded_len();
            for s in r
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .flat_map(|ss| &ss.spans)
            {
                *per_trace.entry(s.trace_id.clone()).or_default() += 1;
                assert!(s.end_time_unix_nano > s.start_time_unix_nano);
            }
        }
        let per_span = bytes as f64 / spans as f64;
        assert!(
            (300.0..=700.0).contains(&per_span),
            "{per_span} bytes per span"
        );
        let min = per_trace.values().min().unwrap();
        let max = per_trace.values().max().unwrap();
        assert!(*min >= 5 && *max <= 600, "{min}..{max}");
        assert!(*max >= 100, "some large traces: {max}");
    }
}
