//! The generator: thread-per-core monoio runtimes, each driving its share of keep-alive
//! connections through the funnel, closed loop (each connection sends its next requests as
//! soon as the last are answered) or open loop (requests are due on a fixed schedule and
//! their latency counts from when they were due, so a slow server cannot hide its queueing:
//! no coordinated omission).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use sink::EventId;

use crate::funnel::{self, Conversion, Step};
use crate::ledger::{LedgerBuf, LedgerWriter, Outcome};
use crate::plan::{Plan, Stop};
use crate::stats::{ErrorKind, Live, Stats};

mod conn;

use conn::connection;

const READ_BUF: usize = 64 << 10;

/// What a finished run hands back.
pub struct Finished {
    pub stats: Stats,
    pub elapsed: Duration,
    pub driver: &'static str,
    pub ledger: Option<PathBuf>,
}

/// State every thread reads.
struct Shared {
    plan: Plan,
    stop: AtomicBool,
    /// Requests left to send under `--requests`.
    budget: Option<AtomicU64>,
    lives: Vec<Live>,
    start: Instant,
    start_ms: u64,
    run_tag: String,
}

impl Shared {
    /// Takes up to `n` requests from the budget; answers how many may be sent.
    fn take(&self, n: usize) -> usize {
        if self.stop.load(Ordering::Relaxed) {
            return 0;
        }
        let Some(b) = &self.budget else { return n };
        match b.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
            (left > 0).then(|| left.saturating_sub(n as u64))
        }) {
            Ok(left) => left.min(n as u64) as usize,
            Err(_) => 0,
        }
    }

    /// The run is over: stopped, or the request budget is spent.
    fn over(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
            || self
                .budget
                .as_ref()
                .is_some_and(|b| b.load(Ordering::Relaxed) == 0)
    }

    fn wall_ms(&self, at: Instant) -> u64 {
        self.start_ms + at.saturating_duration_since(self.start).as_millis() as u64
    }
}

/// A request the funnel wants sent next on some connection of the thread.
#[derive(Debug, Clone)]
enum Followup {
    Click(EventId),
    Conversion { conv: Conversion, attempt: u8 },
}

/// A request written and awaiting its answer.
struct Sent {
    step: Step,
    /// When it was due (open loop) or written (closed loop).
    due: Instant,
    follow: Option<Followup>,
}

/// One thread's state, shared by its connections (one thread: no locks).
struct Worker {
    shared: Arc<Shared>,
    index: usize,
    stats: RefCell<Stats>,
    ledger: RefCell<Option<LedgerBuf>>,
    queue: RefCell<VecDeque<Followup>>,
    rng: RefCell<fastrand::Rng>,
    visits: Cell<u64>,
    txids: Cell<u64>,
}

impl Worker {
    fn next_u64(&self) -> u64 {
        self.rng.borrow_mut().u64(..)
    }

    /// True with probability `p`.
    fn chance(&self, p: f64) -> bool {
        p > 0.0 && self.rng.borrow_mut().f64() <= p
    }

    fn txid(&self) -> String {
        let n = self.txids.get();
        self.txids.set(n + 1);
        format!("{}-{}-{n}", self.shared.run_tag, self.index)
    }

    fn payout(&self) -> i64 {
        let p = &self.shared.plan;
        // Whole cents, so the amounts look like real payouts.
        let (lo, hi) = (p.payout_min_micros / 10_000, p.payout_max_micros / 10_000);
        let span = (hi - lo + 1).max(1) as u64;
        (lo + (self.next_u64() % span) as i64) * 10_000
    }

    /// The request to send next: a queued follow-up, else a new visit.
    fn next_request(&self, out: &mut Vec<u8>) -> (Step, Option<Followup>) {
        let plan = &self.shared.plan;
        match self.queue.borrow_mut().pop_front() {
            Some(Followup::Click(id)) => {
                funnel::write_click(out, &plan.host, &id, &plan.visitors);
                (Step::Click, Some(Followup::Click(id)))
            }
            Some(Followup::Conversion { conv, attempt }) => {
                funnel::write_conversion(out, &plan.host, &conv, plan.token.as_deref());
                (conv.step(), Some(Followup::Conversion { conv, attempt }))
            }
            None => {
                let n = self.visits.get();
                self.visits.set(n + 1);
                let campaign = &plan.campaigns[(n % plan.campaigns.len() as u64) as usize];
                funnel::write_visit(out, &plan.host, campaign, n, &plan.visitors);
                (Step::Visit, None)
            }
        }
    }

    /// A visit's redirect arrived: record it and roll the dice for what the visitor does next.
    fn visited(&self, location: Option<&[u8]>, now_ms: u64) {
        let plan = &self.shared.plan;
        let Some(click) = location.and_then(|l| funnel::find_click_id(l, now_ms)) else {
            if plan.needs_click_ids() {
                self.stats.borrow_mut().error(ErrorKind::NoClickId, 1);
            }
            return;
        };
        if let Some(l) = self.ledger.borrow_mut().as_mut() {
            l.visit(now_ms, &click);
        }
        let mut queue = self.queue.borrow_mut();
        if self.chance(plan.click_through) {
            queue.push_back(Followup::Click(click));
        }
        if !self.chance(plan.conversion_rate) {
            return;
        }
        let pixel = self.chance(plan.pixel_share);
        let conv = Conversion {
            click,
            txid: (!pixel).then(|| self.txid()),
            payout_micros: self.payout(),
            kind: "sale",
            pixel,
        };
        let mut stats = self.stats.borrow_mut();
        stats.conversions += 1;
        if self.chance(plan.duplicate_rate) {
            stats.duplicates += 1;
            queue.push_back(Followup::Conversion {
                conv: conv.clone(),
                attempt: 0,
            });
        }
        queue.push_front(Followup::Conversion { conv, attempt: 0 });
        if self.chance(plan.upsell_rate) {
            stats.upsells += 1;
            let upsell = Conversion {
                click,
                txid: Some(self.txid()),
                payout_micros: self.payout(),
                kind: "upsell",
                pixel: false,
            };
            queue.push_back(Followup::Conversion {
                conv: upsell,
                attempt: 0,
            });
        }
    }

    /// An answer (or none) for a request.
    fn answered(&self, sent: Sent, answer: Option<(u16, Option<&[u8]>)>, at: Instant, now_ms: u64) {
        let status = answer.map(|(s, _)| s);
        {
            let mut stats = self.stats.borrow_mut();
            match status {
                Some(s) => {
                    stats.record(sent.step, s, at.saturating_duration_since(sent.due));
                    self.shared.lives[self.index].add(1, 0);
                }
                None => stats.steps[sent.step.index()].unanswered += 1,
            }
        }
        let sent_ms = self.shared.wall_ms(sent.due);
        match (sent.step, sent.follow) {
            (Step::Visit, _) => match answer {
                Some((302, location)) => self.visited(location, now_ms),
                Some(_) => {}
                None => {
                    if let Some(l) = self.ledger.borrow_mut().as_mut() {
                        l.visit_in_doubt(sent_ms);
                    }
                }
            },
            (_, Some(Followup::Click(id))) => {
                if let Some(l) = self.ledger.borrow_mut().as_mut() {
                    l.click(now_ms, &id, Outcome::of(status, 302), status);
                }
            }
            (_, Some(Followup::Conversion { conv, attempt })) => {
                let outcome = Outcome::of(status, 200);
                if let Some(l) = self.ledger.borrow_mut().as_mut() {
                    l.conversion(sent_ms, &conv, outcome, status);
                }
                // A network retries what it is not sure was taken.
                if outcome == Outcome::Doubt && attempt < self.shared.plan.retries {
                    self.queue.borrow_mut().push_back(Followup::Conversion {
                        conv,
                        attempt: attempt + 1,
                    });
                }
            }
            (_, None) => {}
        }
    }

    fn error(&self, kind: ErrorKind) {
        self.stats.borrow_mut().error(kind, 1);
        self.shared.lives[self.index].add(0, 1);
        if kind.is_transport()
            && let Some(l) = self.ledger.borrow_mut().as_mut()
        {
            l.transport_error(self.shared.wall_ms(Instant::now()), kind.name());
        }
    }
}

fn now_ms() -> u64 {
    sink::model::id::unix_ms(SystemTime::now())
}

/// Runs the plan; `progress` prints a live line on stderr when it is a terminal.
pub fn run(plan: Plan, progress: bool) -> anyhow::Result<Finished> {
    plan.check()?;
    let start_ms = now_ms();
    let ledger = match &plan.ledger {
        Some(p) => Some(
            LedgerWriter::create(p, start_ms, &plan.target, &plan.campaigns)
                .map_err(|e| anyhow::anyhow!("--ledger {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let (resolved, _) = plan.driver.resolve();
    let driver = resolved.as_str();
    let shared = Arc::new(Shared {
        budget: match plan.stop {
            Stop::Requests(n) => Some(AtomicU64::new(n)),
            Stop::After(_) => None,
        },
        stop: AtomicBool::new(false),
        lives: (0..plan.threads).map(|_| Live::default()).collect(),
        start: Instant::now(),
        start_ms,
        run_tag: format!("lt{start_ms:x}"),
        plan,
    });
    let plan = &shared.plan;
    let mut threads = Vec::new();
    for t in 0..plan.threads {
        let shared = Arc::clone(&shared);
        let ledger = ledger.as_ref().map(LedgerWriter::buffer);
        // Connections are dealt out round-robin: thread t gets t, t + threads, …
        let mine: Vec<usize> = (t..plan.connections).step_by(plan.threads).collect();
        threads.push(
            std::thread::Builder::new()
                .name(format!("loadtest-{t}"))
                .spawn(move || -> std::io::Result<Stats> {
                    let (driver, _) = shared.plan.driver.resolve();
                    let total = shared.plan.connections;
                    let worker = Rc::new(Worker {
                        rng: RefCell::new(fastrand::Rng::with_seed(
                            shared.plan.seed ^ (t as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                        )),
                        shared,
                        index: t,
                        stats: RefCell::new(Stats::default()),
                        ledger: RefCell::new(ledger),
                        queue: RefCell::new(VecDeque::new()),
                        visits: Cell::new(t as u64),
                        txids: Cell::new(0),
                    });
                    let w = Rc::clone(&worker);
                    driver.block_on(4096, async move {
                        let tasks: Vec<_> = mine
                            .into_iter()
                            .map(|c| monoio::spawn(connection(Rc::clone(&w), c, total)))
                            .collect();
                        for task in tasks {
                            task.await;
                        }
                    })?;
                    if let Some(mut l) = worker.ledger.borrow_mut().take() {
                        l.flush();
                    }
                    let mut stats = worker.stats.borrow().clone();
                    stats.left_queued = worker.queue.borrow().len() as u64;
                    Ok(stats)
                })?,
        );
    }
    let tty = progress && std::io::stderr().is_terminal();
    let mut last_print = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let elapsed = shared.start.elapsed();
        if let Stop::After(d) = plan.stop
            && elapsed >= d
        {
            shared.stop.store(true, Ordering::Relaxed);
        }
        if threads.iter().all(|t| t.is_finished()) {
            break;
        }
        if tty && last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            let answered: u64 = shared
                .lives
                .iter()
                .map(|l| l.answered.load(Ordering::Relaxed))
                .sum();
            let errors: u64 = shared
                .lives
                .iter()
                .map(|l| l.errors.load(Ordering::Relaxed))
                .sum();
            eprint!(
                "\r{:6.1} s  {answered:>10} answers  {:>9.0} req/s  {errors} errors   ",
                elapsed.as_secs_f64(),
                answered as f64 / elapsed.as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        }
    }
    let elapsed = shared.start.elapsed();
    if tty {
        eprintln!();
    }
    let mut stats = Stats::default();
    for t in threads {
        let s = t
            .join()
            .map_err(|_| anyhow::anyhow!("a generator thread panicked"))??;
        stats.merge(&s);
    }
    let ledger = match ledger {
        Some(l) => Some(l.finish(
            shared.wall_ms(Instant::now()),
            stats.answered() + stats.steps.iter().map(|s| s.unanswered).sum::<u64>(),
            stats.transport_errors(),
        )?),
        None => None,
    };
    Ok(Finished {
        stats,
        elapsed,
        driver,
        ledger,
    })
}
