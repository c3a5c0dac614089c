//! In-memory partition buffers: accepted rows wait here, per `(date, hour)`
//! partition, until a flush writes them to the table.
//!
//! Queries see the buffer through [`Buffer::snapshot`]: the buffered batches
//! in two groups, each with the highest WAL sequence number it holds. A
//! flush moves rows from `active` to `flushing` (still visible) and
//! [`Buffer::committed`] drops them once committed. A query takes the
//! snapshot first and reads the table's latest version after it; a group
//! whose sequence number the table's watermark for this node has reached
//! is in the table and is left out of the snapshot's rows, so a query never
//! sees a row twice or not at all, whichever commits land in between.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{Date32Type, Int32Type};
use parking_lot::RwLock;
use tracelake_schema::spans::{DATE, HOUR};

/// `(days since the epoch, hour)` of a partition.
pub type PartitionKey = (i32, i32);

#[derive(Default)]
struct State {
    active: BTreeMap<PartitionKey, Vec<RecordBatch>>,
    active_rows: usize,
    active_bytes: usize,
    /// Highest WAL sequence number inserted.
    max_seq: u64,
    /// When the oldest row of `active` arrived.
    oldest: Option<Instant>,
    flushing: BTreeMap<PartitionKey, Vec<RecordBatch>>,
    /// Highest WAL sequence number in `flushing`.
    flushing_upto: u64,
    /// `oldest` of the rows being flushed, restored if the flush fails.
    flushing_oldest: Option<Instant>,
    flushing_rows: usize,
    flushing_bytes: usize,
    /// Table version the buffered rows are not yet part of.
    table_version: Option<i64>,
}

/// Buffered rows as queries see them: groups of batches, each with the
/// highest WAL sequence number among its rows (every row of a group is in
/// the table once this node's watermark there reaches it).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub groups: Vec<(u64, Vec<RecordBatch>)>,
}

impl Snapshot {
    /// Whether no row is buffered.
    pub fn is_empty(&self) -> bool {
        self.groups.iter().all(|(_, batches)| batches.is_empty())
    }
}

/// Rows taken for one flush.
pub struct FlushSet {
    pub partitions: BTreeMap<PartitionKey, Vec<RecordBatch>>,
    /// Every WAL record up to this sequence number is in `partitions` or
    /// already in the table.
    pub upto_seq: u64,
    pub rows: usize,
}

pub struct Buffer {
    state: RwLock<State>,
    /// This tenant's buffer gauges.
    gauges: crate::metrics::TenantGauges,
}

impl Buffer {
    pub fn new(table_version: Option<i64>, gauges: crate::metrics::TenantGauges) -> Self {
        Self {
            state: RwLock::new(State {
                table_version,
                ..State::default()
            }),
            gauges,
        }
    }

    /// Adds the rows of WAL record `seq`, split by partition.
    pub fn insert(&self, seq: u64, batch: &RecordBatch) {
        if batch.num_rows() == 0 {
            return;
        }
        let parts = split_by_partition(batch);
        let mut s = self.state.write();
        for (key, part) in parts {
            s.active_rows += part.num_rows();
            s.active_bytes += part.get_array_memory_size();
            s.active.entry(key).or_default().push(part);
        }
        s.max_seq = s.max_seq.max(seq);
        s.oldest.get_or_insert_with(Instant::now);
        self.update_gauges(&s);
    }

    fn update_gauges(&self, s: &State) {
        self.gauges
            .buffer_rows
            .set((s.active_rows + s.flushing_rows) as i64);
        self.gauges
            .buffer_bytes
            .set((s.active_bytes + s.flushing_bytes) as i64);
    }

    /// Arrow memory held, flushing rows included.
    pub fn bytes(&self) -> usize {
        let s = self.state.read();
        s.active_bytes + s.flushing_bytes
    }

    /// Whether the active rows are due: the oldest is `max_age` old or they
    /// hold `max_bytes`.
    pub fn due(&self, max_age: Duration, max_bytes: usize) -> bool {
        let s = self.state.read();
        s.active_bytes >= max_bytes || s.oldest.is_some_and(|t| t.elapsed() >= max_age)
    }

    /// Moves the active rows to `flushing` and returns them; `None` when
    /// there is nothing to flush or a flush is already under way.
    pub fn take(&self) -> Option<FlushSet> {
        let mut s = self.state.write();
        if s.active.is_empty() || !s.flushing.is_empty() {
            return None;
        }
        let partitions = std::mem::take(&mut s.active);
        s.flushing = partitions.clone();
        s.flushing_upto = s.max_seq;
        s.flushing_rows = std::mem::take(&mut s.active_rows);
        s.flushing_bytes = std::mem::take(&mut s.active_bytes);
        s.flushing_oldest = s.oldest.take();
        Some(FlushSet {
            partitions,
            upto_seq: s.max_seq,
            rows: s.flushing_rows,
        })
    }

    /// Drops every buffered row (they are in the table already, committed
    /// by another writer of the same rows).
    pub fn clear(&self) {
        let mut s = self.state.write();
        let table_version = s.table_version;
        *s = State {
            table_version,
            ..State::default()
        };
        self.update_gauges(&s);
    }

    /// The flushing rows are in table version `version`: drop them.
    pub fn committed(&self, version: i64) {
        let mut s = self.state.write();
        s.flushing.clear();
        s.flushing_oldest = None;
        s.flushing_rows = 0;
        s.flushing_bytes = 0;
        s.table_version = Some(version);
        self.update_gauges(&s);
    }

    /// The flush failed: the flushing rows become active again, to be retried.
    pub fn restore(&self) {
        let mut s = self.state.write();
        let flushing = std::mem::take(&mut s.flushing);
        for (key, mut batches) in flushing {
            let active = s.active.entry(key).or_default();
            batches.append(active);
            *active = batches;
        }
        s.active_rows += std::mem::take(&mut s.flushing_rows);
        s.active_bytes += std::mem::take(&mut s.flushing_bytes);
        // The restored rows keep their age, so they are due again at once.
        s.oldest = s.flushing_oldest.take().or(s.oldest);
    }

    /// Every buffered batch, in the flushing and the active group.
    pub fn snapshot(&self) -> Snapshot {
        let s = self.state.read();
        let group = |upto: u64, batches: &BTreeMap<PartitionKey, Vec<RecordBatch>>| {
            (
                upto,
                batches.values().flatten().cloned().collect::<Vec<_>>(),
            )
        };
        let mut groups = Vec::with_capacity(2);
        if !s.flushing.is_empty() {
            groups.push(group(s.flushing_upto, &s.flushing));
        }
        if !s.active.is_empty() {
            groups.push(group(s.max_seq, &s.active));
        }
        Snapshot { groups }
    }

    /// The table version of the last commit seen (`None`: no table yet).
    pub fn table_version(&self) -> Option<i64> {
        self.state.read().table_version
    }
}

/// Splits a batch in the spans schema into one batch per partition.
fn split_by_partition(batch: &RecordBatch) -> Vec<(PartitionKey, RecordBatch)> {
    let dates = batch
        .column_by_name(DATE)
        .expect("spans batches have a date column")
        .as_primitive::<Date32Type>();
    let hours = batch
        .column_by_name(HOUR)
        .expect("spans batches have an hour column")
        .as_primitive::<Int32Type>();
    let key = |i: usize| (dates.value(i), hours.value(i));
    let first = key(0);
    if (1..batch.num_rows()).all(|i| key(i) == first) {
        return vec![(first, batch.clone())];
    }
    let mut rows: BTreeMap<PartitionKey, Vec<u32>> = BTreeMap::new();
    for i in 0..batch.num_rows() {
        rows.entry(key(i)).or_default().push(i as u32);
    }
    rows.into_iter()
        .map(|(key, indices)| {
            let indices = UInt32Array::from(indices);
            let part = take_record_batch(batch, &indices).expect("indices are in bounds");
            (key, part)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use tracelake_schema::opentelemetry_proto::tonic::trace::v1::Span;

    use super::*;

    const HOUR_NS: u64 = 3_600_000_000_000;

    fn spans_at(starts: &[u64]) -> RecordBatch {
        let spans = starts
            .iter()
            .enumerate()
            .map(|(i, &start)| Span {
                trace_id: vec![1; 16],
                span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                start_time_unix_nano: start,
                end_time_unix_nano: start + 1,
                ..Default::default()
            })
            .collect();
        crate::test_spans::batch(spans)
    }

    #[test]
    fn rows_are_split_by_hour_and_stay_visible_while_flushing() {
        let buffer = Buffer::new(Some(3), Default::default());
        buffer.insert(1, &spans_at(&[HOUR_NS, HOUR_NS + 5, 2 * HOUR_NS]));
        buffer.insert(2, &spans_at(&[HOUR_NS + 9]));
        let flush = buffer.take().unwrap();
        assert_eq!(flush.upto_seq, 2);
        assert_eq!(flush.rows, 4);
        let keys: Vec<_> = flush.partitions.keys().copied().collect();
        assert_eq!(keys, vec![(0, 1), (0, 2)]);
        assert_eq!(
            flush.partitions[&(0, 1)]
                .iter()
                .map(|b| b.num_rows())
                .sum::<usize>(),
            3
        );
        // Flushing rows are still visible, in a group of their own: in the
        // table once the watermark reaches 2; the newer row once it reaches 3.
        buffer.insert(3, &spans_at(&[HOUR_NS]));
        let rows = |snap: &Snapshot| -> Vec<(u64, usize)> {
            snap.groups
                .iter()
                .map(|(upto, b)| (*upto, b.iter().map(|b| b.num_rows()).sum()))
                .collect()
        };
        assert_eq!(rows(&buffer.snapshot()), [(2, 4), (3, 1)]);
        assert_eq!(buffer.table_version(), Some(3));
        // A second flush waits for the first.
        assert!(buffer.take().is_none());
        buffer.committed(4);
        assert_eq!(rows(&buffer.snapshot()), [(3, 1)]);
        assert_eq!(buffer.table_version(), Some(4));
    }

    #[test]
    fn failed_flush_restores_rows_in_order() {
        let buffer = Buffer::new(None, Default::default());
        buffer.insert(1, &spans_at(&[HOUR_NS]));
        std::thread::sleep(Duration::from_millis(200));
        let _ = buffer.take().unwrap();
        // Fresh rows arrive while the flush runs, then the flush fails.
        buffer.insert(2, &spans_at(&[HOUR_NS + 1, HOUR_NS + 2]));
        buffer.restore();
        // Restored rows keep the age they had when the flush took them: the
        // buffer is due by their age, not by the fresh rows' (~0 ms).
        assert!(buffer.due(Duration::from_millis(150), usize::MAX));
        let flush = buffer.take().unwrap();
        assert_eq!(flush.rows, 3);
        assert_eq!(flush.upto_seq, 2);
        let sizes: Vec<_> = flush.partitions[&(0, 1)]
            .iter()
            .map(|b| b.num_rows())
            .collect();
        assert_eq!(sizes, vec![1, 2]);
    }
}
