//! Outgoing postbacks to traffic sources (docs/postbacks.md): `query postbacks run` follows the
//! store's conversions, decides which reports each source is told about, logs those
//! postbacks in a durable outbox on local disk, and sends them, at least once, with retries.
//!
//! - **Following the store.** Each pass lists the conversion objects not yet decided, reads
//!   their click ids, and asks the conversion feed about those clicks (every report of their
//!   conversions, joined to their visits, read from the hours the ids name). A conversion
//!   whose visit is not in the store yet (edges upload on their own schedules) is asked about
//!   again, with backoff, for `visit_wait`.
//! - **Deciding** ([`decide`]): the source of the click's campaign, its postback's statuses,
//!   types, payout and send shares and first-only rule, over the reports the feed settled
//!   with the trust rules and the network's status map. Each postback's key is the report's
//!   event id and the source's id: deciding again never makes a second job.
//! - **The outbox** ([`outbox`]): jobs are synced to disk before their first attempt, and an
//!   object is marked decided only with its jobs; every attempt is logged (`query postbacks
//!   list` prints them). A kill -9 loses nothing: the next start sends what is pending.
//! - **Sending** ([`send`]): an `Idempotency-Key` header (and `{idempotency_key}`) lets the
//!   receiver drop repeats; per-host concurrency and rate limits; exponential backoff with
//!   full jitter; a 2xx delivers, a 4xx other than 408/429 is a refusal, the rest retry up
//!   to `max_attempts`. Counters are served at `/metrics` with `--listen`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use catalog::Catalog;
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::de::IgnoredAny;
use serde_json::Value;
use tokio::sync::{Mutex, mpsc};

use crate::feed::FeedRequest;
use crate::names::Names;
use crate::session::{Session, SessionOptions};
use crate::{QueryError, Result};

pub mod decide;
pub mod outbox;
pub mod send;

use outbox::{Attempt, Job, Outbox, Outcome};
use send::{SendOptions, now_ms};

/// How the dispatcher runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub store: String,
    /// The outbox directory (local disk).
    pub outbox: PathBuf,
    /// The catalog from this config file instead of the store's.
    pub config: Option<PathBuf>,
    /// How often to look for new conversions.
    pub poll: Duration,
    /// How long a conversion waits for its visit to reach the store.
    pub visit_wait: Duration,
    /// How long delivered and abandoned postbacks stay listed.
    pub keep: Duration,
    /// Conversions of clicks older than this fire nothing (the attribution window).
    pub max_click_age: Duration,
    /// For a new outbox: conversion objects uploaded before this (Unix ms) fire nothing.
    pub since_ms: i64,
    pub send: SendOptions,
    /// One pass and one attempt for each due postback, then exit (for cron).
    pub once: bool,
    /// Serve `/metrics` here.
    pub listen: Option<std::net::SocketAddr>,
    /// Memory the feed's queries may use.
    pub session: SessionOptions,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub queued: AtomicU64,
    pub skipped: AtomicU64,
    pub attempts: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub delivered: AtomicU64,
    pub gave_up: AtomicU64,
    pub pending: AtomicU64,
    pub latency_us: AtomicU64,
    pub passes: AtomicU64,
    pub pass_errors: AtomicU64,
    pub outbox_errors: AtomicU64,
    pub objects_decided: AtomicU64,
    pub objects_waiting: AtomicU64,
    pub object_errors: AtomicU64,
}

impl Metrics {
    /// Prometheus text.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = String::new();
        let mut line = |name: &str, kind: &str, help: &str, v: String| {
            s.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        };
        line(
            "postbacks_queued_total",
            "counter",
            "Postbacks decided and logged in the outbox.",
            g(&self.queued).to_string(),
        );
        line(
            "postbacks_skipped_total",
            "counter",
            "Postbacks decided but not sendable (no source click id).",
            g(&self.skipped).to_string(),
        );
        line(
            "postbacks_attempts_total",
            "counter",
            "Attempts to send a postback.",
            g(&self.attempts).to_string(),
        );
        line(
            "postbacks_failed_attempts_total",
            "counter",
            "Attempts that did not deliver.",
            g(&self.failed_attempts).to_string(),
        );
        line(
            "postbacks_delivered_total",
            "counter",
            "Postbacks a receiver accepted (2xx).",
            g(&self.delivered).to_string(),
        );
        line(
            "postbacks_gave_up_total",
            "counter",
            "Postbacks refused (4xx) or out of attempts.",
            g(&self.gave_up).to_string(),
        );
        line(
            "postbacks_pending",
            "gauge",
            "Postbacks waiting for an attempt.",
            g(&self.pending).to_string(),
        );
        line(
            "postbacks_attempt_seconds_sum",
            "counter",
            "Total time of attempts.",
            format!("{:.6}", g(&self.latency_us) as f64 / 1e6),
        );
        line(
            "postbacks_passes_total",
            "counter",
            "Passes over the store's new conversions.",
            g(&self.passes).to_string(),
        );
        line(
            "postbacks_pass_errors_total",
            "counter",
            "Passes that failed (retried at the next poll).",
            g(&self.pass_errors).to_string(),
        );
        line(
            "postbacks_outbox_errors_total",
            "counter",
            "Outbox writes that failed.",
            g(&self.outbox_errors).to_string(),
        );
        line(
            "postbacks_objects_decided_total",
            "counter",
            "Conversion objects fully decided.",
            g(&self.objects_decided).to_string(),
        );
        line(
            "postbacks_objects_waiting",
            "gauge",
            "Conversion objects waiting for their visits.",
            g(&self.objects_waiting).to_string(),
        );
        line(
            "postbacks_object_errors_total",
            "counter",
            "Conversion objects that could not be read (tried again later).",
            g(&self.object_errors).to_string(),
        );
        s
    }
}

/// Conversion objects read in one pass.
const OBJECTS_PER_PASS: usize = 256;
/// Click ids asked about in one feed query.
const CLICKS_PER_QUERY: usize = 5_000;

/// Runs the dispatcher until a signal (or, with `once`, one round).
pub async fn run(opts: Options) -> Result<()> {
    let outbox = Outbox::open(&opts.outbox, opts.since_ms)?;
    let metrics = Arc::new(Metrics::default());
    metrics
        .pending
        .store(outbox.state.pending().count() as u64, Ordering::Relaxed);
    let outbox = Arc::new(Mutex::new(outbox));
    if let Some(addr) = opts.listen {
        let m = metrics.clone();
        let app = axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(move || async move { m.render() }),
            )
            .route("/healthz", axum::routing::get(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        tracing::info!("serving /metrics on http://{addr}");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the metrics server stopped");
            }
        });
    }
    let mut scanner = Scanner::new(&opts).await?;
    let client = reqwest::Client::builder()
        .user_agent(concat!(
            "clicktracker-postbacks/",
            env!("CARGO_PKG_VERSION")
        ))
        // A redirect could go anywhere: it is an answer, not followed.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| QueryError::Postbacks(format!("HTTP client: {e}")))?;
    if opts.once {
        // The new jobs are in the outbox with the pending ones.
        scanner.pass(&outbox, &metrics).await?;
        // Only what is due: a job keeps its backoff from run to run.
        let now = now_ms();
        let due: Vec<(Job, u32)> = {
            let o = outbox.lock().await;
            o.state
                .pending()
                .filter(|j| j.next_ms.is_none_or(|t| t <= now))
                .map(|j| (j.job.clone(), j.attempts))
                .collect()
        };
        let mut hosts = send::Hosts::default();
        let mut results = Vec::new();
        for (job, attempts) in due {
            let host = send::host_of(&job.url);
            let _permit = hosts.acquire(&host, &opts.send).await;
            let mut a = send::attempt(&client, &job, attempts, &opts.send).await;
            send::schedule(&mut a, job.created_ms, attempts + 1, &opts.send);
            count_attempt(&metrics, &a);
            results.push(a);
        }
        outbox.lock().await.attempted(results)?;
        return Ok(());
    }
    let (new_tx, new_rx) = mpsc::unbounded_channel();
    let sender = tokio::spawn(sender(
        outbox.clone(),
        client,
        opts.send.clone(),
        new_rx,
        metrics.clone(),
    ));
    let scan = async {
        loop {
            match scanner.pass(&outbox, &metrics).await {
                Ok(fresh) => {
                    for j in fresh {
                        let _ = new_tx.send(j);
                    }
                }
                Err(e) => {
                    metrics.pass_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "a pass over the store failed; retrying at the next poll");
                }
            }
            tokio::time::sleep(opts.poll).await;
        }
    };
    tokio::select! {
        () = scan => {}
        _ = shutdown() => tracing::info!("stopping: pending postbacks stay in the outbox"),
        r = sender => {
            if let Err(e) = r {
                return Err(QueryError::Postbacks(format!("the sender stopped: {e}")));
            }
        }
    }
    Ok(())
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
}

fn count_attempt(m: &Metrics, a: &Attempt) {
    m.attempts.fetch_add(1, Ordering::Relaxed);
    m.latency_us
        .fetch_add((a.latency_ms * 1e3) as u64, Ordering::Relaxed);
    match a.outcome {
        Some(Outcome::Delivered) => {
            m.delivered.fetch_add(1, Ordering::Relaxed);
        }
        Some(Outcome::GaveUp) => {
            m.failed_attempts.fetch_add(1, Ordering::Relaxed);
            m.gave_up.fetch_add(1, Ordering::Relaxed);
        }
        None => {
            m.failed_attempts.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One host's postbacks waiting for an attempt, by due time (Unix ms) and key.
type HostQueue = std::collections::BTreeSet<(i64, String)>;

/// Sends pending jobs as they fall due, and logs each attempt. Each host has its own queue,
/// so a slow or dead host holds up only its own postbacks, and within a host first attempts
/// and retries go in due order.
async fn sender(
    outbox: Arc<Mutex<Outbox>>,
    client: reqwest::Client,
    opts: SendOptions,
    mut new_rx: mpsc::UnboundedReceiver<Job>,
    metrics: Arc<Metrics>,
) {
    let mut queues: HashMap<String, HostQueue> = HashMap::new();
    // Each pending job and its attempts so far.
    let mut jobs: HashMap<String, (Job, u32)> = HashMap::new();
    {
        let o = outbox.lock().await;
        let now = now_ms();
        for j in o.state.pending() {
            // A restart keeps each job's backoff.
            let due = j.next_ms.unwrap_or(now).max(now);
            queues
                .entry(send::host_of(&j.job.url))
                .or_default()
                .insert((due, j.job.key.clone()));
            jobs.insert(j.job.key.clone(), (j.job.clone(), j.attempts));
        }
    }
    let (res_tx, mut res_rx) = mpsc::unbounded_channel::<Attempt>();
    let mut hosts = send::Hosts::default();
    let client = Arc::new(client);
    loop {
        let now = now_ms();
        // Start what each host has room for; note when each can take more.
        let mut wake_at = now + 1_000;
        for (host, queue) in &mut queues {
            while let Some((t, key)) = queue.first().cloned() {
                if t > now {
                    wake_at = wake_at.min(t);
                    break;
                }
                let Some((job, attempts)) = jobs.get(&key).cloned() else {
                    queue.pop_first();
                    continue;
                };
                match hosts.try_take(host, &opts) {
                    Ok(permit) => {
                        queue.pop_first();
                        let (client, opts, tx) = (client.clone(), opts.clone(), res_tx.clone());
                        tokio::spawn(async move {
                            let a = send::attempt(&client, &job, attempts, &opts).await;
                            drop(permit);
                            let _ = tx.send(a);
                        });
                    }
                    Err(next) => {
                        wake_at = wake_at.min(next);
                        break;
                    }
                }
            }
        }
        queues.retain(|_, q| !q.is_empty());
        let wake = (wake_at - now_ms()).clamp(5, 1_000);
        tokio::select! {
            Some(job) = new_rx.recv() => {
                if let std::collections::hash_map::Entry::Vacant(slot) = jobs.entry(job.key.clone()) {
                    queues.entry(send::host_of(&job.url)).or_default().insert((now_ms(), job.key.clone()));
                    slot.insert((job, 0));
                }
            }
            Some(first) = res_rx.recv() => {
                let mut results = vec![first];
                while let Ok(a) = res_rx.try_recv() {
                    results.push(a);
                }
                for a in &mut results {
                    let Some((job, attempts)) = jobs.get_mut(&a.key) else { continue };
                    *attempts += 1;
                    send::schedule(a, job.created_ms, *attempts, &opts);
                    match a.next_ms {
                        Some(next) => {
                            queues.entry(send::host_of(&job.url)).or_default().insert((next, a.key.clone()));
                        }
                        None => {
                            jobs.remove(&a.key);
                        }
                    }
                    count_attempt(&metrics, a);
                }
                if let Err(e) = outbox.lock().await.attempted(results) {
                    // Not logged: a delivered postback may be sent again after a restart
                    // (the receiver drops it by its key).
                    metrics.outbox_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "could not log postback attempts");
                }
            }
            () = tokio::time::sleep(Duration::from_millis(wake as u64)) => {}
        }
        metrics.pending.store(jobs.len() as u64, Ordering::Relaxed);
    }
}

/// Follows the store's conversion objects.
struct Scanner {
    store: Arc<dyn ObjectStore>,
    /// Where the store is and how to query it: a session per pass, as a session keeps the
    /// listing of the files it has read.
    store_url: String,
    session_options: SessionOptions,
    config: Option<PathBuf>,
    catalog_store: catalog::store::CatalogStore,
    visit_wait_ms: i64,
    keep_ms: i64,
    /// Objects waiting for their visits (or to be readable): when to look again, and the
    /// delay after that.
    waiting: HashMap<String, (i64, i64)>,
    passes: u64,
    last_forget_ms: i64,
    max_click_age_ms: i64,
}

impl Scanner {
    async fn new(opts: &Options) -> Result<Scanner> {
        Ok(Scanner {
            store: crate::session::open_store(&opts.store)?,
            store_url: opts.store.clone(),
            session_options: opts.session.clone(),
            config: opts.config.clone(),
            catalog_store: crate::stored::open(&opts.store)?,
            visit_wait_ms: opts.visit_wait.as_millis() as i64,
            keep_ms: opts.keep.as_millis() as i64,
            waiting: HashMap::new(),
            passes: 0,
            last_forget_ms: 0,
            max_click_age_ms: opts.max_click_age.as_millis() as i64,
        })
    }

    /// The catalog as it is now: the config file's, or the store's.
    async fn catalog(&self) -> Result<Catalog> {
        let sections = match &self.config {
            Some(path) => catalog::File::<IgnoredAny>::load(path)?.into_sections(),
            None => {
                let (version, sections) = self.catalog_store.load_sections().await?;
                if version == 0 {
                    return Err(QueryError::Postbacks(
                        "the store keeps no catalog (do the edges read a config file?): give it with --config".into(),
                    ));
                }
                sections
            }
        };
        Ok(Catalog::compile(&sections)?)
    }

    /// One pass: decides the objects not yet decided; answers the new jobs to send.
    async fn pass(&mut self, outbox: &Mutex<Outbox>, metrics: &Metrics) -> Result<Vec<Job>> {
        self.passes += 1;
        metrics.passes.fetch_add(1, Ordering::Relaxed);
        let catalog = self.catalog().await?;
        let names = Names::from_catalog(&catalog);
        let now = now_ms();
        let prefix = object_store::path::Path::from("conversions");
        let mut listed: Vec<object_store::ObjectMeta> = Vec::new();
        let mut stream = self.store.list(Some(&prefix));
        while let Some(meta) = stream.next().await {
            let meta = meta?;
            if meta.location.as_ref().ends_with(".parquet") {
                listed.push(meta);
            }
        }
        listed.sort_by(|a, b| a.location.cmp(&b.location));
        let todo: Vec<object_store::ObjectMeta> = {
            let o = outbox.lock().await;
            listed
                .iter()
                .filter(|m| !o.state.seen.contains(m.location.as_ref()))
                .filter(|m| {
                    self.waiting
                        .get(m.location.as_ref())
                        .is_none_or(|(at, _)| *at <= now)
                })
                .take(OBJECTS_PER_PASS)
                .cloned()
                .collect()
        };
        metrics
            .objects_waiting
            .store(self.waiting.len() as u64, Ordering::Relaxed);
        if now - self.last_forget_ms > 600_000 {
            // Decided objects no longer in the store, and finished postbacks past --keep-days,
            // leave the outbox's state (and its file at the next rewrite).
            self.last_forget_ms = now;
            let names: HashSet<String> = listed.iter().map(|m| m.location.to_string()).collect();
            let mut o = outbox.lock().await;
            o.forget(&names, now, self.keep_ms);
            if let Err(e) = o.rewrite() {
                tracing::warn!(error = %e, "could not rewrite the outbox");
            }
        }
        if todo.is_empty() {
            return Ok(Vec::new());
        }
        let since = outbox.lock().await.state.since_ms.unwrap_or(i64::MIN);
        // The click ids and report ids of each object. An object that cannot be read now
        // (gone since the listing, damaged, a store error) is tried again later, with
        // backoff, and does not hold up the others.
        let mut by_object: Vec<(String, i64, Vec<String>)> = Vec::new();
        let mut fresh_reports = HashSet::new();
        let mut decided = Vec::new();
        for m in &todo {
            let object = m.location.to_string();
            let modified = m.last_modified.timestamp_millis();
            if modified < since {
                // Uploaded before this outbox began (`--since`): not ours to tell.
                decided.push(object);
                continue;
            }
            match self.ids(&m.location).await {
                Ok((clicks, reports)) => {
                    fresh_reports.extend(reports);
                    by_object.push((object, modified, clicks));
                }
                Err(e) => {
                    metrics.object_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(object = %object, error = %e, "cannot read a conversion object; trying again later");
                    self.later(object);
                }
            }
        }
        // Click ids a conversion can claim: made within the attribution window, not in the
        // future (a forged id from 1970 would make the feed read every partition).
        let (oldest, newest) = (now - self.max_click_age_ms, now + 86_400_000);
        let mut clicks: Vec<String> = by_object
            .iter()
            .flat_map(|(_, _, c)| c.iter())
            .filter(|c| {
                i64::from_str_radix(&c[..12], 16).is_ok_and(|t| (oldest..=newest).contains(&t))
            })
            .cloned()
            .collect();
        clicks.sort();
        clicks.dedup();
        let mut jobs = Vec::new();
        let mut unresolved = HashSet::new();
        let session = match clicks.is_empty() {
            true => None,
            false => Some(Session::open(&self.store_url, &self.session_options).await?),
        };
        for chunk in clicks.chunks(CLICKS_PER_QUERY) {
            let Some(session) = &session else { break };
            let req = FeedRequest {
                clicks: Some(chunk.to_vec()),
                ..Default::default()
            };
            let mut buf = Vec::new();
            crate::feed::run(session, &req, Some(&names), &mut buf).await?;
            let feed: Vec<Value> = buf
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(serde_json::from_slice)
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| QueryError::Postbacks(format!("reading the feed: {e}")))?;
            let d = decide::decide(&feed, &fresh_reports, &catalog, &names, now);
            jobs.extend(d.jobs);
            unresolved.extend(d.unresolved);
        }
        for (object, modified, clicks) in by_object {
            let waiting = clicks.iter().any(|c| unresolved.contains(c));
            if waiting && now - modified < self.visit_wait_ms {
                self.later(object);
            } else {
                self.waiting.remove(&object);
                decided.push(object);
            }
        }
        let n_decided = decided.len() as u64;
        let fresh = outbox.lock().await.decide(jobs, decided)?;
        metrics
            .objects_decided
            .fetch_add(n_decided, Ordering::Relaxed);
        let (skipped, sendable): (Vec<Job>, Vec<Job>) =
            fresh.into_iter().partition(|j| j.skipped.is_some());
        metrics
            .skipped
            .fetch_add(skipped.len() as u64, Ordering::Relaxed);
        metrics
            .queued
            .fetch_add(sendable.len() as u64, Ordering::Relaxed);
        for j in &skipped {
            tracing::warn!(key = %j.key, why = j.skipped.as_deref().unwrap_or_default(), "postback not sendable");
        }
        Ok(sendable)
    }

    /// Looks at `object` again later: after 2 s, then twice as long each time, up to 5 min.
    fn later(&mut self, object: String) {
        let now = now_ms();
        let delay = self
            .waiting
            .get(&object)
            .map_or(2_000, |(_, d)| (d * 2).min(300_000));
        self.waiting.insert(object, (now + delay, delay));
    }

    /// The valid click ids in one conversion object, and its reports' event ids.
    async fn ids(&self, location: &object_store::path::Path) -> Result<(Vec<String>, Vec<String>)> {
        use arrow::array::AsArray;
        use datafusion::parquet::arrow::ProjectionMask;
        use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let bytes = self.store.get(location).await?.bytes().await?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
        let position = |name: &str| {
            builder
                .schema()
                .fields()
                .iter()
                .position(|f| f.name() == name)
        };
        let (Some(click), Some(event)) = (position("click_id"), position("event_id")) else {
            return Ok((Vec::new(), Vec::new()));
        };
        let mask = ProjectionMask::roots(builder.parquet_schema(), [click, event]);
        let (click, event) = if click < event { (0, 1) } else { (1, 0) };
        let (mut clicks, mut reports) = (Vec::new(), Vec::new());
        for batch in builder.with_projection(mask).build()? {
            let batch = batch?;
            let utf8 =
                |i: usize| arrow::compute::cast(batch.column(i), &arrow::datatypes::DataType::Utf8);
            let (c, e) = (utf8(click)?, utf8(event)?);
            for v in c.as_string::<i32>().iter().flatten() {
                if sink::EventId::parse(v.as_bytes()).is_ok() {
                    clicks.push(v.to_owned());
                }
            }
            reports.extend(e.as_string::<i32>().iter().flatten().map(str::to_owned));
        }
        Ok((clicks, reports))
    }
}

/// The outbox's postbacks, newest first (`pending`: only those not delivered or abandoned).
pub fn list(dir: &std::path::Path, pending: bool) -> Result<Vec<outbox::JobState>> {
    let (state, _) = outbox::read(dir)?;
    let mut jobs: Vec<outbox::JobState> = state
        .jobs
        .into_values()
        .filter(|j| !pending || j.outcome.is_none())
        .collect();
    jobs.sort_by(|a, b| (b.job.created_ms, &b.job.key).cmp(&(a.job.created_ms, &a.job.key)));
    Ok(jobs)
}

/// The outbox's postbacks as a table: `key`, `source`, `status`, `payout`, `state`
/// (pending | delivered | gave_up | skipped), `attempts`, `last_code`, `latency_ms`,
/// `last_error`, `created`, `last_attempt`, `url`.
pub fn table(jobs: &[outbox::JobState]) -> Result<arrow::record_batch::RecordBatch> {
    use arrow::array::{ArrayRef, Float64Array, StringArray, UInt32Array};
    let time = |ms: Option<i64>| {
        ms.and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
    };
    let strings = |f: &dyn Fn(&outbox::JobState) -> Option<String>| -> ArrayRef {
        Arc::new(jobs.iter().map(f).collect::<StringArray>())
    };
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("key", strings(&|j| Some(j.job.key.clone()))),
        ("source", strings(&|j| Some(j.job.source.clone()))),
        ("status", strings(&|j| Some(j.job.status.clone()))),
        (
            "payout",
            strings(&|j| Some(crate::output::money(j.job.payout_micros))),
        ),
        (
            "state",
            strings(&|j| {
                Some(
                    match (j.outcome, &j.job.skipped) {
                        (_, Some(_)) => "skipped",
                        (None, _) => "pending",
                        (Some(Outcome::Delivered), _) => "delivered",
                        (Some(Outcome::GaveUp), _) => "gave_up",
                    }
                    .to_owned(),
                )
            }),
        ),
        (
            "attempts",
            Arc::new(
                jobs.iter()
                    .map(|j| Some(j.attempts))
                    .collect::<UInt32Array>(),
            ),
        ),
        (
            "last_code",
            Arc::new(
                jobs.iter()
                    .map(|j| j.last_code.map(u32::from))
                    .collect::<UInt32Array>(),
            ),
        ),
        (
            "latency_ms",
            Arc::new(
                jobs.iter()
                    .map(|j| j.last_latency_ms.map(|l| (l * 10.0).round() / 10.0))
                    .collect::<Float64Array>(),
            ),
        ),
        (
            "last_error",
            strings(&|j| j.last_error.clone().or_else(|| j.job.skipped.clone())),
        ),
        ("created", strings(&|j| time(Some(j.job.created_ms)))),
        ("last_attempt", strings(&|j| time(j.last_ms))),
        ("url", strings(&|j| Some(j.job.url.clone()))),
    ];
    Ok(arrow::record_batch::RecordBatch::try_from_iter(columns)?)
}
