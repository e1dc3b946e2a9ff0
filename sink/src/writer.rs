//! The WAL writer thread: group commit of the workers' events to the write-ahead log.
//!
//! Events are taken from every worker's channel and framed into one buffer. The buffer is
//! written and `fdatasync`ed in one go as soon as an event in it awaits its acknowledgement
//! (a conversion), when it reaches `max_batch_bytes`, or when its oldest event is
//! `commit_delay` old (visits): one fsync covers every event that arrived while the previous
//! one ran. Only then are the acknowledgements completed. A failed write abandons the
//! segment (its tail may be torn) and the next batch goes to a new one.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::ack::AckSender;
use crate::event::Event;
use crate::uploader::Sealed;
use crate::wal::{Segment, WalError, frame, list_segments};

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
    /// fail, so conversions are answered 503 and retried by the networks).
    pub max_bytes: u64,
}

impl WalConfig {
    pub fn new(dir: PathBuf) -> Self {
        WalConfig {
            dir,
            segment_bytes: 64 << 20,
            segment_events: 1_000_000,
            max_age: Duration::from_secs(60),
            commit_delay: Duration::from_millis(2),
            max_batch_bytes: 1 << 20,
            max_bytes: 8 << 30,
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
    pub failures: AtomicU64,
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
}

struct State {
    cfg: WalConfig,
    segment: Option<Segment>,
    next_seq: u64,
    buf: Vec<u8>,
    records: u64,
    acks: Vec<AckSender>,
    oldest: Option<Instant>,
    stats: Arc<WalStats>,
    sealed: Option<Sender<Sealed>>,
}

impl State {
    fn take(&mut self, mut event: Event, scratch: &mut Vec<u8>) {
        scratch.clear();
        event.encode(scratch);
        match frame(&mut self.buf, scratch) {
            Ok(()) => {
                self.records += 1;
                self.oldest.get_or_insert_with(Instant::now);
                if let Some(ack) = event.ack.take() {
                    self.acks.push(ack);
                }
            }
            // Cannot happen for a request within the edge's limits; the event's ack, if any,
            // resolves as not durable when it drops.
            Err(e) => log_error(&format!("event {} not logged: {e}", event.id)),
        }
    }

    fn due(&self) -> bool {
        !self.acks.is_empty()
            || self.buf.len() >= self.cfg.max_batch_bytes
            || self
                .oldest
                .is_some_and(|t| t.elapsed() >= self.cfg.commit_delay)
    }

    /// Closes the current segment (if any) and hands it to the uploader.
    fn seal(&mut self) {
        if let Some(seg) = self.segment.take() {
            add(&self.stats.sealed, 1);
            if let Some(tx) = &self.sealed {
                let _ = tx.send(Sealed {
                    seq: seg.seq,
                    path: seg.path,
                });
            }
        }
    }

    /// Seals the segment once it is full or old enough.
    fn seal_if_due(&mut self) {
        let due = self.segment.as_ref().is_some_and(|s| {
            s.bytes >= self.cfg.segment_bytes
                || s.records >= self.cfg.segment_events
                || (s.records > 0 && s.created.elapsed() >= self.cfg.max_age)
        });
        if due {
            self.seal();
        }
    }

    fn segment(&mut self) -> Result<&mut Segment, WalError> {
        if self.segment.is_none() {
            self.segment = Some(Segment::create(&self.cfg.dir, self.next_seq)?);
            self.next_seq += 1;
        }
        Ok(self.segment.as_mut().expect("just created"))
    }

    /// Writes and syncs the batch, then completes its acknowledgements.
    fn commit(&mut self) {
        if self.records == 0 {
            return;
        }
        let t = Instant::now();
        let (buf, records) = (std::mem::take(&mut self.buf), self.records);
        let on_disk = self.stats.disk_bytes.load(Ordering::Relaxed);
        let result = if on_disk + buf.len() as u64 > self.cfg.max_bytes {
            add(&self.stats.refused_full, 1);
            Err(WalError::Full(self.cfg.max_bytes))
        } else {
            self.segment().and_then(|s| s.commit(&buf, records))
        };
        let durable = result.is_ok();
        match result {
            Ok(()) => {
                add(&self.stats.events, records);
                add(&self.stats.commits, 1);
                add(&self.stats.bytes, buf.len() as u64);
                add(&self.stats.fsync_micros, t.elapsed().as_micros() as u64);
                add(&self.stats.disk_bytes, buf.len() as u64);
                if self
                    .segment
                    .as_ref()
                    .is_some_and(|s| s.bytes >= self.cfg.segment_bytes)
                {
                    // Full: hand it to the uploader now (dropping it here would leave it in
                    // the log until the next start).
                    self.seal();
                }
            }
            Err(WalError::Full(_)) => {
                add(&self.stats.failures, 1);
            }
            Err(e) => {
                add(&self.stats.failures, 1);
                log_error(&format!("WAL commit of {records} events failed: {e}"));
                // The segment's tail may be torn: never append after it.
                self.seal();
            }
        }
        for ack in self.acks.drain(..) {
            ack.complete(durable);
        }
        self.buf = buf;
        self.buf.clear();
        self.records = 0;
        self.oldest = None;
    }
}

/// The sink logs to stderr (it has no logging dependency of its own yet).
fn log_error(msg: &str) {
    eprintln!("sink: {msg}");
}

impl WalWriter {
    /// Starts the writer over the workers' channels. New segments are numbered after the
    /// newest one already in the directory, so a restart never appends to an old segment;
    /// the old ones are returned as [`WalWriter::backlog`]. Each segment the writer seals
    /// is announced on `sealed`.
    pub fn spawn(
        rxs: Vec<Receiver<Event>>,
        cfg: WalConfig,
        sealed: Option<Sender<Sealed>>,
    ) -> Result<Self, WalError> {
        std::fs::create_dir_all(&cfg.dir).map_err(|source| WalError::Io {
            path: cfg.dir.clone(),
            source,
        })?;
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
            .max(crate::wal::read_next_seq(&cfg.dir)?)
            .max(now_us);
        let stats = Arc::new(WalStats::default());
        let on_disk: u64 = existing
            .iter()
            .filter_map(|(_, p)| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        stats.disk_bytes.store(on_disk, Ordering::Relaxed);
        let mut state = State {
            buf: Vec::with_capacity(cfg.max_batch_bytes + 64 * 1024),
            cfg,
            segment: None,
            next_seq,
            records: 0,
            acks: Vec::new(),
            oldest: None,
            stats: Arc::clone(&stats),
            sealed,
        };
        let backlog = existing
            .into_iter()
            .map(|(seq, path)| Sealed { seq, path })
            .collect();
        // Fail now, not at the first event, when the directory cannot take a segment.
        state.segment()?;
        let thread = std::thread::Builder::new()
            .name("sink-wal".into())
            .spawn(move || {
                // Batch work: on a core it shares with a worker, the redirects go first.
                crate::lower_priority(5);
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
        })
    }

    /// Waits until every channel is closed and drained and the last batch is durable.
    pub fn join(self) -> Arc<WalStats> {
        let _ = self.thread.join();
        self.stats
    }
}

/// Takes what every channel holds (up to a full batch). `after` runs once each channel has
/// been swept (a hook for tests). Answers whether anything was taken.
fn sweep(
    rxs: &mut Vec<Receiver<Event>>,
    st: &mut State,
    scratch: &mut Vec<u8>,
    after: &mut dyn FnMut(usize),
) -> bool {
    let mut got = false;
    let mut i = 0;
    rxs.retain(|rx| {
        let keep = loop {
            if st.buf.len() >= st.cfg.max_batch_bytes {
                break true;
            }
            match rx.try_recv() {
                Ok(event) => {
                    got = true;
                    st.take(event, scratch);
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

/// Gathers the next batch. When it holds an acknowledgement, every channel is swept once
/// more before the commit: an event a worker queued before the acknowledged one was
/// queued — a visit whose redirect the client saw before it sent the postback, possibly
/// through another worker — is then in this batch or an earlier one, so a conversion is
/// never acknowledged while its visit could still be lost.
fn gather(
    rxs: &mut Vec<Receiver<Event>>,
    st: &mut State,
    scratch: &mut Vec<u8>,
    after: &mut dyn FnMut(usize),
) -> bool {
    let mut got = sweep(rxs, st, scratch, after);
    if got && !st.acks.is_empty() {
        got |= sweep(rxs, st, scratch, after);
    }
    got
}

fn run(mut rxs: Vec<Receiver<Event>>, mut st: State) {
    let mut scratch = Vec::with_capacity(4096);
    let mut nap = Duration::from_micros(100);
    while !rxs.is_empty() || st.records > 0 {
        let got = gather(&mut rxs, &mut st, &mut scratch, &mut |_| {});
        if st.due() || (rxs.is_empty() && st.records > 0) {
            st.commit();
        }
        st.seal_if_due();
        if got {
            nap = Duration::from_micros(100);
        } else {
            let until_due = st
                .oldest
                .map_or(nap, |t| st.cfg.commit_delay.saturating_sub(t.elapsed()));
            std::thread::sleep(nap.min(until_due).max(Duration::from_micros(50)));
            nap = (nap * 2).min(Duration::from_millis(4));
        }
    }
    // Every channel is closed and the last batch committed: hand the last segment over.
    if st.segment.as_ref().is_some_and(|s| s.records > 0) {
        st.seal();
    } else if let Some(seg) = st.segment.take() {
        // Nothing was written to it: remove it rather than upload an empty segment.
        let _ = std::fs::remove_file(&seg.path);
    }
}

#[cfg(test)]
mod tests;
