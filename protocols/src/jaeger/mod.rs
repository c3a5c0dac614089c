//! Jaeger thrift (`jaeger.thrift` `Batch`) to OTLP, as the OpenTelemetry
//! Collector's jaeger translator maps it.
//!
//! Decodes the two wire encodings Jaeger clients use: TBinaryProtocol (HTTP
//! `POST /api/traces` bodies, UDP 6832) and TCompactProtocol (UDP 6831),
//! with the `Agent.emitBatch` message envelope on UDP. The reader is ours:
//! every length is checked against the bytes left, nesting is bounded, and
//! unknown fields are skipped, so hostile input is an error, never a large
//! allocation or a stack overflow.
//!
//! Mapping: process service name and tags become the resource (`hostname` ->
//! `host.name`); tags become typed attributes (binary as base64 text);
//! `span.kind` gives the kind; `error=true` (then `otel.status_code`, then an
//! HTTP status of 5xx, or 4xx on a client) gives the status, with
//! `otel.status_description` as its message; `w3c.tracestate` the trace
//! state; `otel.library.*` / `otel.scope.*` the scope; `parentSpanId` (or the
//! first CHILD_OF reference) the parent, other references links with
//! `opentracing.ref_type`; logs become events named by their `event` field.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// A thrift decoding error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThriftError(pub String);

impl fmt::Display for ThriftError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid Jaeger thrift: {}", self.0)
    }
}

impl std::error::Error for ThriftError {}

type Result<T> = std::result::Result<T, ThriftError>;

fn err<T>(m: impl Into<String>) -> Result<T> {
    Err(ThriftError(m.into()))
}

// Thrift types (binary protocol numbering).
const T_STOP: u8 = 0;
const T_BOOL: u8 = 2;
const T_BYTE: u8 = 3;
const T_DOUBLE: u8 = 4;
const T_I16: u8 = 6;
const T_I32: u8 = 8;
const T_I64: u8 = 10;
const T_STRING: u8 = 11;
const T_STRUCT: u8 = 12;
const T_MAP: u8 = 13;
const T_SET: u8 = 14;
const T_LIST: u8 = 15;

const MAX_DEPTH: usize = 32;

/// Which encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Binary,
    Compact,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    protocol: Protocol,
    /// Compact: last field id per open struct.
    last_ids: Vec<i16>,
    /// Compact: the value of a bool field, carried in its header.
    pending_bool: Option<bool>,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8], protocol: Protocol) -> Self {
        Self {
            data,
            pos: 0,
            protocol,
            last_ids: Vec::new(),
            pending_bool: None,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.data.len() - self.pos {
            return err(format!(
                "needs {n} bytes at offset {}, {} left",
                self.pos,
                self.data.len() - self.pos
            ));
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64> {
        let mut out = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                return err("varint overflows 64 bits");
            }
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        err("varint too long")
    }

    fn zigzag(&mut self) -> Result<i64> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn i16(&mut self) -> Result<i16> {
        match self.protocol {
            Protocol::Binary => Ok(i16::from_be_bytes(
                self.take(2)?.try_into().expect("2 bytes"),
            )),
            Protocol::Compact => i16::try_from(self.zigzag()?).or_else(|_| err("i16 out of range")),
        }
    }

    fn i32(&mut self) -> Result<i32> {
        match self.protocol {
            Protocol::Binary => Ok(i32::from_be_bytes(
                self.take(4)?.try_into().expect("4 bytes"),
            )),
            Protocol::Compact => i32::try_from(self.zigzag()?).or_else(|_| err("i32 out of range")),
        }
    }

    fn i64(&mut self) -> Result<i64> {
        match self.protocol {
            Protocol::Binary => Ok(i64::from_be_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            )),
            Protocol::Compact => self.zigzag(),
        }
    }

    fn double(&mut self) -> Result<f64> {
        let b: [u8; 8] = self.take(8)?.try_into().expect("8 bytes");
        Ok(match self.protocol {
            Protocol::Binary => f64::from_be_bytes(b),
            Protocol::Compact => f64::from_le_bytes(b),
        })
    }

    fn bool(&mut self) -> Result<bool> {
        if let Some(b) = self.pending_bool.take() {
            return Ok(b);
        }
        Ok(self.byte()? == 1)
    }

    fn len(&mut self) -> Result<usize> {
        let n = match self.protocol {
            Protocol::Binary => {
                let n = self.i32()?;
                usize::try_from(n).or_else(|_| err(format!("negative length {n}")))?
            }
            Protocol::Compact => {
                usize::try_from(self.varint()?).or_else(|_| err("length too large"))?
            }
        };
        Ok(n)
    }

    fn binary(&mut self) -> Result<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String> {
        String::from_utf8(self.binary()?.to_vec()).or_else(|_| err("string is not UTF-8"))
    }

    fn compact_type(t: u8) -> Result<u8> {
        Ok(match t {
            1 | 2 => T_BOOL,
            3 => T_BYTE,
            4 => T_I16,
            5 => T_I32,
            6 => T_I64,
            7 => T_DOUBLE,
            8 => T_STRING,
            9 => T_LIST,
            10 => T_SET,
            11 => T_MAP,
            12 => T_STRUCT,
            other => return err(format!("unknown compact type {other}")),
        })
    }

    fn struct_begin(&mut self) {
        self.last_ids.push(0);
    }

    fn struct_end(&mut self) {
        self.last_ids.pop();
    }

    /// The next field's (id, type), or `None` at the end of the struct.
    fn field(&mut self) -> Result<Option<(i16, u8)>> {
        match self.protocol {
            Protocol::Binary => {
                let t = self.byte()?;
                if t == T_STOP {
                    return Ok(None);
                }
                Ok(Some((self.i16()?, t)))
            }
            Protocol::Compact => {
                let header = self.byte()?;
                if header == 0 {
                    return Ok(None);
                }
                let raw = header & 0x0f;
                let delta = header >> 4;
                let last = *self.last_ids.last().unwrap_or(&0);
                let id = if delta == 0 {
                    self.i16()?
                } else {
                    last.checked_add(i16::from(delta))
                        .ok_or_else(|| ThriftError("field id overflow".into()))?
                };
                if let Some(l) = self.last_ids.last_mut() {
                    *l = id;
                }
                let t = Self::compact_type(raw)?;
                if t == T_BOOL {
                    self.pending_bool = Some(raw == 1);
                }
                Ok(Some((id, t)))
            }
        }
    }

    /// (element type, count) of a list or set; the count is checked against
    /// the bytes left (every element takes at least one byte).
    fn list(&mut self) -> Result<(u8, usize)> {
        let (t, n) = match self.protocol {
            Protocol::Binary => {
                let t = self.byte()?;
                (t, self.len()?)
            }
            Protocol::Compact => {
                let header = self.byte()?;
                let t = Self::compact_type(header & 0x0f)?;
                let n = if header >> 4 == 15 {
                    self.len()?
                } else {
                    usize::from(header >> 4)
                };
                (t, n)
            }
        };
        if n > self.data.len() - self.pos {
            return err(format!(
                "list of {n} elements in {} bytes",
                self.data.len() - self.pos
            ));
        }
        Ok((t, n))
    }

    fn expect(&self, got: u8, want: u8, what: &str) -> Result<()> {
        if got == want {
            Ok(())
        } else {
            err(format!("{what} has thrift type {got}, expected {want}"))
        }
    }

    fn skip(&mut self, t: u8, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return err("nesting too deep");
        }
        match t {
            T_BOOL => {
                self.bool()?;
            }
            T_BYTE => {
                self.byte()?;
            }
            T_I16 => {
                self.i16()?;
            }
            T_I32 => {
                self.i32()?;
            }
            T_I64 => {
                self.i64()?;
            }
            T_DOUBLE => {
                self.double()?;
            }
            T_STRING => {
                self.binary()?;
            }
            T_STRUCT => {
                self.struct_begin();
                while let Some((_, ft)) = self.field()? {
                    self.skip(ft, depth + 1)?;
                }
                self.struct_end();
            }
            T_LIST | T_SET => {
                let (et, n) = self.list()?;
                for _ in 0..n {
                    self.skip(et, depth + 1)?;
                }
            }
            T_MAP => {
                let (kt, vt, n) = match self.protocol {
                    Protocol::Binary => (self.byte()?, self.byte()?, self.len()?),
                    Protocol::Compact => {
                        let n = self.len()?;
                        if n == 0 {
                            (0, 0, 0)
                        } else {
                            let kv = self.byte()?;
                            (
                                Self::compact_type(kv >> 4)?,
                                Self::compact_type(kv & 0x0f)?,
                                n,
                            )
                        }
                    }
                };
                if n > self.data.len() - self.pos {
                    return err("map larger than the input");
                }
                for _ in 0..n {
                    self.skip(kt, depth + 1)?;
                    self.skip(vt, depth + 1)?;
                }
            }
            other => return err(format!("unknown thrift type {other}")),
        }
        Ok(())
    }

    /// A list of structs, each read by `item`.
    fn struct_list<T>(
        &mut self,
        t: u8,
        what: &str,
        mut item: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.expect(t, T_LIST, what)?;
        let (et, n) = self.list()?;
        self.expect(et, T_STRUCT, what)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(item(self)?);
        }
        Ok(out)
    }
}

/// A Jaeger tag as an OTLP key-value.
fn tag(r: &mut Reader<'_>) -> Result<KeyValue> {
    let mut key = String::new();
    let mut v_type = 0;
    let (mut s, mut d, mut b, mut l, mut bin) = (None, None, None, None, None);
    r.struct_begin();
    while let Some((id, t)) = r.field()? {
        match (id, t) {
            (1, T_STRING) => key = r.string()?,
            (2, T_I32) => v_type = r.i32()?,
            (3, T_STRING) => s = Some(r.string()?),
            (4, T_DOUBLE) => d = Some(r.double()?),
            (5, T_BOOL) => b = Some(r.bool()?),
            (6, T_I64) => l = Some(r.i64()?),
            (7, T_STRING) => bin = Some(r.binary()?.to_vec()),
            _ => r.skip(t, 1)?,
        }
    }
    r.struct_end();
    let value = match v_type {
        0 => Any::StringValue(s.unwrap_or_default()),
        1 => Any::DoubleValue(d.unwrap_or_default()),
        2 => Any::BoolValue(b.unwrap_or_default()),
        3 => Any::IntValue(l.unwrap_or_default()),
        4 => Any::StringValue(BASE64.encode(bin.unwrap_or_default())),
        other => return err(format!("tag {key:?} has unknown type {other}")),
    };
    Ok(KeyValue {
        key,
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    })
}

fn tags(r: &mut Reader<'_>, t: u8, what: &str) -> Result<Vec<KeyValue>> {
    r.struct_list(t, what, tag)
}

struct JaegerSpan {
    trace_low: i64,
    trace_high: i64,
    span_id: i64,
    parent_id: i64,
    name: String,
    references: Vec<(i32, i64, i64, i64)>,
    start: i64,
    duration: i64,
    tags: Vec<KeyValue>,
    logs: Vec<(i64, Vec<KeyValue>)>,
}

fn span(r: &mut Reader<'_>) -> Result<JaegerSpan> {
    let mut s = JaegerSpan {
        trace_low: 0,
        trace_high: 0,
        span_id: 0,
        parent_id: 0,
        name: String::new(),
        references: Vec::new(),
        start: 0,
        duration: 0,
        tags: Vec::new(),
        logs: Vec::new(),
    };
    r.struct_begin();
    while let Some((id, t)) = r.field()? {
        match (id, t) {
            (1, T_I64) => s.trace_low = r.i64()?,
            (2, T_I64) => s.trace_high = r.i64()?,
            (3, T_I64) => s.span_id = r.i64()?,
            (4, T_I64) => s.parent_id = r.i64()?,
            (5, T_STRING) => s.name = r.string()?,
            (6, _) => {
                s.references = r.struct_list(t, "references", |r| {
                    let mut reference = (0, 0, 0, 0);
                    r.struct_begin();
                    while let Some((id, t)) = r.field()? {
                        match (id, t) {
                            (1, T_I32) => reference.0 = r.i32()?,
                            (2, T_I64) => reference.1 = r.i64()?,
                            (3, T_I64) => reference.2 = r.i64()?,
                            (4, T_I64) => reference.3 = r.i64()?,
                            _ => r.skip(t, 2)?,
                        }
                    }
                    r.struct_end();
                    Ok(reference)
                })?;
            }
            (8, T_I64) => s.start = r.i64()?,
            (9, T_I64) => s.duration = r.i64()?,
            (10, _) => s.tags = tags(r, t, "span tags")?,
            (11, _) => {
                s.logs = r.struct_list(t, "logs", |r| {
                    let mut log = (0, Vec::new());
                    r.struct_begin();
                    while let Some((id, t)) = r.field()? {
                        match (id, t) {
                            (1, T_I64) => log.0 = r.i64()?,
                            (2, _) => log.1 = tags(r, t, "log fields")?,
                            _ => r.skip(t, 2)?,
                        }
                    }
                    r.struct_end();
                    Ok(log)
                })?;
            }
            _ => r.skip(t, 1)?,
        }
    }
    r.struct_end();
    Ok(s)
}

/// A decoded `Batch`: process service name, process tags, spans.
struct Batch {
    service: String,
    process_tags: Vec<KeyValue>,
    spans: Vec<JaegerSpan>,
}

fn batch(r: &mut Reader<'_>) -> Result<Batch> {
    let mut b = Batch {
        service: String::new(),
        process_tags: Vec::new(),
        spans: Vec::new(),
    };
    let mut has_process = false;
    r.struct_begin();
    while let Some((id, t)) = r.field()? {
        match (id, t) {
            (1, T_STRUCT) => {
                has_process = true;
                r.struct_begin();
                while let Some((id, t)) = r.field()? {
                    match (id, t) {
                        (1, T_STRING) => b.service = r.string()?,
                        (2, _) => b.process_tags = tags(r, t, "process tags")?,
                        _ => r.skip(t, 2)?,
                    }
                }
                r.struct_end();
            }
            (2, _) => b.spans = r.struct_list(t, "spans", span)?,
            _ => r.skip(t, 1)?,
        }
    }
    r.struct_end();
    if !has_process {
        return err("Batch has no process");
    }
    Ok(b)
}

/// A bare `Batch` struct (the HTTP collector's body, TBinaryProtocol).
pub fn from_batch(
    body: &[u8],
    protocol: Protocol,
) -> std::result::Result<ExportTraceServiceRequest, ThriftError> {
    let mut r = Reader::new(body, protocol);
    let b = batch(&mut r)?;
    Ok(to_otlp(b))
}

/// An `Agent.emitBatch` message (UDP datagrams).
pub fn from_agent_message(
    datagram: &[u8],
    protocol: Protocol,
) -> std::result::Result<ExportTraceServiceRequest, ThriftError> {
    let mut r = Reader::new(datagram, protocol);
    let name = match protocol {
        Protocol::Binary => {
            let first = r.i32()?;
            if first < 0 {
                // Strict: version | type, name, seqid.
                let name = r.string()?;
                r.i32()?;
                name
            } else {
                // Old style: name (length already read), type, seqid.
                let len = usize::try_from(first).or_else(|_| err("bad name length"))?;
                let name = String::from_utf8(r.take(len)?.to_vec())
                    .or_else(|_| err("name is not UTF-8"))?;
                r.byte()?;
                r.i32()?;
                name
            }
        }
        Protocol::Compact => {
            if r.byte()? != 0x82 {
                return err("not a compact protocol message");
            }
            r.byte()?;
            r.varint()?;
            r.string()?
        }
    };
    if name != "emitBatch" {
        return err(format!("unsupported agent call {name:?} (only emitBatch)"));
    }
    let mut found = None;
    r.struct_begin();
    while let Some((id, t)) = r.field()? {
        if (id, t) == (1, T_STRUCT) {
            found = Some(batch(&mut r)?);
        } else {
            r.skip(t, 1)?;
        }
    }
    r.struct_end();
    let b = found.ok_or_else(|| ThriftError("emitBatch without a batch".into()))?;
    Ok(to_otlp(b))
}

fn text(kv: &KeyValue) -> String {
    crate::zipkin::value_text(kv.value.as_ref())
}

fn id_bytes(high: i64, low: i64) -> Vec<u8> {
    let mut v = (high as u64).to_be_bytes().to_vec();
    v.extend_from_slice(&(low as u64).to_be_bytes());
    v
}

fn to_otlp(b: Batch) -> ExportTraceServiceRequest {
    let mut resource_attributes = vec![KeyValue {
        key: "service.name".into(),
        value: Some(AnyValue {
            value: Some(Any::StringValue(b.service.clone())),
        }),
        key_strindex: 0,
    }];
    for mut kv in b.process_tags {
        match kv.key.as_str() {
            "hostname" => kv.key = "host.name".into(),
            "jaeger.version" => {
                kv = KeyValue {
                    key: "opencensus.exporterversion".into(),
                    value: Some(AnyValue {
                        value: Some(Any::StringValue(format!("Jaeger-{}", text(&kv)))),
                    }),
                    key_strindex: 0,
                }
            }
            _ => {}
        }
        resource_attributes.push(kv);
    }
    let mut scopes: BTreeMap<(String, String), Vec<Span>> = BTreeMap::new();
    for s in b.spans {
        let trace_id = id_bytes(s.trace_high, s.trace_low);
        let mut kind = SpanKind::Unspecified;
        let (mut scope_name, mut scope_version) = (String::new(), String::new());
        let mut trace_state = String::new();
        let mut error = false;
        let mut status_code: Option<StatusCode> = None;
        let mut description = String::new();
        let mut http_status: Option<i64> = None;
        let mut http_message = String::new();
        let mut attributes = Vec::with_capacity(s.tags.len());
        for kv in s.tags {
            match kv.key.as_str() {
                "span.kind" => {
                    kind = match text(&kv).to_ascii_lowercase().as_str() {
                        "client" => SpanKind::Client,
                        "server" => SpanKind::Server,
                        "producer" => SpanKind::Producer,
                        "consumer" => SpanKind::Consumer,
                        "internal" => SpanKind::Internal,
                        _ => SpanKind::Unspecified,
                    };
                }
                "error" => error = text(&kv).eq_ignore_ascii_case("true"),
                "otel.status_code" => {
                    status_code = match text(&kv).to_ascii_uppercase().as_str() {
                        "OK" => Some(StatusCode::Ok),
                        "ERROR" => Some(StatusCode::Error),
                        _ => None,
                    };
                }
                "otel.status_description" => description = text(&kv),
                "w3c.tracestate" => trace_state = text(&kv),
                "otel.library.name" | "otel.scope.name" => scope_name = text(&kv),
                "otel.library.version" | "otel.scope.version" => scope_version = text(&kv),
                _ => {
                    if kv.key == "http.status_code" {
                        http_status = text(&kv).parse().ok();
                    }
                    if kv.key == "http.status_message" {
                        http_message = text(&kv);
                    }
                    attributes.push(kv);
                }
            }
        }
        let code = if error {
            StatusCode::Error
        } else if let Some(c) = status_code {
            c
        } else {
            match http_status {
                Some(500..=599) => StatusCode::Error,
                Some(400..=499) if kind == SpanKind::Client => StatusCode::Error,
                _ => StatusCode::Unset,
            }
        };
        if code == StatusCode::Error && description.is_empty() {
            description = http_message;
        }
        let mut parent = s.parent_id;
        let mut links = Vec::new();
        for (ref_type, low, high, span_id) in s.references {
            let same_trace = (high, low) == (s.trace_high, s.trace_low);
            if ref_type == 0 && parent == 0 && same_trace {
                parent = span_id;
                continue;
            }
            if ref_type == 0 && same_trace && span_id == parent {
                continue;
            }
            links.push(Link {
                trace_id: id_bytes(high, low),
                span_id: (span_id as u64).to_be_bytes().to_vec(),
                trace_state: String::new(),
                attributes: vec![KeyValue {
                    key: "opentracing.ref_type".into(),
                    value: Some(AnyValue {
                        value: Some(Any::StringValue(
                            if ref_type == 0 {
                                "child_of"
                            } else {
                                "follows_from"
                            }
                            .into(),
                        )),
                    }),
                    key_strindex: 0,
                }],
                dropped_attributes_count: 0,
                flags: 0,
            });
        }
        let events = s
            .logs
            .into_iter()
            .map(|(ts, fields)| {
                let mut name = String::new();
                let mut attributes = Vec::with_capacity(fields.len());
                for kv in fields {
                    if kv.key == "event" && name.is_empty() {
                        name = text(&kv);
                    } else {
                        attributes.push(kv);
                    }
                }
                Event {
                    time_unix_nano: (ts.max(0) as u64).saturating_mul(1000),
                    name,
                    attributes,
                    dropped_attributes_count: 0,
                }
            })
            .collect();
        let start = (s.start.max(0) as u64).saturating_mul(1000);
        let span = Span {
            trace_id,
            span_id: (s.span_id as u64).to_be_bytes().to_vec(),
            trace_state,
            parent_span_id: if parent == 0 {
                Vec::new()
            } else {
                (parent as u64).to_be_bytes().to_vec()
            },
            flags: 0,
            name: s.name,
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: start
                .saturating_add((s.duration.max(0) as u64).saturating_mul(1000)),
            attributes,
            dropped_attributes_count: 0,
            events,
            dropped_events_count: 0,
            links,
            dropped_links_count: 0,
            status: (code != StatusCode::Unset).then(|| Status {
                code: code as i32,
                message: if code == StatusCode::Error {
                    description
                } else {
                    String::new()
                },
            }),
        };
        scopes
            .entry((scope_name, scope_version))
            .or_default()
            .push(span);
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource_attributes,
                dropped_attributes_count: 0,
                entity_refs: Vec::new(),
            }),
            scope_spans: scopes
                .into_iter()
                .map(|((name, version), spans)| ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name,
                        version,
                        attributes: Vec::new(),
                        dropped_attributes_count: 0,
                    }),
                    spans,
                    schema_url: String::new(),
                })
                .collect(),
            schema_url: String::new(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                .0
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
                .0
                .contains("deep")
        );
        assert!(from_agent_message(b"\x82\x81\x00\x03abc", Protocol::Compact).is_err());
    }
}
