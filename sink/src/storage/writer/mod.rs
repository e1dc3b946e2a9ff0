//! The WAL writer thread: group commit of the workers' events to the write-ahead log.
//!
//! Events are taken from every worker's queue and encoded into one batch. The batch is
//! framed, written and `fdatasync`ed in one go as soon as an event in it awaits its
//! acknowledgement (a conversion), when it reaches `max_batch_bytes`, or when its oldest
//! event is `commit_delay` old (visits): one fsync covers every event that arrived while the
//! previous one ran. Only then are the acknowledgements completed.
//!
//! A commit that fails (EIO, ENOSPC, the log at `max_bytes`) loses nothing: its
//! acknowledgements fail at once (conversions are answered 503 and the networks retry), the
//! batch stays in memory, and the writer tries again after a pause that doubles up to a
//! second, on a new segment; the failed one is first cut back to what was synced and handed
//! to the uploader, so no record is read twice. New events wait in the queues meanwhile (past
//! their bounds the workers drop them and count it). The log recovers by itself when the
//! fault passes. Only when the workers have stopped and the disk still fails after
//! `give_up_after_stop` are the events left in memory given up: counted, and logged as an
//! error.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TryRecvError};

use crate::model::ack::AckSender;
use crate::model::event::Event;
use crate::storage::queue::EventReceiver;
use crate::storage::wal::{
    Faults, MAX_RECORD, Sealed, Segment, WalError, list_segments, segment_name,
};

mod state;

use state::{State, log_error};

#[derive(Debug, Clone)]
pub struct WalConfig {
    /// Directory of the segment files.
    pub dir: PathBuf,
    /// A segment is sealed and a new one started past this size or this many events...
    pub segment_bytes: u64,
    pub segment_events: u64,
    /// ...or once its first event is this old, so events reach the store in time.
    pub max_age: Duration,
    /// Longest time an event that nobody awaits stays in memory before its commit.
    pub commit_delay: Duration,
    /// A batch is committed once it holds this many bytes.
    pub max_batch_bytes: usize,
    /// Disk the log may use; a batch that would pass it is refused (its acknowledgements
    /// fail, so conversions are answered 503 and retried by the networks) and kept until
    /// the uploader frees room.
    pub max_bytes: u64,
    /// How long a failing disk is retried once every worker has stopped, before the events
    /// still in memory are given up.
    pub give_up_after_stop: Duration,
    /// Injected disk faults (tests).
    pub faults: Option<Arc<Faults>>,
}

/// Default [`WalConfig::max_bytes`]: 8 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 8 << 30;
/// Default [`WalConfig::segment_bytes`]. The uploader holds about one segment in memory
/// while it turns it into Parquet, so this also bounds that.
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;
/// Default [`WalConfig::segment_events`].
pub const DEFAULT_SEGMENT_EVENTS: u64 = 1_000_000;
/// Default [`WalConfig::max_age`]: a segment is sealed (and reaches the store) at the latest
/// this long after it was opened (`server.flush_interval_ms`).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(1);
/// Default [`WalConfig::commit_delay`] (`server.wal_commit_delay_ms`).
pub const DEFAULT_COMMIT_DELAY: Duration = Duration::from_millis(2);

impl WalConfig {
    pub fn new(dir: PathBuf) -> Self {
        WalConfig {
            dir,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            segment_events: DEFAULT_SEGMENT_EVENTS,
            max_age: DEFAULT_MAX_AGE,
            commit_delay: DEFAULT_COMMIT_DELAY,
            max_batch_bytes: 1 << 20,
            max_bytes: DEFAULT_MAX_BYTES,
            give_up_after_stop: Duration::from_secs(30),
            faults: None,
        }
    }
}

/// Counters of the writer, for metrics.
#[derive(Debug, Default)]
pub struct WalStats {
    pub events: AtomicU64,
    pub commits: AtomicU64,
    pub bytes: AtomicU64,
    pub fsync_micros: AtomicU64,
    /// Commits that failed (retried).
    pub failures: AtomicU64,
    /// 1 while commits fail, 0 once one succeeds again.
    pub failing: AtomicU64,
    /// Events that could not be logged at all: larger than a record may be, or still in
    /// memory when the writer gave up at shutdown.
    pub lost: AtomicU64,
    /// Sealed segments (closed, awaiting upload).
    pub sealed: AtomicU64,
    /// Bytes of log on disk.
    pub disk_bytes: AtomicU64,
    /// Batches refused because the log reached `max_bytes`.
    pub refused_full: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// A running writer.
pub struct WalWriter {
    pub stats: Arc<WalStats>,
    /// Segments found sealed at start-up (left by an earlier run), oldest first.
    pub backlog: Vec<Sealed>,
    thread: JoinHandle<()>,
    /// The log's lock ([`crate::storage::wal::lock`]).
    lock: std::fs::File,
}

impl WalWriter {
    /// Starts the writer over the workers' channels. New segments are numbered after the
    /// newest one already in the directory, so a restart never appends to an old segment;
    /// the old ones are returned as [`WalWriter::backlog`]. Each segment the writer seals
    /// is announced on `sealed`.
    pub fn spawn(
        rxs: Vec<EventReceiver>,
        cfg: WalConfig,
        sealed: Option<Sender<Sealed>>,
    ) -> Result<Self, WalError> {
        std::fs::create_dir_all(&cfg.dir).map_err(|source| WalError::Io {
            path: cfg.dir.clone(),
            source,
        })?;
        let lock = crate::storage::wal::lock(&cfg.dir)?;
        let existing = list_segments(&cfg.dir)?;
        // Never a number used before, even when every earlier segment is uploaded and gone
        // (the next-segment file) or the local disk itself is new while the store is not
        // (numbers start from the clock, in microseconds).
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let next_seq = existing
            .last()
            .map_or(1, |(s, _)| s + 1)
            .max(crate::storage::wal::read_next_seq(&cfg.dir)?)
            .max(now_us);
        let stats = Arc::new(WalStats::default());
        let on_disk: u64 = existing
            .iter()
            .filter_map(|(_, p)| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        stats.disk_bytes.store(on_disk, Ordering::Relaxed);
        let mut state = State::new(cfg, next_seq, Arc::clone(&stats), sealed);
        let backlog = existing
            .into_iter()
            .map(|(seq, path)| Sealed {
                seq,
                path,
                synced: None,
            })
            .collect();
        // Fail now, not at the first event, when the directory cannot take a segment.
        state.segment()?;
        let thread = std::thread::Builder::new()
            .name("sink-wal".into())
            .spawn(move || {
                // Batch work: on a core it shares with a worker, the redirects go first.
                crate::storage::lower_priority(5);
                run(rxs, state)
            })
            .map_err(|source| WalError::Io {
                path: PathBuf::from("sink-wal thread"),
                source,
            })?;
        Ok(WalWriter {
            stats,
            backlog,
            thread,
            lock,
        })
    }

    /// Waits until every channel is closed and drained and the last batch is durable.
    pub fn join(self) -> Arc<WalStats> {
        self.join_keeping_lock().0
    }

    /// As [`WalWriter::join`], handing over the log's lock: the caller holds it while the
    /// uploader still reads and deletes segments, so no other process takes the log meanwhile.
    pub fn join_keeping_lock(self) -> (Arc<WalStats>, std::fs::File) {
        let _ = self.thread.join();
        (self.stats, self.lock)
    }
}

/// Takes what every queue holds (up to a full batch). `after` runs once each queue has
/// been swept (a hook for tests). Answers whether anything was taken.
fn sweep(rxs: &mut Vec<EventReceiver>, st: &mut State, after: &mut dyn FnMut(usize)) -> bool {
    let mut got = false;
    let mut i = 0;
    rxs.retain(|rx| {
        let keep = loop {
            if st.batch.len() >= st.cfg.max_batch_bytes {
                break true;
            }
            match rx.try_recv() {
                Ok(event) => {
                    got = true;
                    st.take(event);
                }
                Err(TryRecvError::Empty) => break true,
                Err(TryRecvError::Disconnected) => break false,
            }
        };
        after(i);
        i += 1;
        keep
    });
    got
}

/// Gathers the next batch. When it holds an acknowledgement, every queue is swept once
/// more before the commit: an event a worker queued before the acknowledged one was
/// queued — a visit whose redirect the client saw before it sent the postback, possibly
/// through another worker — is then in this batch or an earlier one, so a conversion is
/// never acknowledged while its visit could still be lost.
fn gather(rxs: &mut Vec<EventReceiver>, st: &mut State, after: &mut dyn FnMut(usize)) -> bool {
    let mut got = sweep(rxs, st, after);
    if got && !st.acks.is_empty() {
        got |= sweep(rxs, st, after);
    }
    got
}

fn run(mut rxs: Vec<EventReceiver>, mut st: State) {
    let mut nap = Duration::from_micros(100);
    let mut stopped: Option<Instant> = None;
    while !rxs.is_empty() || !st.lens.is_empty() {
        let got = gather(&mut rxs, &mut st, &mut |_| {});
        if st.due() || (rxs.is_empty() && !st.lens.is_empty()) {
            st.commit();
        }
        st.seal_if_due();
        if rxs.is_empty() && !st.lens.is_empty() {
            let since = *stopped.get_or_insert_with(Instant::now);
            if since.elapsed() >= st.cfg.give_up_after_stop {
                st.give_up();
            }
        }
        if got {
            nap = Duration::from_micros(100);
        } else {
            std::thread::sleep(st.idle_for(nap));
            nap = (nap * 2).min(Duration::from_millis(4));
        }
    }
    // Every queue is closed and the last batch committed: hand the last segment over.
    st.seal();
    if let Some(seg) = st.failed_segment.take() {
        match seg.cut_back() {
            Ok(()) => st.hand_over(seg),
            Err(e) => log_error(&format!(
                "segment {} could not be cut back after a failed commit ({e}); it stays in the log, and its last records may be read again at the next start",
                seg.seq
            )),
        }
    }
}

#[cfg(test)]
mod tests;
