//! Workers: one thread per core, each with its own `SO_REUSEPORT` listener, monoio runtime,
//! event channel and state. Nothing is shared between workers on the request path but the
//! immutable [`Routing`] (read through a per-worker `arc_swap::Cache`).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::{ArcSwap, Cache};
use driver::Driver;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::{TcpListener, TcpStream};
use sink::storage::queue::EventSender;
use sink::visitors::Visitors;

use crate::clicks::Clicks;
use crate::handler::{self, Answer, Ctx, Emit, Local, Pending};
use crate::http::{self, Parse};
use crate::metrics::{Metrics, Route, WorkerStats};
use crate::response::{self, Framing, Reject, Status};
use crate::routing::Routing;
use crate::settings::Settings;

mod conn;

use conn::connection;

/// Initial size of a connection's read and write buffers.
const BUF_SIZE: usize = 4096;
/// Read at least this much per read call; the buffer grows when less is free...
const MIN_READ: usize = 1024;
/// ...and at most this much: a buffer grown for a long request does not pull in a client's
/// whole pipeline at once (what a connection holds unanswered stays small).
const MAX_READ: usize = 8 << 10;
/// Write buffers a worker keeps for reuse, and the largest it keeps: an idle keep-alive
/// connection holds none (10 000 idle connections would otherwise pin 40 MiB of them), and
/// a buffer a burst of pipelined answers grew is freed rather than pooled.
const POOLED_WBUFS: usize = 256;
const POOLED_WBUF_MAX: usize = 16 << 10;
/// A read buffer grown past this by a long request goes back to [`BUF_SIZE`] once the
/// request is answered.
const KEPT_RBUF_MAX: usize = 16 << 10;
/// Room for one answer past `max_unsent_output` in a connection's write buffer.
const RESPONSE_ROOM: usize = 16 << 10;
/// Accept failures (out of descriptors, say) are logged at most once per this interval,
/// with the count of those not logged.
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(5);
/// How often a worker looks at the shutdown flag.
const SHUTDOWN_POLL: Duration = Duration::from_millis(25);

/// State shared by the workers and the control thread.
pub struct Shared {
    pub routing: Arc<ArcSwap<Routing>>,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    /// GeoIP, agents and data-centre ranges, when configured (read-only, shared without
    /// locks).
    pub visitors: Visitors,
    /// Landing-page click state: the click cache every worker reads and the cookie signer.
    pub clicks: Clicks,
    shutdown: AtomicBool,
}

/// A running server.
pub struct Server {
    pub local_addr: SocketAddr,
    pub driver: Driver,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// Binds one `SO_REUSEPORT` listener per worker on the same address (the first bind
/// resolves port 0).
fn bind_listeners(addr: SocketAddr, n: usize) -> std::io::Result<Vec<StdListener>> {
    let mut out = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n {
        let domain = socket2::Domain::for_address(addr);
        let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(4096)?;
        let l: StdListener = s.into();
        addr = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

impl Server {
    /// Binds the listeners and starts the workers. `senders` has one channel per worker.
    pub fn start(
        settings: Settings,
        routing: Arc<ArcSwap<Routing>>,
        metrics: Arc<Metrics>,
        senders: Vec<EventSender>,
        visitors: Visitors,
        click_secret: &[u8],
    ) -> anyhow::Result<Server> {
        anyhow::ensure!(
            senders.len() == settings.workers,
            "one event channel per worker"
        );
        let (driver, why) = settings.driver.resolve();
        let listeners = bind_listeners(settings.listen, settings.workers)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.listen))?;
        let local_addr = listeners[0].local_addr()?;
        let _ = metrics.driver.set(driver.as_str());
        match why {
            None => tracing::info!(driver = driver.as_str(), "I/O driver"),
            Some(why) => tracing::info!(driver = driver.as_str(), why, "I/O driver"),
        }
        let clicks = Clicks::new(settings.workers, click_secret)
            .map_err(|e| anyhow::anyhow!("cannot map the click cache: {e}"))?;
        let shared = Arc::new(Shared {
            routing,
            metrics,
            clicks,
            settings,
            visitors,
            shutdown: AtomicBool::new(false),
        });
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut threads = Vec::with_capacity(listeners.len());
        for (id, (listener, tx)) in listeners.into_iter().zip(senders).enumerate() {
            let shared = Arc::clone(&shared);
            let t = std::thread::Builder::new()
                .name(format!("edge-worker-{id}"))
                .spawn(move || {
                    if shared.settings.pin_workers
                        && let Err(e) = monoio::utils::bind_to_cpu_set([id % cores])
                    {
                        tracing::warn!(worker = id, "cannot pin to core {}: {e}", id % cores);
                    }
                    if let Err(e) = run_worker(id as u8, shared, listener, tx, driver) {
                        tracing::error!(worker = id, "worker failed: {e}");
                    }
                })?;
            threads.push(t);
        }
        Ok(Server {
            local_addr,
            driver,
            shared,
            threads,
        })
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting, lets in-flight requests finish (up to the shutdown timeout), and
    /// waits for the workers to end. Their event channels close as they end.
    pub fn shutdown(self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn run_worker(
    id: u8,
    shared: Arc<Shared>,
    listener: StdListener,
    tx: EventSender,
    driver: Driver,
) -> std::io::Result<()> {
    let fut = async move {
        let listener = TcpListener::from_std(listener)?;
        worker_main(Rc::new(Worker::new(id, shared, tx)), listener).await;
        Ok(())
    };
    driver.block_on(4096, fut)?
}

/// One worker's state, owned by its thread.
struct Worker {
    shared: Arc<Shared>,
    routing: RefCell<Cache<Arc<ArcSwap<Routing>>, Arc<Routing>>>,
    local: RefCell<Local>,
    /// Taken when the worker stops: tasks still parked on idle connections may outlive the
    /// worker's loop, and the sink learns the worker is done when its channel disconnects.
    tx: RefCell<Option<EventSender>>,
    id: usize,
    /// Connections with a request under way.
    busy: Cell<usize>,
    draining: Cell<bool>,
    stop_waker: RefCell<Option<Waker>>,
    /// Write buffers of connections that went idle, for the next busy one.
    wbufs: RefCell<Vec<Vec<u8>>>,
    drops: DropLog,
}

impl Worker {
    fn new(id: u8, shared: Arc<Shared>, tx: EventSender) -> Self {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (u64::from(id) << 56);
        Worker {
            routing: RefCell::new(Cache::new(Arc::clone(&shared.routing))),
            local: RefCell::new(Local::new(shared.settings.node_id, id, seed)),
            tx: RefCell::new(Some(tx)),
            id: id as usize,
            busy: Cell::new(0),
            draining: Cell::new(false),
            stop_waker: RefCell::new(None),
            wbufs: RefCell::new(Vec::new()),
            drops: DropLog::default(),
            shared,
        }
    }

    /// A write buffer for a connection with a request to answer.
    fn take_wbuf(&self) -> Vec<u8> {
        self.wbufs
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BUF_SIZE))
    }

    /// Takes back the write buffer of a connection going idle.
    fn give_wbuf(&self, mut buf: Vec<u8>) {
        let mut pool = self.wbufs.borrow_mut();
        if buf.capacity() > 0 && buf.capacity() <= POOLED_WBUF_MAX && pool.len() < POOLED_WBUFS {
            buf.clear();
            pool.push(buf);
        }
    }

    fn stats(&self) -> &WorkerStats {
        &self.shared.metrics.workers[self.id]
    }

    /// Resolves when the worker starts draining.
    async fn stopped(&self) {
        poll_fn(|cx| {
            if self.draining.get() {
                Poll::Ready(())
            } else {
                *self.stop_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// Queues events on the worker's queue; a full queue (in events or bytes) drops the event and
/// counts it.
struct ChannelEmit<'a> {
    tx: Option<&'a EventSender>,
    stats: &'a WorkerStats,
    drops: &'a DropLog,
    worker: usize,
}

impl Emit for ChannelEmit<'_> {
    fn emit(&mut self, event: sink::Event) -> bool {
        let kind = event.kind;
        // A refused event is dropped here (a conversion's ack with it: answered 503).
        let sent = self.tx.is_some_and(|tx| tx.try_send(event).is_ok());
        if sent {
            self.stats.emitted(kind);
        } else {
            self.stats.dropped(kind);
            self.drops.dropped(self.worker);
        }
        sent
    }
}

/// Events dropped because the queue to the log was full: counted in `/metrics` and logged as
/// an error, at most once per [`DROP_LOG_EVERY`] per worker with the count since.
#[derive(Default)]
struct DropLog {
    since_logged: Cell<u64>,
    last_logged: Cell<Option<Instant>>,
}

const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

impl DropLog {
    fn dropped(&self, worker: usize) {
        let n = self.since_logged.get() + 1;
        if self
            .last_logged
            .get()
            .is_some_and(|t| t.elapsed() < DROP_LOG_EVERY)
        {
            self.since_logged.set(n);
            return;
        }
        tracing::error!(
            worker,
            dropped = n,
            "events dropped: the queue to the write-ahead log is full (server.event_queue, \
             server.event_queue_bytes); visits' redirects were answered, conversions got 503"
        );
        self.since_logged.set(0);
        self.last_logged.set(Some(Instant::now()));
    }
}

/// Accept failures in a row: logged at most once per [`ACCEPT_ERROR_LOG_EVERY`], retried
/// after a pause that grows while they last.
#[derive(Default)]
struct AcceptErrors {
    in_a_row: u32,
    unlogged: u64,
    last_logged: Option<Instant>,
}

impl AcceptErrors {
    fn failed(&mut self, worker: usize, e: &std::io::Error) {
        self.in_a_row = self.in_a_row.saturating_add(1);
        if self
            .last_logged
            .is_some_and(|t| t.elapsed() < ACCEPT_ERROR_LOG_EVERY)
        {
            self.unlogged += 1;
            return;
        }
        tracing::warn!(
            worker,
            not_logged = self.unlogged,
            "accept failed: {e} (further failures are logged every {} s)",
            ACCEPT_ERROR_LOG_EVERY.as_secs()
        );
        self.unlogged = 0;
        self.last_logged = Some(Instant::now());
    }

    /// 10 ms, doubling while the failures last, up to 160 ms.
    fn backoff(&self) -> Duration {
        Duration::from_millis(10 << self.in_a_row.saturating_sub(1).min(4))
    }

    fn recovered(&mut self) {
        self.in_a_row = 0;
    }
}

async fn worker_main(w: Rc<Worker>, listener: TcpListener) {
    let watcher = Rc::clone(&w);
    monoio::spawn(async move {
        while !watcher.shared.shutdown.load(Ordering::Relaxed) {
            monoio::time::sleep(SHUTDOWN_POLL).await;
        }
        watcher.draining.set(true);
        if let Some(waker) = watcher.stop_waker.borrow_mut().take() {
            waker.wake();
        }
    });
    let mut accept_errors = AcceptErrors::default();
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => Some(r),
            _ = w.stopped() => None,
        };
        match accepted {
            None => break,
            Some(Ok((stream, peer))) => {
                accept_errors.recovered();
                let _ = stream.set_nodelay(true);
                monoio::spawn(connection(Rc::clone(&w), stream, peer));
            }
            Some(Err(e)) => {
                // Out of descriptors or memory: back off instead of spinning, and say so
                // without flooding the log.
                w.stats().accept_failed();
                accept_errors.failed(w.id, &e);
                monoio::time::sleep(accept_errors.backoff()).await;
            }
        }
    }
    drop(listener);
    let deadline = Instant::now() + w.shared.settings.shutdown_timeout;
    while w.busy.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    if w.busy.get() > 0 {
        tracing::warn!(
            worker = w.id,
            busy = w.busy.get(),
            "shutdown timeout: closing busy connections"
        );
    }
    w.tx.borrow_mut().take();
}

/// Marks a connection busy (a request under way) or idle, keeping the worker's count.
fn set_busy(w: &Worker, flag: &mut bool, busy: bool) {
    if *flag != busy {
        *flag = busy;
        w.busy.set(if busy {
            w.busy.get() + 1
        } else {
            w.busy.get() - 1
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_events_are_logged_at_most_every_interval_with_their_count() {
        let d = DropLog::default();
        d.dropped(0);
        assert!(d.last_logged.get().is_some(), "the first drop is logged");
        for _ in 0..5 {
            d.dropped(0);
        }
        assert_eq!(
            d.since_logged.get(),
            5,
            "the next ones are counted until the next log"
        );
        d.last_logged.set(Some(Instant::now() - DROP_LOG_EVERY));
        d.dropped(0);
        assert_eq!(
            d.since_logged.get(),
            0,
            "logged with the count, then counting again"
        );
    }

    #[test]
    fn accept_failures_back_off_and_recover() {
        let mut a = AcceptErrors::default();
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        a.failed(0, &e);
        assert_eq!(a.backoff(), Duration::from_millis(10));
        for _ in 0..10 {
            a.failed(0, &e);
        }
        assert_eq!(a.backoff(), Duration::from_millis(160));
        assert_eq!(a.unlogged, 10);
        a.recovered();
        assert_eq!(a.backoff(), Duration::from_millis(10));
    }
}
