//! The store's tables as Delta Lake tables: `{store}/visits` and `{store}/conversions`, each
//! with its transaction log in `_delta_log/` (delta-rs), its files under the Hive directories
//! `dt=…/hour=…/` and those two as the table's partition columns (docs/table-format.md).
//!
//! A file is part of a table once a commit names it: readers that follow the log (`query`,
//! Spark, the `deltalake` Python package) never see a file half uploaded, or one that a
//! compaction has replaced. A commit is a put-if-absent of the log's next version, so two
//! processes committing at once never overwrite each other: the loser reloads the log and
//! tries again on top of the winner.
//!
//! Committing the same file twice is harmless while the file is live (the log keeps one
//! entry per path), but wrong once a compaction has removed it: the rows would then be read
//! both from it and from the compacted file. So a file that may have been committed before
//! (its upload found it already stored: the replay of a segment after a crash) is committed
//! only if the log names it neither as live nor as removed.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::{DataType as ArrowType, Schema};
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake_core::kernel::{
    Action, Add, DataType, MapType, StructField, StructType, Transaction,
};
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use url::Url;

use crate::storage::columns::TableKind;

/// The table's partition columns: the Hive directories every file sits in.
pub const PARTITIONS: [&str; 2] = ["dt", "hour"];

/// How long the log keeps versions for time travel before a checkpoint removes them. At a
/// commit a second the log would otherwise grow by 86 400 files a day for 30 days.
pub const LOG_RETENTION: &str = "interval 2 days";

/// Commits tried in a row when other processes keep taking the next version.
const ATTEMPTS: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("the {table} table's log: {source}")]
    Delta {
        table: &'static str,
        source: DeltaTableError,
    },
    #[error("the {table} table: {message}")]
    Other {
        table: &'static str,
        message: String,
    },
    /// A committer with a later lease has committed to the table: this one must stop.
    #[error("the {table} table: committer lease {epoch} was taken over (the log holds {seen})")]
    Fenced {
        table: &'static str,
        epoch: i64,
        seen: i64,
    },
}

/// A Parquet file in the store, to be committed to its table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    /// The object's path in the store: `{table}/dt=…/hour=…/{name}.parquet`.
    pub path: ObjectPath,
    pub size: u64,
    /// Rows in the file, when known (they go into the log's statistics).
    pub rows: Option<u64>,
    /// When the file was written, in Unix milliseconds.
    pub modified_ms: i64,
    /// The upload found the object already stored: an earlier attempt may have committed it.
    pub replayed: bool,
}

/// What a commit did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The log's version after the commit (`None`: nothing was committed).
    pub version: Option<u64>,
    /// Files added to the table.
    pub added: usize,
    /// Files left out because the log already names them.
    pub known: usize,
    /// Files already in the store that the commit creating the table took in.
    pub adopted: usize,
    /// Versions taken by another process first.
    pub conflicts: usize,
}

/// Where the tables are: the store (rooted at the store's root), and how delta-rs reaches
/// it. delta-rs addresses a table by URL and reads a local directory as `file://` (whose
/// listings it sorts, and whose paths it takes as absolute), anything else through the
/// store as it is.
#[derive(Clone)]
pub struct Location {
    /// The store, as the rest of the sink sees it.
    pub root: Arc<dyn ObjectStore>,
    /// The store delta-rs reads and writes through, and the URL of the store's root in it.
    delta: Arc<dyn ObjectStore>,
    base: Url,
    /// The store's directory when it is local (commits are synced there).
    local_root: Option<PathBuf>,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Location")
            .field("base", &self.base.as_str())
            .finish()
    }
}

impl Location {
    /// The tables of `root`, a store whose files are in `local_root` when it is local.
    pub fn new(
        root: Arc<dyn ObjectStore>,
        local_root: Option<&std::path::Path>,
    ) -> std::io::Result<Location> {
        let Some(dir) = local_root else {
            return Ok(Location::remote(root));
        };
        let dir = dir.canonicalize()?;
        let base = Url::from_directory_path(&dir).map_err(|()| {
            std::io::Error::other(format!("{} cannot be a file:// URL", dir.display()))
        })?;
        Ok(Location {
            root,
            delta: Arc::new(object_store::local::LocalFileSystem::new()),
            base,
            local_root: Some(dir),
        })
    }

    /// The tables of a store with nothing local (memory, S3, tests).
    pub fn remote(root: Arc<dyn ObjectStore>) -> Location {
        Location {
            delta: Arc::clone(&root),
            root,
            base: Url::parse("memory:///").expect("a constant URL"),
            local_root: None,
        }
    }

    /// The store as the uploader writes to it (files synced on a local store).
    pub fn target(&self) -> crate::storage::store::Target {
        crate::storage::store::Target {
            store: Arc::clone(&self.root),
            local_root: self.local_root.clone(),
        }
    }

    /// Makes the log of `kind` durable through version `through`, for a local store (which
    /// writes without `fsync`): the commit files after `after` (or the last 100 versions),
    /// the checkpoints among them, `_last_checkpoint`, and the directories.
    pub(crate) fn sync_log(
        &self,
        kind: TableKind,
        after: Option<u64>,
        through: u64,
    ) -> std::io::Result<()> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let dir = root.join(kind.name()).join("_delta_log");
        let from = after.map_or(through.saturating_sub(100), |v| v + 1);
        let mut names = vec!["_last_checkpoint".to_owned()];
        for v in from..=through {
            names.push(format!("{v:020}.json"));
            names.push(format!("{v:020}.checkpoint.parquet"));
        }
        for name in names {
            match std::fs::File::open(dir.join(&name)) {
                Ok(f) => f.sync_all()?,
                // Cleaned up, or no checkpoint at that version.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        std::fs::File::open(&dir)?.sync_all()?;
        std::fs::File::open(root.join(kind.name()))?.sync_all()
    }
}

/// One table's log, loaded once and brought up to date at each commit.
pub struct TableLog {
    kind: TableKind,
    at: Location,
    table: Option<DeltaTable>,
    /// A commit failed in a way that may have left it made (an error after the put, a
    /// failed sync): the next one checks its files against the log, and syncs the log.
    unsure: bool,
    /// The log is durable through this version (a local store; `None`: not known yet).
    synced_through: Option<u64>,
    /// The committer's application id and lease epoch: a log that records a later epoch
    /// for that id refuses this writer's commits ([`TableError::Fenced`]).
    fence: Option<(String, i64)>,
}

impl std::fmt::Debug for TableLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableLog")
            .field("table", &self.kind.name())
            .field("version", &self.table.as_ref().and_then(|t| t.version()))
            .finish()
    }
}

/// A builder of the table `kind` at `at`.
pub fn builder(at: &Location, kind: TableKind) -> Result<DeltaTableBuilder, TableError> {
    // delta-rs takes a root store and a URL whose path is the table's place in it; for a
    // store that is not local the scheme only picks the log store, and `memory` names the
    // default one (put-if-absent commits through the store's own `PutMode::Create`).
    let url = at
        .base
        .join(&format!("{}/", kind.name()))
        .map_err(|e| TableError::Other {
            table: kind.name(),
            message: e.to_string(),
        })?;
    DeltaTableBuilder::from_url(url.clone())
        .map(|b| b.with_storage_backend(Arc::clone(&at.delta), url))
        .map_err(|source| TableError::Delta {
            table: kind.name(),
            source,
        })
}

/// Whether `{store}/{table}` has a transaction log.
pub async fn exists(store: &dyn ObjectStore, kind: TableKind) -> object_store::Result<bool> {
    let log = ObjectPath::from(format!("{}/_delta_log", kind.name()));
    // The first object listed is enough: the log holds a file for every version kept.
    Ok(store.list(Some(&log)).next().await.transpose()?.is_some())
}

/// Loads the table's log, or `None` when the store has none yet.
pub async fn load(at: &Location, kind: TableKind) -> Result<Option<DeltaTable>, TableError> {
    let other = |e: object_store::Error| TableError::Other {
        table: kind.name(),
        message: format!("cannot list its log: {e}"),
    };
    if !exists(at.root.as_ref(), kind).await.map_err(other)? {
        return Ok(None);
    }
    match builder(at, kind)?.load().await {
        Ok(t) => Ok(Some(t)),
        Err(DeltaTableError::NotATable(_)) => Ok(None),
        Err(source) => Err(TableError::Delta {
            table: kind.name(),
            source,
        }),
    }
}

impl TableLog {
    pub fn new(at: Location, kind: TableKind) -> TableLog {
        TableLog {
            kind,
            at,
            table: None,
            unsure: false,
            synced_through: None,
            fence: None,
        }
    }

    /// Commits from now on as `app` under lease `epoch`: each commit records it, and the log
    /// is checked for a later epoch whenever it is loaded or reloaded, so that a committer
    /// whose lease was taken over stops before it commits on a snapshot it has not checked.
    pub fn fence(&mut self, app: &str, epoch: i64) {
        self.fence = Some((app.to_owned(), epoch));
    }

    /// Refuses to go on when the log records a later lease than this committer's.
    async fn check_fence(&self, table: &DeltaTable) -> Result<(), TableError> {
        let Some((app, epoch)) = &self.fence else {
            return Ok(());
        };
        let seen = table
            .snapshot()
            .map_err(|e| self.delta(e))?
            .transaction_version(table.log_store().as_ref(), app)
            .await
            .map_err(|e| self.delta(e))?;
        match seen {
            Some(seen) if seen > *epoch => Err(TableError::Fenced {
                table: self.kind.name(),
                epoch: *epoch,
                seen,
            }),
            _ => Ok(()),
        }
    }

    fn delta(&self, source: DeltaTableError) -> TableError {
        TableError::Delta {
            table: self.kind.name(),
            source,
        }
    }

    fn other(&self, message: impl Into<String>) -> TableError {
        TableError::Other {
            table: self.kind.name(),
            message: message.into(),
        }
    }

    /// The log's version as last loaded.
    pub fn version(&self) -> Option<u64> {
        self.table.as_ref().and_then(|t| t.version())
    }

    /// Commits `files` to the table in one commit, recording `(app, txn)` as the writer's
    /// application transaction: [`TableLog::commit_with`] with one.
    pub async fn commit(
        &mut self,
        files: &[NewFile],
        app: &str,
        txn: i64,
    ) -> Result<Committed, TableError> {
        self.commit_with(files, &[(app.to_owned(), txn)]).await
    }

    /// Commits `files` to the table in one commit, recording each `(app, version)` of `txns`
    /// as an application transaction (and the fence's, if any), and leaves out those the log
    /// already names (see the module's notes). A store without the table gets it created by
    /// this commit, which also takes in the Parquet files already under the table's
    /// directory: a store written before the table format becomes a table without losing a
    /// row.
    pub async fn commit_with(
        &mut self,
        files: &[NewFile],
        txns: &[(String, i64)],
    ) -> Result<Committed, TableError> {
        let mut out = Committed::default();
        if files.is_empty() {
            return Ok(out);
        }
        let mut adds = Vec::with_capacity(files.len());
        for f in files {
            adds.push(self.add_action(f)?);
        }
        let name = self.kind.name();
        let delta = |source| TableError::Delta {
            table: name,
            source,
        };
        for attempt in 0..ATTEMPTS {
            let Some(table) = self.table.as_mut() else {
                match load(&self.at, self.kind).await? {
                    Some(t) => {
                        self.check_fence(&t).await?;
                        self.table = Some(t);
                    }
                    None => match self.create(&adds, &app_txns(txns, &self.fence)).await {
                        Ok((version, adopted)) => {
                            self.synced(version)?;
                            out.version = Some(version);
                            out.added = adds.len();
                            out.adopted = adopted;
                            return Ok(out);
                        }
                        // Another process created it first: commit on top of theirs.
                        Err(e) => match load(&self.at, self.kind).await? {
                            Some(t) => {
                                self.check_fence(&t).await?;
                                self.table = Some(t);
                                out.conflicts += 1;
                            }
                            None => return Err(e),
                        },
                    },
                }
                continue;
            };
            // A file that may be in the log already, or any file once another commit came
            // in between, is checked against the log.
            let check = attempt > 0 || self.unsure || files.iter().any(|f| f.replayed);
            let pending: Vec<Action> = if check {
                let known = known_paths(table).await.map_err(delta)?;
                let before = adds.len();
                let left: Vec<Action> = adds
                    .iter()
                    .filter(|a| match a {
                        Action::Add(add) => !known.contains(add.path.as_str()),
                        _ => true,
                    })
                    .cloned()
                    .collect();
                out.known = before - left.len();
                left
            } else {
                adds.clone()
            };
            if pending.is_empty() {
                // Committed before, perhaps by a commit whose sync failed or never came:
                // made durable before the caller deletes what the files came from.
                if let Some(v) = table.version() {
                    self.synced(v)?;
                }
                self.unsure = false;
                return Ok(out);
            }
            let n = pending.len();
            let state = table.snapshot().map_err(delta)?.clone();
            // No retries inside delta-rs: its conflict check lets two appends of the same
            // file through, so a lost race comes back here and is checked again.
            let props = CommitProperties::default()
                .with_max_retries(0)
                .with_application_transactions(app_txns(txns, &self.fence));
            let commit = CommitBuilder::from(props)
                .with_actions(pending)
                .build(
                    Some(&state),
                    table.log_store(),
                    DeltaOperation::Write {
                        mode: SaveMode::Append,
                        partition_by: Some(PARTITIONS.map(String::from).to_vec()),
                        predicate: None,
                    },
                )
                .await;
            match commit {
                Ok(done) => {
                    let version = done.version();
                    let snapshot = done.snapshot();
                    if let Some(t) = self.table.as_mut() {
                        t.state = Some(snapshot);
                    }
                    self.synced(version)?;
                    self.unsure = false;
                    out.version = Some(version);
                    out.added = n;
                    return Ok(out);
                }
                Err(e) if is_conflict(&e) => {
                    out.conflicts += 1;
                    if let Err(e) = table.update_state().await {
                        self.table = None;
                        return Err(delta(e));
                    }
                    if let Some(t) = self.table.as_ref() {
                        self.check_fence(t).await?;
                    }
                }
                Err(e) => {
                    // The state may be behind or damaged: load it afresh next time. The
                    // commit may have been made all the same (a put that failed on its way
                    // back): the next one checks.
                    self.table = None;
                    self.unsure = true;
                    return Err(delta(e));
                }
            }
        }
        Err(self.other(format!(
            "gave up after {ATTEMPTS} commits in a row lost to other writers"
        )))
    }

    /// Syncs the log through `version` (a local store); a failure leaves the next commit to
    /// check what the log holds.
    fn synced(&mut self, version: u64) -> Result<(), TableError> {
        if self.synced_through.is_some_and(|v| v >= version) {
            return Ok(());
        }
        match self.at.sync_log(self.kind, self.synced_through, version) {
            Ok(()) => {
                self.synced_through = Some(version);
                Ok(())
            }
            Err(e) => {
                self.unsure = true;
                Err(self.other(format!(
                    "cannot sync its log through version {version}: {e}"
                )))
            }
        }
    }

    /// `Add` for `f`, with its path relative to the table and its partition values read
    /// from that path.
    fn add_action(&self, f: &NewFile) -> Result<Action, TableError> {
        let prefix = format!("{}/", self.kind.name());
        let rel = f
            .path
            .as_ref()
            .strip_prefix(&prefix)
            .ok_or_else(|| self.other(format!("{} is not under {prefix}", f.path)))?;
        let partition_values = partition_values(rel)
            .ok_or_else(|| self.other(format!("{} is not under dt=…/hour=…/", f.path)))?;
        Ok(Action::Add(Add {
            path: rel.to_owned(),
            partition_values,
            size: f.size as i64,
            modification_time: f.modified_ms,
            data_change: true,
            stats: f.rows.map(|n| format!("{{\"numRecords\":{n}}}")),
            ..Default::default()
        }))
    }

    /// Creates the table with `adds` and every Parquet file already under its directory;
    /// answers the version and how many files were already there.
    async fn create(
        &mut self,
        adds: &[Action],
        txns: &[Transaction],
    ) -> Result<(u64, usize), TableError> {
        let ours: HashSet<String> = adds
            .iter()
            .filter_map(|a| match a {
                Action::Add(add) => Some(add.path.clone()),
                _ => None,
            })
            .collect();
        let prefix = ObjectPath::from(self.kind.name());
        let existing: Vec<object_store::ObjectMeta> = self
            .at
            .root
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.other(format!("cannot list its files: {e}")))?;
        let mut all = adds.to_vec();
        all.extend(txns.iter().cloned().map(Action::Txn));
        let mut adopted = 0;
        for meta in existing {
            let Some(rel) = meta
                .location
                .as_ref()
                .strip_prefix(&format!("{}/", self.kind.name()))
            else {
                continue;
            };
            if !rel.ends_with(".parquet") || ours.contains(rel) {
                continue;
            }
            if !plain(rel) {
                tracing::warn!(
                    "{}: not taken into the table (a name with characters a Delta path would have to escape)",
                    meta.location
                );
                continue;
            }
            let Some(partition_values) = partition_values(rel) else {
                continue;
            };
            all.push(Action::Add(Add {
                path: rel.to_owned(),
                partition_values,
                size: meta.size as i64,
                modification_time: meta.last_modified.timestamp_millis(),
                data_change: true,
                ..Default::default()
            }));
            adopted += 1;
        }
        let table = builder(&self.at, self.kind)?
            .build()
            .map_err(|e| self.delta(e))?;
        let table = table
            .create()
            .with_table_name(self.kind.name())
            .with_columns(delta_schema(&self.kind.schema()).map_err(|m| self.other(m))?)
            .with_partition_columns(PARTITIONS)
            .with_configuration_property(
                deltalake_core::TableProperty::LogRetentionDuration,
                Some(LOG_RETENTION),
            )
            .with_actions(all)
            .with_save_mode(SaveMode::ErrorIfExists)
            // Lost to another creator: delta-rs would commit the creation again on top of
            // theirs (a second table id, every adopted file twice); the caller reloads.
            .with_commit_properties(CommitProperties::default().with_max_retries(0))
            .await
            .map_err(|e| self.delta(e))?;
        let version = table.version().unwrap_or(0);
        self.table = Some(table);
        Ok((version, adopted))
    }
}

/// The application transactions of a commit: the writer's, then the committer's fence.
fn app_txns(txns: &[(String, i64)], fence: &Option<(String, i64)>) -> Vec<Transaction> {
    txns.iter()
        .chain(fence.iter())
        .map(|(app, v)| Transaction::new(app, *v))
        .collect()
}

/// Whether a failed commit lost the race for its version (another process committed first).
pub(crate) fn is_conflict(e: &DeltaTableError) -> bool {
    matches!(
        e,
        DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction {
                source: TransactionError::MaxCommitAttempts(_)
                    | TransactionError::VersionAlreadyExists(_)
            }
    )
}

/// The paths the log names: its live files and those removed and not yet vacuumed.
async fn known_paths(table: &DeltaTable) -> Result<HashSet<String>, DeltaTableError> {
    let state = table.snapshot()?;
    let mut known: HashSet<String> = state
        .log_data()
        .iter()
        .map(|f| f.path().into_owned())
        .collect();
    let tombstones: Vec<String> = state
        .all_tombstones(table.log_store().as_ref())
        .map_ok(|t| t.path().into_owned())
        .try_collect()
        .await?;
    known.extend(tombstones);
    Ok(known)
}

/// Whether `rel` needs no escaping as a Delta path (a URI reference): the sink's own names
/// never do.
pub(crate) fn plain(rel: &str) -> bool {
    rel.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.=/".contains(&b))
}

/// `{"dt": …, "hour": …}` from a path relative to the table, `dt=…/hour=…/{file}`.
pub fn partition_values(rel: &str) -> Option<HashMap<String, Option<String>>> {
    let mut parts = rel.split('/');
    let dt = parts.next()?.strip_prefix("dt=")?;
    let hour = parts.next()?.strip_prefix("hour=")?;
    let file = parts.next()?;
    if dt.is_empty() || hour.is_empty() || file.is_empty() || parts.next().is_some() {
        return None;
    }
    Some(HashMap::from([
        ("dt".to_owned(), Some(dt.to_owned())),
        ("hour".to_owned(), Some(hour.to_owned())),
    ]))
}

/// The Delta columns of a table with `schema`, then the partition columns (strings).
pub fn delta_schema(schema: &Schema) -> Result<Vec<StructField>, String> {
    let mut fields = Vec::with_capacity(schema.fields().len() + PARTITIONS.len());
    for f in schema.fields() {
        fields.push(StructField::new(
            f.name(),
            delta_type(f.data_type()).ok_or_else(|| {
                format!(
                    "column {} has a type Delta has no name for: {}",
                    f.name(),
                    f.data_type()
                )
            })?,
            f.is_nullable(),
        ));
    }
    for p in PARTITIONS {
        fields.push(StructField::new(p, DataType::STRING, true));
    }
    Ok(fields)
}

fn delta_type(t: &ArrowType) -> Option<DataType> {
    Some(match t {
        ArrowType::Utf8 | ArrowType::Utf8View | ArrowType::LargeUtf8 => DataType::STRING,
        ArrowType::Int64 => DataType::LONG,
        ArrowType::Int32 => DataType::INTEGER,
        ArrowType::Int16 => DataType::SHORT,
        ArrowType::Int8 => DataType::BYTE,
        ArrowType::Boolean => DataType::BOOLEAN,
        ArrowType::Float64 => DataType::DOUBLE,
        ArrowType::Float32 => DataType::FLOAT,
        ArrowType::Timestamp(_, Some(_)) => DataType::TIMESTAMP,
        ArrowType::Timestamp(_, None) => DataType::TIMESTAMP_NTZ,
        ArrowType::Map(entries, _) => {
            let ArrowType::Struct(kv) = entries.data_type() else {
                return None;
            };
            let (k, v) = (kv.first()?, kv.get(1)?);
            DataType::Map(Box::new(MapType::new(
                delta_type(k.data_type())?,
                delta_type(v.data_type())?,
                v.is_nullable(),
            )))
        }
        ArrowType::Struct(fields) => {
            let mut inner = Vec::with_capacity(fields.len());
            for f in fields {
                inner.push(StructField::new(
                    f.name(),
                    delta_type(f.data_type())?,
                    f.is_nullable(),
                ));
            }
            DataType::Struct(Box::new(StructType::try_new(inner).ok()?))
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
