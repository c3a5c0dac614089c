//! Parquet files of one partition, written with our own tuned settings, and
//! the Delta `Add` action that describes each.
//!
//! # File layout
//! - Columns: the spans schema minus the partition columns (`date`, `hour`),
//!   whose values live in the Delta log and the path
//!   `date=YYYY-MM-DD/hour=HH/part-<uuid>.zstd.parquet`.
//! - Rows sorted by `trace_id`, then `start_time_unix_nano`, so the spans of a
//!   trace are adjacent and min/max statistics narrow lookups.
//! - zstd compression, dictionary encoding (except the high-cardinality id
//!   and time columns), page-level statistics and page index, a bloom filter
//!   on `trace_id`.
//! - Key-value metadata `tracelake.schema.version`.
//!
//! The `Add` action carries Delta statistics (row count, min/max/null counts)
//! for the columns queries filter on most, so whole files are skipped without
//! being opened.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use chrono::{DateTime, NaiveDate};
use deltalake::kernel::Add;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde_json::{Map, Value, json};
use tracelake_schema::spans::{
    DURATION_NS, SCHEMA_VERSION, SCHEMA_VERSION_KEY, SERVICE_NAME, SPAN_ID, START_TIME,
    START_TIME_UNIX_NANO, TRACE_ID, file_schema, spans_schema,
};

use crate::buffer::PartitionKey;

/// Error writing a data file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One encoded data file, ready to upload.
pub struct DataFile {
    /// Path relative to the table root.
    pub path: String,
    pub bytes: Vec<u8>,
    pub add: Add,
    pub rows: usize,
}

/// Compression level: 3 is zstd's default, a good ratio at ingest speed.
const ZSTD_LEVEL: i32 = 3;

fn writer_properties(rows: usize) -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(ZSTD_LEVEL).expect("valid zstd level"),
        ))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            SCHEMA_VERSION_KEY.to_string(),
            SCHEMA_VERSION.to_string(),
        )]))
        .set_column_bloom_filter_enabled(ColumnPath::from(TRACE_ID), true)
        .set_column_bloom_filter_fpp(ColumnPath::from(TRACE_ID), 0.01)
        .set_column_bloom_filter_max_ndv(ColumnPath::from(TRACE_ID), rows.max(1) as u64);
    for unique in [
        TRACE_ID,
        SPAN_ID,
        START_TIME,
        START_TIME_UNIX_NANO,
        DURATION_NS,
    ] {
        props = props.set_column_dictionary_enabled(ColumnPath::from(unique), false);
    }
    props.build()
}

/// Encodes the rows of one partition as a Parquet file and describes it.
pub fn write_partition(key: PartitionKey, batches: &[RecordBatch]) -> Result<DataFile> {
    let batch = concat_batches(&spans_schema(), batches)?;
    let rows = batch.num_rows();
    let sorted = sort_for_lookup(&batch)?;
    let file_batch = sorted.project(&file_columns())?;
    let mut bytes = Vec::with_capacity(rows * 64);
    let mut writer =
        ArrowWriter::try_new(&mut bytes, file_schema(), Some(writer_properties(rows)))?;
    writer.write(&file_batch)?;
    writer.close()?;

    let (date, hour) = key;
    let date = partition_date(date);
    let path = format!(
        "date={date}/hour={hour:02}/part-{}.zstd.parquet",
        uuid::Uuid::new_v4()
    );
    let partition_values = HashMap::from([
        ("date".to_string(), Some(date)),
        ("hour".to_string(), Some(hour.to_string())),
    ]);
    let add = Add {
        path: path.clone(),
        partition_values,
        size: bytes.len() as i64,
        modification_time: chrono::Utc::now().timestamp_millis(),
        data_change: true,
        stats: Some(stats(&file_batch).to_string()),
        tags: None,
        deletion_vector: None,
        base_row_id: None,
        default_row_commit_version: None,
        clustering_provider: None,
    };
    Ok(DataFile {
        path,
        bytes,
        add,
        rows,
    })
}

fn file_columns() -> Vec<usize> {
    let all = spans_schema();
    file_schema()
        .fields()
        .iter()
        .map(|f| {
            all.index_of(f.name())
                .expect("file columns are spans columns")
        })
        .collect()
}

fn sort_for_lookup(batch: &RecordBatch) -> Result<RecordBatch> {
    let column =
        |name: &str| -> ArrayRef { Arc::clone(batch.column_by_name(name).expect("spans column")) };
    let indices = lexsort_to_indices(
        &[
            SortColumn {
                values: column(TRACE_ID),
                options: None,
            },
            SortColumn {
                values: column(START_TIME_UNIX_NANO),
                options: None,
            },
        ],
        None,
    )?;
    Ok(take_record_batch(batch, &indices)?)
}

/// `YYYY-MM-DD` of a day number.
pub fn partition_date(days: i32) -> String {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    (epoch + chrono::Duration::days(i64::from(days)))
        .format("%Y-%m-%d")
        .to_string()
}

/// Delta file statistics for the columns queries filter on most.
fn stats(batch: &RecordBatch) -> Value {
    let mut min = Map::new();
    let mut max = Map::new();
    let mut nulls = Map::new();
    for name in [START_TIME, START_TIME_UNIX_NANO, DURATION_NS, SERVICE_NAME] {
        let array = batch.column_by_name(name).expect("spans column");
        nulls.insert(name.to_string(), json!(array.null_count()));
        let (lo, hi) = match name {
            START_TIME => {
                let a = array.as_primitive::<TimestampMicrosecondType>();
                let fmt = |v: Option<i64>| {
                    v.and_then(DateTime::<chrono::Utc>::from_timestamp_micros)
                        .map(|t| json!(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()))
                };
                (fmt(arrow::compute::min(a)), fmt(arrow::compute::max(a)))
            }
            SERVICE_NAME => {
                let a = array.as_string::<i32>();
                // Delta truncates string statistics; service names are short,
                // and longer ones are simply not recorded.
                let keep = |v: Option<&str>| v.filter(|s| s.len() <= 64).map(|s| json!(s));
                (
                    keep(arrow::compute::min_string(a)),
                    keep(arrow::compute::max_string(a)),
                )
            }
            _ => {
                let a = array.as_primitive::<Int64Type>();
                (
                    arrow::compute::min(a).map(|v| json!(v)),
                    arrow::compute::max(a).map(|v| json!(v)),
                )
            }
        };
        if let (Some(lo), Some(hi)) = (lo, hi) {
            min.insert(name.to_string(), lo);
            max.insert(name.to_string(), hi);
        }
    }
    json!({
        "numRecords": batch.num_rows(),
        "minValues": min,
        "maxValues": max,
        "nullCount": nulls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_dates_are_iso() {
        assert_eq!(partition_date(0), "1970-01-01");
        assert_eq!(partition_date(20778), "2026-11-21");
    }
}
