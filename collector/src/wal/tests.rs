use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};

use super::*;

fn batch(values: &[i64]) -> RecordBatch {
    RecordBatch::try_from_iter([(
        "v",
        Arc::new(Int64Array::from(values.to_vec())) as arrow::array::ArrayRef,
    )])
    .unwrap()
}

fn values(replayed: &[Replayed]) -> Vec<(u64, Vec<i64>)> {
    replayed
        .iter()
        .map(|r| {
            let a = r
                .batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            (r.seq, a.values().to_vec())
        })
        .collect()
}

fn open(dir: &Path, committed: u64, segment_bytes: u64) -> (Arc<Wal>, Vec<Replayed>) {
    Wal::open(
        dir,
        committed,
        segment_bytes,
        Arc::new(Metrics::default()),
        Default::default(),
    )
    .unwrap()
}

/// Appends one record per batch of `records` to a fresh log in `dir`, waits
/// for the fsync and closes it; returns the path of the last segment.
async fn write_closed(dir: &Path, records: &[&[i64]]) -> PathBuf {
    let (wal, _) = open(dir, 0, 1 << 20);
    let mut last = 0;
    for values in records {
        last = wal.append(&batch(values), |_| ()).unwrap().0;
    }
    wal.synced(last).await.unwrap();
    wal.close();
    drop(wal);
    list_segments(dir).unwrap().pop().unwrap().path
}

#[tokio::test]
async fn appended_records_replay_in_order_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, replayed) = open(dir.path(), 0, 1 << 20);
    assert!(replayed.is_empty());
    let (s1, ()) = wal.append(&batch(&[1, 2]), |_| ()).unwrap();
    let (s2, seen) = wal.append(&batch(&[3]), |seq| seq).unwrap();
    assert_eq!((s1, s2, seen), (1, 2, 2));
    wal.synced(s2).await.unwrap();
    wal.close();
    drop(wal);

    let (wal, replayed) = open(dir.path(), 0, 1 << 20);
    assert_eq!(values(&replayed), vec![(1, vec![1, 2]), (2, vec![3])]);
    // Numbering continues after the replayed records.
    let (s3, ()) = wal.append(&batch(&[4]), |_| ()).unwrap();
    assert_eq!(s3, 3);
}

#[tokio::test]
async fn committed_records_are_not_replayed_and_numbering_continues() {
    let dir = tempfile::tempdir().unwrap();
    write_closed(dir.path(), &[&[0], &[1], &[2]]).await;
    let (_, replayed) = open(dir.path(), 2, 1 << 20);
    assert_eq!(values(&replayed), vec![(3, vec![2])]);

    // With every segment gone, numbering starts after the committed number.
    let empty = tempfile::tempdir().unwrap();
    let (wal, replayed) = open(empty.path(), 41, 1 << 20);
    assert!(replayed.is_empty());
    assert_eq!(wal.append(&batch(&[0]), |_| ()).unwrap().0, 42);
}

#[tokio::test]
async fn torn_tail_is_truncated_and_earlier_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    let segment = write_closed(dir.path(), &[&[1], &[2]]).await;
    // Cut the last record in half, as a crash mid-write would.
    let len = fs::metadata(&segment).unwrap().len();
    let f = OpenOptions::new().write(true).open(&segment).unwrap();
    f.set_len(len - 10).unwrap();
    drop(f);

    let (_, replayed) = open(dir.path(), 0, 1 << 20);
    assert_eq!(values(&replayed), vec![(1, vec![1])]);
}

#[tokio::test]
async fn flipped_byte_fails_the_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let segment = write_closed(dir.path(), &[&[1], &[2]]).await;
    let mut bytes = fs::read(&segment).unwrap();
    let last = bytes.len() - 20;
    bytes[last] ^= 0xff;
    fs::write(&segment, bytes).unwrap();
    let (_, replayed) = open(dir.path(), 0, 1 << 20);
    assert_eq!(values(&replayed), vec![(1, vec![1])]);
}

#[tokio::test]
async fn release_deletes_only_fully_committed_segments() {
    let dir = tempfile::tempdir().unwrap();
    // Tiny segments: every record after the first starts a new one.
    let (wal, _) = open(dir.path(), 0, 1);
    for i in 1..=4 {
        wal.append(&batch(&[i]), |_| ()).unwrap();
    }
    wal.synced(4).await.unwrap();
    wal.release(2).unwrap();
    wal.close();
    drop(wal);
    let (_, replayed) = open(dir.path(), 0, 1);
    assert_eq!(values(&replayed), vec![(3, vec![3]), (4, vec![4])]);

    // Releasing everything leaves nothing to replay.
    let (wal, _) = open(dir.path(), 0, 1 << 20);
    wal.release(4).unwrap();
    wal.close();
    drop(wal);
    let (_, replayed) = open(dir.path(), 0, 1 << 20);
    assert!(replayed.is_empty());
}

#[tokio::test]
async fn reopening_after_a_full_release_reuses_the_empty_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path(), 0, 1 << 20);
    wal.append(&batch(&[1]), |_| ()).unwrap();
    wal.synced(1).await.unwrap();
    // Everything committed: release rotates to an empty segment named 2.
    wal.release(1).unwrap();
    wal.close();
    drop(wal);
    let (wal, replayed) = open(dir.path(), 1, 1 << 20);
    assert!(replayed.is_empty());
    wal.append(&batch(&[2]), |_| ()).unwrap();
    wal.synced(2).await.unwrap();
    // Releasing must neither fail nor delete the segment being written.
    wal.release(1).unwrap();
    wal.close();
    drop(wal);
    let (_, replayed) = open(dir.path(), 1, 1 << 20);
    assert_eq!(values(&replayed), vec![(2, vec![2])]);
}

/// Spans whose dedicated columns are partly set: `http.route` on every
/// span of the first record, on none of the second.
fn spans(with_route: bool, count: usize) -> RecordBatch {
    use tracelake_schema::opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use tracelake_schema::opentelemetry_proto::tonic::trace::v1::Span;
    let spans = (0..count)
        .map(|i| Span {
            trace_id: vec![7; 16],
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: format!("op {i}"),
            start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
            end_time_unix_nano: 1_700_000_000_000_001_000 + i as u64,
            attributes: with_route
                .then(|| KeyValue {
                    key: "http.route".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(format!("/r/{i}"))),
                    }),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        })
        .collect();
    crate::test_spans::batch(spans)
}

#[tokio::test]
async fn columns_null_in_every_row_are_left_out_and_replay_as_nulls() {
    let layout = tracelake_schema::layout::Layout::standard();
    let with_route = spans(true, 300);
    let without = spans(false, 200);
    let null_columns = |b: &RecordBatch| {
        b.columns()
            .iter()
            .filter(|c| c.null_count() == c.len())
            .count()
    };
    assert!(null_columns(&without) > null_columns(&with_route));
    assert!(
        null_columns(&with_route) > 20,
        "most dedicated columns are empty"
    );

    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let (wal, _) = Wal::open(
        dir.path(),
        0,
        1 << 30,
        Arc::clone(&metrics),
        Default::default(),
    )
    .unwrap();
    // Each record has the columns it sets: http_route in the first only.
    wal.append(&with_route, |_| ()).unwrap();
    let (last, ()) = wal.append(&without, |_| ()).unwrap();
    wal.synced(last).await.unwrap();
    wal.close();
    drop(wal);

    // Every column encoded would take far more.
    let mut full = Vec::new();
    for b in [&with_route, &without] {
        let mut w = StreamWriter::try_new(&mut full, &b.schema()).unwrap();
        w.write(b).unwrap();
        w.finish().unwrap();
    }
    let written = metrics.wal_bytes.get();
    assert!(
        written * 2 < full.len() as u64,
        "{written} bytes written, {} with every column",
        full.len()
    );

    let (_, replayed) = open(dir.path(), 0, 1 << 20);
    assert_eq!(replayed.len(), 2);
    assert!(replayed[0].batch.column_by_name("http_route").is_some());
    assert!(replayed[1].batch.column_by_name("http_route").is_none());
    for (record, original) in replayed.iter().zip([&with_route, &without]) {
        let conformed =
            tracelake_schema::layout::Layout::conform(&record.batch, layout.schema()).unwrap();
        assert_eq!(&conformed, original);
    }
}
