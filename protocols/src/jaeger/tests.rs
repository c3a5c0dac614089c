//! The thrift reader and the Jaeger mapping, from batches written here by
//! a minimal thrift writer in both encodings.

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

use super::thrift::*;
use super::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;

use crate::otlp::value_text;

fn text(kv: &KeyValue) -> String {
    value_text(kv.value.as_ref())
}

/// A minimal thrift writer for the tests, binary or compact.
struct W {
    out: Vec<u8>,
    p: Protocol,
    last: Vec<i16>,
}

impl W {
    fn new(p: Protocol) -> Self {
        Self {
            out: Vec::new(),
            p,
            last: vec![0],
        }
    }
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.out.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.out.push(v as u8);
    }
    fn zz(&mut self, v: i64) {
        self.varint(((v << 1) ^ (v >> 63)) as u64);
    }
    fn ctype(t: u8) -> u8 {
        match t {
            T_BOOL => 1,
            T_DOUBLE => 7,
            T_I32 => 5,
            T_I64 => 6,
            T_STRING => 8,
            T_LIST => 9,
            T_STRUCT => 12,
            _ => unreachable!(),
        }
    }
    fn field(&mut self, id: i16, t: u8) {
        match self.p {
            Protocol::Binary => {
                self.out.push(t);
                self.out.extend(id.to_be_bytes());
            }
            Protocol::Compact => {
                let last = self.last.last_mut().unwrap();
                let delta = id - *last;
                *last = id;
                assert!((1..=15).contains(&delta));
                self.out.push(((delta as u8) << 4) | Self::ctype(t));
            }
        }
    }
    fn stop(&mut self) {
        self.out.push(0);
    }
    fn begin(&mut self) {
        self.last.push(0);
    }
    fn end(&mut self) {
        self.stop();
        self.last.pop();
    }
    fn i32(&mut self, v: i32) {
        match self.p {
            Protocol::Binary => self.out.extend(v.to_be_bytes()),
            Protocol::Compact => self.zz(v.into()),
        }
    }
    fn i64(&mut self, v: i64) {
        match self.p {
            Protocol::Binary => self.out.extend(v.to_be_bytes()),
            Protocol::Compact => self.zz(v),
        }
    }
    fn string(&mut self, s: &str) {
        match self.p {
            Protocol::Binary => self.out.extend((s.len() as i32).to_be_bytes()),
            Protocol::Compact => self.varint(s.len() as u64),
        }
        self.out.extend(s.as_bytes());
    }
    fn list(&mut self, et: u8, n: usize) {
        match self.p {
            Protocol::Binary => {
                self.out.push(et);
                self.out.extend((n as i32).to_be_bytes());
            }
            Protocol::Compact => self.out.push(((n as u8) << 4) | Self::ctype(et)),
        }
    }
    fn string_tag(&mut self, k: &str, v: &str) {
        self.begin();
        self.field(1, T_STRING);
        self.string(k);
        self.field(2, T_I32);
        self.i32(0);
        self.field(3, T_STRING);
        self.string(v);
        self.end();
    }
    fn long_tag(&mut self, k: &str, v: i64) {
        self.begin();
        self.field(1, T_STRING);
        self.string(k);
        self.field(2, T_I32);
        self.i32(3);
        self.field(6, T_I64);
        self.i64(v);
        self.end();
    }
    fn bool_tag(&mut self, k: &str, v: bool) {
        self.begin();
        self.field(1, T_STRING);
        self.string(k);
        self.field(2, T_I32);
        self.i32(2);
        match self.p {
            Protocol::Binary => {
                self.field(5, T_BOOL);
                self.out.push(u8::from(v));
            }
            Protocol::Compact => {
                let last = self.last.last_mut().unwrap();
                let delta = 5 - *last;
                *last = 5;
                self.out.push(((delta as u8) << 4) | if v { 1 } else { 2 });
            }
        }
        self.end();
    }
}

/// A batch of two spans: a server root and its client child.
fn batch_bytes(p: Protocol) -> Vec<u8> {
    let mut w = W::new(p);
    w.field(1, T_STRUCT); // process
    w.begin();
    w.field(1, T_STRING);
    w.string("billing");
    w.field(2, T_LIST);
    w.list(T_STRUCT, 2);
    w.string_tag("hostname", "h1");
    w.string_tag("jaeger.version", "Python-4.8.0");
    w.end();
    w.field(2, T_LIST);
    w.list(T_STRUCT, 2);
    for (id, parent, kind, error) in [
        (0x10i64, 0i64, "server", false),
        (0x11, 0x10, "client", true),
    ] {
        w.begin();
        w.field(1, T_I64);
        w.i64(0x0102_0304_0506_0708);
        w.field(2, T_I64);
        w.i64(-1);
        w.field(3, T_I64);
        w.i64(id);
        w.field(4, T_I64);
        w.i64(parent);
        w.field(5, T_STRING);
        w.string(if parent == 0 { "charge" } else { "call bank" });
        if parent != 0 {
            // A FOLLOWS_FROM reference to another trace's span.
            w.field(6, T_LIST);
            w.list(T_STRUCT, 1);
            w.begin();
            w.field(1, T_I32);
            w.i32(1);
            w.field(2, T_I64);
            w.i64(0x77);
            w.field(3, T_I64);
            w.i64(0);
            w.field(4, T_I64);
            w.i64(0x99);
            w.end();
        }
        w.field(7, T_I32);
        w.i32(1);
        w.field(8, T_I64);
        w.i64(1_700_000_000_000_000);
        w.field(9, T_I64);
        w.i64(1500);
        w.field(10, T_LIST);
        w.list(T_STRUCT, 3);
        w.string_tag("span.kind", kind);
        w.long_tag("http.status_code", 200);
        w.bool_tag("error", error);
        w.field(11, T_LIST);
        w.list(T_STRUCT, 1);
        w.begin();
        w.field(1, T_I64);
        w.i64(1_700_000_000_000_100);
        w.field(2, T_LIST);
        w.list(T_STRUCT, 2);
        w.string_tag("event", "retry");
        w.long_tag("attempt", 2);
        w.end();
        w.end();
    }
    w.stop();
    w.out
}

fn check(r: &ExportTraceServiceRequest) {
    let rs = &r.resource_spans[0];
    let attrs = &rs.resource.as_ref().unwrap().attributes;
    let get = |k: &str| attrs.iter().find(|kv| kv.key == k).map(text);
    assert_eq!(get("service.name").as_deref(), Some("billing"));
    assert_eq!(get("host.name").as_deref(), Some("h1"));
    assert_eq!(
        get("opencensus.exporterversion").as_deref(),
        Some("Jaeger-Python-4.8.0")
    );
    let spans = &rs.scope_spans[0].spans;
    assert_eq!(
        hex::encode(&spans[0].trace_id),
        "ffffffffffffffff0102030405060708"
    );
    assert_eq!(spans[0].kind, SpanKind::Server as i32);
    assert!(spans[0].parent_span_id.is_empty());
    assert!(spans[0].status.is_none());
    assert_eq!(spans[1].kind, SpanKind::Client as i32);
    assert_eq!(hex::encode(&spans[1].parent_span_id), "0000000000000010");
    assert_eq!(
        spans[1].status.as_ref().unwrap().code,
        StatusCode::Error as i32
    );
    assert_eq!(
        spans[1].end_time_unix_nano - spans[1].start_time_unix_nano,
        1_500_000
    );
    let a: Vec<_> = spans[1]
        .attributes
        .iter()
        .map(|kv| kv.key.as_str())
        .collect();
    assert_eq!(a, ["http.status_code"]);
    let link = &spans[1].links[0];
    assert_eq!(
        hex::encode(&link.trace_id),
        "00000000000000000000000000000077"
    );
    assert_eq!(hex::encode(&link.span_id), "0000000000000099");
    assert_eq!(text(&link.attributes[0]), "follows_from");
    assert!(spans[0].links.is_empty());
    assert_eq!(spans[1].events[0].name, "retry");
    assert_eq!(spans[1].events[0].time_unix_nano, 1_700_000_000_000_100_000);
    assert_eq!(spans[1].events[0].attributes[0].key, "attempt");
}

#[test]
fn binary_and_compact_batches() {
    check(&from_batch(&batch_bytes(Protocol::Binary), Protocol::Binary).unwrap());
    check(&from_batch(&batch_bytes(Protocol::Compact), Protocol::Compact).unwrap());
}

#[test]
fn agent_messages() {
    // Compact: protocol id, version|type (oneway = 4), seqid, name, args.
    let mut m = vec![0x82, (4 << 5) | 1, 0, 9];
    m.extend(b"emitBatch");
    m.push((1 << 4) | 12);
    m.extend(batch_bytes(Protocol::Compact));
    m.push(0);
    check(&from_agent_message(&m, Protocol::Compact).unwrap());
    // Binary, strict.
    let mut m = (0x8001_0004u32 as i32).to_be_bytes().to_vec();
    m.extend(9i32.to_be_bytes());
    m.extend(b"emitBatch");
    m.extend(0i32.to_be_bytes());
    m.push(T_STRUCT);
    m.extend(1i16.to_be_bytes());
    m.extend(batch_bytes(Protocol::Binary));
    m.push(0);
    check(&from_agent_message(&m, Protocol::Binary).unwrap());
}

#[test]
fn hostile_input_is_an_error() {
    let good = batch_bytes(Protocol::Binary);
    // Every truncation fails cleanly.
    for n in 0..good.len() {
        assert!(from_batch(&good[..n], Protocol::Binary).is_err(), "{n}");
    }
    // A huge declared string or list length does not allocate it.
    let mut huge = vec![T_STRUCT, 0, 1, T_STRING, 0, 1];
    huge.extend(i32::MAX.to_be_bytes());
    assert!(
        from_batch(&huge, Protocol::Binary)
            .unwrap_err()
            .to_string()
            .contains("bytes")
    );
    let mut list = vec![T_LIST, 0, 2, T_STRUCT];
    list.extend(i32::MAX.to_be_bytes());
    assert!(from_batch(&list, Protocol::Binary).is_err());
    // Deep nesting is refused.
    let deep: Vec<u8> = std::iter::repeat_n([T_STRUCT, 0, 9], 100)
        .flatten()
        .collect();
    assert!(
        from_batch(&deep, Protocol::Binary)
            .unwrap_err()
            .to_string()
            .contains("deep")
    );
    assert!(from_agent_message(b"\x82\x81\x00\x03abc", Protocol::Compact).is_err());
}

/// One process per service and shown tags: spans of one resource share
/// it wherever they come in the trace, resources that differ only where
/// Jaeger shows nothing (a dropped count) share it, and another
/// attribute makes another.
#[test]
fn processes_are_one_per_service_and_tags() {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::Span;

    let attr = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Any::StringValue(v.into())),
        }),
        key_strindex: 0,
    };
    let resource = |pod: &str, dropped: u32| Resource {
        attributes: vec![attr("service.name", "cart"), attr("k8s.pod.name", pod)],
        dropped_attributes_count: dropped,
        ..Default::default()
    };
    let (a, a_dropped, b) = (resource("a", 0), resource("a", 3), resource("b", 0));
    let span = Span::default();
    let scope = InstrumentationScope::default();
    let rows = [(&a, 1), (&b, 2), (&a_dropped, 3), (&a, 4), (&b, 5)];
    let trace = ui_trace(
        &[1; 16],
        rows.iter().map(|&(resource, id)| UiSpan {
            span: &span,
            resource,
            scope: &scope,
            service: "cart",
            span_id: id,
            parent: None,
        }),
    );
    let shown: Vec<&str> = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["processID"].as_str().unwrap())
        .collect();
    assert_eq!(shown, ["p1", "p2", "p1", "p1", "p2"]);
    let processes = trace["processes"].as_object().unwrap();
    assert_eq!(processes.len(), 2);
    assert_eq!(processes["p1"]["tags"][0]["value"], "a");
    assert_eq!(processes["p2"]["tags"][0]["value"], "b");
}
