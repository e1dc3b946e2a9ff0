//! `loadtest`: drive the funnel against an edge, or `loadtest verify` a run's ledger against
//! the store. See docs/loadtest.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use loadtest::plan::{self, Plan, Stop};
use loadtest::{run, stats};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Drive the funnel (visit → click id → postback/pixel) against an edge, or verify a run's ledger against the store",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Check the store against a run's ledger, event by event; exit 1 on any difference.
    Verify {
        /// The ledger a run wrote with --ledger.
        #[arg(long)]
        ledger: PathBuf,
        /// The store the edge wrote to (file://, s3://, memory://).
        #[arg(long, default_value = "file://./data/lake")]
        store: String,
        /// List at most this many differences.
        #[arg(long, default_value_t = 20)]
        show: usize,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// Threads to read the store with (0 = one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
}

#[derive(Args)]
struct RunArgs {
    /// The edge to drive: http://host:port.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: String,
    /// Campaign ids to visit, in rotation (repeat the flag or separate with commas).
    #[arg(long, value_delimiter = ',', default_value = plan::DEMO_CAMPAIGN)]
    campaign: Vec<String>,
    /// Keep-alive connections, dealt out over the threads.
    #[arg(long, short = 'c', default_value_t = 64)]
    connections: usize,
    /// Generator threads, one monoio runtime each (pin them with taskset).
    #[arg(long, short = 't', default_value_t = 1)]
    threads: usize,
    /// Requests written on a connection before reading their answers (1 = no pipelining).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// How long to run (30s, 2m, 500ms); the default is 10s unless --requests is given.
    #[arg(long, short = 'd', value_parser = plan::parse_duration, conflicts_with = "requests")]
    duration: Option<Duration>,
    /// Stop after this many requests in all.
    #[arg(long, short = 'n')]
    requests: Option<u64>,
    /// Open loop: send at this many requests per second in all, latency counted from when
    /// each was due. Without it, closed loop: as fast as the answers come.
    #[arg(long)]
    rate: Option<f64>,
    /// Share of visits that convert (a postback or pixel with a random payout).
    #[arg(long, default_value_t = 0.05)]
    conversion_rate: f64,
    /// Share of conversions reported by the 1x1 pixel rather than a postback.
    #[arg(long, default_value_t = 0.2)]
    pixel_share: f64,
    /// Share of conversions the network reports twice (same txid).
    #[arg(long, default_value_t = 0.1)]
    duplicate_rate: f64,
    /// Share of conversions followed by an upsell (new txid on the same click).
    #[arg(long, default_value_t = 0.05)]
    upsell_rate: f64,
    /// Share of visits followed by a landing page click-through (/click?cid=).
    #[arg(long, default_value_t = 0.0)]
    click_through: f64,
    #[arg(long, default_value = "1.00")]
    payout_min: String,
    #[arg(long, default_value = "100.00")]
    payout_max: String,
    /// The network's postback token, when the edge requires one.
    #[arg(long)]
    token: Option<String>,
    /// How long an answer or a connection may take before it counts as lost.
    #[arg(long, value_parser = plan::parse_duration, default_value = "10s")]
    timeout: Duration,
    /// Times a conversion without an answer (or with a 5xx) is sent again, as networks do.
    #[arg(long, default_value_t = 3)]
    retries: u8,
    /// Write what was sent and acknowledged here, for `loadtest verify`.
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// No live progress line.
    #[arg(long)]
    quiet: bool,
    /// legacy (epoll: the faster client here), io_uring, or auto (io_uring where the
    /// kernel has it).
    #[arg(long, default_value = "legacy")]
    driver: driver::Choice,
    /// Seed for the funnel's dice (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Distinct user agents the visitors use (4 built-in; more are made from today's
    /// browsers' templates, as real traffic has a few thousand).
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Send each visitor's address in X-Forwarded-For, spread over the public IPv4 space
    /// (the edge must trust this machine: server.trusted_proxies).
    #[arg(long)]
    forwarded_for: bool,
}

impl RunArgs {
    fn plan(self) -> Result<Plan, plan::PlanError> {
        let mut p = Plan::new(&self.target)?;
        p.stop = match (self.requests, self.duration) {
            (Some(n), _) => Stop::Requests(n),
            (None, Some(d)) => Stop::After(d),
            (None, None) => p.stop,
        };
        p.campaigns = self.campaign;
        p.connections = self.connections;
        p.threads = self.threads;
        p.pipeline = self.pipeline;
        p.rate = self.rate;
        p.conversion_rate = plan::rate("--conversion-rate", self.conversion_rate)?;
        p.pixel_share = plan::rate("--pixel-share", self.pixel_share)?;
        p.duplicate_rate = plan::rate("--duplicate-rate", self.duplicate_rate)?;
        p.upsell_rate = plan::rate("--upsell-rate", self.upsell_rate)?;
        p.click_through = plan::rate("--click-through", self.click_through)?;
        p.payout_min_micros = plan::payout("--payout-min", &self.payout_min)?;
        p.payout_max_micros = plan::payout("--payout-max", &self.payout_max)?;
        p.token = self.token;
        p.timeout = self.timeout;
        p.retries = self.retries;
        p.ledger = self.ledger;
        p.driver = self.driver;
        if self.agents == 0 || self.agents > 1_000_000 {
            return Err(plan::PlanError {
                flag: "--agents",
                what: format!("{} is not between 1 and 1000000", self.agents),
            });
        }
        p.visitors = loadtest::funnel::Visitors::new(self.agents, self.forwarded_for);
        p.seed = self.seed.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
        Ok(p)
    }
}

fn describe(p: &Plan) -> String {
    let mode = match p.rate {
        Some(r) => format!("open loop at {r} req/s"),
        None => "closed loop".to_owned(),
    };
    let stop = match p.stop {
        Stop::After(d) => format!("for {:.1} s", d.as_secs_f64()),
        Stop::Requests(n) => format!("for {n} requests"),
    };
    format!(
        "loadtest: {} campaign {} — {} connections on {} thread(s) ({}), pipeline {}, {mode}, {stop}",
        p.target,
        p.campaigns.join(","),
        p.connections,
        p.threads,
        p.driver.resolve().0.as_str(),
        p.pipeline,
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Verify {
            ledger,
            store,
            show,
            json,
            threads,
        }) => verify_main(&ledger, &store, show, json, threads),
        None => run_main(cli.run),
    }
}

fn run_main(args: RunArgs) -> ExitCode {
    let json = args.json;
    let quiet = args.quiet;
    let plan = match args.plan() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    let header = describe(&plan);
    if !json {
        println!("{header}");
    }
    let summary = json!({
        "target": plan.target,
        "campaigns": plan.campaigns,
        "connections": plan.connections,
        "threads": plan.threads,
        "pipeline": plan.pipeline,
        "rate": plan.rate,
        "driver": plan.driver.resolve().0.as_str(),
    });
    let done = match run::run(plan, !quiet && !json) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    if json {
        let mut j = stats::to_json(&done.stats, done.elapsed, summary);
        j["ledger"] = json!(done.ledger.as_ref().map(|p| p.display().to_string()));
        println!("{j}");
    } else {
        print!("{}", stats::to_text(&done.stats, done.elapsed));
        if let Some(p) = &done.ledger {
            println!(
                "ledger: {} (check it with `loadtest verify --ledger {}`)",
                p.display(),
                p.display()
            );
        }
    }
    if done.stats.answered() == 0 {
        eprintln!("loadtest: no request was answered");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

#[cfg(not(feature = "verify"))]
fn verify_main(_: &std::path::Path, _: &str, _: usize, _: bool, _: usize) -> ExitCode {
    eprintln!("loadtest verify: this build has no verify (built with --no-default-features)");
    ExitCode::from(2)
}

#[cfg(feature = "verify")]
fn verify_main(
    ledger: &std::path::Path,
    store: &str,
    show: usize,
    json: bool,
    threads: usize,
) -> ExitCode {
    use loadtest::ledger::Ledger;
    use loadtest::verify;
    use query::{Session, SessionOptions};
    let l = match Ledger::read(ledger) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("loadtest verify: {e}");
            return ExitCode::from(2);
        }
    };
    let (rt, threads) = match query::session::runtime(threads) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadtest verify: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = SessionOptions {
        threads,
        ..SessionOptions::default()
    };
    let verdict = rt.block_on(async {
        let session = Session::open(store, &opts).await?;
        verify::verify(&l, &session, show).await
    });
    let v = match verdict {
        Ok(v) => v,
        Err(e) => {
            eprintln!("loadtest verify: {e}");
            return ExitCode::from(2);
        }
    };
    if json {
        println!("{}", v.json);
    } else {
        for line in &v.summary {
            println!("{line}");
        }
        if v.difference_count == 0 {
            println!("differences: none");
        } else {
            println!(
                "differences: {} (the first {} below)",
                v.difference_count,
                v.differences.len()
            );
            for d in &v.differences {
                println!("  {d}");
            }
        }
    }
    if v.difference_count == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
