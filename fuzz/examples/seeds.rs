//! Writes the seed corpora in `fuzz/seeds/<target>/`: small valid requests
//! of every protocol, built here from the same shapes as the project's own
//! tests (protocols/src/zipkin, protocols/src/jaeger, schema/src/otlp/tests.rs,
//! tests/e2e), so the fuzzer starts from inputs the decoders accept.
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds -- fuzz/seeds
//! ```
//!
//! The output is committed; rerun this only to change the seeds.

use std::fs;
use std::path::Path;

use prost::Message as _;
use tracelake_protocols::zipkin::proto;
use tracelake_schema::opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tracelake_schema::opentelemetry_proto::tonic::common::v1::any_value::Value;
use tracelake_schema::opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use tracelake_schema::opentelemetry_proto::tonic::resource::v1::Resource;
use tracelake_schema::opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use tracelake_schema::opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status,
};

fn main() {
    let out = std::env::args().nth(1).unwrap_or_else(|| "seeds".into());
    let out = Path::new(&out);
    let mut written = 0;
    let mut write = |target: &str, name: &str, body: &[u8]| {
        check(target, name, body);
        let dir = out.join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), body).unwrap();
        written += 1;
    };

    for (name, body) in ZIPKIN_V2 {
        write("zipkin_json", name, body.as_bytes());
    }
    for (name, body) in ZIPKIN_V1 {
        write("zipkin_v1_json", name, body.as_bytes());
    }
    for (name, body) in zipkin_proto() {
        write("zipkin_proto", name, &body);
    }
    for (p, target) in [(P::Binary, "jaeger_binary"), (P::Compact, "jaeger_compact")] {
        write(target, "batch", &batch(p));
        write(target, "agent_emit_batch", &agent_message(p));
        write(target, "batch_minimal", &minimal_batch(p));
    }
    for (name, request) in otlp() {
        write("otlp_proto", name, &request.encode_to_vec());
        let json = tracelake_protocols::otlp_json::traces_data(&request);
        write("otlp_json", name, json.to_string().as_bytes());
    }
    write(
        "otlp_json",
        "snake_case_and_enum_names",
        OTLP_JSON_LENIENT.as_bytes(),
    );
    for (i, query) in TRACEQL.iter().enumerate() {
        write("traceql", &format!("q{i:02}"), query.as_bytes());
    }
    for (i, query) in QUERY_STRINGS.iter().enumerate() {
        write("query_params", &format!("q{i:02}"), query.as_bytes());
    }
    println!("wrote {written} seeds under {}", out.display());
}

/// Fails unless the target's decoder accepts the seed and the writer takes
/// every span of it (the seed `rejected` is all rejections).
fn check(target: &str, name: &str, body: &[u8]) {
    use tracelake_protocols::jaeger::{self, Protocol};
    use tracelake_protocols::params::Params;
    let text = || std::str::from_utf8(body).unwrap();
    match target {
        "traceql" => {
            if let Err(e) = tracelake_protocols::traceql::parse(text()) {
                panic!("{target}/{name} is refused: {e}");
            }
            return;
        }
        "query_params" => {
            let mut p = Params::from_query(Some(text().to_string()));
            p.time_range(3_600_000_000_000)
                .and_then(|_| p.span_filter())
                .and_then(|_| p.limit("limit", 20, 1000))
                .unwrap_or_else(|e| panic!("{target}/{name} is refused: {e}"));
            return;
        }
        _ => {}
    }
    use tracelake_protocols::zipkin;
    use tracelake_schema::otlp::{Acceptance, SpansBuilder};
    let agent = name.starts_with("agent");
    let request = match target {
        "zipkin_json" => zipkin::from_json(body).map_err(|e| e.to_string()),
        "zipkin_v1_json" => zipkin::from_v1_json(body).map_err(|e| e.to_string()),
        "zipkin_proto" => zipkin::from_proto(body).map_err(|e| e.to_string()),
        "jaeger_binary" | "jaeger_compact" => {
            let p = if target == "jaeger_binary" {
                Protocol::Binary
            } else {
                Protocol::Compact
            };
            if agent {
                jaeger::from_agent_message(body, p)
            } else {
                jaeger::from_batch(body, p)
            }
            .map_err(|e| e.to_string())
        }
        "otlp_proto" => ExportTraceServiceRequest::decode(body).map_err(|e| e.to_string()),
        "otlp_json" => {
            tracelake_protocols::otlp_json::decode_request(body).map_err(|e| e.to_string())
        }
        other => panic!("unknown target {other}"),
    }
    .unwrap_or_else(|e| panic!("{target}/{name} is refused: {e}"));
    let rejections = SpansBuilder::default().append_request(&request, &Acceptance::ANY_TIME);
    assert_eq!(
        rejections.count > 0,
        name == "rejected",
        "{target}/{name}: {}",
        rejections.message()
    );
    tracelake_fuzz::store(&request);
}

// OTLP/JSON as exporters send it when they stray from the spec: snake_case
// keys, enum names, 32-bit integers as strings (collector's leniency).
const OTLP_JSON_LENIENT: &str = r#"{"resource_spans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}}]},"scope_spans":[{"scope":{"name":"lib"},"spans":[{"trace_id":"5b8efff798038103d269b633813fc60c","span_id":"eee19b7ec3c1b174","name":"GET /","kind":"SPAN_KIND_SERVER","start_time_unix_nano":"1544712660000000000","end_time_unix_nano":"1544712661000000000","status":{"code":"STATUS_CODE_ERROR","message":"boom"},"dropped_attributes_count":"1"}]}]}]}"#;

// TraceQL as Grafana's search builder and people write it.
const TRACEQL: &[&str] = &[
    "{}",
    r#"{resource.service.name="frontend" && name="GET /" && duration>100ms}"#,
    r#"{ (span.http.status_code >= 500 || status = error) && .region =~ "eu-.*" && kind = server }"#,
    r#"{ span."a b" != "x" && event:name = "exception" } >> { traceDuration > 1.5s && rootServiceName = "api" }"#,
    r#"{name="a"} && {name="b"} || {name="c"} > {name="d"}"#,
    r#"{ trace:id = "abc" && span:duration <= 2s && instrumentation:name != "x" && .ok = true && .n = 1.5 }"#,
];

// Query strings of the read APIs.
const QUERY_STRINGS: &[&str] = &[
    "service=api&operation=GET%20%2F&kind=server,client&status=error&minDuration=10ms&maxDuration=2s&attr=http.route%3D%2Fa&attr=span.n%3E%3D5&limit=20&lookback=1h",
    "start=2026-11-21T10:00:00Z&end=1795258800.5&attr=resource.k8s.pod.name%3D~%5Eapi-.*",
    "start=now-2h&end=now-1h&status=ok&limit=1000",
];

// Zipkin v2 JSON: the bodies of protocols/src/zipkin's tests and the
// end-to-end tests' exporters.
const ZIPKIN_V2: &[(&str, &str)] = &[
    (
        "client_span",
        r#"[{"traceId":"5AF7183FB1D4CF5F","id":"6b221d5bc9e6496c","parentId":"6b221d5bc9e6496c",
"kind":"CLIENT","name":"get /api","timestamp":1472470996199000,"duration":207000,
"localEndpoint":{"serviceName":"frontend","ipv4":"192.168.99.1","port":8080},
"remoteEndpoint":{"serviceName":"backend","ipv6":"2001:db8::c001","port":9000},
"annotations":[{"timestamp":1472470996238000,"value":"ws"},
{"timestamp":1472470996239000,"value":"retry|{\"n\":2}|1"}],
"tags":{"http.path":"/api","clnt/finagle.version":"6.45.0","host.name":"h1",
"otel.library.name":"lib","otel.library.version":"1.0","otel.status_code":"Error",
"otel.status_description":"boom","w3c.tracestate":"k=v","error":"timeout"},
"debug":true,"shared":false}]"#,
    ),
    (
        "otel_exporter",
        r#"[{"traceId":"1","id":"2","timestamp":1,"duration":1,
"annotations":[{"timestamp":2,"value":"{\"retry\": {\"attempt\": 2}}"},
{"timestamp":3,"value":"\"gc\": {\"ms\": 5}"}],
"tags":{"otel.status_code":"ERROR","error":"deadlock detected"}}]"#,
    ),
    (
        "server_and_children",
        r#"[{"traceId":"0102030405060708090a0b0c0d0e0f10","id":"352bff9a74ca9ad2","parentId":"6b221d5bc9e6496c",
"kind":"SERVER","name":"get /api","timestamp":1795219200000000,"duration":207000,"shared":true,
"localEndpoint":{"serviceName":"backend","ipv4":"192.168.99.101","port":9000},
"remoteEndpoint":{"serviceName":"frontend","ipv4":"172.19.0.2","port":58648},
"annotations":[{"timestamp":1795219200000100,"value":"wr"}],
"tags":{"http.method":"GET","http.status_code":"200","http.route":"/api","otel.scope.name":"s","otel.scope.version":"2"}},
{"traceId":"0102030405060708090a0b0c0d0e0f10","id":"0000000000000007","parentId":"352bff9a74ca9ad2",
"kind":"PRODUCER","name":"send","timestamp":1795219200000200,"duration":10,
"localEndpoint":{"serviceName":"backend"},"remoteEndpoint":{"serviceName":"kafka"},
"tags":{"messaging.system":"kafka","retries":3,"ratio":0.5,"otel.status_code":"OK"}},
{"traceId":"0102030405060708090a0b0c0d0e0f10","id":"0000000000000008","parentId":"0000000000000007",
"kind":"consumer","name":"receive","timestamp":1795219200000300,"duration":0,
"localEndpoint":{"serviceName":"worker","ipv6":"::1"},"tags":{"error":""}}]"#,
    ),
    (
        "local_span",
        r#"[{"traceId":"ffffffffffffffff","id":"a","name":"compute","timestamp":1795219200000000,"duration":5,
"localEndpoint":{"serviceName":""},"tags":{"otel.status_code":"STATUS_CODE_ERROR","otel.status_description":"no"}}]"#,
    ),
    ("empty_list", "[]"),
];

// Zipkin v1 JSON: the test of protocols/src/zipkin, and a messaging span.
const ZIPKIN_V1: &[(&str, &str)] = &[
    (
        "client_server_halves",
        r#"[{"traceId":"5af7183fb1d4cf5f","id":"352bff9a74ca9ad2","parentId":"6b221d5bc9e6496c","name":"get",
"annotations":[
{"timestamp":1000,"value":"cs","endpoint":{"serviceName":"frontend","ipv4":"10.0.0.1"}},
{"timestamp":1100,"value":"sr","endpoint":{"serviceName":"backend","ipv4":"10.0.0.2"}},
{"timestamp":1150,"value":"cache hit","endpoint":{"serviceName":"backend"}},
{"timestamp":1800,"value":"ss","endpoint":{"serviceName":"backend"}},
{"timestamp":2000,"value":"cr","endpoint":{"serviceName":"frontend"}}],
"binaryAnnotations":[
{"key":"http.path","value":"/api","endpoint":{"serviceName":"backend"}},
{"key":"sa","value":true,"endpoint":{"serviceName":"backend","ipv4":"10.0.0.2","port":8080}},
{"key":"ca","value":true,"endpoint":{"serviceName":"frontend","ipv4":"10.0.0.1"}}]},
{"traceId":"5af7183fb1d4cf5f","id":"0000000000000007","parentId":"352bff9a74ca9ad2","name":"compute",
"timestamp":1200,"duration":300,
"binaryAnnotations":[{"key":"lc","value":"worker","endpoint":{"serviceName":"backend"}}]}]"#,
    ),
    (
        "messaging",
        r#"[{"traceId":"0102030405060708090a0b0c0d0e0f10","id":"11","name":"publish","timestamp":1795219200000000,
"annotations":[{"timestamp":1795219200000000,"value":"ms","endpoint":{"serviceName":"producer","ipv6":"::1","port":1}},
{"timestamp":1795219200000500,"value":"mr","endpoint":{"serviceName":"consumer"}}],
"binaryAnnotations":[{"key":"ma","value":true,"endpoint":{"serviceName":"kafka"}},
{"key":"count","value":3},{"key":"flag","value":false},{"key":"obj","value":{"a":[1]}}]}]"#,
    ),
    ("empty_list", "[]"),
];

fn zipkin_proto() -> Vec<(&'static str, Vec<u8>)> {
    let span = proto::Span {
        trace_id: (1..=16).collect(),
        id: (0x11..=0x18).collect(),
        parent_id: Vec::new(),
        kind: 2,
        name: "get".into(),
        timestamp: 1_795_219_200_000_000,
        duration: 5,
        local_endpoint: Some(proto::Endpoint {
            service_name: "api".into(),
            ipv4: vec![10, 0, 0, 1],
            ipv6: Vec::new(),
            port: 80,
        }),
        remote_endpoint: Some(proto::Endpoint {
            service_name: "db".into(),
            ipv4: Vec::new(),
            ipv6: vec![0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xc0, 1],
            port: 5432,
        }),
        annotations: vec![proto::Annotation {
            timestamp: 1_795_219_200_000_001,
            value: "wr".into(),
        }],
        tags: [
            ("http.method".to_string(), "GET".to_string()),
            ("otel.status_code".to_string(), "ERROR".to_string()),
            ("error".to_string(), "boom".to_string()),
        ]
        .into(),
        debug: false,
        shared: true,
    };
    let child = proto::Span {
        trace_id: vec![0, 0, 0, 0, 0, 0, 0, 9],
        id: vec![0, 0, 0, 0, 0, 0, 0, 2],
        parent_id: (0x11..=0x18).collect(),
        kind: 1,
        name: "select".into(),
        timestamp: 1_795_219_200_000_002,
        duration: 1,
        ..Default::default()
    };
    vec![
        (
            "server_span",
            proto::ListOfSpans {
                spans: vec![span.clone()],
            }
            .encode_to_vec(),
        ),
        (
            "two_spans",
            proto::ListOfSpans {
                spans: vec![span, child],
            }
            .encode_to_vec(),
        ),
    ]
}

// Jaeger thrift: a small writer for both protocols.

#[derive(Clone, Copy, PartialEq)]
enum P {
    Binary,
    Compact,
}

const BOOL: u8 = 2;
const DOUBLE: u8 = 4;
const I32: u8 = 8;
const I64: u8 = 10;
const STRING: u8 = 11;
const STRUCT: u8 = 12;
const LIST: u8 = 15;

struct Thrift {
    out: Vec<u8>,
    p: P,
    /// Compact: the last field id of each open struct.
    last: Vec<i16>,
}

impl Thrift {
    fn new(p: P) -> Self {
        Self {
            out: Vec::new(),
            p,
            last: vec![0],
        }
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.out.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.out.push(v as u8);
    }

    fn compact_type(t: u8) -> u8 {
        match t {
            BOOL => 1,
            I32 => 5,
            I64 => 6,
            DOUBLE => 7,
            STRING => 8,
            LIST => 9,
            STRUCT => 12,
            _ => unreachable!("unused type {t}"),
        }
    }

    /// A field header; in compact, `bool` carries the value of a bool field.
    fn header(&mut self, id: i16, t: u8, bool: Option<bool>) {
        match self.p {
            P::Binary => {
                self.out.push(t);
                self.out.extend(id.to_be_bytes());
            }
            P::Compact => {
                let last = self.last.last_mut().unwrap();
                let delta = id - *last;
                *last = id;
                assert!((1..=15).contains(&delta), "field ids ascend by 1..=15");
                let ct = match bool {
                    Some(true) => 1,
                    Some(false) => 2,
                    None => Self::compact_type(t),
                };
                self.out.push((delta as u8) << 4 | ct);
            }
        }
    }

    fn field(&mut self, id: i16, t: u8) {
        self.header(id, t, None);
    }

    fn begin(&mut self) {
        self.last.push(0);
    }

    fn end(&mut self) {
        self.out.push(0);
        self.last.pop();
    }

    fn i32(&mut self, id: i16, v: i32) {
        self.field(id, I32);
        match self.p {
            P::Binary => self.out.extend(v.to_be_bytes()),
            P::Compact => self.varint(((v << 1) ^ (v >> 31)) as u32 as u64),
        }
    }

    fn i64(&mut self, id: i16, v: i64) {
        self.field(id, I64);
        match self.p {
            P::Binary => self.out.extend(v.to_be_bytes()),
            P::Compact => self.varint(((v << 1) ^ (v >> 63)) as u64),
        }
    }

    fn double(&mut self, id: i16, v: f64) {
        self.field(id, DOUBLE);
        match self.p {
            P::Binary => self.out.extend(v.to_be_bytes()),
            P::Compact => self.out.extend(v.to_le_bytes()),
        }
    }

    fn bool(&mut self, id: i16, v: bool) {
        self.header(id, BOOL, Some(v));
        if self.p == P::Binary {
            self.out.push(u8::from(v));
        }
    }

    fn bytes(&mut self, id: i16, v: &[u8]) {
        self.field(id, STRING);
        match self.p {
            P::Binary => self.out.extend((v.len() as i32).to_be_bytes()),
            P::Compact => self.varint(v.len() as u64),
        }
        self.out.extend(v);
    }

    fn string(&mut self, id: i16, v: &str) {
        self.bytes(id, v.as_bytes());
    }

    /// A list-of-structs field header for `n` elements.
    fn list(&mut self, id: i16, n: usize) {
        self.field(id, LIST);
        match self.p {
            P::Binary => {
                self.out.push(STRUCT);
                self.out.extend((n as i32).to_be_bytes());
            }
            P::Compact => {
                assert!(n < 15);
                self.out.push((n as u8) << 4 | Self::compact_type(STRUCT));
            }
        }
    }

    /// A `Tag`: (key, vType, the value's field).
    fn tag(&mut self, key: &str, value: TagValue<'_>) {
        self.begin();
        self.string(1, key);
        match value {
            TagValue::Str(v) => {
                self.i32(2, 0);
                self.string(3, v);
            }
            TagValue::Double(v) => {
                self.i32(2, 1);
                self.double(4, v);
            }
            TagValue::Bool(v) => {
                self.i32(2, 2);
                self.bool(5, v);
            }
            TagValue::Long(v) => {
                self.i32(2, 3);
                self.i64(6, v);
            }
            TagValue::Binary(v) => {
                self.i32(2, 4);
                self.bytes(7, v);
            }
        }
        self.end();
    }

    fn tags(&mut self, id: i16, tags: &[(&str, TagValue<'_>)]) {
        self.list(id, tags.len());
        for (k, v) in tags {
            self.tag(k, *v);
        }
    }
}

#[derive(Clone, Copy)]
enum TagValue<'a> {
    Str(&'a str),
    Double(f64),
    Bool(bool),
    Long(i64),
    Binary(&'a [u8]),
}

/// A `Batch` of a server span and its client child, with every tag type, a
/// reference, a log, and the optional seqNo: the shape of
/// protocols/src/jaeger tests.
fn batch_body(p: P) -> Thrift {
    use TagValue::*;
    let mut w = Thrift::new(p);
    w.field(1, STRUCT); // process
    w.begin();
    w.string(1, "billing");
    w.tags(
        2,
        &[
            ("hostname", Str("h1")),
            ("jaeger.version", Str("Python-4.8.0")),
            ("ip", Long(0x0a00_0001)),
        ],
    );
    w.end();
    w.list(2, 2);
    for (id, parent, kind, error) in [
        (0x10i64, 0i64, "server", false),
        (0x11, 0x10, "client", true),
    ] {
        w.begin();
        w.i64(1, 0x0102_0304_0506_0708);
        w.i64(2, -1);
        w.i64(3, id);
        w.i64(4, parent);
        w.string(5, if parent == 0 { "charge" } else { "call bank" });
        if parent != 0 {
            w.list(6, 1);
            w.begin();
            w.i32(1, 1); // FOLLOWS_FROM
            w.i64(2, 0x77);
            w.i64(3, 0);
            w.i64(4, 0x99);
            w.end();
        }
        w.i32(7, 1);
        w.i64(8, 1_795_219_200_000_000);
        w.i64(9, 1500);
        w.tags(
            10,
            &[
                ("span.kind", Str(kind)),
                ("http.status_code", Long(200)),
                ("error", Bool(error)),
                ("ratio", Double(0.25)),
                ("payload", Binary(b"\x00\x01")),
                ("otel.library.name", Str("lib")),
                ("w3c.tracestate", Str("k=v")),
            ],
        );
        w.list(11, 1);
        w.begin();
        w.i64(1, 1_795_219_200_000_100);
        w.tags(2, &[("event", Str("retry")), ("attempt", Long(2))]);
        w.end();
        w.end();
    }
    w.i64(3, 7); // seqNo
    w
}

fn batch(p: P) -> Vec<u8> {
    let mut w = batch_body(p);
    w.out.push(0);
    w.out
}

/// `Agent.emitBatch(batch)`, oneway, as the UDP agent port receives it.
fn agent_message(p: P) -> Vec<u8> {
    let mut m = match p {
        // Strict binary: version | type (oneway = 4), name, seqid.
        P::Binary => {
            let mut m = 0x8001_0004u32.to_be_bytes().to_vec();
            m.extend(9i32.to_be_bytes());
            m.extend(b"emitBatch");
            m.extend(0i32.to_be_bytes());
            m.push(STRUCT);
            m.extend(1i16.to_be_bytes());
            m
        }
        // Compact: protocol id, version | type << 5, seqid, name.
        P::Compact => {
            let mut m = vec![0x82, (4 << 5) | 1, 0, 9];
            m.extend(b"emitBatch");
            m.push((1 << 4) | 12);
            m
        }
    };
    m.extend(batch(p));
    m.push(0);
    m
}

/// The least a batch needs: a process with a service name and one span.
fn minimal_batch(p: P) -> Vec<u8> {
    let mut w = Thrift::new(p);
    w.field(1, STRUCT);
    w.begin();
    w.string(1, "svc");
    w.end();
    w.list(2, 1);
    w.begin();
    w.i64(1, 1);
    w.i64(2, 0);
    w.i64(3, 1);
    w.i64(4, 0);
    w.string(5, "op");
    w.i32(7, 0);
    w.i64(8, 1_795_219_200_000_000);
    w.i64(9, 1);
    w.end();
    w.out.push(0);
    w.out
}

// OTLP: the shapes of schema/src/otlp/tests.rs.

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

const DAY_START: u64 = 1_795_219_200_000_000_000;

fn otlp() -> Vec<(&'static str, ExportTraceServiceRequest)> {
    let attributes = vec![
        kv("http.method", Value::StringValue("GET".into())),
        kv("http.request.method", Value::StringValue("POST".into())),
        kv("http.response.status_code", Value::IntValue(404)),
        kv("http.status_code", Value::StringValue(" 500 ".into())),
        kv("db.system", Value::DoubleValue(3.0)),
        kv("rpc.method", Value::BoolValue(true)),
        kv("double", Value::DoubleValue(f64::NAN)),
        kv("bytes", Value::BytesValue(vec![0, 1, 2])),
        kv(
            "array",
            Value::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(Value::IntValue(1)),
                    },
                    AnyValue { value: None },
                    AnyValue {
                        value: Some(Value::StringValue("x".into())),
                    },
                ],
            }),
        ),
        kv(
            "map",
            Value::KvlistValue(KeyValueList {
                values: vec![kv("inner", Value::BoolValue(false))],
            }),
        ),
        KeyValue {
            key: "no value".into(),
            value: None,
            key_strindex: 0,
        },
    ];
    let server = Span {
        trace_id: (1..=16).collect(),
        span_id: (1..=8).collect(),
        trace_state: "k=v".into(),
        flags: 0x301,
        name: "GET /users/{id}".into(),
        kind: 2,
        start_time_unix_nano: DAY_START + 1,
        end_time_unix_nano: DAY_START + 1_000_001,
        attributes,
        dropped_attributes_count: 2,
        events: vec![Event {
            time_unix_nano: DAY_START + 500,
            name: "exception".into(),
            attributes: vec![kv("exception.type", Value::StringValue("E".into()))],
            dropped_attributes_count: 1,
        }],
        dropped_events_count: 3,
        links: vec![Link {
            trace_id: vec![9; 16],
            span_id: vec![9; 8],
            trace_state: "a=b".into(),
            attributes: vec![kv("link", Value::IntValue(-1))],
            dropped_attributes_count: 0,
            flags: 1,
        }],
        dropped_links_count: 4,
        status: Some(Status {
            message: "not found".into(),
            code: 2,
        }),
        ..Default::default()
    };
    let client = Span {
        trace_id: (1..=16).collect(),
        span_id: vec![2; 8],
        parent_span_id: (1..=8).collect(),
        name: "SELECT".into(),
        kind: 3,
        start_time_unix_nano: DAY_START + 10,
        end_time_unix_nano: DAY_START + 20,
        attributes: vec![
            kv("db.system.name", Value::StringValue("postgresql".into())),
            kv("server.address", Value::StringValue("db".into())),
        ],
        status: Some(Status {
            message: String::new(),
            code: 1,
        }),
        ..Default::default()
    };
    let resource = Resource {
        attributes: vec![
            kv("service.name", Value::StringValue("frontend".into())),
            kv("host.name", Value::StringValue("h1".into())),
        ],
        dropped_attributes_count: 1,
        entity_refs: Vec::new(),
    };
    let scope = InstrumentationScope {
        name: "lib".into(),
        version: "1.0".into(),
        attributes: vec![kv("scope.attr", Value::IntValue(7))],
        dropped_attributes_count: 0,
    };
    let full = ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(resource),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope),
                    spans: vec![server.clone(), client],
                    schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                }],
                schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
            },
            ResourceSpans {
                resource: None,
                scope_spans: vec![ScopeSpans {
                    scope: None,
                    spans: vec![Span {
                        span_id: vec![3; 8],
                        ..server.clone()
                    }],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            },
        ],
    };
    let minimal = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: None,
            scope_spans: vec![ScopeSpans {
                scope: None,
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![1; 8],
                    name: "op".into(),
                    start_time_unix_nano: DAY_START,
                    end_time_unix_nano: DAY_START,
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    // One span of each rejection: bad ids, kind and status out of range,
    // end before start.
    let rejected = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: None,
            scope_spans: vec![ScopeSpans {
                scope: None,
                spans: vec![
                    Span {
                        trace_id: vec![0; 16],
                        ..server.clone()
                    },
                    Span {
                        span_id: vec![1; 4],
                        ..server.clone()
                    },
                    Span {
                        parent_span_id: vec![1; 3],
                        ..server.clone()
                    },
                    Span {
                        kind: 9,
                        ..server.clone()
                    },
                    Span {
                        status: Some(Status {
                            message: String::new(),
                            code: 5,
                        }),
                        ..server.clone()
                    },
                    Span {
                        end_time_unix_nano: 0,
                        ..server
                    },
                ],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    vec![("full", full), ("minimal", minimal), ("rejected", rejected)]
}
