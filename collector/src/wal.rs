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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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
    closed: bool,
}

/// The write-ahead log. Cheap to share behind an `Arc`.
pub struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    writer: Mutex<Writer>,
    /// Wakes the sync thread when something was written.
    dirty: Condvar,
    synced_tx: watch::Sender<u64>,
    metrics: Arc<Metrics>,
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
        let (synced_tx, _) = watch::channel(last_seq);
        let wal = Arc::new(Self {
            dir: dir.to_path_buf(),
            segment_bytes,
            writer: Mutex::new(Writer {
                file: Arc::new(file),
                size: MAGIC.len() as u64,
                segments,
                next_seq,
                written: last_seq,
                closed: false,
            }),
            dirty: Condvar::new(),
            synced_tx,
            metrics,
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
        if w.size >= self.segment_bytes && w.size > MAGIC.len() as u64 {
            self.rotate(&mut w)?;
        }
        let seq = w.next_seq;
        let mut record = Vec::with_capacity(HEADER_LEN + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&checksum(seq, &payload).to_le_bytes());
        record.extend_from_slice(&seq.to_le_bytes());
        record.extend_from_slice(&payload);
        let path = &w.segments.last().expect("an open segment").path;
        (&*w.file).write_all(&record).map_err(io_err(path))?;
        w.size += record.len() as u64;
        w.next_seq += 1;
        w.written = seq;
        self.metrics.wal_bytes.inc_by(record.len() as u64);
        let out = then(seq);
        drop(w);
        self.dirty.notify_one();
        Ok((seq, out))
    }

    /// Waits until record `seq` is on disk.
    pub async fn synced(&self, seq: u64) -> Result<()> {
        let mut rx = self.synced_tx.subscribe();
        rx.wait_for(|synced| *synced >= seq)
            .await
            .map(|_| ())
            .map_err(|_| Error::Closed)
    }

    fn sync_loop(&self) {
        loop {
            let (target, file, path) = {
                let mut w = self.writer.lock();
                while w.written <= *self.synced_tx.borrow() && !w.closed {
                    self.dirty.wait_for(&mut w, Duration::from_millis(100));
                }
                if w.closed && w.written <= *self.synced_tx.borrow() {
                    return;
                }
                let path = w.segments.last().expect("an open segment").path.clone();
                (w.written, Arc::clone(&w.file), path)
            };
            let started = Instant::now();
            match file.sync_data() {
                Ok(()) => {
                    self.metrics
                        .wal_fsync_seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.synced_tx.send_replace(target);
                }
                Err(error) => {
                    // Nothing written since the last good fsync can be
                    // acknowledged; keep retrying rather than lie.
                    tracing::error!(%error, path = %path.display(), "wal fsync failed");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn rotate(&self, w: &mut Writer) -> Result<()> {
        let old = w.segments.last().expect("an open segment").path.clone();
        // Records in the old segment must be durable before newer ones are
        // reported synced through the new file.
        w.file.sync_data().map_err(io_err(&old))?;
        let path = segment_path(&self.dir, w.next_seq);
        w.file = Arc::new(create_segment(&self.dir, &path)?);
        w.size = MAGIC.len() as u64;
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
        self.metrics.wal_segments.set(w.segments.len() as i64);
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

fn encode(batch: &RecordBatch) -> Result<Vec<u8>> {
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

fn create_segment(dir: &Path, path: &Path) -> Result<File> {
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
