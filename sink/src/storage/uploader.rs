//! The uploader thread: turns sealed WAL segments into Parquet objects in the store, then
//! deletes them.
//!
//! A segment's events are split by table, node and UTC hour; each part becomes one object
//! named after the segment (`{node_id}-{segment}.parquet`), so uploading a segment again
//! after a crash overwrites the same objects instead of duplicating rows. Only once every
//! part is stored (and, in a local store, synced) is the segment deleted. While the store is
//! unreachable the uploader retries with backoff and the segments wait on disk. A segment
//! with damaged records has what could be read of it uploaded, and is then moved to
//! `wal/damaged/` for a person to look at instead of being deleted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::model::event::Event;
use crate::model::id::EventId;
use crate::storage::columns::{Builder, TableKind};
use crate::storage::store::{Target, object_path, parquet_writer};
use crate::storage::wal::{DAMAGED_DIR, Sealed, read_segment};
use crate::storage::writer::WalStats;
use crate::visitors::Visitors;

const HOUR_MS: i64 = 3_600_000;

/// Rows turned into Arrow at a time while a part is written.
const SLICE_ROWS: usize = 4 * 1024;

/// Objects larger than this go up as a multipart upload, in parts of [`PART_BYTES`].
pub const MULTIPART_BYTES: usize = 32 << 20;
pub const PART_BYTES: usize = 8 << 20;

/// Stores `bytes` at `path`: one put, or a multipart upload past `multipart_bytes`.
pub async fn put_object(
    store: &dyn ObjectStore,
    path: &object_store::path::Path,
    bytes: Vec<u8>,
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

impl Uploader {
    /// Starts the uploader. `backlog` are segments already sealed (found at start-up), then
    /// `sealed` announces each new one; when `sealed` disconnects and everything is
    /// uploaded (or has failed for [`GIVE_UP_AFTER_STOP`]) the thread ends.
    pub fn spawn(
        target: Target,
        backlog: Vec<Sealed>,
        sealed: Receiver<Sealed>,
        wal: Arc<WalStats>,
        visitors: Visitors,
    ) -> std::io::Result<Uploader> {
        let stats = Arc::new(UploadStats::default());
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
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("cannot start the uploader's runtime: {e}");
                        return backlog.len();
                    }
                };
                rt.block_on(run(target, backlog, sealed, s, wal, visitors))
            })?;
        Ok(Uploader { stats, thread })
    }

    /// Waits for the uploader to finish; returns how many segments are left on disk.
    pub fn join(self) -> usize {
        self.thread.join().unwrap_or(usize::MAX)
    }
}

async fn run(
    target: Target,
    backlog: Vec<Sealed>,
    sealed: Receiver<Sealed>,
    stats: Arc<UploadStats>,
    wal: Arc<WalStats>,
    visitors: Visitors,
) -> usize {
    let mut queue: std::collections::VecDeque<Sealed> = backlog.into();
    let mut stopping: Option<Instant> = None;
    let mut backoff = Duration::from_millis(100);
    // Reads of the segment at the front of the queue that failed in a row.
    let mut read_failures = 0;
    loop {
        // Take announcements without waiting while there is work.
        loop {
            let next = if queue.is_empty() && stopping.is_none() {
                sealed.recv_timeout(Duration::from_millis(200))
            } else {
                sealed.try_recv().map_err(|e| match e {
                    crossbeam_channel::TryRecvError::Empty => RecvTimeoutError::Timeout,
                    crossbeam_channel::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
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
        let Some(seg) = queue.front().cloned() else {
            if stopping.is_some() {
                return 0;
            }
            continue;
        };
        match upload_segment(&target, &seg, &stats, &visitors).await {
            Ok(damaged) => {
                read_failures = 0;
                let size = std::fs::metadata(&seg.path).map_or(0, |m| m.len());
                let done = if damaged {
                    set_aside_damaged(&seg)
                } else {
                    std::fs::remove_file(&seg.path).map_err(|e| {
                        format!("uploaded {} but cannot delete it: {e}", seg.path.display())
                    })
                };
                match done {
                    Ok(()) => {
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
                queue.pop_front();
                stats.segments_pending.fetch_sub(1, Ordering::Relaxed);
                add(&stats.segments_uploaded, 1);
                backoff = Duration::from_millis(100);
            }
            Err(e) if unreadable(e.as_ref()).is_some() => {
                // The segment cannot be read (the disk fails under it, or it is gone): retried
                // a few times, then set aside, so the segments behind it are not held up.
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
                // Not ours (or its header was destroyed): set it aside so it does not block
                // the segments behind it, and keep it for a person to look at.
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
                if stopping.is_some_and(|t| t.elapsed() > GIVE_UP_AFTER_STOP) {
                    tracing::warn!(
                        "giving up for now; {} segments stay in the WAL and are uploaded at the next start",
                        queue.len()
                    );
                    return queue.len();
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
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

/// Uploads every part of one segment; answers whether the segment had damaged records
/// (their loss is logged as an error and counted).
pub async fn upload_segment(
    target: &Target,
    seg: &Sealed,
    stats: &UploadStats,
    visitors: &Visitors,
) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
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
    for part in index.chunk_by(|a, b| (a.0, a.1, a.2) == (b.0, b.1, b.2)) {
        let (table, node, hour) = (part[0].0, part[0].1, part[0].2);
        let mut w = parquet_writer(table)?;
        let mut rows = 0u64;
        for slice in part.chunks(SLICE_ROWS) {
            let mut b = Builder::with_capacity(table, slice.len()).with_visitors(visitors);
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
        let bytes = w.into_inner()?;
        let path = object_path(table, hour * HOUR_MS, node, seg.seq);
        let len = bytes.len() as u64;
        put_object(target.store.as_ref(), &path, bytes, MULTIPART_BYTES).await?;
        target.sync(&path)?;
        add(&stats.objects_written, 1);
        add(&stats.rows_written, rows);
        add(&stats.bytes_written, len);
    }
    if contents.torn_bytes > 0 {
        add(&stats.torn_bytes, contents.torn_bytes as u64);
    }
    let damaged = !contents.damage.is_empty() || undecodable > 0;
    if damaged {
        add(&stats.damaged_segments, 1);
        add(&stats.damaged_bytes, contents.damaged_bytes());
    }
    Ok(damaged)
}

#[cfg(test)]
mod tests;
