//! In-place upgrade of a table written in an older layout
//! ([`UPGRADABLE_VERSIONS`]) to the current one, run at start before the
//! table takes new rows.
//!
//! Each older file is read a batch at a time, its rows rewritten
//! ([`tracelake_schema::upgrade::from_v2`]: row for row, so the file stays
//! sorted) into a new file, and the files of one hour partition are
//! replaced in one commit (`Remove` + `Add`, `dataChange: false`, as
//! compaction does): a reader, or a crash, sees a partition either all old
//! or all new. A partition whose files are already in the current layout
//! (recorded in each file's Parquet metadata) is skipped, so an upgrade cut
//! off by a crash resumes where it stopped. Once every file is rewritten,
//! one last commit sets the table's schema and version property; until
//! then the table still says the old version and the next start upgrades
//! again. Replaced files are removed from storage by vacuum after its grace
//! period, as compacted ones are.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::{ObjectStore, Path};
use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use tracelake_schema::spans::{PARTITION_COLUMNS, SCHEMA_VERSION, SCHEMA_VERSION_KEY, file_schema};
use tracelake_schema::upgrade::from_v2;

use crate::compact::{Error, FileBatches, Output, StoreReader};
use crate::lease::Lease;
use crate::table::{PartitionFile, Table};

/// Rows read from an older file at a time (fewer where they are too large
/// for one array: [`FileBatches`]).
const READ_BATCH_ROWS: usize = 8192;

/// What an upgrade did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub partitions: usize,
    pub files: usize,
    pub rows: u64,
}

/// How long a node waiting for another to upgrade the table sleeps
/// between two reads of it.
const WAIT_POLL: Duration = Duration::from_secs(1);
/// How often a waiting node says why it waits.
const WAIT_LOG_EVERY: Duration = Duration::from_secs(30);

/// Returns once every file of `table` is in the current layout.
///
/// A local table (`shared` false) has one process: it is upgraded here.
/// On an object store several nodes reach the table, and two upgrading it
/// at once would each rewrite the same files (Delta does not notice two
/// commits replacing one file: the rows would be there twice), so only the
/// compactor lease's holder upgrades it (`lease`: this node's, on a
/// compactor node), committing each partition only while it still holds
/// the lease; every other node waits until the table says it is current,
/// and a compactor that loses the lease mid-way waits for the next holder
/// to finish (which skips the partitions already done).
pub async fn bring_up_to_date(
    table: &Table,
    shared: bool,
    lease: Option<&Lease>,
) -> Result<(), Error> {
    if table.layout_version() == SCHEMA_VERSION {
        return Ok(());
    }
    if !shared {
        run(table, &|| true).await?;
        return Ok(());
    }
    let started = Instant::now();
    let mut said = None::<Instant>;
    loop {
        match table.refresh().await {
            Ok(()) => {}
            // A layout this release cannot read: no use waiting.
            Err(error @ crate::table::Error::Schema(_)) => return Err(error.into()),
            Err(error) => {
                // The store may come back: a node that waits keeps waiting.
                tracing::warn!(%error, "cannot read the spans table; trying again");
                tokio::time::sleep(WAIT_POLL).await;
                continue;
            }
        }
        let from = table.layout_version();
        if from == SCHEMA_VERSION {
            if said.is_some() {
                tracing::info!(
                    seconds = started.elapsed().as_secs_f64(),
                    "the spans table is upgraded; starting"
                );
            }
            return Ok(());
        }
        if let Some(lease) = lease.filter(|l| l.held()) {
            match run(table, &|| lease.held()).await {
                Ok(_) => return Ok(()),
                Err(Error::LostLease) => {
                    tracing::warn!(
                        "compactor lease lost during the upgrade; waiting for its next holder"
                    )
                }
                // The lease's previous holder committed a partition just
                // before its lease ran out: read the table again.
                Err(Error::Changed(what)) => {
                    tracing::info!(%what, "the table changed under the upgrade; reading it again");
                    continue;
                }
                Err(error) => return Err(error),
            }
        }
        if said.is_none_or(|at| at.elapsed() >= WAIT_LOG_EVERY) {
            said = Some(Instant::now());
            tracing::warn!(
                url = %table.url(),
                from,
                to = SCHEMA_VERSION,
                waited_seconds = started.elapsed().as_secs(),
                "the spans table is in an older layout: waiting for the node holding the \
                 compactor lease (a node with the compactor role) to upgrade it"
            );
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// Rewrites every file of `table` that is in an older layout, then marks
/// the table current; each commit only while `allowed` says so
/// ([`Error::LostLease`] otherwise). Does nothing for a table already
/// current.
pub async fn run(table: &Table, allowed: &(dyn Fn() -> bool + Sync)) -> Result<Report, Error> {
    let mut report = Report::default();
    let from = table.layout_version();
    if from == SCHEMA_VERSION {
        return Ok(report);
    }
    let started = Instant::now();
    tracing::warn!(
        url = %table.url(),
        from,
        to = SCHEMA_VERSION,
        "upgrading the spans table in place; each hour partition is replaced in one commit, \
         and an interrupted upgrade resumes at the next start"
    );
    let store = table.object_store().await;
    let mut partitions: BTreeMap<String, Vec<PartitionFile>> = BTreeMap::new();
    for file in table.files().await? {
        partitions
            .entry(file.partition.clone())
            .or_default()
            .push(file);
    }
    for (partition, files) in partitions {
        let mut old = Vec::new();
        for file in files {
            if file_version(&store, &file).await? < SCHEMA_VERSION {
                old.push(file);
            }
        }
        if old.is_empty() {
            continue;
        }
        let mut adds = Vec::with_capacity(old.len());
        for (i, file) in old.iter().enumerate() {
            let (add, rows) = rewrite(&store, &partition, file, i).await?;
            adds.push(add);
            report.rows += rows;
        }
        let removed: Vec<String> = old.iter().map(|f| f.path.clone()).collect();
        fault("upgrade.commit")?;
        if table.replace(&removed, adds, allowed).await?.is_none() {
            if !allowed() {
                return Err(Error::LostLease);
            }
            return Err(Error::Changed(format!("partition {partition}")));
        }
        fault("upgrade.committed")?;
        report.partitions += 1;
        report.files += old.len();
        tracing::info!(%partition, files = old.len(), "upgraded partition");
    }
    if !allowed() {
        return Err(Error::LostLease);
    }
    table.set_current_layout().await?;
    tracing::warn!(
        url = %table.url(),
        partitions = report.partitions,
        files = report.files,
        rows = report.rows,
        seconds = started.elapsed().as_secs_f64(),
        "spans table upgraded"
    );
    Ok(report)
}

fn fault(point: &'static str) -> Result<(), Error> {
    crate::faults::hit(point)
        .map_err(|source| Error::Table(crate::table::Error::Fault { point, source }))
}

fn reader(store: &Arc<dyn ObjectStore>, file: &PartitionFile) -> StoreReader {
    StoreReader {
        store: Arc::clone(store),
        path: Path::from(file.path.as_str()),
        size: file.size,
    }
}

/// The layout version a data file records in its Parquet metadata (2 for
/// files that record none: version 1 tables are refused at open).
async fn file_version(store: &Arc<dyn ObjectStore>, file: &PartitionFile) -> Result<u32, Error> {
    let builder = ParquetRecordBatchStreamBuilder::new(reader(store, file))
        .await
        .map_err(|source| Error::Read {
            path: file.path.clone(),
            source,
        })?;
    Ok(builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|kv| kv.key == SCHEMA_VERSION_KEY))
        .and_then(|kv| kv.value.as_deref()?.parse().ok())
        .unwrap_or(2))
}

/// Writes the rows of the older `file` into a new file of `partition`, in
/// the same order; its `Add` and the number of rows.
async fn rewrite(
    store: &Arc<dyn ObjectStore>,
    partition: &str,
    file: &PartitionFile,
    index: usize,
) -> Result<(deltalake::kernel::Add, u64), Error> {
    let read = |source| Error::Read {
        path: file.path.clone(),
        source,
    };
    let mut reader = reader(store, file);
    let metadata = ArrowReaderMetadata::load_async(&mut reader, Default::default())
        .await
        .map_err(read)?;
    let mask = ProjectionMask::all();
    let mut batches = FileBatches::new(reader, metadata, mask, READ_BATCH_ROWS).map_err(read)?;
    let mut out = Output::create(
        store,
        partition,
        None,
        index,
        &file_schema(),
        &HashSet::new(),
    )?;
    let mut rows = 0u64;
    while let Some(batch) = batches.next().await {
        let batch = batch.map_err(read)?;
        let current = from_v2(&batch).map_err(|e| Error::Upgrade {
            path: file.path.clone(),
            message: e.to_string(),
        })?;
        // The partition columns live in the path, not the file.
        let columns: Vec<usize> = (0..current.num_columns())
            .filter(|&i| !PARTITION_COLUMNS.contains(&current.schema().field(i).name().as_str()))
            .collect();
        out.write(&current.project(&columns)?).await?;
        rows += batch.num_rows() as u64;
    }
    Ok((out.close().await?, rows))
}
