//! Counters for `/metrics`, in Prometheus text format.
//!
//! Each worker writes only its own cache-line-aligned block (a plain load and store, no
//! atomic read-modify-write: there is one writer), and `/metrics` sums the blocks. Nothing
//! on the request path is shared between workers.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::Arc;

use sink::EventKind;
use sink::storage::uploader::UploadStats;
use sink::storage::writer::WalStats;

use crate::response::Status;

/// The routes, as labelled in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Campaign,
    Click,
    Pixel,
    Postback,
    Health,
    Metrics,
    Other,
}

impl Route {
    pub const ALL: [Route; 7] = [
        Route::Campaign,
        Route::Click,
        Route::Pixel,
        Route::Postback,
        Route::Health,
        Route::Metrics,
        Route::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Route::Campaign => "campaign",
            Route::Click => "click",
            Route::Pixel => "pixel",
            Route::Postback => "postback",
            Route::Health => "healthz",
            Route::Metrics => "metrics",
            Route::Other => "other",
        }
    }
}

const KINDS: usize = EventKind::ALL.len();

fn bump(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// One worker's counters; only that worker writes them.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerStats {
    requests: [[AtomicU64; Status::ALL.len()]; Route::ALL.len()],
    emitted: [AtomicU64; KINDS],
    dropped: [AtomicU64; KINDS],
    accepted: AtomicU64,
    open: AtomicU64,
    fallbacks: AtomicU64,
    agent_hits: AtomicU64,
    agents_parsed: AtomicU64,
    clicks_by_table: AtomicU64,
    clicks_by_cookie: AtomicU64,
    accept_failures: AtomicU64,
    send_timeouts: AtomicU64,
}

impl WorkerStats {
    pub fn request(&self, route: Route, status: Status) {
        let s = Status::ALL.iter().position(|&x| x == status).unwrap_or(0);
        bump(&self.requests[route as usize][s]);
    }

    pub fn emitted(&self, kind: EventKind) {
        bump(&self.emitted[kind as usize]);
    }

    pub fn dropped(&self, kind: EventKind) {
        bump(&self.dropped[kind as usize]);
    }

    pub fn fallback(&self) {
        bump(&self.fallbacks);
    }

    /// The worker's agent cache totals so far (its own running counts).
    pub fn agent_cache(&self, hits: u64, parsed: u64) {
        self.agent_hits.store(hits, Ordering::Relaxed);
        self.agents_parsed.store(parsed, Ordering::Relaxed);
    }

    /// A click-through found its visit's state: in the node's click cache, or else in the
    /// visit's cookie.
    pub fn click_found(&self, in_table: bool) {
        bump(if in_table {
            &self.clicks_by_table
        } else {
            &self.clicks_by_cookie
        });
    }

    /// `accept` failed (out of descriptors or memory).
    pub fn accept_failed(&self) {
        bump(&self.accept_failures);
    }

    /// A connection was closed because its peer did not read its answers in time.
    pub fn send_timed_out(&self) {
        bump(&self.send_timeouts);
    }

    pub fn connection_opened(&self) {
        bump(&self.accepted);
        bump(&self.open);
    }

    pub fn connection_closed(&self) {
        let o = &self.open;
        o.store(
            o.load(Ordering::Relaxed).saturating_sub(1),
            Ordering::Relaxed,
        );
    }
}

/// Every counter of the process.
pub struct Metrics {
    pub workers: Box<[WorkerStats]>,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    /// The version of the store's catalog the edge runs (0 with a config file's).
    pub catalog_version: AtomicU64,
    /// The I/O driver the workers run on.
    pub driver: OnceLock<&'static str>,
    /// Events (and their bytes) waiting between the workers and the sink.
    queue_depth: Box<dyn Fn() -> (usize, u64) + Send + Sync>,
    queue_capacity: usize,
    /// The write-ahead log's counters.
    wal: Arc<WalStats>,
    /// The uploader's counters.
    upload: Arc<UploadStats>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

/// Milliseconds since `since_ms` (Unix milliseconds; 0: nothing, and 0 is answered).
fn lag_ms(since_ms: u64) -> u64 {
    if since_ms == 0 {
        return 0;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    now.saturating_sub(since_ms)
}

fn sum(workers: &[WorkerStats], f: impl Fn(&WorkerStats) -> &AtomicU64) -> u64 {
    workers.iter().map(|w| f(w).load(Ordering::Relaxed)).sum()
}

impl Metrics {
    pub fn new(
        workers: usize,
        queue_capacity: usize,
        queue_depth: Box<dyn Fn() -> (usize, u64) + Send + Sync>,
        wal: Arc<WalStats>,
        upload: Arc<UploadStats>,
    ) -> Self {
        Metrics {
            workers: (0..workers).map(|_| WorkerStats::default()).collect(),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            catalog_version: AtomicU64::new(0),
            driver: OnceLock::new(),
            queue_depth,
            queue_capacity,
            wal,
            upload,
        }
    }

    /// Total requests answered on `route` with `status`, over all workers.
    pub fn requests(&self, route: Route, status: Status) -> u64 {
        let s = Status::ALL.iter().position(|&x| x == status).unwrap_or(0);
        sum(&self.workers, |w| &w.requests[route as usize][s])
    }

    pub fn emitted(&self, kind: EventKind) -> u64 {
        sum(&self.workers, |w| &w.emitted[kind as usize])
    }

    pub fn dropped(&self, kind: EventKind) -> u64 {
        sum(&self.workers, |w| &w.dropped[kind as usize])
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(4096);
        let w = &self.workers;
        let _ = writeln!(
            o,
            "# HELP edge_requests_total Requests answered, by route and status."
        );
        let _ = writeln!(o, "# TYPE edge_requests_total counter");
        for r in Route::ALL {
            for s in Status::ALL {
                let n = self.requests(r, s);
                if n > 0 || matches!((r, s), (Route::Campaign, Status::Found)) {
                    let _ = writeln!(
                        o,
                        "edge_requests_total{{route=\"{}\",status=\"{}\"}} {n}",
                        r.as_str(),
                        s.code()
                    );
                }
            }
        }
        type KindCounter = fn(&Metrics, EventKind) -> u64;
        let per_kind: [(&str, &str, KindCounter); 2] = [
            (
                "edge_events_emitted_total",
                "Events handed to the sink.",
                Metrics::emitted,
            ),
            (
                "edge_events_dropped_total",
                "Events lost because the sink's queue was full.",
                Metrics::dropped,
            ),
        ];
        for (name, help, f) in per_kind {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
            for k in EventKind::ALL {
                let _ = writeln!(o, "{name}{{kind=\"{}\"}} {}", k.as_str(), f(self, k));
            }
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (queued, queued_bytes) = (self.queue_depth)();
        let wal = &self.wal;
        let up = &self.upload;
        let scalars: &[(&str, &str, &str, u64)] = &[
            (
                "edge_event_queue_depth",
                "gauge",
                "Events waiting for the sink.",
                queued as u64,
            ),
            (
                "edge_event_queue_bytes",
                "gauge",
                "Bytes of the events waiting for the sink (bounded by server.event_queue_bytes).",
                queued_bytes,
            ),
            (
                "edge_event_queue_capacity",
                "gauge",
                "Room in the sink's queue.",
                self.queue_capacity as u64,
            ),
            (
                "edge_config_reloads_total",
                "counter",
                "Successful config reloads and changes of the store's catalog applied.",
                load(&self.reloads),
            ),
            (
                "edge_config_reload_failures_total",
                "counter",
                "Config reloads and catalog changes refused (the running campaigns stay).",
                load(&self.reload_failures),
            ),
            (
                "edge_catalog_version",
                "gauge",
                "The version of the store's catalog being served (0: the config file's).",
                load(&self.catalog_version),
            ),
            (
                "edge_connections_accepted_total",
                "counter",
                "Connections accepted.",
                sum(w, |s| &s.accepted),
            ),
            (
                "edge_connections_open",
                "gauge",
                "Connections open now.",
                sum(w, |s| &s.open),
            ),
            (
                "edge_fallback_redirects_total",
                "counter",
                "Unknown campaigns and clicks sent to fallback_url.",
                sum(w, |s| &s.fallbacks),
            ),
            (
                "edge_agent_cache_hits_total",
                "counter",
                "User agents answered by a worker's cache (for rules and tokens).",
                sum(w, |s| &s.agent_hits),
            ),
            (
                "edge_agents_parsed_total",
                "counter",
                "User agents parsed with uap-core's regexes on the request path (cache misses).",
                sum(w, |s| &s.agents_parsed),
            ),
            (
                "edge_clicks_found_in_table_total",
                "counter",
                "Click-throughs whose visit was found in the node's click cache.",
                sum(w, |s| &s.clicks_by_table),
            ),
            (
                "edge_clicks_found_in_cookie_total",
                "counter",
                "Click-throughs whose visit was found in its signed cookie.",
                sum(w, |s| &s.clicks_by_cookie),
            ),
            (
                "edge_accept_failures_total",
                "counter",
                "Failed accepts (out of descriptors or memory; logged at most every 5 s).",
                sum(w, |s| &s.accept_failures),
            ),
            (
                "edge_send_timeouts_total",
                "counter",
                "Connections closed because the peer did not read its answers (server.send_timeout_ms).",
                sum(w, |s| &s.send_timeouts),
            ),
            ("edge_workers", "gauge", "Worker threads.", w.len() as u64),
            ("edge_up", "gauge", "1 while the edge serves.", 1),
            (
                "edge_wal_events_total",
                "counter",
                "Events made durable in the write-ahead log.",
                load(&wal.events),
            ),
            (
                "edge_wal_commits_total",
                "counter",
                "Group commits (one write + fdatasync each).",
                load(&wal.commits),
            ),
            (
                "edge_wal_bytes_total",
                "counter",
                "Bytes written to the write-ahead log.",
                load(&wal.bytes),
            ),
            (
                "edge_wal_fsync_microseconds_total",
                "counter",
                "Time spent writing and syncing commits.",
                load(&wal.fsync_micros),
            ),
            (
                "edge_wal_failures_total",
                "counter",
                "Commit attempts that failed (their conversions were answered 503; the events are retried).",
                load(&wal.failures),
            ),
            (
                "edge_wal_failing",
                "gauge",
                "1 while commits to the write-ahead log fail (events wait in memory and are retried).",
                load(&wal.failing),
            ),
            (
                "edge_wal_events_lost_total",
                "counter",
                "Events that could not be logged at all (too large, or given up at a stop with the disk still failing).",
                load(&wal.lost),
            ),
            (
                "edge_wal_refused_full_total",
                "counter",
                "Commits refused because the log reached server.wal_max_bytes.",
                load(&wal.refused_full),
            ),
            (
                "edge_wal_segments_sealed_total",
                "counter",
                "WAL segments sealed.",
                load(&wal.sealed),
            ),
            (
                "edge_wal_disk_bytes",
                "gauge",
                "Bytes of write-ahead log on disk.",
                load(&wal.disk_bytes),
            ),
            (
                "edge_store_segments_pending",
                "gauge",
                "Sealed WAL segments waiting for upload.",
                load(&up.segments_pending),
            ),
            (
                "edge_store_segments_uploaded_total",
                "counter",
                "WAL segments uploaded and deleted.",
                load(&up.segments_uploaded),
            ),
            (
                "edge_store_objects_written_total",
                "counter",
                "Parquet objects written to the store.",
                load(&up.objects_written),
            ),
            (
                "edge_store_rows_written_total",
                "counter",
                "Rows written to the store.",
                load(&up.rows_written),
            ),
            (
                "edge_store_bytes_written_total",
                "counter",
                "Parquet bytes written to the store.",
                load(&up.bytes_written),
            ),
            (
                "edge_store_segments_uncommitted",
                "gauge",
                "WAL segments uploaded whose files' markers for the store's committer are not all stored yet.",
                load(&up.segments_uncommitted),
            ),
            (
                "edge_store_commits_total",
                "counter",
                "Commits to the tables' Delta logs made by this edge (while it holds the store's commit lease).",
                load(&up.commits),
            ),
            (
                "edge_store_files_committed_total",
                "counter",
                "Parquet files added to the tables by those commits.",
                load(&up.files_committed),
            ),
            (
                "edge_store_commit_failures_total",
                "counter",
                "Hand-offs to the committer and committer passes that failed (retried; segments wait in the WAL, markers in the store).",
                load(&up.commit_failures),
            ),
            (
                "edge_store_committer",
                "gauge",
                "1 while this edge holds the store's commit lease and commits every edge's files.",
                load(&up.committer.holder),
            ),
            (
                "edge_store_markers_pending",
                "gauge",
                "Files of any edge marked for commit that this edge, as the committer, found and has not committed yet.",
                load(&up.committer.markers_pending),
            ),
            (
                "edge_store_last_commit_timestamp_ms",
                "gauge",
                "When the last commit was made, in Unix milliseconds (0: none since start).",
                load(&up.last_commit_ms),
            ),
            (
                "edge_store_lag_ms",
                "gauge",
                "Age of the oldest event this edge knows is not yet committed to its table (0: none waiting): its own segments uploaded and not yet handed to the committer, and, on the edge holding the commit lease, every edge's marked files; an event first waits up to server.flush_interval_ms for its WAL segment to be sealed.",
                lag_ms(load(&up.oldest_uncommitted_ms)),
            ),
            (
                "edge_store_upload_failures_total",
                "counter",
                "Failed segment uploads (retried).",
                load(&up.failures),
            ),
            (
                "edge_store_uploader_running",
                "gauge",
                "1 while the uploader thread runs (0: nothing reaches the store).",
                load(&up.running),
            ),
            (
                "edge_store_bad_segments_total",
                "counter",
                "Files in the WAL directory that were not segments (set aside as .wal.corrupt).",
                load(&up.bad_segments),
            ),
            (
                "edge_store_damaged_segments_total",
                "counter",
                "WAL segments with damaged records: the rest was uploaded, the segment kept in wal/damaged/.",
                load(&up.damaged_segments),
            ),
            (
                "edge_store_damaged_bytes_total",
                "counter",
                "Bytes of WAL segments that could not be read (damage; their records are lost).",
                load(&up.damaged_bytes),
            ),
            (
                "edge_store_torn_bytes_total",
                "counter",
                "Bytes of torn WAL tails dropped (writes a crash left unfinished; never acknowledged).",
                load(&up.torn_bytes),
            ),
        ];
        for &(name, ty, help, v) in scalars {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {ty}\n{name} {v}");
        }
        let driver = self.driver.get().copied().unwrap_or("starting");
        let _ = writeln!(
            o,
            "# HELP edge_driver_info The I/O driver the workers run on.\n# TYPE edge_driver_info gauge\nedge_driver_info{{driver=\"{driver}\"}} 1"
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_sums_over_workers() {
        let wal = Arc::new(WalStats::default());
        wal.events.store(3, Ordering::Relaxed);
        let m = Metrics::new(2, 100, Box::new(|| (7, 700)), wal, Default::default());
        m.workers[0].request(Route::Campaign, Status::Found);
        m.workers[1].request(Route::Campaign, Status::Found);
        m.workers[1].request(Route::Postback, Status::BadRequest);
        m.workers[0].emitted(EventKind::Visit);
        m.workers[1].dropped(EventKind::Postback);
        m.workers[0].connection_opened();
        let _ = m.driver.set("io_uring");
        let text = m.render();
        for line in [
            "edge_requests_total{route=\"campaign\",status=\"302\"} 2",
            "edge_requests_total{route=\"postback\",status=\"400\"} 1",
            "edge_events_emitted_total{kind=\"visit\"} 1",
            "edge_events_dropped_total{kind=\"postback\"} 1",
            "edge_wal_events_total 3",
            "edge_event_queue_depth 7",
            "edge_connections_open 1",
            "edge_driver_info{driver=\"io_uring\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        assert!(!text.contains("status=\"404\""));
    }
}
