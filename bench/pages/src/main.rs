//! Rewrites a tracelake data file (`IN`, e.g. a compacted hour of a
//! `tracelake-bench run --data-dir D` store) as `OUT` with the compactor's
//! writer settings (a copy of `collector::writer::writer_properties` for
//! compacted files: 128k-row row groups, zstd 3, 8k-row pages, page
//! statistics on scalar columns, no dictionary on the unique columns),
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
//!   DELTA_BYTE_ARRAY, `bss` BYTE_STREAM_SPLIT), its dictionary off.
//!
//! Then it reads 40 trace ids spread over `OUT` five times each, the way
//! `SpansTable::trace_spans` does (row groups and pages by `trace_key`, a
//! row filter on `trace_id`, no column null in every row group read), and
//! prints the size per span and the lookups' median. With a third argument
//! `noread` it only times the lookups of an existing `OUT`.
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
    for f in schema.fields() {
        if !f.data_type().is_nested() {
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
