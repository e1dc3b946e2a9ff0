//! One committer per store (docs/table-format.md, "Who commits").
//!
//! Delta commits are optimistic: every writer of a table re-reads every other writer's
//! commits, so a fleet of edges each committing every second contends quadratically. Instead,
//! an edge that has stored a Parquet file writes a small **marker** beside it,
//! `_commit/pending/{table}/dt=…/hour=…/{name}.json`: the file's `add` (path, size, rows) and
//! where it came from. Its WAL segment can then go: the file and its marker are in the store.
//!
//! Every edge runs the committer role, and acts only while it holds the store's **lease**:
//! objects `_commit/lease/{epoch}.json`, each created only if absent, naming a holder and
//! when its hold expires. The holder renews by creating the next epoch; anyone may take the
//! next epoch once the latest has expired. About once a second the holder lists the markers,
//! commits their files in one commit per table, then deletes the markers.
//!
//! The lease is for efficiency; correctness does not rest on it (clocks drift, processes
//! pause). What matters is that no file is committed again once a compaction may have
//! removed it (its rows would be read twice), so a marker's file is checked against the log
//! (live and removed files) whenever it may have been committed before:
//! - **Fencing.** Each commit records the holder's epoch as an application transaction, and
//!   a committer that loads or reloads a log holding a later epoch stops
//!   ([`TableError::Fenced`]). So once a tenure's first commit to a table has landed, no
//!   earlier holder commits there again: its next commit would find its version taken,
//!   reload, and be fenced.
//! - **Early markers.** Until that first commit, and for markers the store wrote before it,
//!   every marker is checked: an earlier holder may have committed its file and died (or
//!   been fenced) before deleting the marker. A tenure is a run of consecutive epochs held;
//!   a lease lost and taken back starts a new one.
//! - **Replays.** A marker an edge wrote again (after a crash, or after a put that failed and
//!   may have landed) says `replayed`, and is checked.
//! - Within a tenure, markers committed but not yet deleted are remembered and not committed
//!   again.
//!
//! A check reads every live and removed file of the log, so steady state avoids it: a marker
//! written after this tenure's first commit names a file only this tenure can have
//! committed, and this tenure remembers what it committed.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::storage::columns::TableKind;
use crate::storage::store::Target;
use crate::storage::table::{Location, NewFile, TableError, TableLog, partition_values, plain};

/// Where markers wait, per table.
pub const PENDING: &str = "_commit/pending";
/// Where the lease's epochs are.
pub const LEASE: &str = "_commit/lease";
/// The application id under which a committer records its lease epoch in each table's log.
pub const COMMITTER_APP: &str = "clicktracker-committer";

/// How long a lease holds without renewal. A holder renews once less than half is left;
/// another edge takes over this long after the holder's last renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// Markers read at once.
const READS: usize = 16;

/// A stored file waiting for the committer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The file's object path, `{table}/dt=…/hour=…/{name}.parquet`.
    pub path: String,
    pub size: u64,
    pub rows: Option<u64>,
    pub modified_ms: i64,
    /// The file may have been committed before (its upload found it stored).
    pub replayed: bool,
    /// The edge and WAL segment it came from (recorded as the node's application
    /// transaction).
    pub node: u16,
    pub segment: u64,
    /// The time of the oldest event in the file's segment, in Unix milliseconds.
    pub oldest_ms: Option<i64>,
}

impl Marker {
    fn file(&self) -> NewFile {
        NewFile {
            path: ObjectPath::from(self.path.as_str()),
            size: self.size,
            rows: self.rows,
            modified_ms: self.modified_ms,
            replayed: self.replayed,
        }
    }
}

/// The marker's path for the file at `file` (`{table}/…/{name}.parquet`).
pub fn marker_path(file: &ObjectPath) -> ObjectPath {
    let s = file.as_ref();
    let stem = s.strip_suffix(".parquet").unwrap_or(s);
    ObjectPath::from(format!("{PENDING}/{stem}.json"))
}

/// Stores `marker` (over an earlier one for the same file: a replay), durably.
pub async fn put_marker(target: &Target, marker: &Marker) -> Result<(), String> {
    let path = marker_path(&ObjectPath::from(marker.path.as_str()));
    let body = serde_json::to_vec(marker).map_err(|e| e.to_string())?;
    target
        .store
        .put(&path, PutPayload::from(body))
        .await
        .map_err(|e| format!("cannot store {path}: {e}"))?;
    target
        .sync(&path)
        .map_err(|e| format!("cannot sync {path}: {e}"))
}

/// A marker found in the store.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: ObjectPath,
    pub marker: Marker,
    /// When the store says the marker was written, in Unix milliseconds (the store's clock).
    pub stored_ms: i64,
}

/// Markers taken in one pass, per table, oldest first: a backlog after an outage is committed
/// in bounded steps.
pub const MAX_PER_PASS: usize = 10_000;

/// The objects under `kind`'s markers' prefix, oldest first: listed, not read.
pub async fn listed(
    store: &dyn ObjectStore,
    kind: TableKind,
) -> object_store::Result<Vec<object_store::ObjectMeta>> {
    let prefix = ObjectPath::from(format!("{PENDING}/{}", kind.name()));
    let mut listed: Vec<object_store::ObjectMeta> = store.list(Some(&prefix)).try_collect().await?;
    listed.sort_by_key(|m| m.last_modified);
    Ok(listed)
}

/// Reads the markers of `metas`. One that cannot be read now is left for a later pass; one
/// that is not a marker of a file of `kind`'s table is reported and left alone.
pub async fn read(
    store: &dyn ObjectStore,
    kind: TableKind,
    metas: Vec<object_store::ObjectMeta>,
) -> Vec<Found> {
    let read: Vec<Option<(object_store::ObjectMeta, Bytes)>> = futures::stream::iter(metas)
        .map(|meta| async move {
            let got = match store.get(&meta.location).await {
                Ok(got) => got.bytes().await,
                Err(e) => Err(e),
            };
            match got {
                Ok(bytes) => Some((meta, bytes)),
                // Committed and deleted since the listing.
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => {
                    tracing::warn!("{}: cannot read it now: {e}", meta.location);
                    None
                }
            }
        })
        .buffered(READS)
        .collect()
        .await;
    let prefix = format!("{}/", kind.name());
    let mut out = Vec::with_capacity(read.len());
    for (meta, bytes) in read.into_iter().flatten() {
        let path = meta.location;
        match serde_json::from_slice::<Marker>(&bytes) {
            Ok(m) => {
                let own = marker_path(&ObjectPath::from(m.path.as_str())) == path;
                let placed = m
                    .path
                    .strip_prefix(&prefix)
                    .is_some_and(|rel| plain(rel) && partition_values(rel).is_some());
                if own && placed {
                    out.push(Found {
                        path,
                        marker: m,
                        stored_ms: meta.last_modified.timestamp_millis(),
                    });
                } else {
                    tracing::warn!(
                        "{path}: a marker for {}, not a file of this table beside it; left alone",
                        m.path
                    );
                }
            }
            Err(e) => tracing::warn!("{path}: not a marker ({e}); left alone"),
        }
    }
    out
}

/// One epoch of the lease, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Hold {
    holder: String,
    /// When the hold ends, by the holder's clock, in Unix milliseconds.
    expires_ms: i64,
}

fn lease_path(epoch: u64) -> ObjectPath {
    ObjectPath::from(format!("{LEASE}/{epoch:020}.json"))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// This process's view of the store's lease.
#[derive(Debug)]
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    me: String,
    ttl: Duration,
    /// The epoch held and when it expires (Unix milliseconds).
    held: Option<(u64, i64)>,
    /// When a non-holder looks again.
    next_look: Option<Instant>,
    /// Counts the times this process took the lease without holding it just before: a
    /// renewal keeps the tenure, a take-over starts a new one.
    tenure: u64,
}

impl Lease {
    /// The lease of `store` as seen by `me` (a name unique to the edge: its node id).
    pub fn new(store: Arc<dyn ObjectStore>, me: String, ttl: Duration) -> Lease {
        Lease {
            store,
            me,
            ttl,
            held: None,
            next_look: None,
            tenure: 0,
        }
    }

    /// The current tenure (see the field).
    pub fn tenure(&self) -> u64 {
        self.tenure
    }

    /// The epoch this process holds now, renewing or taking the lease when due: `None`
    /// while another holds it.
    pub async fn hold(&mut self) -> object_store::Result<Option<u64>> {
        let ttl = self.ttl.as_millis() as i64;
        let now = now_ms();
        if let Some((epoch, expires)) = self.held {
            if expires - now > ttl / 2 {
                return Ok(Some(epoch));
            }
        } else if self.next_look.is_some_and(|t| Instant::now() < t) {
            return Ok(None);
        }
        self.next_look = Some(Instant::now() + self.ttl / 4);
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&ObjectPath::from(LEASE)))
            .try_collect()
            .await?;
        let mut epochs: Vec<u64> = listed
            .iter()
            .filter_map(|m| m.location.filename()?.strip_suffix(".json")?.parse().ok())
            .collect();
        epochs.sort_unstable();
        let Some(&latest) = epochs.last() else {
            return self.take(1, &epochs).await;
        };
        let hold = match self.store.get(&lease_path(latest)).await {
            Ok(got) => serde_json::from_slice::<Hold>(&got.bytes().await?).ok(),
            // Cleaned up by a newer holder since the listing: look again later.
            Err(object_store::Error::NotFound { .. }) => {
                self.held = None;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        match hold {
            // Ours (renewal), expired, or unreadable: the next epoch is up for taking.
            Some(h) if h.holder != self.me && h.expires_ms >= now => {
                self.held = None;
                Ok(None)
            }
            _ => self.take(latest + 1, &epochs).await,
        }
    }

    /// Creates `epoch` for this process, unless another took it first; then deletes the
    /// epochs before the previous one. Holding `epoch - 1` just before makes it a renewal;
    /// anything else starts a new tenure.
    async fn take(&mut self, epoch: u64, listed: &[u64]) -> object_store::Result<Option<u64>> {
        let expires_ms = now_ms() + self.ttl.as_millis() as i64;
        let hold = Hold {
            holder: self.me.clone(),
            expires_ms,
        };
        let renewal = self.held.is_some_and(|(e, _)| e + 1 == epoch);
        self.held = None;
        if !self.create(epoch, &hold).await? {
            return Ok(None);
        }
        // A process that paused between its listing and its put can create an epoch the
        // holder has since deleted: only the latest epoch holds.
        let latest = self
            .store
            .list(Some(&ObjectPath::from(LEASE)))
            .try_collect::<Vec<object_store::ObjectMeta>>()
            .await?
            .iter()
            .filter_map(|m| {
                m.location
                    .filename()?
                    .strip_suffix(".json")?
                    .parse::<u64>()
                    .ok()
            })
            .max();
        if latest != Some(epoch) {
            return Ok(None);
        }
        if !renewal {
            self.tenure += 1;
            tracing::info!(epoch, "this edge now commits the store's files (its lease)");
        }
        self.held = Some((epoch, expires_ms));
        for &old in listed.iter().filter(|&&e| e + 1 < epoch) {
            let _ = self.store.delete(&lease_path(old)).await;
        }
        Ok(Some(epoch))
    }

    async fn create(&self, epoch: u64, hold: &Hold) -> object_store::Result<bool> {
        let body = serde_json::to_vec(hold).expect("a lease serializes");
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&lease_path(epoch), PutPayload::from(body), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (a process stopping): the next epoch, already expired, so another
    /// edge takes over at its next look instead of after the hold's expiry.
    pub async fn release(&mut self) {
        let Some((epoch, _)) = self.held.take() else {
            return;
        };
        let hold = Hold {
            holder: String::new(),
            expires_ms: 0,
        };
        if let Err(e) = self.create(epoch + 1, &hold).await {
            tracing::warn!("cannot give up the commit lease: {e}; another edge takes it on expiry");
        }
    }

    /// Forgets the hold (another committer was found to have taken over).
    pub fn drop_hold(&mut self) {
        self.held = None;
        self.next_look = Some(Instant::now() + self.ttl / 4);
    }
}

/// Counters of the committer role, for metrics.
#[derive(Debug, Default)]
pub struct CommitterStats {
    /// 1 while this edge holds the store's lease.
    pub holder: AtomicU64,
    /// Markers the holder found and has not committed yet (0 after a pass that committed
    /// them all, and on an edge not holding the lease).
    pub markers_pending: AtomicU64,
    /// Markers that could not be deleted after their commit (retried).
    pub marker_delete_failures: AtomicU64,
    /// The oldest event among the markers the holder found and has not committed yet, in
    /// Unix milliseconds (0: none).
    pub oldest_pending_ms: AtomicU64,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    /// This process held the lease.
    pub holder: bool,
    /// Markers found, and files committed (others were in the log already).
    pub markers: usize,
    pub added: usize,
    pub known: usize,
    /// Markers checked against the log (live and removed files) before their commit.
    pub checked: usize,
    /// Commits made.
    pub commits: usize,
    /// The oldest event among the markers found (Unix milliseconds).
    pub oldest_ms: Option<i64>,
}

/// One table as the committer keeps it.
struct Table {
    kind: TableKind,
    log: TableLog,
    /// When this tenure's first commit to the table was stored, by the store's clock (Unix
    /// milliseconds). Until then every marker is checked against the log; after it, those
    /// stored before it. No other committer can commit after that first commit without
    /// being fenced (see the module's notes), so a marker stored later names a file only
    /// this tenure can have committed.
    settled_ms: Option<i64>,
    /// Check every marker until then: the commit that created the table took in files
    /// whose markers may still arrive.
    check_until: Option<Instant>,
    /// Markers known to wait after the last pass, and the oldest event among them (Unix
    /// milliseconds), as far as known: kept when a listing fails.
    waiting: (usize, Option<i64>),
}

/// The store's clock may round to the second: a marker this close to the first commit is
/// checked too.
const CLOCK_GRAIN_MS: i64 = 2_000;

/// The committer role of one edge.
pub struct Committer {
    store: Arc<dyn ObjectStore>,
    tables: Vec<Table>,
    pub lease: Lease,
    /// The tenure `done` and each table's `settled_ms` belong to.
    tenure: Option<u64>,
    /// Markers committed in this tenure and not deleted yet.
    done: HashSet<ObjectPath>,
    pub stats: Arc<CommitterStats>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer")
            .field("lease", &self.lease)
            .field("tenure", &self.tenure)
            .finish()
    }
}

impl Committer {
    pub fn new(tables: Location, me: String, ttl: Duration) -> Committer {
        let store = Arc::clone(&tables.root);
        Committer {
            lease: Lease::new(Arc::clone(&store), me, ttl),
            store,
            tables: [TableKind::Visits, TableKind::Conversions]
                .into_iter()
                .map(|kind| Table {
                    kind,
                    log: TableLog::new(tables.clone(), kind),
                    settled_ms: None,
                    check_until: None,
                    waiting: (0, None),
                })
                .collect(),
            tenure: None,
            done: HashSet::new(),
            stats: Arc::new(CommitterStats::default()),
        }
    }

    /// Not (or no longer) the holder: nothing of an earlier tenure is trusted.
    fn step_down(&mut self) {
        self.stats.holder.store(0, Ordering::Relaxed);
        self.stats.markers_pending.store(0, Ordering::Relaxed);
        self.stats.oldest_pending_ms.store(0, Ordering::Relaxed);
        self.tenure = None;
        self.done.clear();
        for t in &mut self.tables {
            t.settled_ms = None;
            t.waiting = (0, None);
        }
    }

    /// Commits every waiting marker's file if this process holds the lease (taking or
    /// renewing it when due), then deletes the markers. The tables are committed one after
    /// the other; one that fails does not hold up the other (the first error is answered).
    pub async fn pass(&mut self) -> Result<Pass, TableError> {
        let store_err = |e: object_store::Error| TableError::Other {
            table: "store's",
            message: format!("commit lease: {e}"),
        };
        let epoch = match self.lease.hold().await {
            Ok(Some(epoch)) => epoch,
            Ok(None) => {
                self.step_down();
                return Ok(Pass::default());
            }
            Err(e) => return Err(store_err(e)),
        };
        self.stats.holder.store(1, Ordering::Relaxed);
        if self.tenure != Some(self.lease.tenure()) {
            // A new tenure: whatever an earlier holder (or this process, earlier) left is
            // checked until this tenure's first commit to each table.
            self.step_down();
            self.stats.holder.store(1, Ordering::Relaxed);
            self.tenure = Some(self.lease.tenure());
        }
        let mut out = Pass {
            holder: true,
            ..Pass::default()
        };
        let mut first_error = None;
        for i in 0..self.tables.len() {
            match self.table_pass(i, epoch, &mut out).await {
                Ok(()) => {}
                Err(e @ TableError::Fenced { .. }) => {
                    self.lease.drop_hold();
                    self.step_down();
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!("{e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        let waiting: usize = self.tables.iter().map(|t| t.waiting.0).sum();
        let oldest = self.tables.iter().filter_map(|t| t.waiting.1).min();
        self.stats
            .markers_pending
            .store(waiting as u64, Ordering::Relaxed);
        self.stats
            .oldest_pending_ms
            .store(oldest.map_or(0, |o| o.max(1) as u64), Ordering::Relaxed);
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// One table's part of a pass: its markers (at most [`MAX_PER_PASS`], oldest first)
    /// committed, then deleted.
    async fn table_pass(&mut self, i: usize, epoch: u64, out: &mut Pass) -> Result<(), TableError> {
        let kind = self.tables[i].kind;
        let mut metas = listed(self.store.as_ref(), kind)
            .await
            .map_err(|e| TableError::Other {
                table: kind.name(),
                message: format!("cannot list its markers: {e}"),
            })?;
        metas.retain(|m| m.location.filename().is_some_and(|n| n.ends_with(".json")));
        let (done, mut todo): (Vec<_>, Vec<_>) = metas
            .into_iter()
            .partition(|m| self.done.contains(&m.location));
        self.delete(done.into_iter().map(|m| m.location).collect())
            .await;
        // Beyond this pass's share: left for the next, the oldest of them as old as its
        // marker (the store's clock).
        let rest = todo.split_off(todo.len().min(MAX_PER_PASS));
        let rest_waiting = (
            rest.len(),
            rest.first().map(|m| m.last_modified.timestamp_millis()),
        );
        let found = read(self.store.as_ref(), kind, todo).await;
        let t = &mut self.tables[i];
        if found.is_empty() {
            t.waiting = rest_waiting;
            return Ok(());
        }
        out.markers += found.len();
        let oldest = found.iter().filter_map(|f| f.marker.oldest_ms).min();
        out.oldest_ms = out.oldest_ms.into_iter().chain(oldest).min();
        // If the commit fails, these still wait.
        t.waiting = (found.len() + rest.len(), oldest.or(rest_waiting.1));
        let check_all = t.check_until.is_some_and(|until| Instant::now() < until);
        let files: Vec<NewFile> = found
            .iter()
            .map(|f| {
                let mut file = f.marker.file();
                let early = t
                    .settled_ms
                    .is_none_or(|s| f.stored_ms <= s + CLOCK_GRAIN_MS);
                file.replayed |= check_all || early;
                file
            })
            .collect();
        out.checked += files.iter().filter(|f| f.replayed).count();
        let mut txns: Vec<(String, i64)> = Vec::new();
        for f in &found {
            let app = format!("clicktracker-node-{}", f.marker.node);
            match txns.iter_mut().find(|(a, _)| *a == app) {
                Some((_, v)) => *v = (*v).max(f.marker.segment as i64),
                None => txns.push((app, f.marker.segment as i64)),
            }
        }
        t.log.fence(COMMITTER_APP, epoch as i64);
        let done = t.log.commit_with(&files, &txns).await?;
        t.waiting = rest_waiting;
        if let Some(version) = done.version {
            out.commits += 1;
            if t.settled_ms.is_none() {
                let commit =
                    ObjectPath::from(format!("{}/_delta_log/{version:020}.json", kind.name()));
                // Unknown until read: the next commit tries again.
                if let Ok(meta) = self.store.head(&commit).await {
                    t.settled_ms = Some(meta.last_modified.timestamp_millis());
                }
            }
        }
        out.added += done.added;
        out.known += done.known;
        if done.adopted > 0 {
            tracing::info!(
                files = done.adopted,
                "the store's {} files are now a Delta table",
                kind.name()
            );
            t.check_until = Some(Instant::now() + Duration::from_secs(600));
        }
        if done.known > 0 {
            tracing::info!(
                files = done.known,
                "markers of files the {} table already held",
                kind.name()
            );
        }
        let paths: Vec<ObjectPath> = found.into_iter().map(|f| f.path).collect();
        self.done.extend(paths.iter().cloned());
        self.delete(paths).await;
        Ok(())
    }

    /// Deletes committed markers; one that cannot be deleted stays in `done` and is deleted
    /// at a later pass.
    async fn delete(&mut self, paths: Vec<ObjectPath>) {
        let store = Arc::clone(&self.store);
        let results: Vec<(ObjectPath, object_store::Result<()>)> = futures::stream::iter(paths)
            .map(|p| {
                let store = Arc::clone(&store);
                async move {
                    let r = match store.delete(&p).await {
                        Err(object_store::Error::NotFound { .. }) => Ok(()),
                        r => r,
                    };
                    (p, r)
                }
            })
            .buffer_unordered(READS)
            .collect()
            .await;
        for (p, r) in results {
            match r {
                Ok(()) => {
                    self.done.remove(&p);
                }
                Err(e) => {
                    self.stats
                        .marker_delete_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("{p}: committed, but cannot delete its marker yet: {e}");
                }
            }
        }
    }

    /// Gives up the lease (a process stopping).
    pub async fn release(&mut self) {
        self.lease.release().await;
        self.step_down();
    }
}

#[cfg(test)]
mod tests;
