//! The uploader thread: turns sealed WAL segments into Parquet files in the store, hands them
//! to the store's committer with a marker each ([`crate::storage::committer`]), then deletes
//! the segments; and, while this edge holds the store's commit lease, commits every edge's
//! marked files to the tables' Delta logs ([`crate::storage::table`]).
//!
//! A segment's events are split by table, node and UTC hour; each part becomes one file
//! named after the segment (`{node_id}-{segment}.parquet`), written only if absent: uploading
//! a segment again after a crash finds its files already there and never rewrites a file a
//! commit may name. Only once a segment's files and their markers are stored (and, in a local
//! store, synced) is the segment deleted. The committer's pass runs about once a
//! [`commit_interval`](Uploader::spawn), and right after this edge hands files off while it
//! holds the lease. While the store is unreachable the uploader retries with backoff and the
//! segments wait on disk. A segment with damaged records has what could be read of it
//! uploaded, and is then moved to `wal/damaged/` for a person to look at instead of being
//! deleted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};

use crate::model::event::Event;
use crate::model::id::EventId;
use crate::storage::columns::{Builder, TableKind};
use crate::storage::committer::{Committer, CommitterStats, LEASE_TTL, Marker, put_marker};
use crate::storage::store::{Target, object_path, parquet_writer};
use crate::storage::table::{Location, NewFile};
use crate::storage::wal::{DAMAGED_DIR, Sealed, read_segment};
use crate::storage::writer::WalStats;
use crate::visitors::Visitors;

const HOUR_MS: i64 = 3_600_000;

/// Rows turned into Arrow at a time while a part is written.
const SLICE_ROWS: usize = 4 * 1024;

/// Objects larger than this go up as a multipart upload, in parts of [`PART_BYTES`].
pub const MULTIPART_BYTES: usize = 32 << 20;
pub const PART_BYTES: usize = 8 << 20;

/// Stores `bytes` at `path` unless an object is there already: one put, or a multipart upload
/// past `multipart_bytes`. Answers whether this call wrote it.
///
/// A put is conditional (`PutMode::Create`). A multipart upload has no condition, so it
/// looks first; only this node writes names with its id, so nothing else comes in between.
pub async fn put_new(
    store: &dyn ObjectStore,
    path: &object_store::path::Path,
    bytes: Bytes,
    multipart_bytes: usize,
) -> object_store::Result<bool> {
    if bytes.len() <= multipart_bytes {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        return match store.put_opts(path, PutPayload::from(bytes), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e),
        };
    }
    match store.head(path).await {
        Ok(_) => return Ok(false),
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    put_object(store, path, bytes, multipart_bytes).await?;
    Ok(true)
}

/// Stores `bytes` at `path`, over whatever is there: one put, or a multipart upload past
/// `multipart_bytes`.
async fn put_object(
    store: &dyn ObjectStore,
    path: &object_store::path::Path,
    bytes: Bytes,
    multipart_bytes: usize,
) -> object_store::Result<()> {
    if bytes.len() <= multipart_bytes {
        store.put(path, PutPayload::from(bytes)).await?;
        return Ok(());
    }
    let upload = store.put_multipart(path).await?;
    let mut w = WriteMultipart::new_with_chunk_size(upload, PART_BYTES.min(multipart_bytes).max(1));
    w.write(&bytes);
    w.finish().await?;
    Ok(())
}

/// Whether the object at `path` is a whole Parquet file: `PAR1` at both ends and a footer
/// that fits. A local file cut short by a crash ends early (the footer is written last).
async fn is_whole_parquet(
    store: &dyn ObjectStore,
    path: &object_store::path::Path,
) -> object_store::Result<bool> {
    let size = store.head(path).await?.size;
    if size < 12 {
        return Ok(false);
    }
    let ends = store.get_ranges(path, &[0..4, size - 8..size]).await?;
    let (head, tail) = (&ends[0], &ends[1]);
    let footer = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    Ok(head.as_ref() == b"PAR1" && &tail[4..] == b"PAR1" && footer + 12 <= size)
}

/// Counters of the uploader, for metrics.
#[derive(Debug, Default)]
pub struct UploadStats {
    pub segments_uploaded: AtomicU64,
    pub segments_pending: AtomicU64,
    pub objects_written: AtomicU64,
    pub rows_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub failures: AtomicU64,
    /// Records in segments that could not be decoded (skipped, logged).
    pub bad_records: AtomicU64,
    /// Files in the WAL directory that are not segments (set aside as `.wal.corrupt`).
    pub bad_segments: AtomicU64,
    /// Segments with damaged records (what could be read was uploaded; the segment is kept
    /// in `wal/damaged/`), and the bytes of them that could not be read.
    pub damaged_segments: AtomicU64,
    pub damaged_bytes: AtomicU64,
    /// Bytes of torn tails dropped (unfinished writes of a crash; never acknowledged).
    pub torn_bytes: AtomicU64,
    /// 1 while the uploader thread runs; 0 once it has ended (or died).
    pub running: AtomicU64,
    /// Commits to the tables' logs made (while this edge holds the lease), files they added,
    /// and committer passes or hand-offs that failed (retried).
    pub commits: AtomicU64,
    pub files_committed: AtomicU64,
    pub commit_failures: AtomicU64,
    /// When the last commit was made, in Unix milliseconds (0: none yet).
    pub last_commit_ms: AtomicU64,
    /// Segments uploaded whose markers are not all stored yet.
    pub segments_uncommitted: AtomicU64,
    /// The time of the oldest event not yet committed that this edge knows of, in Unix
    /// milliseconds (0: none): its segments read and not yet handed off, and, while it holds
    /// the lease, the markers it found and has not committed.
    pub oldest_uncommitted_ms: AtomicU64,
    /// The committer role: whether this edge holds the lease, markers waiting.
    pub committer: Arc<CommitterStats>,
}

/// Clears [`UploadStats::running`] when the thread ends, however it ends.
struct RunningGuard(Arc<UploadStats>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.store(0, Ordering::Relaxed);
    }
}

pub struct Uploader {
    pub stats: Arc<UploadStats>,
    thread: JoinHandle<usize>,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// How long the uploader keeps retrying a failing segment once asked to stop.
pub const GIVE_UP_AFTER_STOP: Duration = Duration::from_secs(30);

/// Default commit interval: files reach the tables' logs about this often.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(1);

impl Uploader {
    /// Starts the uploader. `backlog` are segments already sealed (found at start-up), then
    /// `sealed` announces each new one; when `sealed` disconnects and everything is
    /// uploaded and committed (or has failed for [`GIVE_UP_AFTER_STOP`]) the thread ends.
    /// Uploaded files are handed off once nothing else waits to be uploaded, or once the
    /// oldest of them has waited `commit_interval`; the committer's pass runs every
    /// `commit_interval`, as `node` (the edge's id, its name for the lease).
    pub fn spawn(
        target: Target,
        backlog: Vec<Sealed>,
        sealed: Receiver<Sealed>,
        wal: Arc<WalStats>,
        visitors: Visitors,
        node: u16,
        commit_interval: Duration,
    ) -> std::io::Result<Uploader> {
        let tables = Location::new(Arc::clone(&target.store), target.local_root.as_deref())?;
        let committer = Committer::new(tables, format!("node-{node}"), LEASE_TTL);
        let stats = Arc::new(UploadStats {
            committer: Arc::clone(&committer.stats),
            ..UploadStats::default()
        });
        stats
            .segments_pending
            .store(backlog.len() as u64, Ordering::Relaxed);
        stats.running.store(1, Ordering::Relaxed);
        let s = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("sink-upload".into())
            .spawn(move || {
                let _running = RunningGuard(Arc::clone(&s));
                // Encoding Parquet is the least urgent work in the process.
                crate::storage::lower_priority(10);
                // One worker beside this thread: delta-rs' kernel blocks the thread that
                // reads the log (`block_in_place`), and the store's connections must go on
                // being driven meanwhile, which a runtime of one thread cannot do.
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("sink-upload-io")
                    .on_thread_start(|| crate::storage::lower_priority(10))
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("cannot start the uploader's runtime: {e}");
                        return backlog.len();
                    }
                };
                let mut up = Run {
                    node,
                    committer,
                    last_pass: None,
                    uncommitted: Vec::new(),
                    target,
                    stats: s,
                    wal,
                };
                rt.block_on(up.run(backlog, sealed, visitors, commit_interval))
            })?;
        Ok(Uploader { stats, thread })
    }

    /// Waits for the uploader to finish; returns how many segments are left on disk.
    pub fn join(self) -> usize {
        self.thread.join().unwrap_or(usize::MAX)
    }
}

/// A segment whose files are stored and wait for their markers.
struct Waiting {
    seg: Sealed,
    up: Uploaded,
    since: Instant,
}

/// The uploader's state.
struct Run {
    /// This edge's node id.
    node: u16,
    committer: Committer,
    /// When the committer's last pass began.
    last_pass: Option<Instant>,
    uncommitted: Vec<Waiting>,
    target: Target,
    stats: Arc<UploadStats>,
    wal: Arc<WalStats>,
}

impl Run {
    async fn run(
        &mut self,
        backlog: Vec<Sealed>,
        sealed: Receiver<Sealed>,
        visitors: Visitors,
        commit_interval: Duration,
    ) -> usize {
        let stats = Arc::clone(&self.stats);
        let mut queue: std::collections::VecDeque<Sealed> = backlog.into();
        let mut stopping: Option<Instant> = None;
        let mut backoff = Duration::from_millis(100);
        // Reads of the segment at the front of the queue that failed in a row.
        let mut read_failures = 0;
        loop {
            // Take announcements without waiting while there is work.
            loop {
                let idle = queue.is_empty() && self.uncommitted.is_empty();
                let next = if idle && stopping.is_none() {
                    sealed.recv_timeout(Duration::from_millis(200))
                } else {
                    sealed.try_recv().map_err(|e| match e {
                        crossbeam_channel::TryRecvError::Empty => RecvTimeoutError::Timeout,
                        crossbeam_channel::TryRecvError::Disconnected => {
                            RecvTimeoutError::Disconnected
                        }
                    })
                };
                match next {
                    Ok(s) => {
                        add(&stats.segments_pending, 1);
                        queue.push_back(s);
                    }
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        stopping.get_or_insert_with(Instant::now);
                        break;
                    }
                }
            }
            let gave_up = || stopping.is_some_and(|t| t.elapsed() > GIVE_UP_AFTER_STOP);
            if let Some(seg) = queue.front().cloned() {
                match upload_segment(&self.target, &seg, &stats, &visitors).await {
                    Ok(up) => {
                        read_failures = 0;
                        queue.pop_front();
                        stats.segments_pending.fetch_sub(1, Ordering::Relaxed);
                        add(&stats.segments_uncommitted, 1);
                        self.uncommitted.push(Waiting {
                            seg,
                            up,
                            since: Instant::now(),
                        });
                        self.note_oldest();
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) if unreadable(e.as_ref()).is_some() => {
                        // The segment cannot be read (the disk fails under it, or it is
                        // gone): retried a few times, then set aside, so the segments behind
                        // it are not held up.
                        let gone = unreadable(e.as_ref()) == Some(std::io::ErrorKind::NotFound);
                        read_failures += 1;
                        tracing::error!("cannot read WAL segment {}: {e}", seg.seq);
                        if gone || read_failures >= READ_ATTEMPTS {
                            if !gone {
                                add(&stats.damaged_segments, 1);
                                if let Err(e) = set_aside_damaged(&seg) {
                                    tracing::error!("{e}; it stays in the log for the next start");
                                }
                            }
                            queue.pop_front();
                            stats.segments_pending.fetch_sub(1, Ordering::Relaxed);
                            read_failures = 0;
                        } else {
                            tokio::time::sleep(backoff).await;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.downcast_ref(),
                            Some(crate::storage::wal::WalError::NotASegment(_))
                        ) =>
                    {
                        // Not ours (or its header was destroyed): set it aside so it does not
                        // block the segments behind it, and keep it for a person to look at.
                        let aside = seg.path.with_extension("wal.corrupt");
                        tracing::error!("{e}; moved to {}", aside.display());
                        let _ = std::fs::rename(&seg.path, &aside);
                        add(&stats.bad_segments, 1);
                        queue.pop_front();
                        stats.segments_pending.fetch_sub(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        add(&stats.failures, 1);
                        tracing::warn!("upload of WAL segment {} failed, will retry: {e}", seg.seq);
                        if gave_up() {
                            return self.give_up(queue.len());
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
            let due = self
                .uncommitted
                .first()
                .is_some_and(|w| queue.is_empty() || w.since.elapsed() >= commit_interval);
            let mut handed = false;
            if due {
                match self.hand_off().await {
                    Ok(()) => {
                        handed = true;
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) => {
                        add(&stats.commit_failures, 1);
                        tracing::warn!(
                            "handing {} uploaded segments to the committer failed, will retry: {e}",
                            self.uncommitted.len()
                        );
                        if gave_up() {
                            return self.give_up(queue.len());
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
            // The committer's pass: every commit_interval, and at once after a hand-off while
            // this edge holds the lease (its own files then wait for nothing else).
            let holder = stats.committer.holder.load(Ordering::Relaxed) == 1;
            let finishing = stopping.is_some() && queue.is_empty() && self.uncommitted.is_empty();
            let pass_due = self
                .last_pass
                .is_none_or(|t| t.elapsed() >= commit_interval)
                || (handed && holder)
                || (finishing && holder);
            let mut passed = false;
            if pass_due {
                self.last_pass = Some(Instant::now());
                match self.pass().await {
                    Ok(()) => passed = true,
                    Err(e) => {
                        add(&stats.commit_failures, 1);
                        tracing::warn!("the committer's pass failed, will retry: {e}");
                    }
                }
            }
            if finishing {
                // Every segment is handed off. The holder stops once it has committed what
                // was waiting; another edge once the holder has committed its files (or it
                // took the lease over and did). Past the limit the markers wait in the store
                // for the next holder.
                let done = if stats.committer.holder.load(Ordering::Relaxed) == 1 {
                    passed
                } else {
                    matches!(self.own_markers_left().await, Ok(0))
                };
                if done || gave_up() {
                    if !done {
                        tracing::warn!(
                            "stopping with files marked for commit; the edge holding the commit lease commits them"
                        );
                    }
                    self.committer.release().await;
                    return 0;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// This edge's markers still waiting in the store (named `{node}-{segment}.json`).
    async fn own_markers_left(&self) -> object_store::Result<usize> {
        let own = format!("{}-", self.node);
        let mut n = 0;
        for kind in [TableKind::Visits, TableKind::Conversions] {
            n += crate::storage::committer::listed(self.target.store.as_ref(), kind)
                .await?
                .iter()
                .filter(|m| m.location.filename().is_some_and(|f| f.starts_with(&own)))
                .count();
        }
        Ok(n)
    }

    /// Ends the run with `queued` segments not uploaded and the uncommitted ones in the WAL:
    /// the next start uploads them again, and commits what the log does not name yet.
    fn give_up(&self, queued: usize) -> usize {
        let left = queued + self.uncommitted.len();
        tracing::warn!(
            "giving up for now; {left} segments stay in the WAL and are uploaded at the next start"
        );
        left
    }

    /// Records the oldest event still waiting for a commit, for the store's lag.
    fn note_oldest(&self) {
        let holder = self
            .stats
            .committer
            .oldest_pending_ms
            .load(Ordering::Relaxed);
        let oldest = self
            .uncommitted
            .iter()
            .filter_map(|w| w.up.oldest_ms)
            .map(|t| t.max(1) as u64)
            .chain((holder > 0).then_some(holder))
            .min()
            .unwrap_or(0);
        self.stats
            .oldest_uncommitted_ms
            .store(oldest, Ordering::Relaxed);
    }

    /// Stores a marker for every uploaded file, then deletes their segments.
    async fn hand_off(&mut self) -> Result<(), String> {
        for w in &mut self.uncommitted {
            while let Some(f) = w.up.files.first() {
                let marker = Marker {
                    path: f.file.path.to_string(),
                    size: f.file.size,
                    rows: f.file.rows,
                    modified_ms: f.file.modified_ms,
                    replayed: f.file.replayed,
                    node: f.node,
                    segment: w.seg.seq,
                    oldest_ms: w.up.oldest_ms,
                };
                if let Err(e) = put_marker(&self.target, &marker).await {
                    // The put may have landed all the same, and its marker been committed
                    // and deleted before the retry puts it again: the retry asks for a check.
                    if let Some(f) = w.up.files.first_mut() {
                        f.file.replayed = true;
                    }
                    return Err(e);
                }
                // Marked: not marked again if a later file's marker fails.
                w.up.files.remove(0);
            }
        }
        for w in std::mem::take(&mut self.uncommitted) {
            self.finish(&w);
        }
        self.note_oldest();
        Ok(())
    }

    /// The committer's pass (commits only while this edge holds the lease).
    async fn pass(&mut self) -> Result<(), crate::storage::table::TableError> {
        let done = self.committer.pass().await;
        if let Ok(p) = &done {
            add(&self.stats.files_committed, p.added as u64);
            if p.commits > 0 {
                add(&self.stats.commits, p.commits as u64);
                self.stats.last_commit_ms.store(
                    chrono::Utc::now().timestamp_millis().max(0) as u64,
                    Ordering::Relaxed,
                );
            }
        }
        self.note_oldest();
        done.map(|_| ())
    }

    /// Deletes a committed segment (or sets a damaged one aside).
    fn finish(&self, w: &Waiting) {
        let seg = &w.seg;
        let size = std::fs::metadata(&seg.path).map_or(0, |m| m.len());
        let done = if w.up.damaged {
            set_aside_damaged(seg)
        } else {
            std::fs::remove_file(&seg.path).map_err(|e| {
                format!(
                    "handed off {} but cannot delete it: {e}",
                    seg.path.display()
                )
            })
        };
        match done {
            Ok(()) => {
                let wal = &self.wal;
                wal.disk_bytes.fetch_sub(
                    size.min(wal.disk_bytes.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
                if let Some(dir) = seg.path.parent() {
                    let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
                }
            }
            Err(e) => tracing::error!("{e}"),
        }
        self.stats
            .segments_uncommitted
            .fetch_sub(1, Ordering::Relaxed);
        add(&self.stats.segments_uploaded, 1);
    }
}

/// Reads of an unreadable segment before it is set aside.
const READ_ATTEMPTS: u32 = 5;

/// The kind of I/O error when `e` is a failure to read the segment file itself.
fn unreadable(e: &(dyn std::error::Error + Send + Sync + 'static)) -> Option<std::io::ErrorKind> {
    match e.downcast_ref() {
        Some(crate::storage::wal::WalError::Io { source, .. }) => Some(source.kind()),
        _ => None,
    }
}

/// Moves a segment with damaged records into `wal/damaged/`, out of the log's way.
fn set_aside_damaged(seg: &Sealed) -> Result<(), String> {
    let Some(dir) = seg.path.parent() else {
        return Err(format!("{}: no directory", seg.path.display()));
    };
    let aside = dir.join(DAMAGED_DIR);
    let to = aside.join(seg.path.file_name().unwrap_or_default());
    std::fs::create_dir_all(&aside)
        .and_then(|()| std::fs::rename(&seg.path, &to))
        .and_then(|()| std::fs::File::open(&aside)?.sync_all())
        .map_err(|e| {
            format!(
                "cannot move {} to {}: {e}",
                seg.path.display(),
                to.display()
            )
        })?;
    tracing::error!("the damaged segment is kept as {}", to.display());
    Ok(())
}

/// A file of a segment, stored.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub table: TableKind,
    pub node: u16,
    pub file: NewFile,
}

/// What uploading a segment did.
#[derive(Debug, Clone, Default)]
pub struct Uploaded {
    /// The segment had damaged records (their loss is logged as an error and counted).
    pub damaged: bool,
    /// Its files, to be committed.
    pub files: Vec<StoredFile>,
    /// The time of its oldest event, in Unix milliseconds.
    pub oldest_ms: Option<i64>,
}

/// Uploads every part of one segment.
pub async fn upload_segment(
    target: &Target,
    seg: &Sealed,
    stats: &UploadStats,
    visitors: &Visitors,
) -> Result<Uploaded, Box<dyn std::error::Error + Send + Sync>> {
    let mut contents = read_segment(&seg.path)?;
    if contents.torn_bytes > 0 && seg.synced.is_some() {
        // This run synced it whole and wrote nothing after: a short tail is damage.
        let len = std::fs::metadata(&seg.path).map_or(0, |m| m.len());
        contents.damage.push(crate::storage::wal::Damage {
            offset: len.saturating_sub(contents.torn_bytes as u64),
            bytes: contents.torn_bytes as u64,
            after_record: contents.len(),
        });
        contents.torn_bytes = 0;
    }
    if contents.torn_bytes > 0 {
        tracing::warn!(
            "WAL segment {}: dropped a torn tail of {} bytes (an unfinished write; never acknowledged)",
            seg.seq,
            contents.torn_bytes
        );
    }
    if !contents.damage.is_empty() {
        let spans: Vec<String> = contents
            .damage
            .iter()
            .map(|d| {
                format!(
                    "{} bytes at offset {} (after record {})",
                    d.bytes, d.offset, d.after_record
                )
            })
            .collect();
        tracing::error!(
            "WAL segment {} is damaged: skipped {}; the {} records around the damage are kept",
            seg.seq,
            spans.join(", "),
            contents.len()
        );
    }
    // Each record's part (table, node, UTC hour) and id, read from its fixed header without
    // decoding it. Records are then decoded one at a time, in id order within each part, and
    // each part is written in slices of rows: what a segment takes in memory is about its
    // size, not several copies of it.
    let mut index: Vec<(TableKind, u16, i64, EventId, u32)> = Vec::with_capacity(contents.len());
    // Records whose checksum held but which are not events: kept with the segment too.
    let mut undecodable = 0u64;
    for (i, record) in contents.records().enumerate() {
        match Event::peek(record) {
            Ok((kind, id)) => {
                let hour = (id.ts_ms() as i64).div_euclid(HOUR_MS);
                index.push((TableKind::of(kind), id.node_id(), hour, id, i as u32));
            }
            Err(err) => {
                add(&stats.bad_records, 1);
                undecodable += 1;
                tracing::error!("WAL segment {}: skipping a record: {err}", seg.seq);
            }
        }
    }
    index.sort_unstable();
    let mut out = Uploaded {
        oldest_ms: index.iter().map(|r| r.3.ts_ms() as i64).min(),
        ..Uploaded::default()
    };
    for part in index.chunk_by(|a, b| (a.0, a.1, a.2) == (b.0, b.1, b.2)) {
        let (table, node, hour) = (part[0].0, part[0].1, part[0].2);
        let mut w = parquet_writer(table)?;
        let mut rows = 0u64;
        // One builder for the whole part: its user-agent cache outlives each slice (parsing
        // an agent costs several microseconds; a part repeats a few thousand at most).
        let mut b =
            Builder::with_capacity(table, part.len().min(SLICE_ROWS)).with_visitors(visitors);
        for slice in part.chunks(SLICE_ROWS) {
            for &(.., i) in slice {
                match Event::decode(contents.record(i as usize)) {
                    Ok(e) => b.append(&e),
                    Err(err) => {
                        add(&stats.bad_records, 1);
                        undecodable += 1;
                        tracing::error!("WAL segment {}: skipping a record: {err}", seg.seq);
                    }
                }
            }
            rows += b.len() as u64;
            w.write(&b.finish()?)?;
        }
        let bytes = Bytes::from(w.into_inner()?);
        let path = object_path(table, hour * HOUR_MS, node, seg.seq);
        let len = bytes.len() as u64;
        let mut written =
            put_new(target.store.as_ref(), &path, bytes.clone(), MULTIPART_BYTES).await?;
        if !written && !is_whole_parquet(target.store.as_ref(), &path).await? {
            // Stored but cut short (a crash before its sync): never synced, so never
            // committed, and safe to write again.
            tracing::warn!("{path}: found cut short; writing it again");
            put_object(target.store.as_ref(), &path, bytes, MULTIPART_BYTES).await?;
            written = true;
        }
        if let Err(e) = target.sync(&path) {
            // Its pages may never reach the disk: the retry writes it again.
            let _ = target.store.delete(&path).await;
            return Err(e.into());
        }
        let file = if written {
            add(&stats.objects_written, 1);
            add(&stats.rows_written, rows);
            add(&stats.bytes_written, len);
            NewFile {
                path,
                size: len,
                rows: Some(rows),
                modified_ms: chrono::Utc::now().timestamp_millis(),
                // A segment left by an earlier run may have been committed before, and its
                // file removed since (compacted, then vacuumed).
                replayed: seg.synced.is_none(),
            }
        } else {
            // An earlier attempt stored it: the log gets the stored object's size.
            let meta = target.store.head(&path).await?;
            NewFile {
                path,
                size: meta.size,
                rows: None,
                modified_ms: meta.last_modified.timestamp_millis(),
                replayed: true,
            }
        };
        out.files.push(StoredFile { table, node, file });
    }
    if contents.torn_bytes > 0 {
        add(&stats.torn_bytes, contents.torn_bytes as u64);
    }
    out.damaged = !contents.damage.is_empty() || undecodable > 0;
    if out.damaged {
        add(&stats.damaged_segments, 1);
        add(&stats.damaged_bytes, contents.damaged_bytes());
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests;
