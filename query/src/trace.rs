//! Trace by id: fetch a trace's spans and assemble them into a tree.
//!
//! The response lists spans depth-first (roots, then each span's children in
//! start-time order), each with its `depth`, its `children` ids and, for a
//! span whose parent is not in the trace, `orphan: true` (orphans are treated
//! as roots). A flat list keeps deep traces from nesting JSON arbitrarily.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use datafusion::prelude::{col, lit};
use datafusion::scalar::ScalarValue;
use serde_json::{Map, Value, json};
use tracelake_schema::model::SpanRows;
use tracelake_schema::opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use tracelake_schema::opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use tracelake_schema::spans::{SPAN_KINDS, STATUS_CODES, TRACE_ID};

use crate::engine::{QueryEngine, QueryError, SPANS};

/// Error parsing a trace id.
#[derive(Debug, thiserror::Error)]
#[error("invalid trace id {0:?}: expected 1 to 32 hex digits")]
pub struct InvalidTraceId(pub String);

/// Parses a hex trace id; shorter ids (64-bit Zipkin/Jaeger ids) are
/// left-padded with zeros to 16 bytes.
pub fn parse_trace_id(hex_id: &str) -> Result<[u8; 16], InvalidTraceId> {
    let invalid = || InvalidTraceId(hex_id.to_string());
    if hex_id.is_empty() || hex_id.len() > 32 || !hex_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    let padded = format!("{hex_id:0>32}");
    let mut out = [0u8; 16];
    hex::decode_to_slice(&padded, &mut out).map_err(|_| invalid())?;
    Ok(out)
}

/// All spans of a trace, in the canonical spans schema.
pub async fn fetch(
    engine: &QueryEngine,
    trace_id: &[u8; 16],
) -> Result<Vec<RecordBatch>, QueryError> {
    let df = engine
        .context()
        .table(SPANS)
        .await?
        .filter(col(TRACE_ID).eq(lit(ScalarValue::Binary(Some(trace_id.to_vec())))))?;
    let (_, batches) = engine.collect(df).await?;
    Ok(batches)
}

struct Node {
    batch: usize,
    row: usize,
    span_id: Vec<u8>,
    parent: Option<Vec<u8>>,
    start: i64,
}

/// The trace as JSON, or `None` when it has no spans.
pub fn assemble(trace_id: &[u8; 16], batches: &[RecordBatch]) -> Result<Option<Value>, QueryError> {
    let internal = |e: tracelake_schema::model::Error| QueryError::Internal(e.to_string());
    let views: Vec<SpanRows<'_>> = batches
        .iter()
        .map(SpanRows::try_new)
        .collect::<Result<_, _>>()
        .map_err(internal)?;
    let mut nodes = Vec::new();
    for (b, rows) in views.iter().enumerate() {
        for row in 0..rows.len() {
            nodes.push(Node {
                batch: b,
                row,
                span_id: rows.span_id(row).to_vec(),
                parent: rows.parent_span_id(row).map(<[u8]>::to_vec),
                start: rows.start_time_unix_nano(row),
            });
        }
    }
    if nodes.is_empty() {
        return Ok(None);
    }
    nodes.sort_by(|a, b| {
        a.start
            .cmp(&b.start)
            .then_with(|| a.span_id.cmp(&b.span_id))
    });
    let index: HashMap<&[u8], usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.span_id.as_slice(), i))
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut roots = Vec::new();
    let mut orphan = vec![false; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        match n.parent.as_deref().map(|p| index.get(p)) {
            Some(Some(&p)) if p != i => children[p].push(i),
            Some(_) => {
                orphan[i] = true;
                roots.push(i);
            }
            None => roots.push(i),
        }
    }
    // Depth-first, iteratively: deep traces must not overflow the stack.
    let mut order = Vec::with_capacity(nodes.len());
    let mut depth = vec![0usize; nodes.len()];
    let mut visited = vec![false; nodes.len()];
    let mut stack: Vec<usize> = roots.iter().rev().copied().collect();
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut visited[i], true) {
            continue;
        }
        order.push(i);
        for &c in children[i].iter().rev() {
            depth[c] = depth[i] + 1;
            stack.push(c);
        }
    }
    // Spans in a parent cycle are unreachable from any root: list them too.
    for i in 0..nodes.len() {
        if !visited[i] {
            orphan[i] = true;
            order.push(i);
        }
    }
    let mut spans = Vec::with_capacity(order.len());
    for i in order {
        let n = &nodes[i];
        let mut span = span_json(&views[n.batch], n.row).map_err(internal)?;
        let obj = span.as_object_mut().expect("span is an object");
        obj.insert("depth".into(), json!(depth[i]));
        obj.insert("orphan".into(), json!(orphan[i]));
        obj.insert(
            "children".into(),
            json!(
                children[i]
                    .iter()
                    .map(|&c| hex::encode(&nodes[c].span_id))
                    .collect::<Vec<_>>()
            ),
        );
        spans.push(span);
    }
    let start = nodes.iter().map(|n| n.start).min().unwrap_or(0);
    let end = nodes
        .iter()
        .map(|n| n.start + views[n.batch].duration_ns(n.row))
        .max()
        .unwrap_or(start);
    Ok(Some(json!({
        "traceId": hex::encode(trace_id),
        "spanCount": spans.len(),
        "startTimeUnixNano": start.to_string(),
        "durationNs": end - start,
        "rootSpanIds": roots.iter().map(|&r| hex::encode(&nodes[r].span_id)).collect::<Vec<_>>(),
        "spans": spans,
    })))
}

fn span_json(rows: &SpanRows<'_>, row: usize) -> Result<Value, tracelake_schema::model::Error> {
    let span = rows.span(row)?;
    let (resource, resource_schema_url) = rows.resource(row)?;
    let (scope, scope_schema_url) = rows.scope(row)?;
    let status = span.status.unwrap_or_default();
    Ok(json!({
        "spanId": hex::encode(&span.span_id),
        "parentSpanId": (!span.parent_span_id.is_empty()).then(|| hex::encode(&span.parent_span_id)),
        "traceState": span.trace_state,
        "flags": span.flags,
        "name": span.name,
        "kind": SPAN_KINDS.get(span.kind as usize).copied().unwrap_or("UNSPECIFIED"),
        "serviceName": rows.service_name(row),
        "startTimeUnixNano": span.start_time_unix_nano.to_string(),
        "endTimeUnixNano": span.end_time_unix_nano.to_string(),
        "durationNs": rows.duration_ns(row),
        "status": {
            "code": STATUS_CODES.get(status.code as usize).copied().unwrap_or("UNSET"),
            "message": status.message,
        },
        "attributes": attributes_json(&span.attributes),
        "droppedAttributesCount": span.dropped_attributes_count,
        "events": span.events.iter().map(|e| json!({
            "timeUnixNano": e.time_unix_nano.to_string(),
            "name": e.name,
            "attributes": attributes_json(&e.attributes),
            "droppedAttributesCount": e.dropped_attributes_count,
        })).collect::<Vec<_>>(),
        "droppedEventsCount": span.dropped_events_count,
        "links": span.links.iter().map(|l| json!({
            "traceId": hex::encode(&l.trace_id),
            "spanId": hex::encode(&l.span_id),
            "traceState": l.trace_state,
            "flags": l.flags,
            "attributes": attributes_json(&l.attributes),
            "droppedAttributesCount": l.dropped_attributes_count,
        })).collect::<Vec<_>>(),
        "droppedLinksCount": span.dropped_links_count,
        "resource": {
            "attributes": attributes_json(&resource.attributes),
            "droppedAttributesCount": resource.dropped_attributes_count,
            "schemaUrl": resource_schema_url,
        },
        "scope": {
            "name": scope.name,
            "version": scope.version,
            "attributes": attributes_json(&scope.attributes),
            "droppedAttributesCount": scope.dropped_attributes_count,
            "schemaUrl": scope_schema_url,
        },
    }))
}

/// Attributes as a JSON object with typed values: strings, numbers, booleans,
/// arrays and objects; bytes as base64; non-finite doubles as strings.
pub fn attributes_json(attrs: &[KeyValue]) -> Value {
    let mut map = Map::with_capacity(attrs.len());
    for kv in attrs {
        map.insert(kv.key.clone(), any_json(kv.value.as_ref()));
    }
    Value::Object(map)
}

fn any_json(value: Option<&AnyValue>) -> Value {
    match value.and_then(|v| v.value.as_ref()) {
        None | Some(Any::StringValueStrindex(_)) => Value::Null,
        Some(Any::StringValue(s)) => json!(s),
        Some(Any::BoolValue(b)) => json!(b),
        Some(Any::IntValue(i)) => json!(i),
        Some(Any::DoubleValue(d)) if d.is_finite() => json!(d),
        Some(Any::DoubleValue(d)) => json!(d.to_string()),
        Some(Any::BytesValue(b)) => json!(BASE64.encode(b)),
        Some(Any::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(|v| any_json(Some(v))).collect())
        }
        Some(Any::KvlistValue(kv)) => attributes_json(&kv.values),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_parse_and_pad() {
        let id = parse_trace_id("5B8EFFF798038103D269B633813FC60C").unwrap();
        assert_eq!(hex::encode(id), "5b8efff798038103d269b633813fc60c");
        let short = parse_trace_id("d269b633813fc60c").unwrap();
        assert_eq!(hex::encode(short), "0000000000000000d269b633813fc60c");
        for bad in ["", "xyz", "5B8EFFF798038103D269B633813FC60C00", "12 4"] {
            assert!(parse_trace_id(bad).is_err(), "{bad}");
        }
    }
}
