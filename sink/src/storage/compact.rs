//! Compaction, retention and vacuum of the store's tables (docs/table-format.md
//! "Compaction"): one pass of `query compact`.
//!
//! - **Compaction** merges an hour's small files into files of about
//!   [`Policy::target_bytes`], sorted for the reports' scans
//!   ([`compacted_order`]). Each hour is one commit
//!   that removes the small files and adds the merged ones, both marked `dataChange = false`:
//!   a reader sees either the small files or the merged ones, never both, never neither.
//!   An hour still being written is compacted once it has [`Policy::min_files`] small files
//!   written by edges, and its merged files once there are as many of them (tiers: a row is
//!   rewritten a few times, the hour holds few files); once the hour has settled
//!   ([`Policy::settle_ms`] after its end) all its small files are merged.
//! - **Retention** removes whole days older than a given age in one commit.
//! - **Vacuum** deletes the files removed from the table a while ago, so a reader still on an
//!   older snapshot finds them until then.
//!
//! Commits never let delta-rs retry on its own (its conflict check lets two compactions
//! remove the same files, which would count their rows twice). When another process took
//! the version first, the log is reloaded: if every file this commit removes is still live,
//! it commits on top; if any is gone (another compaction, or retention, got there first),
//! the hour is left as the other process made it and the files merged here are deleted,
//! since no commit names them. A commit whose answer was lost and that did land is
//! recognised by its merged files being live.

use std::collections::{BTreeMap, HashSet};

use arrow::array::{ArrayRef, new_null_array};
use arrow::compute::{SortColumn, SortOptions, concat_batches, lexsort_to_indices};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use deltalake_core::DeltaTable;
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake_core::kernel::{Action, Add, Remove};
use deltalake_core::operations::vacuum::{Clock, VacuumMode};
use deltalake_core::protocol::DeltaOperation;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::storage::columns::TableKind;
use crate::storage::store::{compacted_order, compacted_properties};
use crate::storage::table::{Location, TableError, is_conflict, load, partition_values, plain};
use crate::storage::uploader::{MULTIPART_BYTES, put_new};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Commits tried in a row when other processes keep taking the next version.
const ATTEMPTS: usize = 20;

/// Rows written to a merged file at a time.
const SLICE_ROWS: usize = 64 * 1024;

/// The name every merged file starts with (edges name theirs `{node}-{segment}`).
pub const MERGED_PREFIX: &str = "c-";

/// Which files a pass merges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Merged files are about this size; files of half of it or more are left as they are.
    /// A merge holds its files' rows in memory, several times this size.
    pub target_bytes: u64,
    /// An hour still being written is compacted once it has this many small files from
    /// edges (and its merged files once it has this many of those).
    pub min_files: usize,
    /// An hour is settled this long after its end: edges have sent what they had for it.
    pub settle_ms: i64,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            target_bytes: 64 << 20,
            min_files: 8,
            settle_ms: 10 * 60_000,
        }
    }
}

/// One pass over one table.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub policy: Policy,
    /// The pass's clock, Unix milliseconds.
    pub now_ms: i64,
    /// Days (UTC) kept: a day older than this many days before today is removed from the
    /// table. `None`: keep everything.
    pub retain_days: Option<u32>,
    /// Files removed from the table are deleted from the store this long after their
    /// removal. `None`: no vacuum.
    pub vacuum_after_ms: Option<i64>,
    /// The vacuum also deletes files no commit names that are older than `vacuum_after_ms`
    /// (a merge or an upload that crashed before its commit). This lists the whole table.
    pub orphans: bool,
}

/// What a pass did to one table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Live files before and after the pass.
    pub files_before: usize,
    pub files_after: usize,
    /// Files merged away, and the merged files written in their place.
    pub merged: usize,
    pub written: usize,
    /// Rows rewritten, and bytes read and written for them.
    pub rows: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Files and days removed by retention.
    pub dropped_files: usize,
    pub dropped_days: usize,
    /// Hours left alone because another process changed them first.
    pub abandoned: usize,
    /// Files that could not be merged (unreadable, or columns the table no longer has);
    /// they stay as they are.
    pub skipped: usize,
    /// Files the vacuum deleted.
    pub vacuumed: usize,
    /// The log's version after the pass.
    pub version: Option<u64>,
}

/// A live file of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Live {
    /// Its path relative to the table: `dt=…/hour=…/{name}.parquet`.
    rel: String,
    size: u64,
    modified_ms: i64,
}

impl Live {
    fn name(&self) -> &str {
        self.rel.rsplit('/').next().unwrap_or_default()
    }
}

/// Runs one pass over the table `kind`: retention, compaction, vacuum. A store without the
/// table's log is left alone (the edges create it).
pub async fn run(at: &Location, kind: TableKind, opts: &Options) -> Result<Outcome, TableError> {
    let mut out = Outcome::default();
    let Some(mut table) = load(at, kind).await? else {
        return Ok(out);
    };
    let mut pass = Pass {
        at,
        kind,
        opts,
        seq: 0,
    };
    out.files_before = live(&table, kind)?.len();
    if let Some(days) = opts.retain_days {
        pass.retain(&mut table, days, &mut out).await?;
    }
    let files = live(&table, kind)?;
    for (hour, bins) in plan(&files, &opts.policy, opts.now_ms) {
        pass.compact_hour(&mut table, &hour, bins, &mut out).await?;
    }
    if let Some(after) = opts.vacuum_after_ms {
        pass.vacuum(&mut table, after, &mut out).await?;
    }
    out.files_after = live(&table, kind)?.len();
    out.version = table.version();
    Ok(out)
}

fn delta(kind: TableKind) -> impl Fn(deltalake_core::DeltaTableError) -> TableError {
    move |source| TableError::Delta {
        table: kind.name(),
        source,
    }
}

fn other(kind: TableKind, message: impl Into<String>) -> TableError {
    TableError::Other {
        table: kind.name(),
        message: message.into(),
    }
}

/// The table's live files under `dt=…/hour=…/` (anything else is left alone).
fn live(table: &DeltaTable, kind: TableKind) -> Result<Vec<Live>, TableError> {
    let state = table.snapshot().map_err(delta(kind))?;
    Ok(state
        .log_data()
        .iter()
        .map(|f| Live {
            rel: f.path().into_owned(),
            size: f.size().max(0) as u64,
            modified_ms: f.modification_time(),
        })
        .filter(|f| partition_values(&f.rel).is_some())
        .collect())
}

/// The start of the hour `dt=YYYY-MM-DD/hour=HH`, Unix milliseconds.
fn hour_start(dt: &str, hour: &str) -> Option<i64> {
    let day = chrono::NaiveDate::parse_from_str(dt, "%Y-%m-%d").ok()?;
    let h: u32 = hour.parse().ok().filter(|h| *h < 24)?;
    Some(day.and_hms_opt(h, 0, 0)?.and_utc().timestamp_millis())
}

/// The hours to compact and, for each (`dt=…/hour=…`), the groups of files that become one
/// merged file each.
fn plan(files: &[Live], policy: &Policy, now_ms: i64) -> BTreeMap<String, Vec<Vec<Live>>> {
    let mut hours: BTreeMap<String, Vec<&Live>> = BTreeMap::new();
    for f in files {
        if let Some((dir, _)) = f.rel.rsplit_once('/') {
            hours.entry(dir.to_owned()).or_default().push(f);
        }
    }
    let half = policy.target_bytes / 2;
    let mut out = BTreeMap::new();
    for (dir, files) in hours {
        let Some((dt, hour)) = dir
            .split_once('/')
            .and_then(|(d, h)| Some((d.strip_prefix("dt=")?, h.strip_prefix("hour=")?)))
        else {
            continue;
        };
        let Some(start) = hour_start(dt, hour) else {
            continue;
        };
        let settled = start + HOUR_MS + policy.settle_ms <= now_ms;
        let small: Vec<Live> = files
            .into_iter()
            .filter(|f| f.size < half && plain(&f.rel))
            .cloned()
            .collect();
        let mut bins = Vec::new();
        if settled {
            if small.len() >= 2 {
                bins = pack(small, policy.target_bytes);
            }
        } else {
            // Still being written: edges' files, and merged ones, each merged once there are
            // `min_files` of them (a row is rewritten about log_min_files(files) times).
            let (merged, raw): (Vec<Live>, Vec<Live>) = small
                .into_iter()
                .partition(|f| f.name().starts_with(MERGED_PREFIX));
            for group in [raw, merged] {
                if group.len() >= policy.min_files.max(2) {
                    bins.extend(pack(group, policy.target_bytes));
                }
            }
        }
        if !bins.is_empty() {
            out.insert(dir, bins);
        }
    }
    out
}

/// `files` in groups of at most `target_bytes` each (oldest first); groups of one file are
/// left out.
fn pack(mut files: Vec<Live>, target_bytes: u64) -> Vec<Vec<Live>> {
    files.sort_by(|a, b| (a.modified_ms, &a.rel).cmp(&(b.modified_ms, &b.rel)));
    let mut bins: Vec<Vec<Live>> = Vec::new();
    let mut bin: Vec<Live> = Vec::new();
    let mut bytes = 0u64;
    for f in files {
        if !bin.is_empty() && bytes + f.size > target_bytes {
            bins.push(std::mem::take(&mut bin));
            bytes = 0;
        }
        bytes += f.size;
        bin.push(f);
    }
    bins.push(bin);
    bins.retain(|b| b.len() >= 2);
    bins
}

/// `batch` with exactly the columns of `schema`: a column the file lacks is null (a column
/// added since it was written), one of another type or one the table no longer has makes the
/// file unmergeable (`None`).
fn conform(batch: RecordBatch, schema: &SchemaRef) -> Option<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return batch.with_schema(SchemaRef::clone(schema)).ok();
    }
    let theirs = batch.schema();
    if theirs
        .fields()
        .iter()
        .any(|f| schema.field_with_name(f.name()).is_err())
    {
        return None;
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        match theirs.index_of(field.name()) {
            Ok(i)
                if theirs
                    .field(i)
                    .data_type()
                    .equals_datatype(field.data_type()) =>
            {
                columns.push(ArrayRef::clone(batch.column(i)));
            }
            Ok(_) => return None,
            Err(_) if field.is_nullable() => {
                columns.push(new_null_array(field.data_type(), batch.num_rows()));
            }
            Err(_) => return None,
        }
    }
    RecordBatch::try_new(SchemaRef::clone(schema), columns).ok()
}

/// A merged file, written and not yet committed.
struct Merged {
    path: ObjectPath,
    size: u64,
    rows: u64,
    /// The files it holds the rows of.
    inputs: Vec<Live>,
}

struct Pass<'a> {
    at: &'a Location,
    kind: TableKind,
    opts: &'a Options,
    /// Names merged files apart within the pass.
    seq: u64,
}

impl Pass<'_> {
    fn object(&self, rel: &str) -> ObjectPath {
        ObjectPath::from(format!("{}/{rel}", self.kind.name()))
    }

    /// Removes every file of the days older than `days` before today (UTC) in one commit.
    async fn retain(
        &mut self,
        table: &mut DeltaTable,
        days: u32,
        out: &mut Outcome,
    ) -> Result<(), TableError> {
        let today = self.opts.now_ms.div_euclid(DAY_MS);
        let cutoff = chrono::DateTime::from_timestamp_millis((today - i64::from(days)) * DAY_MS)
            .unwrap_or_default()
            .format("%Y-%m-%d")
            .to_string();
        for _ in 0..ATTEMPTS {
            // Read afresh each attempt: what another process removed meanwhile is not
            // removed twice.
            let old: Vec<Live> = live(table, self.kind)?
                .into_iter()
                .filter(|f| day(&f.rel).is_some_and(|d| d < cutoff.as_str()))
                .collect();
            if old.is_empty() {
                return Ok(());
            }
            let days: HashSet<&str> = old.iter().filter_map(|f| f.rel.split('/').next()).collect();
            let (n, d) = (old.len(), days.len());
            let now = self.opts.now_ms;
            let actions = old.iter().map(|f| remove(f, true, now)).collect();
            let op = DeltaOperation::Delete {
                predicate: Some(format!("dt < '{cutoff}'")),
            };
            if self.commit(table, actions, op).await? {
                out.dropped_files += n;
                out.dropped_days += d;
                return Ok(());
            }
        }
        Err(other(
            self.kind,
            format!("retention gave up after {ATTEMPTS} commits in a row lost to other writers"),
        ))
    }

    /// Merges each of `bins` into one file and commits them all for the hour `dir`.
    async fn compact_hour(
        &mut self,
        table: &mut DeltaTable,
        dir: &str,
        bins: Vec<Vec<Live>>,
        out: &mut Outcome,
    ) -> Result<(), TableError> {
        let mut merged = Vec::with_capacity(bins.len());
        for bin in bins {
            match self.merge(dir, bin, out).await {
                Ok(Some(m)) => merged.push(m),
                Ok(None) => {}
                Err(e) => {
                    self.discard(&merged).await;
                    return Err(e);
                }
            }
        }
        if merged.is_empty() {
            return Ok(());
        }
        let now = self.opts.now_ms;
        let mut actions = Vec::new();
        for m in &merged {
            actions.extend(m.inputs.iter().map(|f| remove(f, false, now)));
            let rel = m
                .path
                .as_ref()
                .strip_prefix(&format!("{}/", self.kind.name()))
                .unwrap_or_default()
                .to_owned();
            actions.push(Action::Add(Add {
                partition_values: partition_values(&rel).unwrap_or_default(),
                path: rel,
                size: m.size as i64,
                modification_time: now,
                data_change: false,
                stats: Some(format!("{{\"numRecords\":{}}}", m.rows)),
                ..Default::default()
            }));
        }
        let op = DeltaOperation::Optimize {
            predicate: None,
            target_size: self.opts.policy.target_bytes as i64,
        };
        let inputs: HashSet<String> = merged
            .iter()
            .flat_map(|m| m.inputs.iter().map(|f| f.rel.clone()))
            .collect();
        let outputs: HashSet<String> = merged
            .iter()
            .filter_map(|m| {
                m.path
                    .as_ref()
                    .strip_prefix(&format!("{}/", self.kind.name()))
                    .map(str::to_owned)
            })
            .collect();
        let mut made = false;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                let now_live: HashSet<String> =
                    live(table, self.kind)?.into_iter().map(|f| f.rel).collect();
                if outputs.iter().all(|p| now_live.contains(p)) {
                    // An earlier attempt landed; its answer was lost.
                    made = true;
                    break;
                }
                if !inputs.iter().all(|p| now_live.contains(p)) {
                    // Another compaction or a retention removed some first.
                    tracing::info!(
                        "{} {dir}: changed by another process meanwhile; left as it is",
                        self.kind.name()
                    );
                    self.discard(&merged).await;
                    out.abandoned += 1;
                    return Ok(());
                }
            }
            match self.commit(table, actions.clone(), op.clone()).await {
                Ok(true) => {
                    made = true;
                    break;
                }
                Ok(false) => continue,
                // Perhaps made, perhaps not: the merged files stay (a vacuum with orphans
                // deletes them if no commit names them).
                Err(e) => return Err(e),
            }
        }
        if !made {
            // The last attempt's answer may have been lost on its way back, too.
            let now_live: HashSet<String> =
                live(table, self.kind)?.into_iter().map(|f| f.rel).collect();
            made = outputs.iter().all(|p| now_live.contains(p));
        }
        if !made {
            // Every attempt lost to other writers: nothing names the merged files.
            self.discard(&merged).await;
            return Err(other(
                self.kind,
                format!("{dir}: gave up after {ATTEMPTS} commits in a row lost to other writers"),
            ));
        }
        for m in &merged {
            out.merged += m.inputs.len();
            out.written += 1;
            out.rows += m.rows;
            out.bytes_written += m.size;
        }
        Ok(())
    }

    /// Commits `actions` on the table's current version, without delta-rs' retries:
    /// `Ok(false)` when another process took that version first (the table is reloaded).
    async fn commit(
        &self,
        table: &mut DeltaTable,
        actions: Vec<Action>,
        op: DeltaOperation,
    ) -> Result<bool, TableError> {
        let state = table.snapshot().map_err(delta(self.kind))?.clone();
        let props = CommitProperties::default().with_max_retries(0);
        let done = CommitBuilder::from(props)
            .with_actions(actions)
            .build(Some(&state), table.log_store(), op)
            .await;
        match done {
            Ok(done) => {
                let version = done.version();
                table.state = Some(done.snapshot());
                self.at
                    .sync_log(self.kind, None, version)
                    .map_err(|e| other(self.kind, format!("cannot sync its log: {e}")))?;
                Ok(true)
            }
            Err(e) if is_conflict(&e) => {
                table.update_state().await.map_err(delta(self.kind))?;
                Ok(false)
            }
            Err(e) => Err(delta(self.kind)(e)),
        }
    }

    /// Deletes merged files no commit names.
    async fn discard(&self, merged: &[Merged]) {
        for m in merged {
            if let Err(e) = self.at.root.delete(&m.path).await {
                tracing::warn!("{}: cannot delete an uncommitted merged file: {e}", m.path);
            }
        }
    }

    /// Reads `bin`'s files, sorts their rows and writes them as one file in `dir`. Files that
    /// cannot be read or conformed are left out (and stay in the table as they are).
    async fn merge(
        &mut self,
        dir: &str,
        bin: Vec<Live>,
        out: &mut Outcome,
    ) -> Result<Option<Merged>, TableError> {
        let schema = self.kind.schema();
        let mut batches = Vec::new();
        let mut inputs = Vec::with_capacity(bin.len());
        for f in bin {
            let path = self.object(&f.rel);
            let bytes = match self.at.root.get(&path).await {
                Ok(r) => r.bytes().await,
                Err(e) => Err(e),
            };
            let bytes = match bytes {
                Ok(b) => b,
                Err(object_store::Error::NotFound { .. }) => {
                    tracing::warn!("{path}: named by the log but not in the store; left out");
                    out.skipped += 1;
                    continue;
                }
                Err(e) => {
                    return Err(other(self.kind, format!("cannot read {path}: {e}")));
                }
            };
            match read(bytes.clone(), &schema) {
                Ok(mut b) => {
                    out.bytes_read += bytes.len() as u64;
                    batches.append(&mut b);
                    inputs.push(f);
                }
                Err(why) => {
                    tracing::warn!("{path}: not merged ({why}); left as it is");
                    out.skipped += 1;
                }
            }
        }
        if inputs.len() < 2 {
            return Ok(None);
        }
        let all = concat_batches(&schema, &batches).map_err(|e| other(self.kind, e.to_string()))?;
        drop(batches);
        let bytes = sorted_parquet(self.kind, &all).map_err(|e| other(self.kind, e))?;
        let rows = all.num_rows() as u64;
        drop(all);
        let size = bytes.len() as u64;
        let path = loop {
            self.seq += 1;
            let path = self.object(&format!(
                "{dir}/{MERGED_PREFIX}{}-{}-{}.parquet",
                self.opts.now_ms,
                std::process::id(),
                self.seq
            ));
            let written = put_new(self.at.root.as_ref(), &path, bytes.clone(), MULTIPART_BYTES)
                .await
                .map_err(|e| other(self.kind, format!("cannot write {path}: {e}")))?;
            if written {
                break path;
            }
        };
        if let Err(e) = self.at.target().sync(&path) {
            let _ = self.at.root.delete(&path).await;
            return Err(other(self.kind, format!("cannot sync {path}: {e}")));
        }
        Ok(Some(Merged {
            path,
            size,
            rows,
            inputs,
        }))
    }

    /// Deletes files removed from the table more than `after_ms` ago (and, with
    /// [`Options::orphans`], files no commit names that are that old).
    async fn vacuum(
        &mut self,
        table: &mut DeltaTable,
        after_ms: i64,
        out: &mut Outcome,
    ) -> Result<(), TableError> {
        let mut mode = if self.opts.orphans {
            VacuumMode::Full
        } else {
            VacuumMode::Lite
        };
        if self.opts.orphans {
            // A file marked for commit is not an orphan however long the committer has been
            // away: while any marker has waited this long, orphans are left for a later pass.
            // (Markers are written seconds after their files, and committed within seconds.)
            let waiting = crate::storage::committer::listed(self.at.root.as_ref(), self.kind)
                .await
                .map_err(|e| other(self.kind, format!("cannot list its markers: {e}")))?;
            let stale = self.opts.now_ms - MARKER_PATIENCE_MS;
            if let Some(m) = waiting
                .iter()
                .find(|m| m.last_modified.timestamp_millis() <= stale)
            {
                tracing::warn!(
                    "{}: a file marked for commit still waits after 10 minutes; orphans are not deleted while it does",
                    m.location
                );
                mode = VacuumMode::Lite;
            }
        }
        let (t, metrics) = table
            .clone()
            .vacuum()
            .with_retention_period(chrono::Duration::milliseconds(after_ms))
            .with_enforce_retention_duration(false)
            .with_mode(mode)
            .with_clock(std::sync::Arc::new(PassClock(self.opts.now_ms)))
            .await
            .map_err(delta(self.kind))?;
        out.vacuumed = metrics.files_deleted.len();
        *table = t;
        if let Some(v) = table.version() {
            self.at
                .sync_log(self.kind, None, v)
                .map_err(|e| other(self.kind, format!("cannot sync its log: {e}")))?;
        }
        Ok(())
    }
}

/// How long a marker may wait for its commit before a vacuum leaves orphans alone: a
/// committer that far behind may still commit files that look like orphans.
const MARKER_PATIENCE_MS: i64 = 10 * 60 * 1000;

/// The vacuum's clock: the pass's.
#[derive(Debug)]
struct PassClock(i64);

impl Clock for PassClock {
    fn current_timestamp_millis(&self) -> i64 {
        self.0
    }
}

/// The day of a path `dt=YYYY-MM-DD/…`.
fn day(rel: &str) -> Option<&str> {
    rel.split('/').next()?.strip_prefix("dt=")
}

fn remove(f: &Live, data_change: bool, now_ms: i64) -> Action {
    Action::Remove(Remove {
        path: f.rel.clone(),
        data_change,
        deletion_timestamp: Some(now_ms),
        extended_file_metadata: Some(true),
        partition_values: partition_values(&f.rel),
        size: Some(f.size as i64),
        ..Default::default()
    })
}

/// A Parquet file's rows, conformed to `schema`.
fn read(bytes: Bytes, schema: &SchemaRef) -> Result<Vec<RecordBatch>, String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.with_batch_size(SLICE_ROWS).build())
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        out.push(conform(batch, schema).ok_or("its columns are not the table's")?);
    }
    Ok(out)
}

/// `all`'s rows sorted by the table's compacted order, as one Parquet file.
fn sorted_parquet(kind: TableKind, all: &RecordBatch) -> Result<Bytes, String> {
    let keys: Vec<SortColumn> = compacted_order(kind)
        .iter()
        .filter_map(|name| all.column_by_name(name))
        .map(|c| SortColumn {
            values: ArrayRef::clone(c),
            options: Some(SortOptions {
                descending: false,
                nulls_first: true,
            }),
        })
        .collect();
    let order = lexsort_to_indices(&keys, None).map_err(|e| e.to_string())?;
    let mut w = ArrowWriter::try_new(
        Vec::with_capacity(1 << 20),
        all.schema(),
        Some(compacted_properties(kind)),
    )
    .map_err(|e| e.to_string())?;
    let mut at = 0;
    while at < order.len() {
        let n = SLICE_ROWS.min(order.len() - at);
        let slice = order.slice(at, n);
        let batch = arrow::compute::take_record_batch(all, &slice).map_err(|e| e.to_string())?;
        w.write(&batch).map_err(|e| e.to_string())?;
        at += n;
    }
    Ok(Bytes::from(w.into_inner().map_err(|e| e.to_string())?))
}

#[cfg(test)]
mod tests;
