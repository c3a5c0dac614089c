//! Parquet files of one partition, written with our own tuned settings, and
//! the Delta `Add` action that describes each.
//!
//! # File layout
//! - Columns: the spans schema minus the partition columns (`date`, `hour`),
//!   whose values live in the Delta log and the path
//!   `date=YYYY-MM-DD/hour=HH/part-<uuid>.zstd.parquet`.
//! - Rows sorted by `trace_key`, `trace_id`, then `start_time_unix_nano`
//!   ([`SORT_COLUMNS`]), so the spans of a trace are adjacent and min/max
//!   statistics of `trace_key` narrow lookups to a file, a row group and a
//!   page.
//! - zstd compression, dictionary encoding (except the high-cardinality id
//!   and time columns), page-level statistics and page index.
//! - Bloom filters on the dedicated string columns (equality searches on
//!   rare values), none on `trace_id`: a lookup by trace id reads only
//!   files the trace index says hold the trace's key, and there the sorted
//!   `trace_key` gives the one row group and page, so a `trace_id` filter
//!   (written until 2026-12-06) never skipped a row group and cost every
//!   SQL lookup its reads.
//! - Key-value metadata `tracelake.schema.version`.
//!
//! The `Add` action carries Delta statistics (row count, min/max/null counts)
//! for the columns queries filter on most, so whole files are skipped without
//! being opened, and tags listing the keys of the attribute maps
//! ([`map_keys_tag`]), so a query on a key a file's map lacks does not read
//! the map there.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, AsArray, MapArray, RecordBatch};
use arrow::compute::{SortColumn, lexsort_to_indices};
use arrow::datatypes::{Int64Type, Schema, SchemaRef};
use chrono::NaiveDate;
use deltalake::kernel::Add;
use parquet::arrow::arrow_writer::{ArrowColumnChunk, ArrowColumnWriter, compute_leaves};
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde_json::{Map, Value, json};
use tracelake_schema::layout::Layout;
use tracelake_schema::spans::{
    DURATION_NS, EMPTY_COLUMNS_KEY, HOUR, KEYED_MAPS, MAX_TAGGED_KEYS, PARENT_SPAN_ID,
    PARTITION_COLUMNS, SCHEMA_VERSION, SCHEMA_VERSION_KEY, SERVICE_NAME, SPAN_ID,
    START_TIME_UNIX_NANO, TRACE_ID, TRACE_KEY, map_keys_tag, spans_schema,
};
use tracelake_schema::trace_keys::KeysBuilder;

use crate::buffer::PartitionKey;

/// The columns of random ids, which no statistics can prune by.
const RANDOM_IDS: [&str; 2] = [SPAN_ID, PARENT_SPAN_ID];

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
    /// Its distinct trace keys, stored at
    /// [`tracelake_schema::trace_keys::keys_path`].
    pub keys: Vec<i64>,
}

/// zstd level of flushed files: the fastest, as encoding is most of the
/// ingest path's CPU and compaction recompresses closed hours.
pub const FLUSH_ZSTD_LEVEL: i32 = 1;

/// Rows per row group of a flushed file: small enough that the row-group
/// statistics on `trace_key` narrow a lookup in files not yet compacted.
const FLUSH_ROW_GROUP_ROWS: usize = 64 * 1024;
/// Rows per data page: a lookup decodes one page per column, not the row
/// group, thanks to the page index on the sorted `trace_key`.
const PAGE_ROWS: usize = 8 * 1024;
/// Largest dictionary page of a column chunk; past it a column falls back
/// to plain encoding (which zstd then compresses). A lookup decodes the
/// dictionary page of every column it reads, in full, so parquet's 1 MiB
/// default made the high-cardinality columns (parent span ids, addresses,
/// ports, the long-tail map's values) cost most of a trace-by-id read.
/// Measured on a compacted hour of the 100 M run (BENCHMARKS.md,
/// "Dictionary pages"): 16-64 KiB decode a lookup in 0.6x the time and
/// store 3.6% fewer bytes; 8 KiB and below grow the file again.
const DICTIONARY_PAGE_BYTES: usize = 32 * 1024;

/// False-positive rate of the bloom filters on dedicated string columns.
const BLOOM_FILTER_FPP: f64 = 0.05;

/// Writer settings of a data file of `schema` (a layout's file schema)
/// with row groups of at most `row_group_rows`, compressed with zstd at
/// `zstd_level`, but for the columns named in `empty`.
///
/// `empty` names the top-level columns that hold no value in the file
/// (null, or an empty list or map, in every row): most dedicated attribute
/// columns, links, scope attributes of a workload. The file lists them
/// under [`EMPTY_COLUMNS_KEY`], so that a trace lookup makes them rather
/// than reads them. Their column chunks are written uncompressed and
/// without a dictionary. zstd made them larger
/// (a chunk of nothing but definition levels), and a reader creates a
/// zstd compressor and decompressor for every compressed column chunk it
/// reads, which costs a trace lookup some 30 µs per column on a VM where
/// `cpuid` traps (BENCHMARKS.md, "Columns that hold nothing").
pub fn writer_properties(
    schema: &Schema,
    row_group_rows: usize,
    zstd_level: i32,
    empty: &HashSet<String>,
) -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(zstd_level).expect("valid zstd level"),
        ))
        .set_dictionary_enabled(true)
        .set_dictionary_page_size_limit(DICTIONARY_PAGE_BYTES)
        // Statistics (with the page index) on the scalar columns reads
        // prune by (below); none on the attribute maps, events and links,
        // which no query can prune by and whose per-value min/max cost
        // ingest time.
        .set_statistics_enabled(EnabledStatistics::None)
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_key_value_metadata(Some(key_value_metadata(empty)));
    for unique in [
        TRACE_ID,
        TRACE_KEY,
        SPAN_ID,
        START_TIME_UNIX_NANO,
        DURATION_NS,
    ] {
        props = props.set_column_dictionary_enabled(ColumnPath::from(unique), false);
    }
    // A trace's spans are adjacent, so most `trace_id`s repeat the one
    // before: DELTA_BYTE_ARRAY stores such a value as a shared prefix of 16
    // bytes and no suffix, leaving zstd a page of a few bytes per trace to
    // inflate where PLAIN gave it 20 bytes a span (a search decodes the
    // column for every span of its hours).
    props = props.set_column_encoding(ColumnPath::from(TRACE_ID), Encoding::DELTA_BYTE_ARRAY);
    // Durations fit in the low four or five of their eight bytes: split
    // into byte streams, zstd finds the high ones all zero (a compacted hour
    // rewritten: 34.11 -> 33.71 bytes/span, bench/pages ENCODINGS).
    props = props.set_column_encoding(ColumnPath::from(DURATION_NS), Encoding::BYTE_STREAM_SPLIT);
    // A bloom filter on every dedicated string column: an equality search
    // on a rare value (a request's path, a client's address) skips the row
    // groups and files that cannot hold it, which statistics cannot do on
    // columns in trace order. Sized for a row group of distinct values,
    // then folded by the writer to the values the chunk holds, so a
    // low-cardinality or absent column costs a few bytes (a compacted hour
    // rewritten with filters on four high-cardinality columns: +0.25
    // bytes/span, lookups of a rare value 15-24 ms -> 1.4-2.7 ms;
    // BENCHMARKS.md, "Bloom filters on dedicated columns").
    if let Ok(layout) = Layout::of_schema(schema) {
        for name in layout.text_columns() {
            if schema.field_with_name(name).is_err() {
                continue;
            }
            let column = ColumnPath::from(name);
            props = props
                .set_column_bloom_filter_enabled(column.clone(), true)
                .set_column_bloom_filter_fpp(column.clone(), BLOOM_FILTER_FPP)
                .set_column_bloom_filter_max_ndv(column, row_group_rows as u64);
        }
    }
    // Statistics on the other scalar columns: min/max prune times,
    // durations, trace keys, names and attribute values, and null counts
    // let reads leave out a column null in a whole row group. Not on the
    // span and parent ids: random 64-bit values, so every page's min and
    // max span nearly the whole range and prune nothing; a span id is
    // never null, and a parent id null in a whole row group (only roots)
    // is rare, and listed in the file's metadata where the whole file is.
    for field in schema.fields() {
        let name = field.name().as_str();
        if !field.data_type().is_nested() && !RANDOM_IDS.contains(&name) {
            props = props
                .set_column_statistics_enabled(ColumnPath::from(name), EnabledStatistics::Page);
        }
    }
    if !empty.is_empty()
        && let Ok(leaves) = ArrowSchemaConverter::new().convert(schema)
    {
        for leaf in leaves.columns() {
            if leaf
                .path()
                .parts()
                .first()
                .is_some_and(|c| empty.contains(c))
            {
                props = props
                    .set_column_compression(leaf.path().clone(), Compression::UNCOMPRESSED)
                    .set_column_dictionary_enabled(leaf.path().clone(), false);
            }
        }
    }
    props.build()
}

/// The key-value metadata of a data file: its layout's version, and the
/// columns that hold nothing in it, if any.
fn key_value_metadata(empty: &HashSet<String>) -> Vec<KeyValue> {
    let mut metadata = vec![KeyValue::new(
        SCHEMA_VERSION_KEY.to_string(),
        SCHEMA_VERSION.to_string(),
    )];
    if !empty.is_empty() {
        let mut names: Vec<&str> = empty.iter().map(String::as_str).collect();
        names.sort_unstable();
        metadata.push(KeyValue::new(
            EMPTY_COLUMNS_KEY.to_string(),
            names.join(","),
        ));
    }
    metadata
}

/// Whether `array` holds a value: a row that is neither null nor an empty
/// list or map. The columns that do not are written uncompressed
/// ([`writer_properties`]).
pub(crate) fn holds_values(array: &dyn Array) -> bool {
    if array.null_count() == array.len() {
        return false;
    }
    let entries = |offsets: &[i32]| offsets.last() > offsets.first();
    if let Some(list) = array.as_list_opt::<i32>() {
        entries(list.value_offsets())
    } else if let Some(map) = array.as_map_opt() {
        entries(map.value_offsets())
    } else {
        true
    }
}

/// Encodes the rows of one partition as a Parquet file and describes it.
/// The sorted rows are materialised a column of a row group at a time,
/// on every core ([`encode_columns`]), so a flush holds a few columns'
/// copies, not the partition's. The batches share one
/// stored schema (their layout's); the file has its columns but the
/// partition columns.
pub fn write_partition(key: PartitionKey, batches: &[RecordBatch]) -> Result<DataFile> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_FLUSH_THREADS);
    write_partition_on(key, batches, threads)
}

/// [`write_partition`], each row group's columns encoded on up to
/// `threads` threads ([`encode_columns`]).
fn write_partition_on(
    key: PartitionKey,
    batches: &[RecordBatch],
    threads: usize,
) -> Result<DataFile> {
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    let order = sort_order(batches)?;
    let stored = batches
        .first()
        .map_or_else(spans_schema, RecordBatch::schema);
    let (columns, schema) = file_columns(&stored);
    // Per file column: each batch's array, or `None` when the column is
    // null in every batch (most dedicated attribute columns of a
    // workload), whose sorted rows are then simply nulls.
    let inputs: Vec<Option<Vec<&dyn Array>>> = columns
        .iter()
        .map(|&c| {
            let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(c).as_ref()).collect();
            arrays
                .iter()
                .any(|a| a.null_count() < a.len())
                .then_some(arrays)
        })
        .collect();
    let empty: HashSet<String> = inputs
        .iter()
        .zip(schema.fields())
        .filter(|(arrays, _)| !arrays.iter().flatten().any(|a| holds_values(*a)))
        .map(|(_, field)| field.name().clone())
        .collect();
    // The file's statistics do not depend on the order; its trace keys
    // are taken in order, so that only the distinct ones are kept.
    let mut stats = Stats::default();
    for batch in batches {
        stats.update(batch);
    }
    let mut keys = KeysBuilder::new();
    let batch_keys: Vec<&[i64]> = batches.iter().map(batch_keys).collect::<Result<_>>()?;
    for &(batch, row) in &order {
        keys.extend(std::slice::from_ref(&batch_keys[batch][row]));
    }
    let mut bytes = Vec::with_capacity(rows * 64);
    let (mut file, row_groups) = ArrowWriter::try_new(
        &mut bytes,
        std::sync::Arc::clone(&schema),
        Some(writer_properties(
            &schema,
            FLUSH_ROW_GROUP_ROWS,
            FLUSH_ZSTD_LEVEL,
            &empty,
        )),
    )?
    .into_serialized_writer()?;
    // Each column's leaf writers, by the position of its field.
    let parquet_schema = file.schema_descr();
    let mut roots = vec![0; schema.fields().len()];
    for leaf in 0..parquet_schema.num_columns() {
        roots[parquet_schema.get_column_root_idx(leaf)] += 1;
    }
    for (index, chunk) in order.chunks(FLUSH_ROW_GROUP_ROWS).enumerate() {
        let mut writers = row_groups.create_column_writers(index)?.into_iter();
        let columns: Vec<ColumnJob> = roots
            .iter()
            .map(|&leaves| ColumnJob::new(writers.by_ref().take(leaves).collect()))
            .collect();
        let chunks = encode_columns(&schema, &inputs, chunk, columns, threads)?;
        let mut row_group = file.next_row_group()?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
    }
    file.close()?;

    let (date, hour) = key;
    let path = data_file_path(&partition_date(date), hour);
    let add = add_action(&path, bytes.len() as u64, &stats);
    Ok(DataFile {
        path,
        bytes,
        add,
        rows,
        keys: keys.finish(),
    })
}

/// Most threads that encode one flushed row group's columns.
const MAX_FLUSH_THREADS: usize = 8;

/// One column of a row group to encode: its leaf writers, until encoded,
/// then what they wrote.
struct ColumnJob(parking_lot::Mutex<ColumnState>);

enum ColumnState {
    Pending(Vec<ArrowColumnWriter>),
    Done(Result<Vec<ArrowColumnChunk>>),
    Taken,
}

impl ColumnJob {
    fn new(writers: Vec<ArrowColumnWriter>) -> Self {
        Self(parking_lot::Mutex::new(ColumnState::Pending(writers)))
    }
}

/// Encodes the sorted `rows` of every column of a row group, on up to
/// `threads` threads, each taking the next column not yet taken: a
/// column's rows are copied into sorted order (`interleave`) and encoded
/// by its own leaf writers, so the columns are independent. The flush's
/// Parquet encoding and copies are most of its time and a collector's
/// flushes run one at a time, so on one thread the flush bound ingest
/// while the other cores idled (BENCHMARKS.md, "The flush on every
/// core"). Returns each column's chunks, in the schema's order.
fn encode_columns(
    schema: &SchemaRef,
    inputs: &[Option<Vec<&dyn Array>>],
    rows: &[(usize, usize)],
    columns: Vec<ColumnJob>,
    threads: usize,
) -> Result<Vec<ArrowColumnChunk>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        loop {
            let c = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(job) = columns.get(c) else {
                return;
            };
            let mut state = job.0.lock();
            if let ColumnState::Pending(writers) =
                std::mem::replace(&mut *state, ColumnState::Taken)
            {
                let field = schema.field(c);
                *state =
                    ColumnState::Done(encode_column(field, inputs[c].as_deref(), rows, writers));
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads.min(columns.len()) {
            // A thread the system refuses is one fewer: this one encodes
            // every column the others do not take.
            if std::thread::Builder::new()
                .name("tracelake-flush".into())
                .spawn_scoped(scope, work)
                .is_err()
            {
                break;
            }
        }
        work();
    });
    let mut chunks = Vec::new();
    for job in columns {
        match job.0.into_inner() {
            ColumnState::Done(done) => chunks.extend(done?),
            ColumnState::Pending(_) | ColumnState::Taken => {
                return Err(Error::Arrow(arrow::error::ArrowError::ComputeError(
                    "a column of the row group was not encoded".into(),
                )));
            }
        }
    }
    Ok(chunks)
}

/// The sorted `rows` of one column (`None`: null in every batch) written
/// by its leaf writers, in as many arrays as the rows' values need
/// ([`interleave_in_batches`]).
fn encode_column(
    field: &arrow::datatypes::Field,
    arrays: Option<&[&dyn Array]>,
    rows: &[(usize, usize)],
    mut writers: Vec<ArrowColumnWriter>,
) -> Result<Vec<ArrowColumnChunk>> {
    let sorted = match arrays {
        Some(arrays) => {
            interleave_in_batches(rows, &mut |rows| arrow::compute::interleave(arrays, rows))?
        }
        None => vec![arrow::array::new_null_array(field.data_type(), rows.len())],
    };
    for array in &sorted {
        let leaves = compute_leaves(field, array)?;
        if leaves.len() != writers.len() {
            return Err(Error::Arrow(arrow::error::ArrowError::SchemaError(
                format!(
                    "column {} has {} leaves, its writers {}",
                    field.name(),
                    leaves.len(),
                    writers.len()
                ),
            )));
        }
        for (leaf, writer) in leaves.iter().zip(&mut writers) {
            writer.write(leaf)?;
        }
    }
    Ok(writers
        .into_iter()
        .map(ArrowColumnWriter::close)
        .collect::<Result<_, _>>()?)
}

/// The batch of `rows` that `interleave` copies out of some batches, or as
/// many batches as it takes, in the same order, when one cannot hold them.
///
/// A column of strings, binaries, lists or maps addresses at most 2 GiB of
/// values through its 32-bit offsets, and rows copied from several batches
/// can together pass that where each batch alone did not: a flushed row
/// group of 64K rows averaging 32 KiB in one column, or 2,048 rows of
/// compaction's merge averaging 1 MiB. `interleave` then fails with
/// `OffsetOverflowError`, and the rows are split in halves until each
/// half fits; a row always fits, as it came from a batch. Rows that fit
/// cost one call, as before.
pub(crate) fn interleave_in_batches<R, T>(
    rows: &[R],
    interleave: &mut impl FnMut(&[R]) -> Result<T, arrow::error::ArrowError>,
) -> Result<Vec<T>, arrow::error::ArrowError> {
    fn split<R, T>(
        rows: &[R],
        interleave: &mut impl FnMut(&[R]) -> Result<T, arrow::error::ArrowError>,
        out: &mut Vec<T>,
    ) -> Result<(), arrow::error::ArrowError> {
        match interleave(rows) {
            Ok(batch) => out.push(batch),
            Err(arrow::error::ArrowError::OffsetOverflowError(_)) if rows.len() > 1 => {
                let (first, second) = rows.split_at(rows.len() / 2);
                split(first, interleave, out)?;
                split(second, interleave, out)?;
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
    let mut out = Vec::with_capacity(1);
    split(rows, interleave, &mut out)?;
    Ok(out)
}

/// The `trace_key` column of rows in the file schema.
pub(crate) fn batch_keys(batch: &RecordBatch) -> Result<&[i64]> {
    Ok(batch
        .column_by_name(TRACE_KEY)
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .ok_or_else(|| {
            arrow::error::ArrowError::SchemaError(format!("no {TRACE_KEY} column of Int64"))
        })?
        .values())
}

/// A new file's path, relative to the table root, in partition
/// `date=YYYY-MM-DD/hour=HH`.
pub fn data_file_path(date: &str, hour: i32) -> String {
    format!(
        "date={date}/hour={hour:02}/part-{}.zstd.parquet",
        uuid::Uuid::new_v4()
    )
}

/// The partition values of a path written by [`data_file_path`].
fn partition_values(path: &str) -> HashMap<String, Option<String>> {
    path.split('/')
        .filter_map(|part| part.split_once('='))
        .filter(|(k, _)| PARTITION_COLUMNS.contains(k))
        .map(|(k, v)| {
            let v = if k == HOUR {
                v.trim_start_matches('0')
            } else {
                v
            };
            (
                k.to_string(),
                Some(if v.is_empty() { "0" } else { v }.to_string()),
            )
        })
        .collect()
}

/// The Delta `Add` action of a new file at `path` holding new data.
pub fn add_action(path: &str, size: u64, stats: &Stats) -> Add {
    Add {
        path: path.to_string(),
        partition_values: partition_values(path),
        size: size as i64,
        modification_time: chrono::Utc::now().timestamp_millis(),
        data_change: true,
        stats: Some(stats.to_json().to_string()),
        tags: Some(stats.tags()),
        deletion_vector: None,
        base_row_id: None,
        default_row_commit_version: None,
        clustering_provider: None,
    }
}

/// The positions in `stored` of the data file's columns (all but the
/// partition columns), and the file's schema.
fn file_columns(stored: &Schema) -> (Vec<usize>, SchemaRef) {
    let (columns, fields): (Vec<usize>, Vec<_>) = stored
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| !PARTITION_COLUMNS.contains(&f.name().as_str()))
        .map(|(i, f)| (i, Arc::clone(f)))
        .unzip();
    (columns, Arc::new(Schema::new(fields)))
}

/// The order of rows in every data file: by `trace_key`, then `trace_id`
/// (keys of different traces may collide), then start time.
pub const SORT_COLUMNS: [&str; 3] = [TRACE_KEY, TRACE_ID, START_TIME_UNIX_NANO];

/// The positions (batch, row) of the rows of `batches` in [`SORT_COLUMNS`]
/// order; only the sort columns are copied.
fn sort_order(batches: &[RecordBatch]) -> Result<Vec<(usize, usize)>> {
    let columns: Vec<SortColumn> = SORT_COLUMNS
        .iter()
        .map(|name| -> Result<SortColumn> {
            let parts: Vec<&dyn Array> = batches
                .iter()
                .map(|b| b.column_by_name(name).expect("spans column").as_ref())
                .collect();
            Ok(SortColumn {
                values: arrow::compute::concat(&parts)?,
                options: None,
            })
        })
        .collect::<Result<_>>()?;
    let order = lexsort_to_indices(&columns, None)?;
    // Global row number -> (batch, row).
    let mut starts = Vec::with_capacity(batches.len());
    let mut offset = 0;
    for b in batches {
        starts.push(offset);
        offset += b.num_rows();
    }
    Ok(order
        .values()
        .iter()
        .map(|&i| {
            let i = i as usize;
            let b = starts.partition_point(|&s| s <= i) - 1;
            (b, i - starts[b])
        })
        .collect())
}

/// `YYYY-MM-DD` of a day number.
pub fn partition_date(days: i32) -> String {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    (epoch + chrono::Duration::days(i64::from(days)))
        .format("%Y-%m-%d")
        .to_string()
}

/// Integer columns with Delta statistics. The query service derives a
/// condition on `start_time_unix_nano` from one on the computed
/// `start_time`, so files are pruned by time on these.
const INT_STATS: [&str; 3] = [TRACE_KEY, START_TIME_UNIX_NANO, DURATION_NS];

/// Delta file statistics (row count, min/max, null counts) for the columns
/// queries filter on most, accumulated batch by batch.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    rows: usize,
    ints: [(Option<i64>, Option<i64>, usize); INT_STATS.len()],
    service: (Option<String>, Option<String>, usize),
    /// The keys of each of [`KEYED_MAPS`], for the file's tags.
    maps: [MapKeys; KEYED_MAPS.len()],
}

/// The distinct keys of one attribute map column, until there are more than
/// [`MAX_TAGGED_KEYS`].
#[derive(Debug, Default, Clone)]
struct MapKeys {
    keys: HashSet<String>,
    /// More keys than are listed: the file gets no tag for this map.
    overflow: bool,
}

impl MapKeys {
    fn update(&mut self, map: &MapArray) {
        if self.overflow {
            return;
        }
        let keys = map.keys().as_string::<i32>();
        let offsets = map.value_offsets();
        // A row's keys are mostly the previous row's in the same order (the
        // spans of a trace share their resource and scope): those are
        // known, and compared rather than hashed.
        let mut previous = 0..0;
        for row in offsets.windows(2) {
            let entries = row[0] as usize..row[1] as usize;
            for (i, entry) in entries.clone().enumerate() {
                let key = keys.value(entry);
                let before = previous.start + i;
                if before < previous.end && keys.value(before) == key {
                    continue;
                }
                if !self.keys.contains(key) {
                    if self.keys.len() == MAX_TAGGED_KEYS {
                        self.overflow = true;
                        self.keys = HashSet::new();
                        return;
                    }
                    self.keys.insert(key.to_string());
                }
            }
            previous = entries;
        }
    }

    /// The tag's value: the keys as a JSON array, sorted.
    fn tag(&self) -> Option<String> {
        if self.overflow {
            return None;
        }
        let mut keys: Vec<&str> = self.keys.iter().map(String::as_str).collect();
        keys.sort_unstable();
        Some(Value::from(keys).to_string())
    }
}

impl Stats {
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Takes in the rows of `batch` (file or spans schema).
    pub fn update(&mut self, batch: &RecordBatch) {
        self.rows += batch.num_rows();
        for (name, (lo, hi, nulls)) in INT_STATS.iter().zip(&mut self.ints) {
            let array = batch.column_by_name(name).expect("spans column");
            *nulls += array.null_count();
            let a = array.as_primitive::<Int64Type>();
            let (min, max) = (arrow::compute::min(a), arrow::compute::max(a));
            *lo = lo.iter().copied().chain(min).min();
            *hi = hi.iter().copied().chain(max).max();
        }
        let array = batch.column_by_name(SERVICE_NAME).expect("spans column");
        let a = array.as_string::<i32>();
        let (lo, hi, nulls) = &mut self.service;
        *nulls += a.null_count();
        if let Some(min) = arrow::compute::min_string(a)
            && lo.as_deref().is_none_or(|l| min < l)
        {
            *lo = Some(min.to_string());
        }
        if let Some(max) = arrow::compute::max_string(a)
            && hi.as_deref().is_none_or(|h| max > h)
        {
            *hi = Some(max.to_string());
        }
        for ((map, _), keys) in KEYED_MAPS.iter().zip(&mut self.maps) {
            let array = batch.column_by_name(map).expect("spans column");
            keys.update(array.as_map());
        }
    }

    /// The file's Delta tags: the keys of each attribute map
    /// ([`map_keys_tag`]).
    pub fn tags(&self) -> HashMap<String, Option<String>> {
        KEYED_MAPS
            .iter()
            .zip(&self.maps)
            .filter_map(|((map, _), keys)| Some((map_keys_tag(map), Some(keys.tag()?))))
            .collect()
    }

    pub fn to_json(&self) -> Value {
        let mut min = Map::new();
        let mut max = Map::new();
        let mut nulls = Map::new();
        for (name, (lo, hi, n)) in INT_STATS.iter().zip(&self.ints) {
            nulls.insert(name.to_string(), json!(n));
            if let (Some(lo), Some(hi)) = (lo, hi) {
                min.insert(name.to_string(), json!(lo));
                max.insert(name.to_string(), json!(hi));
            }
        }
        let (lo, hi, n) = &self.service;
        nulls.insert(SERVICE_NAME.to_string(), json!(n));
        // Delta truncates string statistics; service names are short, and
        // longer ones are simply not recorded.
        if let (Some(lo), Some(hi)) = (lo, hi)
            && lo.len() <= 64
            && hi.len() <= 64
        {
            min.insert(SERVICE_NAME.to_string(), json!(lo));
            max.insert(SERVICE_NAME.to_string(), json!(hi));
        }
        json!({
            "numRecords": self.rows,
            "minValues": min,
            "maxValues": max,
            "nullCount": nulls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracelake_schema::spans::{RESOURCE_ATTRIBUTES, SPAN_ATTRIBUTES};

    #[test]
    fn partition_values_come_from_the_path() {
        let path = data_file_path("2026-11-21", 7);
        let values = partition_values(&path);
        assert_eq!(values["date"].as_deref(), Some("2026-11-21"));
        assert_eq!(values["hour"].as_deref(), Some("7"));
        assert_eq!(
            partition_values("date=2026-11-21/hour=00/x")["hour"].as_deref(),
            Some("0")
        );
    }

    /// Rows of batches whose columns differ in which hold values (a
    /// dedicated column set in one batch only, a map attribute in another,
    /// events in a third) come back from the file each as it was sent, in
    /// the file's sort order.
    #[test]
    fn a_partition_file_holds_every_row_as_sent_in_sort_order() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use opentelemetry_proto::tonic::trace::v1::span::Event;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        use tracelake_schema::model::SpanRows;
        use tracelake_schema::otlp::{Acceptance, SpansBuilder};

        let kv = |key: &str, value: Any| KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            key_strindex: 0,
        };
        let span = |trace: u8, id: u64, start: u64| Span {
            trace_id: [trace; 16].to_vec(),
            span_id: id.to_be_bytes().to_vec(),
            name: format!("op {id}"),
            kind: 2,
            start_time_unix_nano: 1_764_900_000_000_000_000 + start,
            end_time_unix_nano: 1_764_900_000_000_000_000 + start + 10,
            ..Default::default()
        };
        let batch = |service: &str, spans: Vec<Span>| {
            let request = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![kv("service.name", Any::StringValue(service.into()))],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans,
                        ..Default::default()
                    }],
                    schema_url: String::new(),
                }],
            };
            let mut builder = SpansBuilder::with_capacity(4);
            builder.append_request(&request, &Acceptance::ANY_TIME);
            builder.finish()
        };
        let with_route = |mut s: Span| {
            s.attributes = vec![
                kv("http.route", Any::StringValue("/items/{id}".into())),
                kv("http.response.status_code", Any::IntValue(200)),
            ];
            s
        };
        let with_custom = |mut s: Span| {
            s.attributes = vec![kv("custom", Any::BoolValue(true))];
            s
        };
        let with_event = |mut s: Span| {
            s.events = vec![Event {
                time_unix_nano: s.start_time_unix_nano + 1,
                name: "retry".into(),
                ..Default::default()
            }];
            s
        };
        let batches = vec![
            batch(
                "a",
                vec![with_route(span(2, 1, 30)), with_route(span(1, 2, 20))],
            ),
            batch("b", vec![with_custom(span(1, 3, 10)), span(3, 4, 0)]),
            batch("c", vec![with_event(span(2, 5, 5))]),
        ];
        let file = write_partition((20_000, 0), &batches).unwrap();
        assert_eq!(file.rows, 5);
        // The keys of the maps, for readers to skip a map that lacks a key:
        // the keys with columns are not in it.
        let tags = file.add.tags.as_ref().expect("tags");
        let tag = |map: &str| tags[&map_keys_tag(map)].clone();
        assert_eq!(tag(SPAN_ATTRIBUTES).as_deref(), Some(r#"["custom"]"#));
        assert_eq!(
            tag(RESOURCE_ATTRIBUTES).as_deref(),
            Some(r#"["service.name"]"#)
        );
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(file.bytes)).unwrap();
        // Trace ids as prefixes of the one before (most are the same),
        // durations split into byte streams (their high bytes are zero).
        let metadata = Arc::clone(reader.metadata());
        let row_group = metadata.row_group(0);
        let encodings = |name: &str| -> Vec<parquet::basic::Encoding> {
            let column = row_group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == name)
                .expect(name);
            column.encodings().collect()
        };
        use parquet::basic::Encoding::{BYTE_STREAM_SPLIT, DELTA_BYTE_ARRAY};
        assert!(
            encodings(TRACE_ID).contains(&DELTA_BYTE_ARRAY),
            "{:?}",
            encodings(TRACE_ID)
        );
        assert!(
            encodings(DURATION_NS).contains(&BYTE_STREAM_SPLIT),
            "{:?}",
            encodings(DURATION_NS)
        );
        // Bloom filters on the dedicated string columns, none on the ids
        // or the integer columns.
        let leaf = |name: &str| {
            row_group
                .columns()
                .iter()
                .position(|c| c.column_path().string() == name)
                .expect(name)
        };
        let has_bloom = |name: &str| row_group.column(leaf(name)).bloom_filter_offset().is_some();
        assert!(!has_bloom(TRACE_ID) && !has_bloom("http_response_status_code"));
        assert!(has_bloom("http_route") && has_bloom("url_path"));
        assert!(has_bloom("resource_k8s_namespace_name"));
        let route = leaf("http_route");
        let bloom = reader
            .get_row_group_column_bloom_filter(0, route)
            .unwrap()
            .expect("http_route's bloom filter");
        assert!(bloom.check(&"/items/{id}") && !bloom.check(&"/nowhere/at/all"));
        // Statistics where reads prune or skip by them; none on the random
        // ids or the nested columns.
        let has_stats = |name: &str| row_group.column(leaf(name)).statistics().is_some();
        for name in [
            TRACE_ID,
            TRACE_KEY,
            START_TIME_UNIX_NANO,
            DURATION_NS,
            "http_route",
        ] {
            assert!(has_stats(name), "{name}");
        }
        for name in [SPAN_ID, PARENT_SPAN_ID, "span_attributes.key_value.key"] {
            assert!(!has_stats(name), "{name}");
        }
        // Columns that hold nothing in the file are not compressed: a
        // dedicated column no span set, a list every span left empty.
        let compression = |name: &str| row_group.column(leaf(name)).compression();
        use parquet::basic::Compression::UNCOMPRESSED;
        for empty in [
            "db_system",
            "links.list.element.span_id",
            "scope_attributes.key_value.key",
        ] {
            assert_eq!(compression(empty), UNCOMPRESSED, "{empty}");
        }
        for filled in [
            "http_route",
            "service_name",
            "events.list.element.name",
            "span_attributes.key_value.key",
        ] {
            assert!(
                matches!(compression(filled), Compression::ZSTD(_)),
                "{filled}"
            );
        }
        // ... and the file lists them, for a lookup to make them.
        let listed = tracelake_schema::spans::empty_columns(
            metadata
                .file_metadata()
                .key_value_metadata()
                .unwrap()
                .iter()
                .map(|kv| (kv.key.as_str(), kv.value.as_deref())),
        );
        for empty in [
            "db_system",
            "links",
            "scope_attributes",
            "resource_attribute_types",
        ] {
            assert!(listed.contains(empty), "{empty}: {listed:?}");
        }
        for filled in [
            "http_route",
            "service_name",
            "events",
            "span_attributes",
            "span_attribute_types",
        ] {
            assert!(!listed.contains(filled), "{filled}: {listed:?}");
        }
        let read: Vec<RecordBatch> = reader.build().unwrap().collect::<Result<_, _>>().unwrap();
        let rows = |batches: &[RecordBatch]| {
            let mut out = Vec::new();
            for b in batches {
                let view = SpanRows::try_new(b).unwrap();
                for row in 0..view.len() {
                    out.push((view.span(row).unwrap(), view.resource(row).unwrap()));
                }
            }
            out
        };
        let written = rows(&read);
        // Sorted: by trace key (the id's low half), then id, then start.
        let order: Vec<u64> = written
            .iter()
            .map(|(s, _)| u64::from_be_bytes(s.span_id[..].try_into().unwrap()))
            .collect();
        assert_eq!(order, [3, 2, 5, 1, 4]);
        let mut sent = rows(&batches);
        sent.sort_by_key(|(s, _)| s.span_id.clone());
        let mut written = written;
        written.sort_by_key(|(s, _)| s.span_id.clone());
        assert_eq!(written, sent);
        assert!(!written[0].0.attributes.is_empty() && !written[4].0.events.is_empty());
    }

    /// A map's keys are each listed once, those of a row like the row
    /// before it (compared, not hashed) as well as the others; past
    /// [`MAX_TAGGED_KEYS`] keys the map gets no list.
    #[test]
    fn map_keys_are_listed_until_there_are_too_many() {
        use arrow::array::builder::{MapBuilder, StringBuilder};

        let map = |rows: &[&[&str]]| {
            let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
            for row in rows {
                for key in *row {
                    b.keys().append_value(key);
                    b.values().append_value("v");
                }
                b.append(!row.is_empty()).unwrap();
            }
            b.finish()
        };
        let mut keys = MapKeys::default();
        keys.update(&map(&[&["a", "b"], &["a", "b"], &["a", "c"], &[], &["d"]]));
        // A slice: its offsets do not start at zero.
        keys.update(&map(&[&["x"], &["e", "a"], &["e", "a"]]).slice(1, 2));
        assert_eq!(keys.tag().as_deref(), Some(r#"["a","b","c","d","e"]"#));

        let many: Vec<String> = (0..=MAX_TAGGED_KEYS).map(|i| format!("k{i}")).collect();
        let rows: Vec<&[&str]> = Vec::new();
        let mut all = MapKeys::default();
        let names: Vec<&str> = many.iter().map(String::as_str).collect();
        all.update(&map(&[&names[..MAX_TAGGED_KEYS]]));
        assert!(all.tag().is_some());
        all.update(&map(&[&names[MAX_TAGGED_KEYS..]]));
        assert_eq!(all.tag(), None);
        all.update(&map(&rows));
        assert_eq!(all.tag(), None);
    }

    /// A column of distinct values stops adding to its dictionary at
    /// [`DICTIONARY_PAGE_BYTES`] and goes on in plain encoding; a column of
    /// few values keeps its dictionary. Every value reads back.
    #[test]
    fn dictionaries_stop_at_their_limit() {
        use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
        use opentelemetry_proto::tonic::trace::v1::Span;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        use parquet::column::page::Page;
        use parquet::file::reader::{FileReader, SerializedFileReader};

        let url = |i: u32| {
            format!(
                "https://shop.example/items/{i:08}?session={:016x}",
                i * 7919
            )
        };
        let spans: Vec<Span> = (0..20_000u32)
            .map(|i| Span {
                trace_id: [1; 16].to_vec(),
                span_id: u64::from(i + 1).to_be_bytes().to_vec(),
                name: format!("op {}", i % 4),
                start_time_unix_nano: 1_764_900_000_000_000_000 + u64::from(i),
                end_time_unix_nano: 1_764_900_000_000_000_010 + u64::from(i),
                attributes: vec![KeyValue {
                    key: "url.full".into(),
                    value: Some(AnyValue {
                        value: Some(Any::StringValue(url(i))),
                    }),
                    key_strindex: 0,
                }],
                ..Default::default()
            })
            .collect();
        let file = write_partition((20_000, 0), &[crate::test_spans::batch(spans)]).unwrap();
        let bytes = bytes::Bytes::from(file.bytes);

        let reader = SerializedFileReader::new(bytes.clone()).unwrap();
        let columns = reader.metadata().file_metadata().schema_descr_ptr();
        let dictionary = |name: &str| {
            let leaf = (0..columns.num_columns())
                .find(|&i| columns.column(i).path().string() == name)
                .unwrap();
            let pages = reader
                .get_row_group(0)
                .unwrap()
                .get_column_page_reader(leaf);
            match pages.unwrap().next().unwrap() {
                Ok(Page::DictionaryPage { buf, .. }) => Some(buf.len()),
                _ => None,
            }
        };
        // 20,000 distinct URLs are over 1 MB: parquet's default limit would
        // have kept them all in the dictionary.
        let urls = dictionary("url_full").expect("a dictionary page first");
        assert!(
            urls <= 2 * DICTIONARY_PAGE_BYTES,
            "dictionary page of {urls} bytes"
        );
        assert!(dictionary("name").is_some());

        let read = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let mut got = Vec::new();
        for batch in &read {
            let column = batch.column_by_name("url_full").unwrap();
            let column = arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8).unwrap();
            let strings = arrow::array::AsArray::as_string::<i32>(&column);
            got.extend(strings.iter().map(|v| v.unwrap().to_string()));
        }
        got.sort();
        let mut sent: Vec<String> = (0..20_000).map(url).collect();
        sent.sort();
        assert_eq!(got, sent);
    }

    /// The rows of `file`, the bytes of their long-tail attribute map's
    /// values, and whether they are in sort order.
    fn attribute_bytes(file: bytes::Bytes) -> (usize, usize, bool) {
        use parquet::arrow::ProjectionMask;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

        let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let roots = [SPAN_ATTRIBUTES, TRACE_KEY, START_TIME_UNIX_NANO]
            .map(|name| builder.schema().index_of(name).unwrap());
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let (mut rows, mut bytes, mut keys) = (0, 0, Vec::new());
        for batch in builder.with_projection(mask).build().unwrap() {
            let batch = batch.unwrap();
            let column = |name| batch.column_by_name(name).unwrap();
            let map = column(SPAN_ATTRIBUTES).as_map();
            rows += batch.num_rows();
            bytes += map.values().as_string::<i32>().values().len();
            let trace_keys = column(TRACE_KEY).as_primitive::<Int64Type>();
            let starts = column(START_TIME_UNIX_NANO).as_primitive::<Int64Type>();
            keys.extend(
                trace_keys
                    .values()
                    .iter()
                    .copied()
                    .zip(starts.values().iter().copied()),
            );
        }
        (rows, bytes, keys.is_sorted())
    }

    #[test]
    fn rows_too_large_for_one_batch_are_flushed_in_several() {
        let _one_at_a_time = crate::test_spans::LARGE.blocking_lock();
        // 36 times the same 512 spans of 128 KiB each: 2.25 GiB of values
        // in one column of one row group, past what 32-bit offsets address.
        // (The batches share their buffers; only the flush copies them.)
        let batch = crate::test_spans::large(1, 512, 128 << 10);
        let batches = vec![batch; 36];
        let file = write_partition((20_000, 0), &batches).unwrap();
        assert_eq!(file.rows, 36 * 512);
        let bytes = bytes::Bytes::from(file.bytes);
        let reader = parquet::file::reader::SerializedFileReader::new(bytes.clone()).unwrap();
        let groups = parquet::file::reader::FileReader::metadata(&reader).row_groups();
        assert_eq!(groups.len(), 1, "still one row group");
        // Split or not, the rows are in sort order: the spans' starts, as
        // they all have one trace.
        assert_eq!(
            attribute_bytes(bytes),
            (36 * 512, 36 * 512 * (128 << 10), true)
        );
    }

    /// The flush encodes a row group's columns on several threads; the
    /// file is, byte for byte, the one a single `ArrowWriter` writes from
    /// the rows in sort order, over two row groups and columns of every
    /// kind (dedicated strings and integers, maps, events, all-null ones).
    #[test]
    fn columns_encoded_on_several_threads_make_the_file_one_writer_makes() {
        use tracelake_schema::opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
        use tracelake_schema::opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
        use tracelake_schema::opentelemetry_proto::tonic::trace::v1::Span;
        use tracelake_schema::opentelemetry_proto::tonic::trace::v1::span::Event;

        let kv = |key: &str, value: Any| KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            key_strindex: 0,
        };
        // 70,000 spans (past one flushed row group of 65,536) of 700
        // traces, in batches of 7,000 whose rows the sort interleaves.
        let batches: Vec<RecordBatch> = (0..10u64)
            .map(|b| {
                let spans = (0..7_000u64)
                    .map(|i| {
                        let trace = (i * 7 + b) % 700;
                        let mut trace_id = [0u8; 16];
                        trace_id[8..].copy_from_slice(
                            &(trace + 1)
                                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                                .to_be_bytes(),
                        );
                        let start = 1_764_900_000_000_000_000
                            + (i * 7_919 + b * 104_729) % 3_600_000_000_000;
                        let mut attributes = vec![kv(
                            "http.route",
                            Any::StringValue(format!("/items/{}", i % 13)),
                        )];
                        if i % 3 == 0 {
                            attributes.push(kv(
                                "http.response.status_code",
                                Any::IntValue(200 + (i % 5) as i64),
                            ));
                        }
                        if i % 5 == 0 {
                            attributes.push(kv(&format!("custom.{}", i % 4), Any::BoolValue(true)));
                        }
                        Span {
                            trace_id: trace_id.to_vec(),
                            span_id: (b << 32 | (i + 1)).to_be_bytes().to_vec(),
                            parent_span_id: if i % 4 == 0 {
                                Vec::new()
                            } else {
                                (b << 32 | i).to_be_bytes().to_vec()
                            },
                            name: format!("op {}", i % 17),
                            kind: (i % 5) as i32,
                            start_time_unix_nano: start,
                            end_time_unix_nano: start + i * 1_000,
                            attributes,
                            events: if i % 11 == 0 {
                                vec![Event {
                                    time_unix_nano: start + 1,
                                    name: "retry".into(),
                                    attributes: vec![kv("attempt", Any::IntValue((i % 3) as i64))],
                                    ..Default::default()
                                }]
                            } else {
                                Vec::new()
                            },
                            ..Default::default()
                        }
                    })
                    .collect();
                crate::test_spans::batch(spans)
            })
            .collect();

        // The reference: the rows in sort order, in one batch, through one
        // `ArrowWriter` with the flush's settings.
        let order = sort_order(&batches).unwrap();
        let (columns, schema) = file_columns(&batches[0].schema());
        let sorted = RecordBatch::try_new(
            Arc::clone(&schema),
            columns
                .iter()
                .map(|&c| {
                    let arrays: Vec<&dyn Array> =
                        batches.iter().map(|b| b.column(c).as_ref()).collect();
                    arrow::compute::interleave(&arrays, &order).unwrap()
                })
                .collect(),
        )
        .unwrap();
        let empty: HashSet<String> = schema
            .fields()
            .iter()
            .zip(sorted.columns())
            .filter(|(_, a)| !holds_values(a.as_ref()))
            .map(|(f, _)| f.name().clone())
            .collect();
        let mut reference = Vec::new();
        let mut writer = ArrowWriter::try_new(
            &mut reference,
            Arc::clone(&schema),
            Some(writer_properties(
                &schema,
                FLUSH_ROW_GROUP_ROWS,
                FLUSH_ZSTD_LEVEL,
                &empty,
            )),
        )
        .unwrap();
        writer.write(&sorted).unwrap();
        let metadata = writer.close().unwrap();
        assert_eq!(metadata.num_row_groups(), 2);

        // And the statistics and trace keys of the rows in sort order.
        let mut stats = Stats::default();
        stats.update(&sorted);
        let mut keys = KeysBuilder::new();
        keys.extend(batch_keys(&sorted).unwrap());
        let keys = keys.finish();
        assert_eq!(keys.len(), 700);

        for threads in [1, 2, 5] {
            let file = write_partition_on((20_000, 0), &batches, threads).unwrap();
            assert_eq!(file.rows, 70_000);
            assert!(
                file.bytes == reference,
                "{threads} threads wrote another file"
            );
            assert_eq!(file.keys, keys);
            assert_eq!(file.add.stats, Some(stats.to_json().to_string()));
            assert_eq!(file.add.tags, Some(stats.tags()));
        }
    }

    #[test]
    fn partition_dates_are_iso() {
        assert_eq!(partition_date(0), "1970-01-01");
        assert_eq!(partition_date(20778), "2026-11-21");
    }
}
