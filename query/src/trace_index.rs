//! The trace index: which hour partitions hold which trace keys, so a lookup
//! by trace id with no time range reads only the partitions that hold the
//! trace — one file, as compaction leaves each partition's files with
//! disjoint `trace_key` ranges — however many hours the table keeps.
//!
//! Data files never change, so the index is a cache: each file's distinct
//! `trace_key`s (8 bytes per trace; the column is tiny, its values repeat
//! span after span), read the first time a lookup meets the file and
//! dropped when the file leaves the table. Nothing is persisted; after a
//! restart the first lookup reads the key columns again.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use bytes::Bytes;
use datafusion::common::Result;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{
    DefaultParquetFileReaderFactory, ParquetFileReaderFactory,
};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::Expr;
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use datafusion::parquet::errors::Result as ParquetResult;
use datafusion::parquet::file::metadata::ParquetMetaData;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::prelude::{col, lit};
use datafusion::scalar::ScalarValue;
use deltalake::{DeltaTable, ObjectStore};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use tokio::sync::Mutex;
use tracelake_schema::spans::{DATE, HOUR, TRACE_KEY};

#[derive(Default)]
pub struct TraceIndex {
    /// Data file path → its sorted distinct trace keys.
    files: Mutex<HashMap<String, Arc<[i64]>>>,
}

impl std::fmt::Debug for TraceIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceIndex").finish_non_exhaustive()
    }
}

impl TraceIndex {
    /// A condition on the partition columns that keeps only the partitions
    /// of `table` holding one of `keys` (`false` when none does).
    pub async fn partition_filter(&self, table: &DeltaTable, keys: &[i64]) -> Result<Expr> {
        let snapshot = table.snapshot().map_err(external)?;
        let files: Vec<(String, u64, String, String)> = snapshot
            .log_data()
            .iter()
            .filter_map(|f| {
                let values = f.partition_values_map();
                let date = values.get(DATE)?.clone()?;
                let hour = values.get(HOUR)?.clone()?;
                Some((f.path().to_string(), f.size().max(0) as u64, date, hour))
            })
            .collect();
        let mut index = self.files.lock().await;
        let live: HashSet<&str> = files.iter().map(|f| f.0.as_str()).collect();
        index.retain(|path, _| live.contains(path.as_str()));
        let store = table.log_store().object_store(None);
        for (path, size, _, _) in &files {
            if !index.contains_key(path) {
                index.insert(path.clone(), read_keys(&store, path, *size).await?);
            }
        }
        let mut partitions = BTreeSet::new();
        for (path, _, date, hour) in &files {
            let held = &index[path.as_str()];
            if keys.iter().any(|k| held.binary_search(k).is_ok()) {
                partitions.insert((date.clone(), hour.clone()));
            }
        }
        partitions
            .into_iter()
            .map(|(date, hour)| partition_is(&date, &hour))
            .collect::<Result<Vec<_>>>()
            .map(|conditions| {
                conditions
                    .into_iter()
                    .reduce(Expr::or)
                    .unwrap_or(lit(false))
            })
    }
}

/// The sorted distinct trace keys of the data file at `path`.
async fn read_keys(store: &Arc<dyn ObjectStore>, path: &str, size: u64) -> Result<Arc<[i64]>> {
    let reader = DefaultParquetFileReaderFactory::new(Arc::clone(store)).create_reader(
        0,
        PartitionedFile::new(path, size),
        None,
        &ExecutionPlanMetricsSet::new(),
    )?;
    let builder = ParquetRecordBatchStreamBuilder::new(SendReader(reader)).await?;
    let mask = ProjectionMask::columns(builder.parquet_schema(), [TRACE_KEY]);
    let mut stream = builder.with_projection(mask).build()?;
    let mut keys = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let column = batch
            .column_by_name(TRACE_KEY)
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .ok_or_else(|| DataFusionError::Internal(format!("{path}: no {TRACE_KEY} column")))?;
        keys.extend_from_slice(column.values());
    }
    keys.sort_unstable();
    keys.dedup();
    Ok(keys.into())
}

/// A boxed reader that stays `Send` (parquet implements the trait for
/// `Box<dyn AsyncFileReader>` only).
struct SendReader(Box<dyn AsyncFileReader + Send>);

impl AsyncFileReader for SendReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, ParquetResult<Bytes>> {
        self.0.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, ParquetResult<Vec<Bytes>>> {
        self.0.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, ParquetResult<Arc<ParquetMetaData>>> {
        self.0.get_metadata(options)
    }
}

/// `date = <date> AND hour = <hour>` with the partition columns' types.
fn partition_is(date: &str, hour: &str) -> Result<Expr> {
    let bad = || DataFusionError::Internal(format!("partition date={date}/hour={hour}"));
    let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| bad())?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    let days = i32::try_from((day - epoch).num_days()).map_err(|_| bad())?;
    let hour: i32 = hour.parse().map_err(|_| bad())?;
    Ok(col(DATE)
        .eq(lit(ScalarValue::Date32(Some(days))))
        .and(col(HOUR).eq(lit(hour))))
}

fn external(e: deltalake::DeltaTableError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}
