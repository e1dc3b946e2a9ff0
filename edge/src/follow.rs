//! The store's catalog, followed: with `server.catalog = "store"` the edge loads the newest
//! version of `{store}/catalog/` at start, then a thread reads the next version every
//! `catalog_poll_ms` and applies it to the running routing ([`Routing::apply`]: only what
//! changed is compiled), swapping it in without a request waiting. A commit the edge cannot
//! apply (an offer above this edge's `max_payout`) leaves the running routing in place and
//! is retried as a whole load of the newest version; a store that cannot be read is retried
//! at the next poll, the routing served meanwhile unchanged.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use catalog::Catalog;
use catalog::store::CatalogStore;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::metrics::Metrics;
use crate::routing::{Limits, Routing};

/// Longest wait between polls while the catalog cannot be read or applied.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A current-thread runtime for the store's client (which needs timers and sockets).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the catalog's runtime: {e}"))
}

/// The routing of the store's newest catalog under `limits`.
pub fn load(
    rt: &tokio::runtime::Runtime,
    cs: &CatalogStore,
    limits: &Limits,
) -> anyhow::Result<Routing> {
    let started = Instant::now();
    let (version, sections) = rt.block_on(cs.load_sections())?;
    let read = started.elapsed();
    let cat = Catalog::compile_owned(sections)
        .map_err(|e| anyhow::anyhow!("the store's catalog, version {version}: {e}"))?;
    let routing = Routing::build(cat, limits, version)
        .map_err(|e| anyhow::anyhow!("the store's catalog, version {version}: {e}"))?;
    tracing::info!(
        version,
        campaigns = routing.campaigns.len(),
        read_ms = read.as_millis() as u64,
        compiled_ms = (started.elapsed() - read).as_millis() as u64,
        "catalog loaded from the store"
    );
    Ok(routing)
}

/// Hands the memory a whole load freed (the parsed catalog, the old routing) back to the
/// system: glibc keeps freed memory in its arenas, which would leave the resident set at
/// the load's peak.
pub fn release_free_memory() {
    // SAFETY: malloc_trim takes no pointers and only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Swaps `next` in unless a newer version is already served.
pub fn install(routing: &ArcSwap<Routing>, next: Routing, metrics: &Metrics) {
    let next = Arc::new(next);
    routing.rcu(|cur| {
        if cur.version > next.version {
            Arc::clone(cur)
        } else {
            Arc::clone(&next)
        }
    });
    metrics
        .catalog_version
        .fetch_max(next.version, Ordering::Relaxed);
}

/// The follower thread; dropping it stops the thread at its next poll.
pub struct Follower {
    stop: Option<Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts following `cs` from the routing served now.
pub fn spawn(
    cs: CatalogStore,
    routing: Arc<ArcSwap<Routing>>,
    limits: Limits,
    poll: Duration,
    metrics: Arc<Metrics>,
    ready: bool,
) -> anyhow::Result<Follower> {
    let (stop, stopped) = crossbeam_channel::bounded(0);
    let f = Follow {
        rt: runtime()?,
        cs,
        routing,
        limits,
        poll,
        metrics,
    };
    let thread = std::thread::Builder::new()
        .name("catalog".into())
        .spawn(move || f.run(&stopped, ready))?;
    Ok(Follower {
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// What the follower thread owns.
struct Follow {
    rt: tokio::runtime::Runtime,
    cs: CatalogStore,
    routing: Arc<ArcSwap<Routing>>,
    limits: Limits,
    poll: Duration,
    metrics: Arc<Metrics>,
}

impl Follow {
    fn run(&self, stopped: &Receiver<()>, mut ready: bool) {
        let Follow {
            rt,
            cs,
            routing,
            limits,
            poll,
            metrics,
        } = self;
        let (poll, metrics) = (*poll, &**metrics);
        // The start-up load's garbage, handed back off the start path.
        release_free_memory();
        // The last failure logged, so an outage is logged when it starts and ends, not per poll;
        // while it lasts the polls back off to a minute apart.
        let mut failing: Option<String> = None;
        let mut wait = poll;
        loop {
            wait = if failing.is_some() {
                (wait * 2).min(MAX_BACKOFF.max(poll))
            } else {
                poll
            };
            match stopped.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            // Every version written since the last poll, one after the other.
            loop {
                let cur = routing.load_full();
                // Until the start-up load has succeeded, only a whole load will do.
                let step = if ready {
                    rt.block_on(cs.commit_at(cur.version + 1))
                        .map_err(anyhow::Error::from)
                } else {
                    match load(rt, cs, limits) {
                        Ok(r) => {
                            ready = true;
                            install(routing, r, metrics);
                            continue;
                        }
                        Err(e) => Err(e),
                    }
                };
                let next = match step {
                    Ok(Some(commit)) => {
                        let version = commit.version;
                        match cur.apply(commit) {
                            Ok(next) => Ok(Some(next)),
                            Err(e) => match load(rt, cs, limits) {
                                // A whole load that gets no further would be tried again at once.
                                Ok(next) if next.version <= cur.version => Err(anyhow::anyhow!(
                                    "catalog version {}: {e} (the whole catalog reads as version {})",
                                    version,
                                    next.version
                                )),
                                Ok(next) => {
                                    tracing::warn!(
                                        "catalog version {}: {e}; loaded the whole catalog instead",
                                        version
                                    );
                                    Ok(Some(next))
                                }
                                Err(whole) => Err(anyhow::anyhow!(
                                    "catalog version {}: {e} (and the whole catalog: {whole})",
                                    version
                                )),
                            },
                        }
                    }
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                };
                match next {
                    Ok(Some(next)) => {
                        if failing.take().is_some() {
                            tracing::info!("the store's catalog is readable again");
                        }
                        for w in &next.warnings {
                            tracing::warn!("catalog: {w}");
                        }
                        tracing::info!(
                            version = next.version,
                            campaigns = next.campaigns.len(),
                            "catalog changed"
                        );
                        install(routing, next, metrics);
                        metrics.reloads.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(None) => {
                        if failing.take().is_some() {
                            tracing::info!("the store's catalog is readable again");
                        }
                        break;
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        if failing.as_deref() != Some(&msg) {
                            tracing::error!(
                                "cannot follow the store's catalog (version {} is served meanwhile): {msg}",
                                cur.version
                            );
                            metrics.reload_failures.fetch_add(1, Ordering::Relaxed);
                            failing = Some(msg);
                        }
                        break;
                    }
                }
            }
        }
    }
}
