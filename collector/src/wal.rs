//! Write-ahead log: every accepted batch is appended here and fsynced before
//! the client is acknowledged.
//!
//! # Layout
//! A directory of segment files named `{first_seq:020}.wal`. A segment starts
//! with the 8-byte magic `TLWAL001`, followed by records:
//!
//! ```text
//! u32 LE  payload length
//! u32 LE  CRC-32 of (seq bytes ++ payload)
//! u64 LE  seq: record sequence number, strictly increasing across segments
//! [len]   payload: one Arrow IPC stream (schema, one batch, end marker)
//! ```
//!
//! # Durability and group commit
//! Appends are written under a mutex in sequence order; a dedicated thread
//! calls `fdatasync` for everything written so far and publishes the synced
//! sequence number, so one fsync covers all requests that arrived meanwhile.
//! Callers wait for `synced >= their seq` before acknowledging.
//!
//! # Failures (a full disk)
//! A write that fails (ENOSPC) is cut off again (the segment is truncated
//! back to its last whole record) and the append fails: nothing of it is
//! buffered or acknowledged. An fsync that fails leaves the file's state
//! unknown, so every record written since the last good fsync is reported
//! as failed to its waiters (never acknowledged; it may still reach the
//! table through the buffer, which at-least-once delivery allows) and the
//! next append starts a fresh segment, so that no later, acknowledged record
//! sits behind a region that replay could not read. Appends fail while no
//! segment can be created; once space returns they succeed again.
//!
//! # Recovery
//! Replay reads segments in order and yields `(seq, batch)`. A record that is
//! truncated or fails its checksum ends its segment: at the tail of the last
//! segment this is a write interrupted by a crash (never acknowledged, because
//! its fsync never returned) and the file is truncated there; elsewhere it is
//! reported as corruption and the rest of that segment is skipped.
//!
//! # Release
//! Rows are committed to the table with the highest sequence number they
//! contain (a Delta `txn` action); [`Wal::release`] then deletes the segments
//! whose records are all at or below it. Replay skips records at or below the
//! committed number, so a crash between commit and release duplicates nothing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use crate::metrics::Metrics;

const MAGIC: &[u8; 8] = b"TLWAL001";
const HEADER_LEN: usize = 16;

/// Error of the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("wal i/o on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("wal encoding: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("wal is closed")]
    Closed,
    #[error("wal record {0} could not be made durable (fsync failed)")]
    NotDurable(u64),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error from a [`crate::faults`] point.
    pub(crate) fn from_fault(source: io::Error) -> Self {
        Self::Io {
            path: PathBuf::from("<fault point>"),
            source,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

struct Segment {
    first_seq: u64,
    path: PathBuf,
}

struct Writer {
    file: Arc<File>,
    size: u64,
    /// Closed segments (oldest first) and the open one (last).
    segments: Vec<Segment>,
    next_seq: u64,
    /// Highest sequence number written (not necessarily synced).
    written: u64,
    /// Highest sequence number known synced or failed.
    settled: u64,
    /// The open segment may hold a region replay cannot read: the next
    /// append starts a new one.
    broken: bool,
    closed: bool,
}

/// What waiters learn: everything up to `synced` is durable, except the
/// ranges whose fsync failed.
#[derive(Debug, Default)]
struct Durability {
    synced: u64,
    failed: std::collections::VecDeque<(u64, u64)>,
}

impl Durability {
    fn failed(&self, seq: u64) -> bool {
        self.failed.iter().any(|&(lo, hi)| (lo..=hi).contains(&seq))
    }
}

/// The write-ahead log. Cheap to share behind an `Arc`.
pub struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    writer: Mutex<Writer>,
    /// Wakes the sync thread when something was written.
    dirty: Condvar,
    durability: watch::Sender<Durability>,
    metrics: Arc<Metrics>,
    /// This tenant's WAL gauge.
    gauges: crate::metrics::TenantGauges,
}

/// A replayed record.
pub struct Replayed {
    pub seq: u64,
    pub batch: RecordBatch,
}

impl Wal {
    /// Opens the log in `dir`, replaying every record with a sequence number
    /// above `committed` (those at or below it are already in the table).
    /// New records are numbered after both the replayed ones and `committed`.
    pub fn open(
        dir: &Path,
        committed: u64,
        segment_bytes: u64,
        metrics: Arc<Metrics>,
        gauges: crate::metrics::TenantGauges,
    ) -> Result<(Arc<Self>, Vec<Replayed>)> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut segments = list_segments(dir)?;
        let mut replayed = Vec::new();
        let mut last_seq = committed;
        let count = segments.len();
        for (i, segment) in segments.iter().enumerate() {
            let is_last = i + 1 == count;
            last_seq = last_seq.max(replay_segment(segment, is_last, committed, &mut replayed)?);
        }
        let next_seq = last_seq + 1;
        // Always append to a fresh segment: the old tail may end mid-record.
        // A segment already named `next_seq` holds no records (any record in
        // it would be numbered at least that): it is reused, not listed twice.
        segments.retain(|s| s.first_seq != next_seq);
        let path = segment_path(dir, next_seq);
        let file = create_segment(dir, &path)?;
        segments.push(Segment {
            first_seq: next_seq,
            path,
        });
        let (durability, _) = watch::channel(Durability {
            synced: last_seq,
            failed: Default::default(),
        });
        let wal = Arc::new(Self {
            dir: dir.to_path_buf(),
            segment_bytes,
            writer: Mutex::new(Writer {
                file: Arc::new(file),
                size: MAGIC.len() as u64,
                segments,
                next_seq,
                written: last_seq,
                settled: last_seq,
                broken: false,
                closed: false,
            }),
            dirty: Condvar::new(),
            durability,
            metrics,
            gauges,
        });
        let sync = Arc::clone(&wal);
        std::thread::Builder::new()
            .name("wal-sync".into())
            .spawn(move || sync.sync_loop())
            .map_err(io_err(dir))?;
        Ok((wal, replayed))
    }

    /// Encodes `batch` as one record and writes it (not yet synced). `then`
    /// runs under the append lock with the record's sequence number, so
    /// whatever it does happens in sequence order.
    pub fn append<T>(&self, batch: &RecordBatch, then: impl FnOnce(u64) -> T) -> Result<(u64, T)> {
        let payload = encode(batch)?;
        let mut w = self.writer.lock();
        if w.closed {
            return Err(Error::Closed);
        }
        if w.broken {
            self.start_segment(&mut w)?;
        } else if w.size >= self.segment_bytes && w.size > MAGIC.len() as u64 {
            self.rotate(&mut w)?;
        }
        let seq = w.next_seq;
        let mut record = Vec::with_capacity(HEADER_LEN + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&checksum(seq, &payload).to_le_bytes());
        record.extend_from_slice(&seq.to_le_bytes());
        record.extend_from_slice(&payload);
        if let Err(error) = write_record(&w.file, &record) {
            let path = w.segments.last().expect("an open segment").path.clone();
            self.undo_write(&mut w, &path);
            return Err(Error::Io {
                path,
                source: error,
            });
        }
        w.size += record.len() as u64;
        w.next_seq += 1;
        w.written = seq;
        self.metrics.wal_bytes.inc_by(record.len() as u64);
        let out = then(seq);
        drop(w);
        self.dirty.notify_one();
        Ok((seq, out))
    }

    /// Waits until record `seq` is on disk; fails if its fsync failed.
    pub async fn synced(&self, seq: u64) -> Result<()> {
        let mut rx = self.durability.subscribe();
        let state = rx
            .wait_for(|d| d.synced >= seq || d.failed(seq))
            .await
            .map_err(|_| Error::Closed)?;
        if state.failed(seq) {
            return Err(Error::NotDurable(seq));
        }
        Ok(())
    }

    fn sync_loop(&self) {
        loop {
            let (target, file, path) = {
                let mut w = self.writer.lock();
                while w.written <= w.settled && !w.closed {
                    self.dirty.wait_for(&mut w, Duration::from_millis(100));
                }
                if w.closed && w.written <= w.settled {
                    return;
                }
                let path = w.segments.last().expect("an open segment").path.clone();
                (w.written, Arc::clone(&w.file), path)
            };
            let started = Instant::now();
            let synced = crate::faults::hit("wal.fsync").and_then(|()| file.sync_data());
            let mut w = self.writer.lock();
            match synced {
                Ok(()) => {
                    self.metrics
                        .wal_fsync_seconds
                        .observe(started.elapsed().as_secs_f64());
                    if target > w.settled {
                        w.settled = target;
                    }
                    self.durability
                        .send_modify(|d| d.synced = d.synced.max(target));
                }
                Err(error) => {
                    tracing::error!(%error, path = %path.display(), "wal fsync failed");
                    self.fail_unsynced(&mut w);
                    drop(w);
                    // Do not spin on a failing disk.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Every record written but not yet synced fails, and the next append
    /// starts a new segment (see the module docs).
    fn fail_unsynced(&self, w: &mut Writer) {
        w.broken = true;
        if w.written > w.settled {
            let range = (w.settled + 1, w.written);
            w.settled = w.written;
            tracing::error!(
                first = range.0,
                last = range.1,
                "wal records could not be made durable; their requests are refused"
            );
            self.durability.send_modify(|d| {
                if d.failed.len() >= 1024 {
                    d.failed.pop_front();
                }
                d.failed.push_back(range);
            });
        }
    }

    /// After a failed write: cut the segment back to its last whole record,
    /// or, if that fails too, give it up.
    fn undo_write(&self, w: &mut Writer, path: &Path) {
        use std::io::{Seek as _, SeekFrom};
        let size = w.size;
        let undone = w
            .file
            .set_len(size)
            .and_then(|()| (&*w.file).seek(SeekFrom::Start(size)).map(|_| ()));
        if let Err(error) = undone {
            tracing::error!(%error, path = %path.display(), "cannot cut a failed wal write; starting a new segment");
            self.fail_unsynced(w);
        }
    }

    fn rotate(&self, w: &mut Writer) -> Result<()> {
        let old = w.segments.last().expect("an open segment").path.clone();
        // Records in the old segment must be durable before newer ones are
        // reported synced through the new file.
        if let Err(error) = crate::faults::hit("wal.fsync").and_then(|()| w.file.sync_data()) {
            self.fail_unsynced(w);
            return Err(io_err(&old)(error));
        }
        self.start_segment(w)
    }

    /// Opens a new segment for the next record (the old one is kept until
    /// its records are committed).
    fn start_segment(&self, w: &mut Writer) -> Result<()> {
        let path = segment_path(&self.dir, w.next_seq);
        w.file = Arc::new(create_segment(&self.dir, &path)?);
        w.size = MAGIC.len() as u64;
        w.broken = false;
        // A segment of this name holds no record yet (it was created for
        // the record that failed): it is the same file, listed once.
        if w.segments.last().is_some_and(|s| s.first_seq == w.next_seq) {
            w.segments.pop();
        }
        w.segments.push(Segment {
            first_seq: w.next_seq,
            path,
        });
        Ok(())
    }

    /// Deletes the segments whose records all have `seq <= committed`.
    pub fn release(&self, committed: u64) -> Result<()> {
        let mut w = self.writer.lock();
        if w.written <= committed && w.size > MAGIC.len() as u64 {
            // Everything written is committed: start a new segment so the
            // current one can go too.
            self.rotate(&mut w)?;
        }
        let mut released = 0;
        while w.segments.len() > 1 && w.segments[1].first_seq <= committed + 1 {
            let segment = w.segments.remove(0);
            fs::remove_file(&segment.path).map_err(io_err(&segment.path))?;
            released += 1;
        }
        if released > 0 {
            tracing::debug!(released, committed, "released wal segments");
        }
        self.gauges.wal_segments.set(w.segments.len() as i64);
        Ok(())
    }

    /// Stops accepting appends and ends the sync thread once all is synced.
    pub fn close(&self) {
        self.writer.lock().closed = true;
        self.dirty.notify_one();
    }
}

fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// The record of `batch`: an Arrow IPC stream (schema, batch, end) that
/// leaves out the columns null in every row. Dedicated attribute columns
/// often are (a request's spans set few of them), and IPC writes the
/// offsets, views or values of every row even so (the benchmark's spans: 1,037 bytes a span with
/// them, 934 without; spans with few attributes: less than half). Replay
/// puts them back as nulls: records are conformed to the table's layout,
/// as those of an older layout are.
fn encode(batch: &RecordBatch) -> Result<Vec<u8>> {
    let kept: Vec<usize> = (0..batch.num_columns())
        .filter(|&i| {
            let c = batch.column(i);
            c.is_empty() || c.null_count() < c.len()
        })
        .collect();
    let projected;
    let batch = if kept.len() < batch.num_columns() {
        projected = batch.project(&kept)?;
        &projected
    } else {
        batch
    };
    let mut out = Vec::with_capacity(batch.get_array_memory_size() / 2 + 4096);
    let mut writer = StreamWriter::try_new(&mut out, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.wal"))
}

/// Writes one record; the `wal.write` fault point writes half of it and
/// fails, as a disk filling up mid-record does.
fn write_record(file: &File, record: &[u8]) -> io::Result<()> {
    let mut file = file;
    if let Err(error) = crate::faults::hit("wal.write") {
        file.write_all(&record[..record.len() / 2])?;
        return Err(error);
    }
    file.write_all(record)
}

fn create_segment(dir: &Path, path: &Path) -> Result<File> {
    crate::faults::hit("wal.create").map_err(io_err(path))?;
    // A file of this name can only be an empty segment left by a crash: any
    // record in it would have a sequence number at or above its name.
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    file.write_all(MAGIC).map_err(io_err(path))?;
    file.sync_data().map_err(io_err(path))?;
    // Make the new directory entry durable.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok(file)
}

fn list_segments(dir: &Path) -> Result<Vec<Segment>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        let first_seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first_seq) = first_seq {
            segments.push(Segment { first_seq, path });
        }
    }
    segments.sort_by_key(|s| s.first_seq);
    Ok(segments)
}

/// Replays one segment into `out` (records above `committed` only) and
/// returns the highest sequence number seen.
fn replay_segment(
    segment: &Segment,
    is_last: bool,
    committed: u64,
    out: &mut Vec<Replayed>,
) -> Result<u64> {
    let path = &segment.path;
    let file = File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    let mut offset = 0u64;
    let mut last_seq = 0;
    let mut problem = None;
    if reader.read_exact(&mut magic).is_err() || &magic != MAGIC {
        problem = Some("missing segment header");
    } else {
        offset = MAGIC.len() as u64;
        let mut header = [0u8; HEADER_LEN];
        while offset < len {
            if reader.read_exact(&mut header).is_err() {
                problem = Some("truncated record header");
                break;
            }
            let payload_len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as u64;
            let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
            let seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
            if offset + HEADER_LEN as u64 + payload_len > len {
                problem = Some("truncated record");
                break;
            }
            let mut payload = vec![0u8; payload_len as usize];
            if reader.read_exact(&mut payload).is_err() {
                problem = Some("truncated record");
                break;
            }
            if checksum(seq, &payload) != crc {
                problem = Some("checksum mismatch");
                break;
            }
            if seq > committed {
                match decode(&payload) {
                    Ok(batch) => out.push(Replayed { seq, batch }),
                    Err(error) => {
                        tracing::error!(%error, seq, path = %path.display(), "undecodable wal record skipped");
                    }
                }
            }
            last_seq = last_seq.max(seq);
            offset += HEADER_LEN as u64 + payload_len;
        }
    }
    if let Some(problem) = problem {
        if is_last {
            tracing::warn!(
                problem,
                offset,
                path = %path.display(),
                "wal tail ends in an interrupted write; truncating"
            );
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_err(path))?;
            f.set_len(offset).map_err(io_err(path))?;
            f.sync_all().map_err(io_err(path))?;
        } else {
            tracing::error!(
                problem,
                offset,
                path = %path.display(),
                "wal segment is corrupt; records after this offset are skipped"
            );
        }
    }
    Ok(last_seq)
}

fn decode(payload: &[u8]) -> Result<RecordBatch> {
    let mut reader = StreamReader::try_new(payload, None)?;
    match reader.next() {
        Some(batch) => Ok(batch?),
        None => Err(Error::Arrow(arrow::error::ArrowError::IpcError(
            "wal record holds no batch".into(),
        ))),
    }
}

#[cfg(test)]
mod tests;
