//! Reading spans for analysis: the few columns the span tree needs, grouped
//! by trace.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::Int64Type;

use crate::analysis::Span;
use crate::engine::{QueryEngine, QueryError};
use tracelake_protocols::params::TimeRange;

/// Columns [`group_by_trace`] reads, in order.
pub const COLUMNS: &str = "trace_id, span_id, parent_span_id, service_name, name, kind, \
    start_time_unix_nano, duration_ns, status_code";

/// How many columns [`COLUMNS`] names: a query may select more after them.
pub const COLUMN_COUNT: usize = 9;

/// Most spans an analysis reads in one request.
pub const MAX_SPANS: usize = 5_000_000;

/// How far outside a search's time range the other spans of a found trace
/// are looked for.
pub const TRACE_MARGIN_NS: i64 = 3_600_000_000_000;

pub type TraceId = [u8; 16];

fn text(a: &StringArray, row: usize) -> &str {
    if a.is_null(row) { "" } else { a.value(row) }
}

/// A span id as a number (big-endian; shorter ids are left-padded).
pub fn span_id(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    b[8 - n..].copy_from_slice(&bytes[bytes.len() - n..]);
    u64::from_be_bytes(b)
}

/// A trace id from its column value (all zeros when not 16 bytes, which
/// ingest never stores).
pub fn trace_id(bytes: &[u8]) -> TraceId {
    bytes.try_into().unwrap_or_default()
}

/// Interns repeated strings (services, operation names, kinds).
#[derive(Default)]
pub struct Strings(HashMap<String, Arc<str>>);

impl Strings {
    pub fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(v) = self.0.get(s) {
            return Arc::clone(v);
        }
        let v: Arc<str> = s.into();
        self.0.insert(s.to_string(), Arc::clone(&v));
        v
    }
}

/// Groups rows that start with [`COLUMNS`] by trace id, in first-seen order
/// (columns after those are the caller's).
pub fn group_by_trace(batches: &[RecordBatch]) -> Result<Vec<(TraceId, Vec<Span>)>, QueryError> {
    let mut strings = Strings::default();
    let mut index: HashMap<TraceId, usize> = HashMap::new();
    let mut out: Vec<(TraceId, Vec<Span>)> = Vec::new();
    for batch in batches {
        let wrong = || QueryError::Internal("unexpected span columns".into());
        if batch.num_columns() < COLUMN_COUNT {
            return Err(wrong());
        }
        let c = batch.columns();
        let trace = c[0].as_binary_opt::<i32>().ok_or_else(wrong)?;
        let span = c[1].as_binary_opt::<i32>().ok_or_else(wrong)?;
        let parent = c[2].as_binary_opt::<i32>().ok_or_else(wrong)?;
        let service = c[3].as_string_opt::<i32>().ok_or_else(wrong)?;
        let name = c[4].as_string_opt::<i32>().ok_or_else(wrong)?;
        let kind = c[5].as_string_opt::<i32>().ok_or_else(wrong)?;
        let start = c[6].as_primitive_opt::<Int64Type>().ok_or_else(wrong)?;
        let duration = c[7].as_primitive_opt::<Int64Type>().ok_or_else(wrong)?;
        let status = c[8].as_string_opt::<i32>().ok_or_else(wrong)?;
        for row in 0..batch.num_rows() {
            let id = trace_id(trace.value(row));
            let slot = *index.entry(id).or_insert_with(|| {
                out.push((id, Vec::new()));
                out.len() - 1
            });
            out[slot].1.push(Span {
                key: 0,
                span_id: span_id(span.value(row)),
                parent_span_id: (!parent.is_null(row)).then(|| span_id(parent.value(row))),
                service: strings.get(text(service, row)),
                name: strings.get(text(name, row)),
                kind: strings.get(text(kind, row)),
                start: start.value(row),
                duration: duration.value(row),
                error: text(status, row) == "ERROR",
            });
        }
    }
    Ok(out)
}

/// The spans of `traces` starting within `range`, read as a trace by id
/// is ([`crate::trace::fetch_columns`]), [`COLUMNS`] only.
pub async fn traces(
    engine: &QueryEngine,
    ids: &[TraceId],
    range: TimeRange,
) -> Result<Vec<(TraceId, Vec<Span>)>, QueryError> {
    let columns: Vec<&str> = COLUMNS.split(',').map(str::trim).collect();
    let batches =
        crate::trace::fetch_columns(engine, ids, Some(range), Some(&columns), MAX_SPANS).await?;
    group_by_trace(&batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_column_count_is_the_columns_named() {
        assert_eq!(COLUMNS.split(',').count(), COLUMN_COUNT);
    }
}
