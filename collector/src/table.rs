//! The spans Delta table: creation, and commits of the Parquet files we write.
//!
//! Each commit adds the files of one flush and records, in a Delta `txn`
//! action under the writing node's application id ([`wal_app_id`]), the
//! highest write-ahead-log sequence number whose rows it contains; on start
//! that number tells the WAL which records are already in the table. Every
//! ingest node has its own id, so nodes committing to one table never
//! conflict, and a commit whose watermark the table already holds for its
//! id (another process with the same node id) is refused.
//!
//! Several processes may commit to one table on an object store: every
//! operation that decides from the table's contents (retention, vacuum,
//! compaction's choice and commit) reads the latest version first.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Add, StructType, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableError, ObjectStore};
use tokio::sync::Mutex;
use tracelake_schema::layout::{Configured, Layout};
use tracelake_schema::spans::{
    DATE, HOUR, PARTITION_COLUMNS, SCHEMA_VERSION, SCHEMA_VERSION_KEY, spans_schema,
};
use tracelake_schema::trace_keys;
use url::Url;

use crate::metrics::Metrics;

/// Application id of the `txn` action that tracks the committed WAL
/// records of an unnamed node (one process on a local disk).
pub const WAL_APP_ID: &str = "tracelake-wal";

/// Application id of the `txn` action that tracks node `node`'s committed
/// WAL records ([`WAL_APP_ID`] for the unnamed node).
pub fn wal_app_id(node: Option<&str>) -> String {
    match node {
        None => WAL_APP_ID.to_string(),
        Some(node) => format!("{WAL_APP_ID}:{node}"),
    }
}

/// Error of a table operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("delta table {url}: {source}")]
    Delta {
        url: String,
        source: Box<DeltaTableError>,
    },
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("table schema: {0}")]
    Schema(String),
    #[error(
        "the table holds {app_id} up to {shown} already, which this commit (ending at {upto}) \
         does not follow: another process commits under the same id (give every node its own \
         --node-id)",
        shown = .committed.map_or("nothing".to_string(), |c| c.to_string())
    )]
    Fenced {
        app_id: String,
        committed: Option<i64>,
        upto: i64,
    },
    /// Writing the files of a commit failed (`message` says which and why).
    #[error("{0}")]
    Write(String),
    #[error("{point}: {source}")]
    Fault {
        point: &'static str,
        source: std::io::Error,
    },
}

/// How often a commit that lost the race for its log version is tried
/// again (re-reading the log and checking the commits that won for
/// conflicts each time). delta-rs' default, 15, ran out in a test of two
/// writers committing back to back on a loaded machine; a commit that
/// still loses is an error (nothing committed, nothing lost: a flush keeps
/// its rows, a compaction its inputs).
const COMMIT_ATTEMPTS: usize = 100;

/// How long the table's log keeps a commit (`delta.logRetentionDuration`;
/// Delta's default is 30 days). A reader lists the log at least once a
/// minute (`query::table`; between listings it reads the next commit's
/// entry, which it trusts only where the retention is an hour or more): on
/// a local disk that walks every entry, about 1.2 µs each (an absent trace
/// took 120 ms with 100,000 entries against 1.8 ms with 48), and a commit
/// cleans up by listing it too. Expired commits go once a
/// checkpoint (every 50 commits) covers them; nothing reads versions that
/// old (no time travel is offered, compaction jobs and reads last seconds
/// to minutes, and a reader behind a cleaned-up commit catches up from the
/// checkpoint).
pub const LOG_RETENTION: &str = "interval 6 hours";

fn commit_properties() -> CommitProperties {
    CommitProperties::default().with_max_retries(COMMIT_ATTEMPTS)
}

/// Passes the [`crate::faults`] point `point`.
fn fault(point: &'static str) -> Result<()> {
    crate::faults::hit(point).map_err(|source| Error::Fault { point, source })
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub struct Table {
    url: Url,
    /// The `txn` application id of this node's WAL watermark.
    app_id: String,
    table: Mutex<DeltaTable>,
    metrics: Arc<Metrics>,
    /// The layout version the table holds (older than [`SCHEMA_VERSION`]
    /// until [`crate::upgrade`] has rewritten it).
    layout_version: std::sync::atomic::AtomicU32,
    /// The table schema's layout (its configured dedicated columns), as of
    /// the last version read.
    layout: std::sync::RwLock<Arc<Layout>>,
}

/// The layout of a table's schema: its configured dedicated columns.
fn columns_of(snapshot: &deltalake::table::state::DeltaTableState) -> Result<Arc<Layout>> {
    use deltalake::kernel::engine::arrow_conversion::TryIntoArrow as _;
    let schema: arrow::datatypes::Schema = snapshot
        .schema()
        .as_ref()
        .try_into_arrow()
        .map_err(|e| Error::Schema(e.to_string()))?;
    Layout::of_schema(&schema).map_err(Error::Schema)
}

/// Layout versions that [`crate::upgrade`] rewrites into the current one.
pub const UPGRADABLE_VERSIONS: [u32; 1] = [2];

/// The layout version a table's version property names: the current one
/// or one [`crate::upgrade`] rewrites; any other is refused.
fn layout_of(snapshot: &deltalake::table::state::DeltaTableState, url: &Url) -> Result<u32> {
    let found = snapshot
        .metadata()
        .configuration()
        .get(SCHEMA_VERSION_KEY)
        .cloned();
    match found.as_deref().and_then(|v| v.parse::<u32>().ok()) {
        Some(SCHEMA_VERSION) => Ok(SCHEMA_VERSION),
        Some(v) if UPGRADABLE_VERSIONS.contains(&v) => Ok(v),
        _ => Err(Error::Schema(format!(
            "{url} holds spans schema version {}, this build writes version {SCHEMA_VERSION} \
             and upgrades {UPGRADABLE_VERSIONS:?}; use a new data directory (or --storage-url)",
            found.as_deref().unwrap_or("(none)")
        ))),
    }
}

impl Table {
    /// Opens the table at `url`, creating it (and, for `file://`, its
    /// directory) when absent.
    pub async fn open_or_create(url: &Url, metrics: Arc<Metrics>) -> Result<Self> {
        let err = |source: DeltaTableError| Error::Delta {
            url: url.to_string(),
            source: Box::new(source),
        };
        if url.scheme() == "file"
            && let Ok(path) = url.to_file_path()
        {
            std::fs::create_dir_all(&path).map_err(|source| Error::CreateDir {
                path: path.display().to_string(),
                source,
            })?;
        }
        // A local table without a log is new: skip the load, which would
        // log an error for the missing log. On an object store, a table
        // whose log has no entry is new (creating it is a put-if-absent of
        // version 0, so a table that exists after all is never overwritten).
        let mut table = deltalake::DeltaTableBuilder::from_url(url.clone())
            .and_then(|b| b.build())
            .map_err(err)?;
        if url.scheme() != "file" {
            // Listing the log first: loading a table that does not exist
            // logs an error of the Delta kernel's own.
            let store = table.log_store().object_store(None);
            let log = deltalake::Path::from("_delta_log");
            let listing = store
                .list_with_delimiter(Some(&log))
                .await
                .map_err(|e| err(e.into()))?;
            if !listing.objects.is_empty() {
                table.load().await.map_err(err)?;
            }
        } else if url
            .to_file_path()
            .is_ok_and(|p| p.join("_delta_log").is_dir())
        {
            table = DeltaTable::try_from_url(url.clone()).await.map_err(err)?;
        }
        if table.version().is_none() {
            let schema: StructType = spans_schema()
                .as_ref()
                .try_into_kernel()
                .map_err(|e| Error::Schema(e.to_string()))?;
            table = table
                .create()
                .with_table_name("spans")
                .with_comment("tracelake spans, one row per span")
                .with_columns(schema.fields().cloned())
                .with_partition_columns(PARTITION_COLUMNS)
                .with_configuration_property(
                    deltalake::TableProperty::CheckpointInterval,
                    Some("50"),
                )
                .with_configuration_property(
                    deltalake::TableProperty::LogRetentionDuration,
                    Some(LOG_RETENTION),
                )
                .with_configuration([(SCHEMA_VERSION_KEY, Some(SCHEMA_VERSION.to_string()))])
                .with_raise_if_key_not_exists(false)
                .await
                .map_err(err)?;
            tracing::info!(%url, "created spans table");
        }
        keep_the_log_short(&mut table, url).await;
        let snapshot = table.snapshot().map_err(err)?;
        let layout_version = layout_of(snapshot, url)?;
        let layout = columns_of(snapshot)?;
        Ok(Self {
            url: url.clone(),
            app_id: WAL_APP_ID.to_string(),
            table: Mutex::new(table),
            metrics,
            layout_version: layout_version.into(),
            layout: layout.into(),
        })
    }

    /// This table handle commits the WAL watermark of node `node` (the
    /// unnamed node's by default).
    pub fn for_node(mut self, node: Option<&str>) -> Self {
        self.app_id = wal_app_id(node);
        self
    }

    /// The application id this handle commits its WAL watermark under.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// Reads the table's latest version (other processes' commits, an
    /// upgrade another node finished among them).
    pub async fn refresh(&self) -> Result<()> {
        let mut table = self.table.lock().await;
        table.update_state().await.map_err(|e| self.err(e))?;
        let snapshot = table.snapshot().map_err(|e| self.err(e))?;
        let layout = layout_of(snapshot, &self.url)?;
        self.layout_version
            .store(layout, std::sync::atomic::Ordering::Release);
        self.set_layout(columns_of(snapshot)?);
        Ok(())
    }

    /// The table schema's layout, as of the last version this handle read:
    /// the standard columns and the configured dedicated ones.
    pub fn layout(&self) -> Arc<Layout> {
        Arc::clone(&self.layout.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn set_layout(&self, layout: Arc<Layout>) {
        *self.layout.write().unwrap_or_else(|e| e.into_inner()) = layout;
    }

    /// Gives the table a dedicated column for each of `wanted` it lacks, in
    /// one commit of the grown schema (files written before read the new
    /// columns as null); returns the table's layout. A key the table has as
    /// a column of the other type is an error.
    pub async fn add_dedicated_columns(&self, wanted: &[Configured]) -> Result<Arc<Layout>> {
        use deltalake::kernel::MetadataExt as _;
        // Nodes started together with the same new columns race: the
        // commits that lose (Delta refuses a concurrent metadata change)
        // read the table again, and mostly find nothing left to add.
        const ATTEMPTS: usize = 5;
        let mut table = self.table.lock().await;
        for attempt in 1.. {
            table.update_state().await.map_err(|e| self.err(e))?;
            let state = table.snapshot().map_err(|e| self.err(e))?;
            let have = columns_of(state)?;
            let layout = have.with(wanted).map_err(Error::Schema)?;
            if Arc::ptr_eq(&layout, &have) {
                self.set_layout(have);
                return Ok(layout);
            }
            let schema: StructType = layout
                .schema()
                .as_ref()
                .try_into_kernel()
                .map_err(|e| Error::Schema(e.to_string()))?;
            let added: Vec<_> = layout.configured()[have.configured().len()..]
                .iter()
                .filter_map(|c| schema.field(c.column()).cloned())
                .collect();
            let metadata = state
                .metadata()
                .clone()
                .with_schema(&schema)
                .map_err(|e| Error::Schema(e.to_string()))?;
            let committed = CommitBuilder::from(commit_properties())
                .with_actions(vec![Action::Metadata(metadata)])
                .build(
                    Some(state),
                    table.log_store(),
                    DeltaOperation::AddColumn { fields: added },
                )
                .await;
            let finalized = match committed {
                Ok(finalized) => finalized,
                Err(error) if attempt < ATTEMPTS => {
                    tracing::warn!(%error, attempt, "adding dedicated columns; trying again");
                    continue;
                }
                Err(error) => return Err(self.err(error)),
            };
            table.state = Some(finalized.snapshot());
            tracing::info!(
                url = %self.url,
                columns = ?layout.configured()[have.configured().len()..]
                    .iter()
                    .map(Configured::column)
                    .collect::<Vec<_>>(),
                "added dedicated columns"
            );
            self.set_layout(Arc::clone(&layout));
            return Ok(layout);
        }
        unreachable!("the loop returns")
    }

    /// The layout version the table's files are in (the table property).
    pub fn layout_version(&self) -> u32 {
        self.layout_version
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records that every file is in the current layout: the table's schema
    /// becomes the current one and its version property [`SCHEMA_VERSION`],
    /// in one commit. The last step of [`crate::upgrade`].
    pub async fn set_current_layout(&self) -> Result<i64> {
        use deltalake::kernel::MetadataExt as _;
        let mut table = self.table.lock().await;
        let state = table.snapshot().map_err(|e| self.err(e))?;
        let schema: StructType = self
            .layout()
            .schema()
            .as_ref()
            .try_into_kernel()
            .map_err(|e| Error::Schema(e.to_string()))?;
        let metadata = state
            .metadata()
            .clone()
            .with_schema(&schema)
            .and_then(|m| m.add_config_key(SCHEMA_VERSION_KEY.into(), SCHEMA_VERSION.to_string()))
            .map_err(|e| Error::Schema(e.to_string()))?;
        let operation = DeltaOperation::SetTableProperties {
            properties: [(SCHEMA_VERSION_KEY.to_string(), SCHEMA_VERSION.to_string())].into(),
        };
        let finalized = CommitBuilder::from(commit_properties())
            .with_actions(vec![Action::Metadata(metadata)])
            .build(Some(state), table.log_store(), operation)
            .await
            .map_err(|e| self.err(e))?;
        table.state = Some(finalized.snapshot());
        self.layout_version
            .store(SCHEMA_VERSION, std::sync::atomic::Ordering::Release);
        Ok(finalized.version() as i64)
    }

    fn err(&self, source: DeltaTableError) -> Error {
        Error::Delta {
            url: self.url.to_string(),
            source: Box::new(source),
        }
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Current table version.
    pub async fn version(&self) -> Option<i64> {
        self.table.lock().await.version().map(|v| v as i64)
    }

    /// Highest WAL sequence number whose rows are committed (0: none).
    pub async fn committed_seq(&self) -> Result<u64> {
        self.committed_seq_of(&self.app_id).await
    }

    /// [`Table::committed_seq`] of the node committing under `app_id`.
    pub async fn committed_seq_of(&self, app_id: &str) -> Result<u64> {
        Ok(self.transaction_version(app_id).await?.unwrap_or(0).max(0) as u64)
    }

    /// The version the held snapshot records for the writer `app_id`
    /// (`None`: it never committed).
    pub async fn transaction_version(&self, app_id: &str) -> Result<Option<i64>> {
        let table = self.table.lock().await;
        let state = table.snapshot().map_err(|e| self.err(e))?;
        state
            .transaction_version(table.log_store().as_ref(), app_id)
            .await
            .map_err(|e| self.err(e))
    }

    /// Object store rooted at the table directory.
    pub async fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.table.lock().await.log_store().object_store(None)
    }

    /// Commits `adds` atomically together with the WAL watermark `upto_seq`;
    /// returns the new table version. Refused ([`Error::Fenced`]) when the
    /// table already holds this node's records up to `upto_seq`: a commit
    /// of the same id that landed since the snapshot is caught by Delta's
    /// conflict check (same application id), one before it here.
    pub async fn commit(&self, adds: Vec<Add>, upto_seq: u64) -> Result<i64> {
        let app_id = self.app_id.clone();
        self.commit_as(adds, &app_id, upto_seq as i64, |committed| {
            committed.is_none_or(|c| c < upto_seq as i64)
        })
        .await
    }

    /// [`Table::commit`] for the writer `app_id` (a node's WAL, a Kafka
    /// partition) at its version `upto`, made only if `allowed` says yes to
    /// the writer's version in the snapshot the commit is made on (refused
    /// with [`Error::Fenced`] otherwise); a commit of the same id landing
    /// after that snapshot is caught by Delta's conflict check.
    pub async fn commit_as(
        &self,
        adds: Vec<Add>,
        app_id: &str,
        upto: i64,
        allowed: impl Fn(Option<i64>) -> bool,
    ) -> Result<i64> {
        let started = Instant::now();
        let mut table = self.table.lock().await;
        let properties = commit_properties()
            .with_application_transaction(Transaction::new(app_id, upto))
            // Appends read nothing: later deletes and rewrites need not
            // conflict with them (Delta's WriteSerializable isolation).
            .with_metadata([("isBlindAppend".to_string(), serde_json::Value::Bool(true))]);
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: Some(PARTITION_COLUMNS.map(String::from).to_vec()),
            predicate: None,
        };
        let state = table.snapshot().map_err(|e| self.err(e))?;
        let committed = state
            .transaction_version(table.log_store().as_ref(), app_id)
            .await
            .map_err(|e| self.err(e))?;
        if !allowed(committed) {
            return Err(Error::Fenced {
                app_id: app_id.to_string(),
                committed,
                upto,
            });
        }
        let finalized = match CommitBuilder::from(properties)
            .with_actions(adds.into_iter().map(Action::Add).collect())
            .build(Some(state), table.log_store(), operation)
            .await
        {
            Ok(finalized) => finalized,
            Err(error) => {
                // Whether or not it landed, the next attempt starts from
                // the latest version (and finds it there if it did).
                if let Err(refresh) = table.update_state().await {
                    tracing::warn!(error = %refresh, "cannot read the table after a failed commit");
                }
                return Err(self.err(error));
            }
        };
        let version = finalized.version() as i64;
        self.metrics
            .commit_conflicts
            .inc_by(finalized.metrics.num_retries);
        table.state = Some(finalized.snapshot());
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        // Landed, but the caller hears of a failure (an answer lost).
        fault("flush.answer")?;
        Ok(version)
    }

    /// Removes from the table every file of a partition whose hour ended
    /// at or before `cutoff_ns` (Unix ns), in one commit; returns the new
    /// version and the number of files, or `None` when nothing is that old.
    /// The files stay on storage until [`Table::vacuum`].
    pub async fn expire(&self, cutoff_ns: i64) -> Result<Option<(i64, usize)>> {
        self.refresh().await?;
        self.expire_in_snapshot(cutoff_ns).await
    }

    /// [`Table::expire`] as of the snapshot held (commits that landed
    /// since go through Delta's conflict check).
    async fn expire_in_snapshot(&self, cutoff_ns: i64) -> Result<Option<(i64, usize)>> {
        let mut table = self.table.lock().await;
        let state = table.snapshot().map_err(|e| self.err(e))?;
        let removes: Vec<Action> = state
            .log_data()
            .iter()
            .filter(|f| {
                partition_end_ns(&f.partition_values_map()).is_some_and(|end| end <= cutoff_ns)
            })
            .map(|f| Action::Remove(f.remove_action(true)))
            .collect();
        if removes.is_empty() {
            return Ok(None);
        }
        let files = removes.len();
        fault("retention.commit")?;
        // The predicate is SQL over the partition columns: Delta's conflict
        // check parses it when another commit lands in between.
        let operation = DeltaOperation::Delete {
            predicate: Some(retention_predicate(cutoff_ns)),
        };
        let finalized = CommitBuilder::from(commit_properties())
            .with_actions(removes)
            .build(Some(state), table.log_store(), operation)
            .await
            .map_err(|e| self.err(e))?;
        let version = finalized.version() as i64;
        table.state = Some(finalized.snapshot());
        fault("retention.committed")?;
        Ok(Some((version, files)))
    }

    /// Every data file of the table now (its latest version).
    pub async fn files(&self) -> Result<Vec<PartitionFile>> {
        let mut table = self.table.lock().await;
        table.update_state().await.map_err(|e| self.err(e))?;
        let state = table.snapshot().map_err(|e| self.err(e))?;
        // The schema the files are rewritten in (compaction) is the one of
        // the version they were listed at.
        let layout = columns_of(state)?;
        if layout.configured() != self.layout().configured() {
            self.set_layout(layout);
        }
        Ok(state
            .log_data()
            .iter()
            .filter_map(|f| {
                let values = f.partition_values_map();
                let end = partition_end_ns(&values)?;
                let date = values.get(DATE)?.clone()?;
                let hour: u32 = values.get(HOUR)?.as_deref()?.parse().ok()?;
                Some(PartitionFile {
                    path: f.path().to_string(),
                    size: f.size().max(0) as u64,
                    rows: f.num_records().map(|n| n as u64),
                    partition: format!("{DATE}={date}/{HOUR}={hour:02}"),
                    partition_end_ns: end,
                })
            })
            .collect())
    }

    /// Replaces the files at `removed` by `adds` (the same rows, rewritten)
    /// in one commit; `None`, and no commit, when any of `removed` is no
    /// longer in the table.
    ///
    /// Delta's conflict check does not notice two rewrites removing the
    /// same file (both would land, and the rows would be there twice), so
    /// this commit does not let it resolve races: it is made against the
    /// latest version only, and when another commit lands first the table
    /// is read again and the files looked for again.
    /// `allowed` is asked before each attempt (the compactor lease still
    /// held): `None`, and no commit, once it says no.
    pub async fn replace(
        &self,
        removed: &[String],
        adds: Vec<Add>,
        allowed: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<i64>> {
        let started = Instant::now();
        let mut table = self.table.lock().await;
        let wanted: std::collections::HashSet<&str> = removed.iter().map(String::as_str).collect();
        let target_size = adds.iter().map(|a| a.size).max().unwrap_or(0);
        for attempt in 1..=COMMIT_ATTEMPTS {
            table.update_state().await.map_err(|e| self.err(e))?;
            if !allowed() {
                return Ok(None);
            }
            let state = table.snapshot().map_err(|e| self.err(e))?;
            let mut actions: Vec<Action> = state
                .log_data()
                .iter()
                .filter(|f| wanted.contains(f.path().as_ref()))
                .map(|f| Action::Remove(f.remove_action(false)))
                .collect();
            if actions.len() != wanted.len() {
                return Ok(None);
            }
            actions.extend(adds.iter().cloned().map(Action::Add));
            let operation = DeltaOperation::Optimize {
                predicate: None,
                target_size,
            };
            let result = CommitBuilder::from(CommitProperties::default().with_max_retries(0))
                .with_actions(actions)
                .build(Some(state), table.log_store(), operation)
                .await;
            match result {
                Ok(finalized) => {
                    let version = finalized.version() as i64;
                    table.state = Some(finalized.snapshot());
                    self.metrics
                        .commit_seconds
                        .observe(started.elapsed().as_secs_f64());
                    return Ok(Some(version));
                }
                Err(DeltaTableError::Transaction {
                    source: TransactionError::MaxCommitAttempts(_),
                }) => {
                    self.metrics.commit_conflicts.inc();
                    tracing::debug!(
                        attempt,
                        "another commit landed first; reading the table again"
                    );
                }
                Err(e) => return Err(self.err(e)),
            }
        }
        Err(self.err(DeltaTableError::Transaction {
            source: TransactionError::MaxCommitAttempts(COMMIT_ATTEMPTS as i32),
        }))
    }

    /// Deletes files that are no longer part of the table (expired
    /// partitions, files of failed flushes) once they are older than
    /// `grace`, and their persisted trace keys; returns the table version
    /// afterwards and the data files deleted.
    pub async fn vacuum(&self, grace: Duration) -> Result<(Option<i64>, usize)> {
        let mut table = self.table.lock().await;
        // Files other nodes committed since our snapshot are in the table:
        // a stale snapshot would take them for garbage.
        table.update_state().await.map_err(|e| self.err(e))?;
        fault("vacuum")?;
        let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let (vacuumed, metrics) = table
            .clone()
            .vacuum()
            // Full: files never committed (failed flushes, abandoned
            // compactions) too, not only the ones the log removed.
            .with_mode(deltalake::operations::vacuum::VacuumMode::Full)
            .with_retention_period(grace)
            .with_enforce_retention_duration(false)
            .await
            .map_err(|e| self.err(e))?;
        *table = vacuumed;
        let keys = self
            .vacuum_trace_keys(&table, grace)
            .await
            .map_err(|e| self.err(e.into()))?;
        if keys > 0 {
            tracing::debug!(
                keys,
                "vacuum deleted the trace keys of files no longer in the table"
            );
        }
        Ok((
            table.version().map(|v| v as i64),
            metrics.files_deleted.len(),
        ))
    }

    /// Deletes the persisted trace keys ([`trace_keys`]) of data files no
    /// longer in the table, once older than `grace` (a flush writes a
    /// file's keys before it commits the file); returns how many.
    async fn vacuum_trace_keys(
        &self,
        table: &DeltaTable,
        grace: chrono::Duration,
    ) -> Result<usize, object_store::Error> {
        use futures::{StreamExt as _, TryStreamExt as _};
        let Ok(snapshot) = table.snapshot() else {
            return Ok(0);
        };
        let live: HashSet<String> = snapshot
            .log_data()
            .iter()
            .map(|f| f.path().to_string())
            .collect();
        let cutoff = chrono::Utc::now() - grace;
        let store = table.log_store().object_store(None);
        let orphans: Vec<object_store::path::Path> = store
            .list(Some(&object_store::path::Path::from(trace_keys::DIR)))
            .try_filter(|meta| {
                let orphan = trace_keys::data_path(meta.location.as_ref())
                    .is_none_or(|data| !live.contains(data));
                std::future::ready(orphan && meta.last_modified < cutoff)
            })
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        let count = orphans.len();
        let mut deleted =
            store.delete_stream(futures::stream::iter(orphans.into_iter().map(Ok)).boxed());
        while let Some(outcome) = deleted.next().await {
            match outcome {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(count)
    }
}

/// A data file of the table.
#[derive(Debug, Clone)]
pub struct PartitionFile {
    /// Relative to the table root.
    pub path: String,
    pub size: u64,
    /// From the Delta statistics.
    pub rows: Option<u64>,
    /// `date=YYYY-MM-DD/hour=HH`
    pub partition: String,
    /// End of the partition's hour, Unix ns.
    pub partition_end_ns: i64,
}

/// Sets [`LOG_RETENTION`] on a table an earlier release created (with
/// Delta's 30 days). Best effort: a node starting at the same time may set
/// it first (the commit conflicts), and a table that keeps its log longer
/// is only slower to read.
async fn keep_the_log_short(table: &mut DeltaTable, url: &Url) {
    use deltalake::kernel::MetadataExt as _;
    let key = deltalake::TableProperty::LogRetentionDuration.as_ref();
    let Ok(state) = table.snapshot() else {
        return;
    };
    if state.metadata().configuration().contains_key(key) {
        return;
    }
    let metadata = match state
        .metadata()
        .clone()
        .add_config_key(key.to_string(), LOG_RETENTION.to_string())
    {
        Ok(metadata) => metadata,
        Err(error) => {
            tracing::warn!(%url, %error, "cannot shorten the table's log retention");
            return;
        }
    };
    let operation = DeltaOperation::SetTableProperties {
        properties: [(key.to_string(), LOG_RETENTION.to_string())].into(),
    };
    match CommitBuilder::from(commit_properties())
        .with_actions(vec![Action::Metadata(metadata)])
        .build(Some(state), table.log_store(), operation)
        .await
    {
        Ok(finalized) => {
            table.state = Some(finalized.snapshot());
            tracing::info!(%url, retention = LOG_RETENTION, "the table's log now keeps commits for less time");
        }
        Err(error) => {
            tracing::warn!(%url, %error, "cannot shorten the table's log retention");
            if let Err(error) = table.update_state().await {
                tracing::warn!(%url, %error, "cannot read the table");
            }
        }
    }
}

/// The partitions whose hour ended at or before `cutoff_ns`, as SQL over
/// the partition columns.
fn retention_predicate(cutoff_ns: i64) -> String {
    let cutoff = chrono::DateTime::from_timestamp_nanos(cutoff_ns);
    // The hour that ends at or before the cutoff last: the one before the
    // cutoff's hour.
    let last = cutoff - chrono::Duration::hours(1);
    let date = last.format("%Y-%m-%d");
    let hour = chrono::Timelike::hour(&last);
    format!("{DATE} < '{date}' OR ({DATE} = '{date}' AND {HOUR} <= {hour})")
}

/// End (Unix ns) of the hour a `date=YYYY-MM-DD/hour=HH` partition holds.
fn partition_end_ns(values: &HashMap<String, Option<String>>) -> Option<i64> {
    let date = values.get(DATE)?.as_deref()?;
    let hour: u32 = values.get(HOUR)?.as_deref()?.parse().ok()?;
    let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let start = day.and_hms_opt(hour, 0, 0)?.and_utc();
    (start + chrono::Duration::hours(1)).timestamp_nanos_opt()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `Add` of a (never written) file in the hour `hour` of 2020-01-01.
    fn add(name: &str, hour: u32) -> Add {
        let path = format!("{DATE}=2020-01-01/{HOUR}={hour:02}/{name}.parquet");
        crate::writer::add_action(&path, 1000, &crate::writer::Stats::default())
    }

    /// Two handles on one new table, as two processes would have.
    async fn two_handles(
        node_a: Option<&str>,
        node_b: Option<&str>,
    ) -> (tempfile::TempDir, Table, Table) {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap();
        let metrics = Arc::new(Metrics::default());
        let a = Table::open_or_create(&url, Arc::clone(&metrics))
            .await
            .unwrap()
            .for_node(node_a);
        let b = Table::open_or_create(&url, metrics)
            .await
            .unwrap()
            .for_node(node_b);
        (dir, a, b)
    }

    async fn paths(table: &Table) -> Vec<String> {
        let mut paths: Vec<String> = table
            .files()
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.path)
            .collect();
        paths.sort();
        paths
    }

    /// Commits older than [`LOG_RETENTION`] leave the log once a
    /// checkpoint covers them, and a reader still at an early version
    /// catches up across them.
    #[tokio::test]
    async fn the_log_keeps_hours_of_commits_and_an_old_reader_catches_up() {
        let (dir, a, _) = two_handles(Some("a"), None).await;
        let mut reader = DeltaTable::try_from_url(a.url().clone()).await.unwrap();
        let key = deltalake::TableProperty::LogRetentionDuration.as_ref();
        assert_eq!(
            reader
                .snapshot()
                .unwrap()
                .metadata()
                .configuration()
                .get(key),
            Some(&LOG_RETENTION.to_string())
        );
        for i in 0..55 {
            a.commit(vec![add(&format!("f{i}"), 0)], i + 1)
                .await
                .unwrap();
        }
        let log = dir.path().join("_delta_log");
        let commits = || {
            std::fs::read_dir(&log)
                .unwrap()
                .filter(|e| {
                    let name = e.as_ref().unwrap().file_name();
                    name.to_string_lossy().ends_with(".json")
                })
                .count()
        };
        assert_eq!(commits(), 56, "nothing has expired yet");
        // Every commit so far seven hours old.
        let old = std::time::SystemTime::now() - Duration::from_secs(7 * 3600);
        for entry in std::fs::read_dir(&log).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let file = std::fs::File::options().write(true).open(&path).unwrap();
                file.set_modified(old).unwrap();
            }
        }
        a.commit(vec![add("last", 1)], 100).await.unwrap();
        // Those before the checkpoint of version 50 are gone.
        assert!(commits() <= 8, "{} commits kept", commits());
        reader.update_state().await.unwrap();
        assert_eq!(reader.version(), Some(56));
        assert_eq!(reader.snapshot().unwrap().log_data().num_files(), 56);
    }

    /// A spans table at `url` as an older build made it: layout version
    /// `version`, none of the table properties set since.
    async fn made_by_an_older_build(url: &Url, version: &str) -> DeltaTable {
        let schema: StructType = spans_schema().as_ref().try_into_kernel().unwrap();
        deltalake::DeltaTableBuilder::from_url(url.clone())
            .unwrap()
            .build()
            .unwrap()
            .create()
            .with_columns(schema.fields().cloned())
            .with_partition_columns(PARTITION_COLUMNS)
            .with_configuration([(SCHEMA_VERSION_KEY, Some(version.to_string()))])
            .with_raise_if_key_not_exists(false)
            .await
            .unwrap()
    }

    /// A table an earlier release created (Delta's 30 days of log) gets
    /// the shorter retention when a node opens it.
    #[tokio::test]
    async fn an_older_table_gets_the_shorter_log_retention_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap();
        let key = deltalake::TableProperty::LogRetentionDuration.as_ref();
        let older = made_by_an_older_build(&url, &SCHEMA_VERSION.to_string()).await;
        assert!(
            !older
                .snapshot()
                .unwrap()
                .metadata()
                .configuration()
                .contains_key(key)
        );
        Table::open_or_create(&url, Arc::new(Metrics::default()))
            .await
            .unwrap();
        let now = DeltaTable::try_from_url(url).await.unwrap();
        assert_eq!(
            now.snapshot().unwrap().metadata().configuration().get(key),
            Some(&LOG_RETENTION.to_string())
        );
    }

    #[tokio::test]
    async fn nodes_commit_side_by_side_each_under_its_own_watermark() {
        let (_dir, a, b) = two_handles(Some("a"), Some("b")).await;
        // b's snapshot is older than a's commit: b's commit lands after it,
        // with no conflict (different application ids).
        a.commit(vec![add("a1", 0)], 10).await.unwrap();
        b.commit(vec![add("b1", 0)], 3).await.unwrap();
        a.commit(vec![add("a2", 1)], 20).await.unwrap();
        assert_eq!(a.committed_seq().await.unwrap(), 20);
        assert_eq!(b.committed_seq().await.unwrap(), 3);
        assert_eq!(paths(&a).await.len(), 3);
    }

    #[tokio::test]
    async fn a_second_process_with_the_same_node_id_cannot_commit_records_already_committed() {
        let (_dir, a, b) = two_handles(Some("x"), Some("x")).await;
        a.commit(vec![add("a1", 0)], 10).await.unwrap();
        // Since b's snapshot: Delta's check of concurrent transactions.
        let err = b.commit(vec![add("b1", 0)], 5).await.unwrap_err();
        assert!(
            err.to_string().to_lowercase().contains("transaction"),
            "{err}"
        );
        // In b's snapshot (read again after the failed commit): our own
        // check. (A flush takes this, for its own watermark, as the sign
        // that an earlier attempt landed.)
        let err = b.commit(vec![add("b1", 0)], 5).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Fenced {
                    committed: Some(10),
                    upto: 5,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(paths(&a).await.len(), 1);
    }

    #[tokio::test]
    async fn retention_commits_although_another_node_committed_since_its_snapshot() {
        let (_dir, a, b) = two_handles(Some("a"), Some("b")).await;
        a.commit(vec![add("old", 0), add("new", 5)], 1)
            .await
            .unwrap();
        b.refresh().await.unwrap();
        // a appends after b's snapshot (as if between b's read of the
        // latest version and its commit); b's retention commit must pass
        // the conflict check, which parses its predicate as SQL.
        a.commit(vec![add("newer", 6)], 2).await.unwrap();
        let cutoff = chrono::DateTime::parse_from_rfc3339("2020-01-01T03:00:00Z")
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap();
        let (_, files) = b
            .expire_in_snapshot(cutoff)
            .await
            .unwrap()
            .expect("hour 00 is expired");
        assert_eq!(files, 1);
        assert_eq!(
            paths(&a).await,
            [
                "date=2020-01-01/hour=05/new.parquet",
                "date=2020-01-01/hour=06/newer.parquet"
            ]
        );
    }

    #[test]
    fn the_retention_predicate_keeps_exactly_the_hours_that_end_after_the_cutoff() {
        let at = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .unwrap()
                .timestamp_nanos_opt()
                .unwrap()
        };
        // Hour 02 ends at 03:00: expired at a 03:00 cutoff, not at 02:59.
        assert_eq!(
            retention_predicate(at("2020-01-01T03:00:00Z")),
            "date < '2020-01-01' OR (date = '2020-01-01' AND hour <= 2)"
        );
        assert_eq!(
            retention_predicate(at("2020-01-01T02:59:59Z")),
            "date < '2020-01-01' OR (date = '2020-01-01' AND hour <= 1)"
        );
        assert_eq!(
            retention_predicate(at("2020-01-02T00:30:00Z")),
            "date < '2020-01-01' OR (date = '2020-01-01' AND hour <= 23)"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_rewrites_of_the_same_file_commit_once() {
        // Delta's conflict check lets both through; `replace` must not. b
        // reads the table (both files there), then a's rewrite lands, then
        // b commits: the hard case, a commit made from a version that
        // still held its inputs.
        let (_dir, a, b) = two_handles(None, None).await;
        a.commit(vec![add("f1", 0), add("f2", 0)], 1).await.unwrap();
        let removed = [
            "date=2020-01-01/hour=00/f1.parquet".to_string(),
            "date=2020-01-01/hour=00/f2.parquet".to_string(),
        ];
        let runtime = tokio::runtime::Handle::current();
        let a_landed = std::sync::atomic::AtomicBool::new(false);
        let between_read_and_commit = || {
            if !a_landed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                let done = tokio::task::block_in_place(|| {
                    runtime.block_on(a.replace(&removed, vec![add("ca", 0)], &|| true))
                });
                assert!(done.unwrap().is_some(), "a's rewrite did not land");
            }
            true
        };
        let b_done = b
            .replace(&removed, vec![add("cb", 0)], &between_read_and_commit)
            .await
            .unwrap();
        assert!(a_landed.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(b_done, None, "both rewrites of f1 and f2 landed");
        assert_eq!(paths(&b).await, ["date=2020-01-01/hour=00/ca.parquet"]);
    }

    #[tokio::test]
    async fn a_table_of_another_schema_version_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap();
        // A table as an older build would have made it: schema version 1.
        made_by_an_older_build(&url, "1").await;
        let err = Table::open_or_create(&url, Arc::new(Metrics::default()))
            .await
            .err()
            .expect("a version-1 table must be refused");
        let message = err.to_string();
        assert!(
            message.contains("schema version 1")
                && message.contains(&format!("writes version {SCHEMA_VERSION}")),
            "{message}"
        );
        // A table this build made opens.
        let dir = tempfile::tempdir().unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap();
        Table::open_or_create(&url, Arc::new(Metrics::default()))
            .await
            .unwrap();
        Table::open_or_create(&url, Arc::new(Metrics::default()))
            .await
            .unwrap();
    }
}
