//! The writer thread's state: the batch being gathered, the open segment, and the commit —
//! one write and one `fdatasync` — with its retries, cut-backs and give-up when the disk fails.

use super::*;

/// Commits failing in a row.
#[derive(Debug)]
pub(super) struct Failing {
    since: Instant,
    attempts: u32,
    retry_at: Instant,
    last_logged: Instant,
    unlogged: u64,
}

/// Failures after the first are logged at most this often.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);
/// The longest pause between two attempts of a failing commit.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);

pub(super) struct State {
    pub(super) cfg: WalConfig,
    pub(super) segment: Option<Segment>,
    /// A segment whose commit failed, until it is cut back to what was synced.
    pub(super) failed_segment: Option<Segment>,
    pub(super) next_seq: u64,
    /// The batch: encoded events, one after another, and each one's length.
    pub(super) batch: Vec<u8>,
    pub(super) lens: Vec<u32>,
    /// The batch framed for the segment it goes to.
    pub(super) framed: Vec<u8>,
    pub(super) acks: Vec<AckSender>,
    pub(super) oldest: Option<Instant>,
    pub(super) failing: Option<Failing>,
    pub(super) stats: Arc<WalStats>,
    pub(super) sealed: Option<Sender<Sealed>>,
}

impl State {
    pub(super) fn new(
        cfg: WalConfig,
        next_seq: u64,
        stats: Arc<WalStats>,
        sealed: Option<Sender<Sealed>>,
    ) -> Self {
        State {
            batch: Vec::with_capacity(cfg.max_batch_bytes + 64 * 1024),
            framed: Vec::with_capacity(cfg.max_batch_bytes + 64 * 1024),
            cfg,
            segment: None,
            failed_segment: None,
            next_seq,
            lens: Vec::new(),
            acks: Vec::new(),
            oldest: None,
            failing: None,
            stats,
            sealed,
        }
    }

    pub(super) fn records(&self) -> u64 {
        self.lens.len() as u64
    }

    pub(super) fn take(&mut self, mut event: Event) {
        let start = self.batch.len();
        event.encode(&mut self.batch);
        let len = self.batch.len() - start;
        if len > MAX_RECORD {
            // Cannot happen for a request within the edge's limits; the event's ack, if any,
            // resolves as not durable when it drops.
            self.batch.truncate(start);
            add(&self.stats.lost, 1);
            log_error(&format!(
                "event {} not logged: a record of {len} bytes is larger than {MAX_RECORD}",
                event.id
            ));
            return;
        }
        self.lens.push(len as u32);
        self.oldest.get_or_insert_with(Instant::now);
        if let Some(ack) = event.ack.take() {
            self.acks.push(ack);
        }
    }

    pub(super) fn due(&self) -> bool {
        !self.acks.is_empty()
            || self.batch.len() >= self.cfg.max_batch_bytes
            || self
                .oldest
                .is_some_and(|t| t.elapsed() >= self.cfg.commit_delay)
    }

    /// Hands a closed segment to the uploader, or removes it when it holds nothing.
    pub(super) fn hand_over(&mut self, seg: Segment) {
        if seg.records == 0 {
            let _ = std::fs::remove_file(&seg.path);
            return;
        }
        add(&self.stats.sealed, 1);
        if let Some(tx) = &self.sealed {
            let _ = tx.send(Sealed {
                seq: seg.seq,
                synced: Some(seg.bytes),
                path: seg.path,
            });
        }
    }

    /// Closes the current segment (if any) and hands it to the uploader.
    pub(super) fn seal(&mut self) {
        if let Some(seg) = self.segment.take() {
            self.hand_over(seg);
        }
    }

    /// Seals the segment once it is full or old enough.
    pub(super) fn seal_if_due(&mut self) {
        let due = self.segment.as_ref().is_some_and(|s| {
            s.bytes >= self.cfg.segment_bytes
                || s.records >= self.cfg.segment_events
                || (s.records > 0 && s.created.elapsed() >= self.cfg.max_age)
        });
        if due {
            self.seal();
        }
    }

    /// The segment to write to, created when there is none. A number is never tried twice:
    /// a creation that failed may have left its file behind.
    pub(super) fn segment(&mut self) -> Result<&mut Segment, WalError> {
        if self.segment.is_none() {
            let seq = self.next_seq;
            self.next_seq += 1;
            match Segment::create(&self.cfg.dir, seq, self.cfg.faults.clone()) {
                Ok(seg) => self.segment = Some(seg),
                Err(e) => {
                    // It holds nothing: its header, at most.
                    let _ = std::fs::remove_file(self.cfg.dir.join(segment_name(seq)));
                    return Err(e);
                }
            }
        }
        Ok(self.segment.as_mut().expect("just created"))
    }

    /// Writes and syncs the batch, then completes its acknowledgements; on failure, fails
    /// them and keeps the batch for the next attempt.
    pub(super) fn commit(&mut self) {
        if self.lens.is_empty() {
            return;
        }
        if self
            .failing
            .as_ref()
            .is_some_and(|f| Instant::now() < f.retry_at)
        {
            // Not yet time to try again: whoever waits hears now that it is not durable.
            self.complete_acks(false);
            return;
        }
        let t = Instant::now();
        match self.write_batch() {
            Ok(bytes) => {
                let records = self.records();
                add(&self.stats.events, records);
                add(&self.stats.commits, 1);
                add(&self.stats.bytes, bytes);
                add(&self.stats.fsync_micros, t.elapsed().as_micros() as u64);
                add(&self.stats.disk_bytes, bytes);
                self.complete_acks(true);
                self.batch.clear();
                self.lens.clear();
                self.oldest = None;
                if let Some(f) = self.failing.take() {
                    self.stats.failing.store(0, Ordering::Relaxed);
                    log_info(&format!(
                        "the write-ahead log recovered: {records} events committed after {} failed attempts over {:.1} s",
                        f.attempts,
                        f.since.elapsed().as_secs_f64()
                    ));
                }
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
            Err(e) => self.failed(&e),
        }
    }

    /// One attempt at making the batch durable; answers the bytes written.
    pub(super) fn write_batch(&mut self) -> Result<u64, WalError> {
        // A segment whose commit failed may hold part of this batch past its synced length:
        // cut that off before the batch is written anywhere else.
        if let Some(seg) = self.failed_segment.take() {
            if let Err(e) = seg.cut_back() {
                self.failed_segment = Some(seg);
                return Err(e);
            }
            self.hand_over(seg);
        }
        let on_disk = self.stats.disk_bytes.load(Ordering::Relaxed);
        if on_disk + self.batch.len() as u64 > self.cfg.max_bytes {
            add(&self.stats.refused_full, 1);
            return Err(WalError::Full(self.cfg.max_bytes));
        }
        self.segment()?;
        let seg = self.segment.as_mut().expect("just made sure");
        self.framed.clear();
        let mut at = 0;
        for &len in &self.lens {
            seg.frame(&mut self.framed, &self.batch[at..at + len as usize])?;
            at += len as usize;
        }
        if let Err(e) = seg.commit(&self.framed, self.lens.len() as u64) {
            self.failed_segment = self.segment.take();
            return Err(e);
        }
        Ok(self.framed.len() as u64)
    }

    pub(super) fn complete_acks(&mut self, durable: bool) {
        for ack in self.acks.drain(..) {
            ack.complete(durable);
        }
    }

    /// A commit failed: fail its acknowledgements, keep its events, retry later.
    pub(super) fn failed(&mut self, e: &WalError) {
        add(&self.stats.failures, 1);
        self.stats.failing.store(1, Ordering::Relaxed);
        self.complete_acks(false);
        let now = Instant::now();
        let records = self.records();
        let f = self.failing.get_or_insert(Failing {
            since: now,
            attempts: 0,
            retry_at: now,
            last_logged: now,
            unlogged: 0,
        });
        f.attempts += 1;
        let pause = Duration::from_millis(10)
            .saturating_mul(1 << (f.attempts - 1).min(7))
            .min(MAX_RETRY_PAUSE);
        f.retry_at = now + pause;
        if f.attempts == 1 {
            log_error(&format!(
                "WAL commit of {records} events failed: {e}; keeping them and retrying (conversions are answered 503 until a commit succeeds)"
            ));
        } else if f.last_logged.elapsed() >= FAILURE_LOG_EVERY {
            log_error(&format!(
                "WAL commits still failing ({} attempts over {:.0} s, {records} events waiting): {e}",
                f.attempts,
                f.since.elapsed().as_secs_f64()
            ));
            f.last_logged = now;
            f.unlogged = 0;
        } else {
            f.unlogged += 1;
        }
    }

    /// How long the writer may sleep before it has something to do.
    pub(super) fn idle_for(&self, nap: Duration) -> Duration {
        let until = |t: Instant| t.saturating_duration_since(Instant::now());
        let due = match (&self.failing, self.oldest) {
            (Some(f), Some(_)) => until(f.retry_at),
            (None, Some(t)) => self.cfg.commit_delay.saturating_sub(t.elapsed()),
            (_, None) => nap,
        };
        nap.min(due).max(Duration::from_micros(50))
    }

    /// Gives up the events still in memory (the disk kept failing after the stop).
    pub(super) fn give_up(&mut self) {
        let n = self.records();
        add(&self.stats.lost, n);
        log_error(&format!(
            "giving up: the write-ahead log kept failing for {:.0} s after the stop; {n} events that were never acknowledged are lost",
            self.cfg.give_up_after_stop.as_secs_f64()
        ));
        self.complete_acks(false);
        self.batch.clear();
        self.lens.clear();
        self.oldest = None;
    }
}

pub(super) fn log_error(msg: &str) {
    tracing::error!(target: "sink::storage::writer", "{msg}");
}

fn log_info(msg: &str) {
    tracing::info!(target: "sink::storage::writer", "{msg}");
}
