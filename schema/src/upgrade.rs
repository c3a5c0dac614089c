//! Rows of an older layout rewritten in the current one.
//!
//! Version 2 kept every span attribute in the map and copies of ten of them
//! in typed columns (some filled from either of two keys), and a
//! microsecond `start_time` beside `start_time_unix_nano`. A version 2 row
//! holds the whole span, so it is read back into the OTLP model and written
//! again by the one row writer ([`SpansBuilder`]): row for row, in the same
//! order (a data file stays sorted), nothing dropped.

use arrow_array::RecordBatch;

use crate::model::{self, SpanRows};
use crate::otlp::view::{Context, ResourceRef, ScopeRef};
use crate::otlp::{Acceptance, SpansBuilder};
use crate::spans::{SCHEMA_VERSION_KEY, START_TIME};

/// Error rewriting a row of an older layout.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Read(#[from] model::Error),
    #[error("row {row}: the stored span is not valid OTLP ({reason:?})")]
    Invalid {
        row: usize,
        reason: crate::otlp::Rejection,
    },
}

/// The layout version of `batch`: its schema's [`SCHEMA_VERSION_KEY`]
/// metadata if set (Parquet files record it), else 2 when it has the
/// stored `start_time` column of version 2, else the current version.
pub fn layout_version(batch_schema: &arrow_schema::Schema) -> u32 {
    if let Some(v) = batch_schema
        .metadata()
        .get(SCHEMA_VERSION_KEY)
        .and_then(|v| v.parse().ok())
    {
        return v;
    }
    if batch_schema.field_with_name(START_TIME).is_ok() {
        2
    } else {
        crate::spans::SCHEMA_VERSION
    }
}

/// The rows of a version 2 `batch` in the current layout, in the same order.
pub fn from_v2(batch: &RecordBatch) -> Result<RecordBatch, Error> {
    let rows = SpanRows::try_new_v2(batch)?;
    let mut out = SpansBuilder::with_capacity(rows.len()).without_repeated_limit();
    for row in 0..rows.len() {
        let span = rows.span(row)?;
        let (resource, resource_url) = rows.resource(row)?;
        let (scope, scope_url) = rows.scope(row)?;
        let cx = Context::new(
            ResourceRef {
                attributes: &resource.attributes,
                dropped_attributes_count: resource.dropped_attributes_count,
                schema_url: &resource_url,
            },
            ScopeRef {
                name: &scope.name,
                version: &scope.version,
                attributes: &scope.attributes,
                dropped_attributes_count: scope.dropped_attributes_count,
                schema_url: &scope_url,
            },
        );
        out.append_span(&span, &cx, &Acceptance::ANY_TIME)
            .map_err(|reason| Error::Invalid { row, reason })?;
    }
    Ok(out.finish())
}
