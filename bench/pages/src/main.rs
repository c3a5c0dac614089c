//! Rewrites a tracelake data file (`IN`, e.g. a compacted hour of a
//! `tracelake-bench run --data-dir D` store) as `OUT` with the compactor's
//! writer settings (a copy of `collector::writer::writer_properties` for
//! compacted files: 128k-row row groups, zstd 3, 8k-row pages, page
//! statistics on scalar columns but the span and parent ids, no
//! dictionary on the unique columns),
//! with these changed by environment variables:
//!
//! - `DICT_LIMIT`: dictionary page limit in bytes (default 32768, the
//!   server's; 1048576 is parquet's default, the server's before),
//! - `PAGE_BYTES`: data page byte limit (default 1 MiB, parquet's),
//! - `PAGE_ROWS`: data page row limit (default 8192),
//! - `WRITE_BATCH`: parquet's write batch size (default 1024),
//! - `PARENT_DICT=0`: no dictionary on `parent_span_id`,
//! - `BLOOM=1`: a bloom filter on `trace_id` (fpp 0.01, sized for a row
//!   group of distinct ids), which the writer had until 2026-12-06,
//! - `TRACE_ID_PLAIN=1`: `trace_id` PLAIN, as the writer had it until
//!   2026-12-06, instead of DELTA_BYTE_ARRAY,
//! - `ENCODINGS=col:enc,...`: a column's encoding (`plain`, `delta` for
//!   DELTA_BINARY_PACKED, `dlba` DELTA_LENGTH_BYTE_ARRAY, `dba`
//!   DELTA_BYTE_ARRAY, `bss` BYTE_STREAM_SPLIT), its dictionary off,
//! - `BLOOM_COLS=col,...`: a bloom filter on each of these columns (fpp
//!   `BLOOM_FPP`, default 0.01, sized for a row group of distinct values),
//! - `VALUE_COL=col`: time lookups of 40 values of this string column
//!   spread over `OUT` instead of trace ids (an attribute search on a
//!   dedicated column: the row groups its bloom filter may hold the value
//!   in, all where the file has none, then a row filter on the column,
//!   reading `trace_id`); with `VALUE_DIGITS=1` only values holding two
//!   digits in a row (an id in a path rather than the route alone).
//!
//! Then it reads 40 trace ids spread over `OUT` five times each, the way
//! `SpansTable::trace_spans` does (row groups and pages by `trace_key`, a
//! row filter on `trace_id`, no column null in every row group read), and
//! prints the size per span and the lookups' median. With a third argument
//! `noread` it only times the lookups of an existing `OUT`.
//!
//! `typedmaps FILE DIR` compares, for the span and resource attribute
//! sets of `FILE`, the stored layout (a map of text values and a map of
//! the type codes of non-string values) with typed maps (one map per
//! value type: string, int, double, bool; the rare others as text with
//! their codes): bytes, write time, and the time to read them back. With
//! `TAIL_NUMBERS=1` each span gets three more attributes, an int, a double
//! and a bool, in both.
//!
//! `blooms FILE` prints the bytes of each column's bloom filters.
//!
//! `meta FILE` times loading `FILE`'s footer with and without its page
//! index, and the page index of one row group from a loaded footer (what
//! the trace index keeps and reads), and prints their sizes in memory.

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, RecordBatchReader, Scalar};
use arrow::datatypes::Int64Type;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
    RowFilter, RowSelection, RowSelector,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use std::fs::File;
use std::time::Instant;

fn arg(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn props(schema: &arrow::datatypes::Schema) -> WriterProperties {
    let page_rows = arg("PAGE_ROWS", 8192);
    let page_bytes = arg("PAGE_BYTES", 1024 * 1024);
    let dict = arg("DICT_LIMIT", 32 * 1024);
    let batch = arg("WRITE_BATCH", 1024);
    let parent_dict = arg("PARENT_DICT", 1) == 1;
    let bloom = arg("BLOOM", 0) == 1;
    let trace_id_plain = arg("TRACE_ID_PLAIN", 0) == 1;
    let mut p = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap()))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::None)
        .set_max_row_group_row_count(Some(128 * 1024))
        .set_data_page_row_count_limit(page_rows)
        .set_data_page_size_limit(page_bytes)
        .set_dictionary_page_size_limit(dict)
        .set_write_batch_size(batch);
    if !trace_id_plain {
        p = p.set_column_encoding(ColumnPath::from("trace_id"), Encoding::DELTA_BYTE_ARRAY);
    }
    if bloom {
        p = p
            .set_column_bloom_filter_enabled(ColumnPath::from("trace_id"), true)
            .set_column_bloom_filter_fpp(ColumnPath::from("trace_id"), 0.01)
            .set_column_bloom_filter_max_ndv(ColumnPath::from("trace_id"), 128 * 1024);
    }
    let fpp: f64 = std::env::var("BLOOM_FPP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.01);
    for column in std::env::var("BLOOM_COLS").unwrap_or_default().split(',') {
        if column.is_empty() {
            continue;
        }
        p = p
            .set_column_bloom_filter_enabled(ColumnPath::from(column), true)
            .set_column_bloom_filter_fpp(ColumnPath::from(column), fpp)
            .set_column_bloom_filter_max_ndv(ColumnPath::from(column), 128 * 1024);
    }
    for unique in [
        "trace_id",
        "trace_key",
        "span_id",
        "start_time_unix_nano",
        "duration_ns",
    ] {
        p = p.set_column_dictionary_enabled(ColumnPath::from(unique), false);
    }
    if !parent_dict {
        p = p.set_column_dictionary_enabled(ColumnPath::from("parent_span_id"), false);
    }
    for spec in std::env::var("ENCODINGS").unwrap_or_default().split(',') {
        let Some((column, name)) = spec.split_once(':') else {
            continue;
        };
        let encoding = match name {
            "plain" => Encoding::PLAIN,
            "delta" => Encoding::DELTA_BINARY_PACKED,
            "dlba" => Encoding::DELTA_LENGTH_BYTE_ARRAY,
            "dba" => Encoding::DELTA_BYTE_ARRAY,
            "bss" => Encoding::BYTE_STREAM_SPLIT,
            other => panic!("unknown encoding {other}"),
        };
        p = p
            .set_column_dictionary_enabled(ColumnPath::from(column), false)
            .set_column_encoding(ColumnPath::from(column), encoding);
    }
    // As the writer: none on the random span and parent ids.
    for f in schema.fields() {
        if !f.data_type().is_nested() && !["span_id", "parent_span_id"].contains(&f.name().as_str())
        {
            p = p.set_column_statistics_enabled(
                ColumnPath::from(f.name().as_str()),
                EnabledStatistics::Page,
            );
        }
    }
    p.build()
}

fn lookup(path: &str, meta: &ArrowReaderMetadata, id: &[u8]) -> usize {
    let key = i64::from_be_bytes(id[8..16].try_into().unwrap());
    let parquet = meta.metadata();
    let stats = StatisticsConverter::try_new(
        "trace_key",
        meta.schema(),
        parquet.file_metadata().schema_descr(),
    )
    .unwrap();
    let holds = |min: &ArrayRef, max: &ArrayRef, i: usize| {
        let (min, max) = (
            min.as_primitive::<Int64Type>(),
            max.as_primitive::<Int64Type>(),
        );
        (min.is_null(i) || min.value(i) <= key) && (max.is_null(i) || key <= max.value(i))
    };
    let (mins, maxes) = (
        stats.row_group_mins(parquet.row_groups()).unwrap(),
        stats.row_group_maxes(parquet.row_groups()).unwrap(),
    );
    let rgs: Vec<usize> = (0..parquet.num_row_groups())
        .filter(|&i| holds(&mins, &maxes, i))
        .collect();
    if rgs.is_empty() {
        return 0;
    }
    let descr = parquet.file_metadata().schema_descr();
    let all_null = |root: usize| {
        (0..descr.num_columns())
            .filter(|&leaf| descr.get_column_root_idx(leaf) == root)
            .all(|leaf| {
                rgs.iter().all(|&rg| {
                    let rg = parquet.row_group(rg);
                    rg.column(leaf)
                        .statistics()
                        .and_then(|s| s.null_count_opt())
                        .is_some_and(|n| n as i64 == rg.num_rows())
                })
            })
    };
    let read: Vec<usize> = (0..descr.root_schema().get_fields().len())
        .filter(|&r| !all_null(r))
        .collect();
    let mut b =
        ParquetRecordBatchReaderBuilder::new_with_metadata(File::open(path).unwrap(), meta.clone())
            .with_row_groups(rgs.clone())
            .with_projection(ProjectionMask::roots(descr, read));
    let (columns, offsets) = (
        parquet.column_index().unwrap(),
        parquet.offset_index().unwrap(),
    );
    let counts = stats
        .data_page_row_counts(offsets, parquet.row_groups(), &rgs)
        .unwrap()
        .unwrap();
    let pmins = stats.data_page_mins(columns, offsets, &rgs).unwrap();
    let pmaxes = stats.data_page_maxes(columns, offsets, &rgs).unwrap();
    let sel: Vec<RowSelector> = (0..counts.len())
        .map(|p| {
            let rows = counts.value(p) as usize;
            if holds(&pmins, &pmaxes, p) {
                RowSelector::select(rows)
            } else {
                RowSelector::skip(rows)
            }
        })
        .collect();
    b = b.with_row_selection(RowSelection::from(sel));
    let wanted = Scalar::new(BinaryArray::from(vec![id]));
    let idcol = ProjectionMask::columns(b.parquet_schema(), ["trace_id"]);
    let filter = ArrowPredicateFn::new(idcol, move |batch: arrow::record_batch::RecordBatch| {
        arrow::compute::kernels::cmp::eq(batch.column(0), &wanted)
    });
    let r = b
        .with_row_filter(RowFilter::new(vec![Box::new(filter)]))
        .build()
        .unwrap();
    r.map(|b| b.unwrap().num_rows()).sum()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args[1] == "meta" {
        return metadata_costs(&args[2]);
    }
    if args[1] == "typedmaps" {
        return typed_maps(&args[2], &args[3]);
    }
    if args[1] == "blooms" {
        return bloom_sizes(&args[2]);
    }
    let (input, output) = (&args[1], &args[2]);
    if args.get(3).map(String::as_str) != Some("noread") {
        let t = Instant::now();
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(input).unwrap())
            .unwrap()
            .with_batch_size(8192)
            .build()
            .unwrap();
        let schema = reader.schema();
        let mut w = ArrowWriter::try_new(
            File::create(output).unwrap(),
            schema.clone(),
            Some(props(&schema)),
        )
        .unwrap();
        let mut rows = 0;
        for b in reader {
            let b = b.unwrap();
            rows += b.num_rows();
            w.write(&b).unwrap();
        }
        w.close().unwrap();
        eprintln!("rewrite {rows} rows in {:.1} s", t.elapsed().as_secs_f64());
    }
    let size = std::fs::metadata(output).unwrap().len();
    let t = Instant::now();
    let meta = ArrowReaderMetadata::load(
        &File::open(output).unwrap(),
        ArrowReaderOptions::new()
            .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required),
    )
    .unwrap();
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    if let Ok(column) = std::env::var("VALUE_COL") {
        return value_lookups(output, &meta, &column, size, open_ms);
    }
    // 40 trace ids spread through the file.
    let ids: Vec<Vec<u8>> = {
        let n = meta.metadata().num_row_groups();
        let mut ids = Vec::new();
        for k in 0..40 {
            let rg = k * n / 40;
            let r = ParquetRecordBatchReaderBuilder::new_with_metadata(
                File::open(output).unwrap(),
                meta.clone(),
            )
            .with_row_groups(vec![rg])
            .with_projection(ProjectionMask::columns(meta.parquet_schema(), ["trace_id"]))
            .with_batch_size(100_000)
            .build()
            .unwrap();
            let b = r.into_iter().next().unwrap().unwrap();
            let a = b.column(0).as_binary::<i32>();
            ids.push(a.value((k * 7919) % a.len()).to_vec());
        }
        ids
    };
    let mut times = Vec::new();
    let mut spans = 0;
    for _ in 0..5 {
        for id in &ids {
            let t = Instant::now();
            spans += lookup(output, &meta, id);
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pages: usize = meta
        .metadata()
        .offset_index()
        .unwrap()
        .iter()
        .flatten()
        .map(|c| c.page_locations().len())
        .sum();
    println!(
        "size {:.1} MB  bytes/row {:.2}  footer+index open {:.1} ms  pages {}  lookup median {:.2} ms p90 {:.2} ms  spans/lookup {}",
        size as f64 / 1e6,
        size as f64 / meta.metadata().file_metadata().num_rows() as f64,
        open_ms,
        pages,
        times[times.len() / 2],
        times[times.len() * 9 / 10],
        spans / times.len()
    );
}

/// What loading `path`'s footer and page index costs, part by part: the
/// median time of five loads and the size in memory.
fn metadata_costs(path: &str) {
    use parquet::file::metadata::{PageIndexPolicy, ParquetStatisticsPolicy};
    let all = || ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
    let variants: Vec<(&str, ArrowReaderOptions)> = vec![
        ("footer only", ArrowReaderOptions::new()),
        (
            "footer + offset index",
            ArrowReaderOptions::new().with_offset_index_policy(PageIndexPolicy::Required),
        ),
        ("footer + page index", all()),
        (
            "page index, no encoding/size stats",
            all()
                .with_encoding_stats_policy(ParquetStatisticsPolicy::SkipAll)
                .with_size_stats_policy(ParquetStatisticsPolicy::SkipAll),
        ),
        (
            "page index, encoding stats as mask, no size stats",
            all()
                .with_encoding_stats_as_mask(true)
                .with_size_stats_policy(ParquetStatisticsPolicy::SkipAll),
        ),
    ];
    for (name, options) in variants {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..7 {
            let t = Instant::now();
            let meta =
                ArrowReaderMetadata::load(&File::open(path).unwrap(), options.clone()).unwrap();
            times.push(t.elapsed().as_secs_f64() * 1e3);
            bytes = meta.metadata().memory_size();
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "{name}: median {:.1} ms, {:.1} MB in memory",
            times[3],
            bytes as f64 / 1e6
        );
    }
    // The page index of one row group, from a cached footer.
    let file = File::open(path).unwrap();
    let footer = parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .unwrap();
    let n = footer.num_row_groups();
    let page_index_start = footer
        .row_groups()
        .iter()
        .flat_map(|rg| rg.columns())
        .filter_map(|c| c.column_index_offset())
        .min()
        .unwrap();
    let footer_start = {
        use std::os::unix::fs::FileExt;
        let mut tail = [0u8; 4];
        let len = file.metadata().unwrap().len();
        file.read_exact_at(&mut tail, len - 8).unwrap();
        len - 8 - u32::from_le_bytes(tail) as u64
    };
    println!(
        "page index bytes on disk ~{:.2} MB",
        (footer_start - page_index_start as u64) as f64 / 1e6
    );
    for rg in [0, n / 2, n - 1] {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..9 {
            let t = Instant::now();
            let one = parquet::file::metadata::ParquetMetaData::new(
                footer.file_metadata().clone(),
                vec![footer.row_group(rg).clone()],
            );
            let mut reader = parquet::file::metadata::ParquetMetaDataReader::new_with_metadata(one)
                .with_page_index_policy(PageIndexPolicy::Required);
            reader.read_page_indexes(&file).unwrap();
            let m = reader.finish().unwrap();
            assert_eq!(m.offset_index().unwrap().len(), 1);
            times.push(t.elapsed().as_secs_f64() * 1e3);
            bytes = m.memory_size();
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "row group {rg} with its page index: median {:.2} ms, {:.2} MB in memory",
            times[4],
            bytes as f64 / 1e6
        );
    }
}

/// 40 values of `column` spread over the file, each looked up five times:
/// the row groups whose bloom filter for the column may hold the value (all
/// when the file has none), then a row filter on the column reading
/// `trace_id`. Prints the median, the row groups read per lookup, the
/// bloom filters' bytes and the matches per lookup.
fn value_lookups(path: &str, meta: &ArrowReaderMetadata, column: &str, size: u64, open_ms: f64) {
    let parquet = meta.metadata();
    let descr = parquet.file_metadata().schema_descr();
    let leaf = (0..descr.num_columns())
        .find(|&i| descr.column(i).path().string() == column)
        .expect("no such column");
    let n = parquet.num_row_groups();
    let bloom_bytes: i64 = parquet
        .row_groups()
        .iter()
        .filter_map(|rg| rg.column(leaf).bloom_filter_length().map(i64::from))
        .sum();
    let digits = arg("VALUE_DIGITS", 0) == 1;
    let values: Vec<String> = (0..40)
        .filter_map(|k| {
            let r = ParquetRecordBatchReaderBuilder::new_with_metadata(
                File::open(path).unwrap(),
                meta.clone(),
            )
            .with_row_groups(vec![k * n / 40])
            .with_projection(ProjectionMask::columns(meta.parquet_schema(), [column]))
            .with_batch_size(200_000)
            .build()
            .unwrap();
            let b = r.into_iter().next().unwrap().unwrap();
            let a = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
            let a = a.as_string::<i32>();
            (0..a.len())
                .map(|i| (i + k * 7919) % a.len())
                .find(|&i| {
                    a.is_valid(i)
                        && (!digits
                            || a.value(i)
                                .as_bytes()
                                .windows(2)
                                .any(|w| w.iter().all(u8::is_ascii_digit)))
                })
                .map(|i| a.value(i).to_string())
        })
        .collect();
    let mut times = Vec::new();
    assert!(!values.is_empty(), "no value of {column} to look up");
    let (mut groups, mut matches) = (0, 0);
    for _ in 0..5 {
        for value in &values {
            let t = Instant::now();
            // What DataFusion does: each row group's bloom filter, read
            // from the file, asked for the value.
            let keep: Vec<usize> = (0..n)
                .filter(|&rg| {
                    if parquet
                        .row_group(rg)
                        .column(leaf)
                        .bloom_filter_offset()
                        .is_none()
                    {
                        return true;
                    }
                    let b = ParquetRecordBatchReaderBuilder::new_with_metadata(
                        File::open(path).unwrap(),
                        meta.clone(),
                    );
                    b.get_row_group_column_bloom_filter(rg, leaf)
                        .unwrap()
                        .is_none_or(|f| f.check(&value.as_str()))
                })
                .collect();
            groups += keep.len();
            if !keep.is_empty() {
                let b = ParquetRecordBatchReaderBuilder::new_with_metadata(
                    File::open(path).unwrap(),
                    meta.clone(),
                )
                .with_row_groups(keep)
                .with_projection(ProjectionMask::columns(meta.parquet_schema(), ["trace_id"]));
                let wanted = Scalar::new(arrow::array::StringArray::from(vec![value.as_str()]));
                let col = ProjectionMask::columns(b.parquet_schema(), [column]);
                let filter =
                    ArrowPredicateFn::new(col, move |batch: arrow::record_batch::RecordBatch| {
                        let c = arrow::compute::cast(
                            batch.column(0),
                            &arrow::datatypes::DataType::Utf8,
                        )?;
                        arrow::compute::kernels::cmp::eq(&c, &wanted)
                    });
                let r = b
                    .with_row_filter(RowFilter::new(vec![Box::new(filter)]))
                    .build()
                    .unwrap();
                matches += r.map(|b| b.unwrap().num_rows()).sum::<usize>();
            }
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "size {:.1} MB  bytes/row {:.2}  open {:.1} ms  bloom {:.2} MB ({:.2} B/row)  {column} lookup median {:.2} ms p90 {:.2} ms  row groups read {:.1} of {n}  matches/lookup {:.1}",
        size as f64 / 1e6,
        size as f64 / parquet.file_metadata().num_rows() as f64,
        open_ms,
        bloom_bytes as f64 / 1e6,
        bloom_bytes as f64 / parquet.file_metadata().num_rows() as f64,
        times[times.len() / 2],
        times[times.len() * 9 / 10],
        groups as f64 / times.len() as f64,
        matches as f64 / times.len() as f64,
    );
}

/// The bytes of each column's bloom filters in `path`, per row.
fn bloom_sizes(path: &str) {
    let meta =
        ArrowReaderMetadata::load(&File::open(path).unwrap(), ArrowReaderOptions::new()).unwrap();
    let parquet = meta.metadata();
    let rows = parquet.file_metadata().num_rows() as f64;
    let descr = parquet.file_metadata().schema_descr();
    let mut total = 0;
    for leaf in 0..descr.num_columns() {
        let bytes: i64 = parquet
            .row_groups()
            .iter()
            .filter_map(|rg| rg.column(leaf).bloom_filter_length().map(i64::from))
            .sum();
        if bytes > 0 {
            total += bytes;
            println!(
                "{:<40} {:>10} B  {:.3} B/row",
                descr.column(leaf).path().string(),
                bytes,
                bytes as f64 / rows
            );
        }
    }
    println!(
        "total {total} B  {:.3} B/row over {} row groups",
        total as f64 / rows,
        parquet.num_row_groups()
    );
}

/// See the module doc: `typedmaps`.
fn typed_maps(path: &str, dir: &str) {
    use arrow::array::builder::{
        BooleanBuilder, Float64Builder, Int8Builder, Int64Builder, MapBuilder, StringBuilder,
    };
    use arrow::array::{Int8Array, MapArray, StringArray};
    use arrow::datatypes::{Field, Schema};
    use arrow::record_batch::RecordBatch;
    use std::sync::Arc;
    let sets = ["span", "resource"];
    let mut names = Vec::new();
    for set in sets {
        names.push(format!("{set}_attributes"));
        names.push(format!("{set}_attribute_types"));
    }
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    let mask = ProjectionMask::columns(reader.parquet_schema(), names.iter().map(String::as_str));
    let stored: Vec<RecordBatch> = reader
        .with_projection(mask)
        .with_batch_size(8192)
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let rows: usize = stored.iter().map(RecordBatch::num_rows).sum();
    // With `TAIL_NUMBERS=1` every span also gets three long-tail numbers
    // (an int, a double, a bool: what instrumentation adds beyond the
    // semantic conventions), in both variants.
    let numbers = arg("TAIL_NUMBERS", 0) == 1;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // Each batch in both variants.
    let (stored, typed): (Vec<RecordBatch>, Vec<RecordBatch>) = stored
        .iter()
        .map(|b| {
            let mut plain: Vec<(String, ArrayRef)> = Vec::new();
            let mut columns: Vec<(String, ArrayRef)> = Vec::new();
            for set in sets {
                let text = b.column_by_name(&format!("{set}_attributes")).unwrap();
                let text = text.as_any().downcast_ref::<MapArray>().unwrap();
                let types = b.column_by_name(&format!("{set}_attribute_types")).unwrap();
                let types = types.as_any().downcast_ref::<MapArray>().unwrap();
                let mut s = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
                let mut i = MapBuilder::new(None, StringBuilder::new(), Int64Builder::new());
                let mut d = MapBuilder::new(None, StringBuilder::new(), Float64Builder::new());
                let mut t = MapBuilder::new(None, StringBuilder::new(), BooleanBuilder::new());
                let mut o = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
                let mut oc = MapBuilder::new(None, StringBuilder::new(), Int8Builder::new());
                let mut pt = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
                let mut pc = MapBuilder::new(None, StringBuilder::new(), Int8Builder::new());
                for row in 0..b.num_rows() {
                    let (keys, values) = {
                        let e = text.value(row);
                        (
                            e.column(0).as_string::<i32>().clone(),
                            e.column(1).as_string::<i32>().clone(),
                        )
                    };
                    let codes = types.value(row);
                    let code_keys: &StringArray = codes.column(0).as_string::<i32>();
                    let code_values: &Int8Array = codes.column(1).as_primitive();
                    let mut entries: Vec<(String, Option<i8>, Option<String>)> = (0..keys.len())
                        .map(|k| {
                            let key = keys.value(k);
                            let code = (0..code_keys.len())
                                .find(|&c| code_keys.value(c) == key)
                                .map(|c| code_values.value(c));
                            let value = values.is_valid(k).then(|| values.value(k).to_string());
                            (key.to_string(), code, value)
                        })
                        .collect();
                    if numbers && set == "span" {
                        let r = next();
                        entries.push(("app.items".into(), Some(2), Some((r % 100).to_string())));
                        entries.push((
                            "app.ratio".into(),
                            Some(3),
                            Some(((r >> 8) % 10_000) as f64 / 10_000.0).map(|v| v.to_string()),
                        ));
                        entries.push((
                            "app.cached".into(),
                            Some(1),
                            Some((r >> 40 & 1 == 1).to_string()),
                        ));
                    }
                    for (key, code, value) in &entries {
                        pt.keys().append_value(key);
                        pt.values().append_option(value.as_deref());
                        if let Some(code) = code {
                            pc.keys().append_value(key);
                            pc.values().append_value(*code);
                        }
                    }
                    pt.append(true).unwrap();
                    pc.append(true).unwrap();
                    for (key, code, value) in entries {
                        let (key, value) = (key.as_str(), value.as_deref());
                        match (code, value) {
                            (None, Some(v)) => {
                                s.keys().append_value(key);
                                s.values().append_value(v);
                            }
                            (Some(2), Some(v)) if v.parse::<i64>().is_ok() => {
                                i.keys().append_value(key);
                                i.values().append_value(v.parse().unwrap());
                            }
                            (Some(3), Some(v)) if v.parse::<f64>().is_ok() => {
                                d.keys().append_value(key);
                                d.values().append_value(v.parse().unwrap());
                            }
                            (Some(1), Some(v)) => {
                                t.keys().append_value(key);
                                t.values().append_value(v == "true");
                            }
                            (code, value) => {
                                o.keys().append_value(key);
                                o.values().append_option(value);
                                oc.keys().append_value(key);
                                oc.values().append_value(code.unwrap_or(0));
                            }
                        }
                    }
                    s.append(true).unwrap();
                    i.append(true).unwrap();
                    d.append(true).unwrap();
                    t.append(true).unwrap();
                    o.append(true).unwrap();
                    oc.append(true).unwrap();
                }
                plain.push((format!("{set}_attributes"), Arc::new(pt.finish())));
                plain.push((format!("{set}_attribute_types"), Arc::new(pc.finish())));
                columns.push((format!("{set}_str"), Arc::new(s.finish())));
                columns.push((format!("{set}_int"), Arc::new(i.finish())));
                columns.push((format!("{set}_double"), Arc::new(d.finish())));
                columns.push((format!("{set}_bool"), Arc::new(t.finish())));
                columns.push((format!("{set}_other"), Arc::new(o.finish())));
                columns.push((format!("{set}_other_types"), Arc::new(oc.finish())));
            }
            let batch = |columns: Vec<(String, ArrayRef)>| {
                let schema = Schema::new(
                    columns
                        .iter()
                        .map(|(n, a)| Field::new(n, a.data_type().clone(), true))
                        .collect::<Vec<_>>(),
                );
                RecordBatch::try_new(
                    Arc::new(schema),
                    columns.into_iter().map(|(_, a)| a).collect(),
                )
                .unwrap()
            };
            (batch(plain), batch(columns))
        })
        .unzip();
    let variants = [
        ("stored (text + type codes)", &stored),
        ("typed maps", &typed),
    ];
    for round in 0..3 {
        for (name, batches) in variants {
            let out = format!("{dir}/typed-{}.parquet", name.split(' ').next().unwrap());
            let t = Instant::now();
            let schema = batches[0].schema();
            let mut w = ArrowWriter::try_new(
                File::create(&out).unwrap(),
                schema.clone(),
                Some(props(&schema)),
            )
            .unwrap();
            for b in batches.iter() {
                w.write(b).unwrap();
            }
            w.close().unwrap();
            let write_ms = t.elapsed().as_secs_f64() * 1e3;
            let size = std::fs::metadata(&out).unwrap().len();
            let t = Instant::now();
            let read: usize = ParquetRecordBatchReaderBuilder::try_new(File::open(&out).unwrap())
                .unwrap()
                .with_batch_size(8192)
                .build()
                .unwrap()
                .map(|b| b.unwrap().num_rows())
                .sum();
            assert_eq!(read, rows);
            let read_ms = t.elapsed().as_secs_f64() * 1e3;
            println!(
                "round {round} {name:<28} {:.3} B/row  write {:.0} ms ({:.2} us/row)  read all {:.0} ms",
                size as f64 / rows as f64,
                write_ms,
                write_ms * 1e3 / rows as f64,
                read_ms
            );
        }
    }
}
