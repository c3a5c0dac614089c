//! The flush's encoding cost: the workload's spans decoded into Arrow
//! batches as the server's buffer holds them, then written as one
//! partition's Parquet file by the server's own writer
//! (`tracelake_collector::writer::write_partition`: sort, row groups,
//! dictionaries, statistics, zstd), in memory — no storage, no commit. It
//! reports the time per span of the flush, elapsed and on the CPU (the
//! writer encodes a row group's columns on every core), and the bytes per
//! span of a flushed (not yet compacted) file.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{RecordBatch, new_null_array};
use tracelake_protocols::{Sink, otlp_proto};
use tracelake_schema::otlp::{Acceptance, SpansBuilder};

use crate::driver::{Config, pool};

/// One round's figures.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    pub spans: usize,
    /// Elapsed.
    pub seconds: f64,
    /// On the CPU, every thread of the process.
    pub cpu_seconds: f64,
    pub bytes: usize,
}

/// This process's CPU time so far, every thread's, user and system:
/// `/proc/self/stat`'s utime and stime, which count in USER_HZ (100 a
/// second on Linux); 0 without procfs.
fn cpu_seconds() -> f64 {
    let ticks = || -> Option<u64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The fields after the command name, from the state (field 3) on.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    };
    ticks().unwrap_or(0) as f64 / 100.0
}

/// The pool's spans as the buffer holds them: a batch per request.
pub fn batches(config: &Config) -> Vec<RecordBatch> {
    pool(config)
        .0
        .into_iter()
        .map(|item| {
            let mut builder = SpansBuilder::with_capacity(item.spans as usize);
            let mut sink = Sink::new(&mut builder, Acceptance::ANY_TIME);
            otlp_proto::decode_into(&item.body, &mut sink).expect("the workload decodes");
            builder.finish()
        })
        .collect()
}

/// `batches` with the columns named in `columns` null in every row (an
/// error names a column the spans table does not have or that cannot
/// hold nulls).
pub fn with_nulls(
    batches: Vec<RecordBatch>,
    columns: &[String],
) -> anyhow::Result<Vec<RecordBatch>> {
    let Some(schema) = batches.first().map(RecordBatch::schema) else {
        return Ok(batches);
    };
    debug_assert!(batches.iter().all(|b| b.schema() == schema));
    let mut nulled = Vec::with_capacity(columns.len());
    for name in columns {
        let i = schema.index_of(name).map_err(|_| {
            anyhow::anyhow!("--null-columns: the spans table has no column {name:?}")
        })?;
        anyhow::ensure!(
            schema.field(i).is_nullable(),
            "--null-columns: column {name:?} cannot hold nulls"
        );
        nulled.push(i);
    }
    if nulled.is_empty() {
        return Ok(batches);
    }
    batches
        .into_iter()
        .map(|batch| {
            let columns = (0..batch.num_columns())
                .map(|i| {
                    if nulled.contains(&i) {
                        new_null_array(schema.field(i).data_type(), batch.num_rows())
                    } else {
                        Arc::clone(batch.column(i))
                    }
                })
                .collect();
            Ok(RecordBatch::try_new(batch.schema(), columns)?)
        })
        .collect()
}

/// Writes `batches` as one file `rounds` times.
pub fn run(batches: &[RecordBatch], rounds: usize) -> Vec<Round> {
    (0..rounds.max(1))
        .map(|_| {
            let (started, cpu) = (Instant::now(), cpu_seconds());
            let file = tracelake_collector::writer::write_partition((20_000, 0), batches)
                .expect("the workload encodes");
            Round {
                spans: file.rows,
                seconds: started.elapsed().as_secs_f64(),
                cpu_seconds: cpu_seconds() - cpu,
                bytes: file.bytes.len(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_span_is_written_each_round() {
        let config = Config {
            spans: Some(2_000),
            seed: 3,
            pool_bytes: usize::MAX,
            ..Config::new("")
        };
        let batches = batches(&config);
        let spans: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let rounds = run(&batches, 2);
        assert_eq!(rounds.len(), 2);
        for r in rounds {
            assert_eq!(r.spans, spans);
            assert!(r.bytes > 0 && r.seconds > 0.0 && r.cpu_seconds >= 0.0);
        }
    }

    #[test]
    fn named_columns_become_null_and_an_unknown_name_is_an_error() {
        let config = Config {
            spans: Some(500),
            seed: 3,
            pool_bytes: usize::MAX,
            ..Config::new("")
        };
        let original = batches(&config);
        let name = tracelake_schema::spans::RESOURCE_ATTRIBUTES;
        let column = original[0].schema().index_of(name).unwrap();
        assert_eq!(original[0].column(column).null_count(), 0);
        let nulled = with_nulls(original.clone(), &[name.to_string()]).unwrap();
        assert_eq!(nulled.len(), original.len());
        for (before, after) in original.iter().zip(&nulled) {
            assert_eq!(after.num_rows(), before.num_rows());
            assert_eq!(after.column(column).null_count(), after.num_rows());
            // The other columns are the same arrays.
            for i in (0..before.num_columns()).filter(|&i| i != column) {
                assert!(Arc::ptr_eq(after.column(i), before.column(i)), "column {i}");
            }
        }
        let error = with_nulls(original.clone(), &["no_such_column".to_string()]).unwrap_err();
        assert!(error.to_string().contains("no_such_column"), "{error}");
        let trace_id = tracelake_schema::spans::TRACE_ID.to_string();
        let error = with_nulls(original, &[trace_id]).unwrap_err();
        assert!(error.to_string().contains("cannot hold nulls"), "{error}");
    }
}
