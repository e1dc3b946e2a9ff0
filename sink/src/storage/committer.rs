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
//! pause):
//! - Each commit records the holder's epoch as an application transaction, and a committer
//!   that loads or reloads a log holding a later epoch stops ([`TableError::Fenced`]). A
//!   commit made without checking its files against the log is therefore made on a snapshot
//!   this committer has checked, with no other committer's commit after it (or the put of
//!   the next version would have failed).
//! - The first pass of a tenure checks every marker's file against the log (live and removed
//!   files): a holder that died between its commit and the markers' deletion left markers of
//!   files already committed. So does a marker an edge wrote again after a crash (`replayed`).
//! - Within a tenure, markers committed but not yet deleted are remembered and not committed
//!   again.

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
use crate::storage::table::{Location, NewFile, TableError, TableLog};

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

/// The markers waiting for `kind`'s table, with their paths, oldest first (by listing).
/// A marker that cannot be read as one is reported and left alone.
pub async fn pending(
    store: &dyn ObjectStore,
    kind: TableKind,
) -> object_store::Result<Vec<(ObjectPath, Marker)>> {
    let prefix = ObjectPath::from(format!("{PENDING}/{}", kind.name()));
    let listed: Vec<object_store::ObjectMeta> = store.list(Some(&prefix)).try_collect().await?;
    let read = futures::stream::iter(
        listed
            .into_iter()
            .filter(|m| m.location.filename().is_some_and(|n| n.ends_with(".json"))),
    )
    .map(|meta| async move {
        match store.get(&meta.location).await {
            Ok(got) => match got.bytes().await {
                Ok(bytes) => Ok(Some((meta.location, bytes))),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            },
            // Committed and deleted since the listing.
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    })
    .buffered(READS)
    .try_collect::<Vec<Option<(ObjectPath, Bytes)>>>()
    .await?;
    let mut out = Vec::with_capacity(read.len());
    for (path, bytes) in read.into_iter().flatten() {
        match serde_json::from_slice::<Marker>(&bytes) {
            Ok(m) if marker_path(&ObjectPath::from(m.path.as_str())) == path => out.push((path, m)),
            Ok(m) => tracing::warn!(
                "{path}: a marker for {}, not for its own file; left alone",
                m.path
            ),
            Err(e) => tracing::warn!("{path}: not a marker ({e}); left alone"),
        }
    }
    Ok(out)
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
    /// epochs before the previous one.
    async fn take(&mut self, epoch: u64, listed: &[u64]) -> object_store::Result<Option<u64>> {
        let expires_ms = now_ms() + self.ttl.as_millis() as i64;
        let hold = Hold {
            holder: self.me.clone(),
            expires_ms,
        };
        if !self.create(epoch, &hold).await? {
            self.held = None;
            return Ok(None);
        }
        if self.held.is_none() {
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
    /// them all).
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
    /// Commits made.
    pub commits: usize,
    /// The oldest event among the markers found (Unix milliseconds).
    pub oldest_ms: Option<i64>,
}

/// The committer role of one edge.
pub struct Committer {
    store: Arc<dyn ObjectStore>,
    tables: Location,
    logs: Vec<(TableKind, TableLog)>,
    pub lease: Lease,
    /// The tenure `done` belongs to.
    tenure: Option<u64>,
    /// Markers committed in this tenure and not deleted yet.
    done: HashSet<ObjectPath>,
    /// Check every marker against the log until then: the table was just created, taking in
    /// files whose markers may still arrive.
    check_until: Option<Instant>,
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
            tables,
            logs: Vec::new(),
            tenure: None,
            done: HashSet::new(),
            check_until: None,
            stats: Arc::new(CommitterStats::default()),
        }
    }

    /// Commits every waiting marker's file if this process holds the lease (taking or
    /// renewing it when due), then deletes the markers.
    pub async fn pass(&mut self) -> Result<Pass, TableError> {
        let store_err = |e: object_store::Error| TableError::Other {
            table: "store's",
            message: format!("commit lease: {e}"),
        };
        let Some(epoch) = self.lease.hold().await.map_err(store_err)? else {
            self.stats.holder.store(0, Ordering::Relaxed);
            self.tenure = None;
            self.done.clear();
            return Ok(Pass::default());
        };
        self.stats.holder.store(1, Ordering::Relaxed);
        // A new tenure: whatever an earlier holder (or this process, earlier) left is checked.
        let fresh = self.tenure != Some(self.lease.tenure());
        if fresh {
            self.tenure = Some(self.lease.tenure());
            self.done.clear();
        }
        let mut out = Pass {
            holder: true,
            ..Pass::default()
        };
        for kind in [TableKind::Visits, TableKind::Conversions] {
            let markers =
                pending(self.store.as_ref(), kind)
                    .await
                    .map_err(|e| TableError::Other {
                        table: kind.name(),
                        message: format!("cannot list its markers: {e}"),
                    })?;
            let (done, todo): (Vec<_>, Vec<_>) = markers
                .into_iter()
                .partition(|(p, _)| self.done.contains(p));
            self.delete(done.iter().map(|(p, _)| p.clone()).collect())
                .await;
            if todo.is_empty() {
                continue;
            }
            out.markers += todo.len();
            self.stats
                .markers_pending
                .store(out.markers as u64, Ordering::Relaxed);
            out.oldest_ms = out
                .oldest_ms
                .into_iter()
                .chain(todo.iter().filter_map(|(_, m)| m.oldest_ms))
                .min();
            if let Some(oldest) = out.oldest_ms {
                self.stats
                    .oldest_pending_ms
                    .store(oldest.max(1) as u64, Ordering::Relaxed);
            }
            let check = fresh || self.check_until.is_some_and(|t| Instant::now() < t);
            let files: Vec<NewFile> = todo
                .iter()
                .map(|(_, m)| {
                    let mut f = m.file();
                    f.replayed |= check;
                    f
                })
                .collect();
            let mut txns: Vec<(String, i64)> = Vec::new();
            for (_, m) in &todo {
                let app = format!("clicktracker-node-{}", m.node);
                match txns.iter_mut().find(|(a, _)| *a == app) {
                    Some((_, v)) => *v = (*v).max(m.segment as i64),
                    None => txns.push((app, m.segment as i64)),
                }
            }
            let i = match self.logs.iter().position(|(k, _)| *k == kind) {
                Some(i) => i,
                None => {
                    self.logs
                        .push((kind, TableLog::new(self.tables.clone(), kind)));
                    self.logs.len() - 1
                }
            };
            let log = &mut self.logs[i].1;
            log.fence(COMMITTER_APP, epoch as i64);
            let done = match log.commit_with(&files, &txns).await {
                Ok(done) => done,
                Err(e @ TableError::Fenced { .. }) => {
                    self.lease.drop_hold();
                    self.stats.holder.store(0, Ordering::Relaxed);
                    self.tenure = None;
                    self.done.clear();
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            if done.version.is_some() {
                out.commits += 1;
            }
            out.added += done.added;
            out.known += done.known;
            if done.adopted > 0 {
                tracing::info!(
                    files = done.adopted,
                    "the store's {} files are now a Delta table",
                    kind.name()
                );
                self.check_until = Some(Instant::now() + Duration::from_secs(60));
            }
            if done.known > 0 {
                tracing::info!(
                    files = done.known,
                    "markers of files the {} table already held",
                    kind.name()
                );
            }
            let paths: Vec<ObjectPath> = todo.into_iter().map(|(p, _)| p).collect();
            self.done.extend(paths.iter().cloned());
            self.delete(paths).await;
        }
        self.stats.markers_pending.store(0, Ordering::Relaxed);
        self.stats.oldest_pending_ms.store(0, Ordering::Relaxed);
        Ok(out)
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
        self.stats.holder.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
