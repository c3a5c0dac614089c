//! The trace in the web UI's columnar encoding (`GET /api/v1/traces/{id}?
//! layout=columns`): the same header as the span-list answer (ids, times,
//! warnings, critical path, breakdown), then the spans as parallel arrays
//! in tree order, every string once in `strings`, and each resource and
//! scope once. A 100,000-span trace of real instrumentation is ~1.3 KB a
//! span as span objects (the resource and scope repeated on every one) and
//! a fraction of that here; the browser parses arrays of numbers far faster
//! than objects (BENCHMARKS.md, "Web UI: large traces").
//!
//! Encoding (`docs/api.md` documents it for other readers):
//! - A string is its index in `strings`.
//! - Attributes are flat arrays `[key, value, key, value, …]`: a string
//!   value is its index, any other value a one-element array holding the
//!   value as the span-list answer writes it (`[200]`, `[true]`, `[[…]]`).
//! - Times are nanoseconds from the trace's `startTimeUnixNano` as numbers,
//!   or, past ±2^53 ns (where a JavaScript number would round), as a string
//!   of the absolute time; durations past ±2^53 ns are strings too.
//! - `parent` is the tree's parent (an index), `parentSpanId` the stored
//!   parent id, which may differ (orphans, Zipkin shared spans).

use std::io::Write as _;

// hashbrown's default hasher: SipHash (std's) was a quarter of the
// encoding's time, in interning the strings.
use datafusion::common::HashMap;

use serde_json::Value;
use tracelake_schema::model::{GroupKey, SpanRows};
use tracelake_schema::opentelemetry_proto::tonic::common::v1::KeyValue;
use tracelake_schema::opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use tracelake_schema::spans::{SPAN_KINDS, STATUS_CODES};

use super::json::AnyJson;
use super::{Assembly, internal};
use crate::engine::QueryError;

/// Largest time offset a JavaScript number holds exactly.
const EXACT: u64 = 1 << 53;

/// The trace of `assembly` in the columnar encoding, as JSON bytes.
pub(super) fn encode(a: &Assembly<'_>, trace_id: &[u8; 16]) -> Result<Vec<u8>, QueryError> {
    let n = a.tree.order.len();
    let t0 = a.start();
    let mut w = Writer::new(n);
    let mut position = vec![0usize; a.tree.spans.len()];
    for (p, &i) in a.tree.order.iter().enumerate() {
        position[i] = p;
    }
    let mut resource_index: HashMap<GroupKey<'_>, usize> = HashMap::new();
    let mut scope_index: HashMap<GroupKey<'_>, usize> = HashMap::new();
    for &i in &a.tree.order {
        let (b, row) = a.rows[a.tree.spans[i].key];
        let view: &SpanRows<'_> = &a.views[b];
        let span = view.span(row).map_err(internal)?;
        let c = &mut w.cols;
        c.span_id.hex(&span.span_id);
        c.parent
            .int(a.tree.parent[i].map_or(-1, |p| position[p] as i64));
        // The stored parent id: the tree's parent may be another (a Zipkin
        // shared SERVER span's is the CLIENT span of the same id).
        c.parent_span_id.int(if span.parent_span_id.is_empty() {
            -1
        } else {
            w.strings.index(&hex::encode(&span.parent_span_id)) as i64
        });
        c.depth.int(a.tree.depth[i] as i64);
        c.start.time(span.start_time_unix_nano as i64, t0);
        c.duration.exact(view.duration_ns(row));
        c.name.int(w.strings.index(&span.name) as i64);
        c.service
            .int(w.strings.index(view.service_name(row)) as i64);
        let kind = SPAN_KINDS
            .get(span.kind as usize)
            .copied()
            .unwrap_or("UNSPECIFIED");
        c.kind.int(w.strings.index(kind) as i64);
        let status = span.status.unwrap_or_default();
        let code = STATUS_CODES
            .get(status.code as usize)
            .copied()
            .unwrap_or("UNSET");
        c.status.int(w.strings.index(code) as i64);
        c.status_message
            .int(w.strings.index(&status.message) as i64);
        c.trace_state.int(w.strings.index(&span.trace_state) as i64);
        c.flags.int(i64::from(span.flags));
        c.skew.int(a.tree.skew[i]);
        c.self_time.int(a.breakdown.self_times[i]);
        c.critical
            .int(a.breakdown.critical.get(i).copied().unwrap_or(0));
        c.orphan.int(i64::from(a.tree.orphan[i]));
        let next = resource_index.len();
        let r = *resource_index.entry(view.resource_key(row)).or_insert(next);
        if r == next {
            let (resource, schema_url) = view.resource(row).map_err(internal)?;
            w.resources.push(b'[');
            w.strings.attributes(&mut w.resources, &resource.attributes);
            write!(w.resources, ",{},", resource.dropped_attributes_count).unwrap();
            let url = w.strings.index(&schema_url);
            write!(w.resources, "{url}],").unwrap();
        }
        w.cols.resource.int(r as i64);
        let next = scope_index.len();
        let s = *scope_index.entry(view.scope_key(row)).or_insert(next);
        if s == next {
            let (scope, schema_url) = view.scope(row).map_err(internal)?;
            let (name, version) = (
                w.strings.index(&scope.name),
                w.strings.index(&scope.version),
            );
            write!(w.scopes, "[{name},{version},").unwrap();
            w.strings.attributes(&mut w.scopes, &scope.attributes);
            let url = w.strings.index(&schema_url);
            write!(w.scopes, ",{},{url}],", scope.dropped_attributes_count).unwrap();
        }
        w.cols.scope.int(s as i64);
        // Attributes, events and links.
        let buf = &mut w.cols.attributes.0;
        w.strings.attributes(buf, &span.attributes);
        buf.push(b',');
        w.cols
            .dropped_attributes
            .int(i64::from(span.dropped_attributes_count));
        let buf = &mut w.cols.events.0;
        buf.push(b'[');
        for (k, e) in span.events.iter().enumerate() {
            if k > 0 {
                buf.push(b',');
            }
            buf.push(b'[');
            time(buf, e.time_unix_nano as i64, t0);
            let name = w.strings.index(&e.name);
            write!(buf, ",{name},").unwrap();
            w.strings.attributes(buf, &e.attributes);
            write!(buf, ",{}]", e.dropped_attributes_count).unwrap();
        }
        buf.extend_from_slice(b"],");
        w.cols
            .dropped_events
            .int(i64::from(span.dropped_events_count));
        let buf = &mut w.cols.links.0;
        buf.push(b'[');
        for (k, l) in span.links.iter().enumerate() {
            if k > 0 {
                buf.push(b',');
            }
            let state = w.strings.index(&l.trace_state);
            write!(
                buf,
                "[\"{}\",\"{}\",{state},{},",
                hex::encode(&l.trace_id),
                hex::encode(&l.span_id),
                l.flags
            )
            .unwrap();
            w.strings.attributes(buf, &l.attributes);
            write!(buf, ",{}]", l.dropped_attributes_count).unwrap();
        }
        buf.extend_from_slice(b"],");
        w.cols
            .dropped_links
            .int(i64::from(span.dropped_links_count));
    }
    // The header, as the span-list answer has it, then the columns.
    let header = serde_json::to_vec(&Value::Object(a.header(trace_id)))
        .map_err(|e| QueryError::Internal(e.to_string()))?;
    let c = &w.cols;
    let columns: [(&str, &Col); 25] = [
        ("spanId", &c.span_id),
        ("parent", &c.parent),
        ("parentSpanId", &c.parent_span_id),
        ("depth", &c.depth),
        ("start", &c.start),
        ("duration", &c.duration),
        ("name", &c.name),
        ("service", &c.service),
        ("kind", &c.kind),
        ("status", &c.status),
        ("statusMessage", &c.status_message),
        ("traceState", &c.trace_state),
        ("flags", &c.flags),
        ("clockSkew", &c.skew),
        ("selfTime", &c.self_time),
        ("criticalPath", &c.critical),
        ("orphan", &c.orphan),
        ("resource", &c.resource),
        ("scope", &c.scope),
        ("attributes", &c.attributes),
        ("droppedAttributesCount", &c.dropped_attributes),
        ("events", &c.events),
        ("droppedEventsCount", &c.dropped_events),
        ("links", &c.links),
        ("droppedLinksCount", &c.dropped_links),
    ];
    let strings: usize = w.strings.list.iter().map(|s| s.len() + 3).sum();
    let size = columns.iter().map(|(_, c)| c.0.len() + 32).sum::<usize>()
        + w.resources.len()
        + w.scopes.len()
        + strings
        + header.len();
    let mut out = Vec::with_capacity(size + 64);
    out.extend_from_slice(&header[..header.len() - 1]);
    out.extend_from_slice(b",\"layout\":\"columns\",\"columns\":{");
    for (k, (name, col)) in columns.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        list(&mut out, name, &col.0);
    }
    out.extend_from_slice(b"},");
    list(&mut out, "resources", &w.resources);
    out.push(b',');
    list(&mut out, "scopes", &w.scopes);
    out.extend_from_slice(b",\"strings\":[");
    for (k, s) in w.strings.list.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, s.as_ref()).expect("a string serialises");
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

/// `"name":[items]`, where `items` ends with a comma.
fn list(out: &mut Vec<u8>, name: &str, items: &[u8]) {
    write!(out, "\"{name}\":[").unwrap();
    out.extend_from_slice(items.strip_suffix(b",").unwrap_or(items));
    out.push(b']');
}

/// A column being written: JSON values, each followed by a comma.
#[derive(Default)]
struct Col(Vec<u8>);

impl Col {
    fn int(&mut self, v: i64) {
        let mut b = itoa_buf();
        self.0.extend_from_slice(fmt_int(&mut b, v));
        self.0.push(b',');
    }

    fn hex(&mut self, bytes: &[u8]) {
        self.0.push(b'"');
        let start = self.0.len();
        self.0.resize(start + bytes.len() * 2, 0);
        hex::encode_to_slice(bytes, &mut self.0[start..]).expect("room for the digits");
        self.0.extend_from_slice(b"\",");
    }

    /// `v` as a number, or past what a JavaScript number holds exactly, as
    /// a string.
    fn exact(&mut self, v: i64) {
        if v.unsigned_abs() < EXACT {
            self.int(v);
        } else {
            write!(self.0, "\"{v}\",").unwrap();
        }
    }

    fn time(&mut self, at: i64, t0: i64) {
        time(&mut self.0, at, t0);
        self.0.push(b',');
    }
}

/// `at` as nanoseconds from `t0`, or as the absolute time in a string past
/// what a JavaScript number holds.
fn time(out: &mut Vec<u8>, at: i64, t0: i64) {
    match at.checked_sub(t0) {
        Some(d) if d.unsigned_abs() < EXACT => {
            let mut b = itoa_buf();
            out.extend_from_slice(fmt_int(&mut b, d));
        }
        _ => write!(out, "\"{}\"", at as u64).unwrap(),
    }
}

fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

/// `v` in decimal, written into the end of `buf`.
fn fmt_int(buf: &mut [u8; 20], v: i64) -> &[u8] {
    let mut n = v.unsigned_abs();
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    &buf[at..]
}

#[derive(Default)]
struct Columns {
    span_id: Col,
    parent: Col,
    parent_span_id: Col,
    depth: Col,
    start: Col,
    duration: Col,
    name: Col,
    service: Col,
    kind: Col,
    status: Col,
    status_message: Col,
    trace_state: Col,
    flags: Col,
    skew: Col,
    self_time: Col,
    critical: Col,
    orphan: Col,
    resource: Col,
    scope: Col,
    attributes: Col,
    dropped_attributes: Col,
    events: Col,
    dropped_events: Col,
    links: Col,
    dropped_links: Col,
}

/// Every string once, by first use.
#[derive(Default)]
struct Strings {
    index: HashMap<Box<str>, u32>,
    list: Vec<Box<str>>,
}

impl Strings {
    fn index(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.list.len() as u32;
        self.list.push(s.into());
        self.index.insert(s.into(), i);
        i
    }

    /// `attrs` as a flat `[key, value, …]` array into `out`.
    fn attributes(&mut self, out: &mut Vec<u8>, attrs: &[KeyValue]) {
        out.push(b'[');
        for (k, kv) in attrs.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            let key = self.index(&kv.key);
            write!(out, "{key},").unwrap();
            match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Any::StringValue(s)) => {
                    let v = self.index(s);
                    write!(out, "{v}").unwrap();
                }
                other => {
                    out.push(b'[');
                    serde_json::to_writer(&mut *out, &AnyJson(other)).expect("a value serialises");
                    out.push(b']');
                }
            }
        }
        out.push(b']');
    }
}

struct Writer {
    cols: Columns,
    strings: Strings,
    resources: Vec<u8>,
    scopes: Vec<u8>,
}

impl Writer {
    fn new(spans: usize) -> Self {
        let mut w = Self {
            cols: Columns::default(),
            strings: Strings::default(),
            resources: Vec::new(),
            scopes: Vec::new(),
        };
        // The empty string is 0, so absent texts cost one digit.
        w.strings.index("");
        w.cols.span_id.0.reserve(spans * 19);
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_past_what_a_number_holds_are_strings() {
        let mut c = Col::default();
        c.exact((1 << 53) - 1);
        c.exact(1 << 53);
        c.exact(-(1 << 53));
        assert_eq!(
            String::from_utf8(c.0).unwrap(),
            "9007199254740991,\"9007199254740992\",\"-9007199254740992\","
        );
    }

    #[test]
    fn integers_print_as_decimal() {
        for v in [0, 7, -7, 10, 1_234_567_890, i64::MIN, i64::MAX, -(1 << 53)] {
            let mut b = itoa_buf();
            assert_eq!(
                std::str::from_utf8(fmt_int(&mut b, v)).unwrap(),
                v.to_string()
            );
        }
    }

    #[test]
    fn times_past_what_a_number_holds_are_absolute_strings() {
        let mut out = Vec::new();
        time(&mut out, 1_000 + 5, 1_000);
        out.push(b' ');
        time(&mut out, 1_000, 1_005);
        out.push(b' ');
        time(&mut out, 0, 1_764_900_000_000_000_000);
        out.push(b' ');
        // Exactly -2^63 from the start: no overflow, an absolute string.
        time(&mut out, i64::MIN + 5, 5);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "5 -5 \"0\" \"9223372036854775813\""
        );
    }
}
