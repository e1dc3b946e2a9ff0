//! `query`: campaign reports, the conversion feed and SQL over the store the edge writes.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// DataFusion allocates and frees large buffers from every thread; glibc's allocator spent
/// ~12 % of a report's CPU time in a profile.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use query::feed::FeedRequest;
use query::names::Names;
use query::output::{self, Format};
use query::progress::Spinner;
use query::report::ReportRequest;
use query::{DateRange, Session, SessionOptions, dims, session, stored};

#[derive(Parser)]
#[command(
    name = "query",
    version,
    about = "Reports, the conversion feed and SQL over the click tracker's Parquet store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Metrics (visits, clicks, conversions, revenue, cost, profit, roi, cr, epc) by dimensions.
    Report {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        range: Range,
        /// Dimensions, comma-separated: campaign, traffic_source, network, offer, landing_page,
        /// path, country, os, browser, device, date, hour, or a remapped name (source, var_2, …).
        #[arg(long, default_value = "campaign")]
        by: String,
        /// Only rows where a dimension has a value (a drill-down), such as `campaign=c1`;
        /// repeat for more.
        #[arg(long, value_name = "DIMENSION=VALUE")]
        filter: Vec<String>,
        /// Count visits flagged as bots too.
        #[arg(long)]
        include_bots: bool,
        #[arg(long, default_value = "table", value_parser = parse_format)]
        format: Format,
    },
    /// Conversions as NDJSON in the analytics-API payload shape.
    Conversions {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        range: Range,
        /// Only conversions attributed to this campaign.
        #[arg(long)]
        campaign: Option<String>,
    },
    /// The click log or the conversion log: the newest events, one row each.
    Log {
        /// `clicks` (visits and click-throughs) or `conversions` (each report as it came).
        #[arg(value_parser = ["clicks", "conversions"])]
        log: String,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        range: Range,
        /// Only this campaign's.
        #[arg(long)]
        campaign: Option<String>,
        /// Rows at most.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long, default_value = "table", value_parser = parse_format)]
        format: Format,
    },
    /// The catalog the store keeps (edges with `catalog = "store"` follow it).
    Catalog {
        #[command(subcommand)]
        action: CatalogAction,
    },
    /// The console: a JSON API over the store's catalog, reports and conversions
    /// (docs/console.md).
    Serve {
        #[arg(long, default_value = DEFAULT_STORE)]
        store: String,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: std::net::SocketAddr,
        /// The bearer token every request must carry (default: $QUERY_TOKEN).
        #[arg(long, env = "QUERY_TOKEN", hide_env_values = true)]
        token: String,
        /// Where visitors reach the edges: the campaign and postback URLs shown start with it.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        edge_url: String,
        /// Memory a report may use (e.g. 512M, 4G; 0 = no limit). Default: half the machine's.
        #[arg(long)]
        memory_limit: Option<String>,
    },
    /// Outgoing postbacks to traffic sources: the dispatcher and its outbox
    /// (docs/postbacks.md).
    Postbacks {
        #[command(subcommand)]
        action: PostbacksAction,
    },
    /// Cost updates after the fact: what a campaign really cost over a time range, which
    /// reports spread over its visits there (docs/query.md "Cost updates").
    Costs {
        #[command(subcommand)]
        action: CostsAction,
    },
    /// The built-in traffic-source and affiliate-network templates (`template = "NAME"`), and
    /// the URLs to paste into each.
    Templates {
        /// A template's name: print its details, config and URLs.
        name: Option<String>,
        /// Where visitors reach the edges (the URLs printed start with it).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        edge_url: String,
        /// The campaign id for a source's campaign URL.
        #[arg(long, default_value = "CAMPAIGN_ID")]
        campaign: String,
    },
    /// One pass of compaction, retention and vacuum over the store's tables, then exit: run
    /// it from cron, every minute or so (docs/table-format.md "Compaction").
    Compact {
        /// The store: file://PATH, s3://BUCKET[/PREFIX] (AWS_* environment) or memory://.
        #[arg(long, default_value = DEFAULT_STORE)]
        store: String,
        /// Merged files are about this size, in MiB (a merge holds several times this in
        /// memory); files of half of it or more are left as they are.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
        target_mb: u64,
        /// An hour still being written is compacted once it has this many small files.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(2..))]
        min_files: u64,
        /// Minutes after its end an hour is taken as complete: then its merged files are
        /// merged again into files of the target size.
        #[arg(long, default_value_t = 10)]
        settle_minutes: u32,
        /// Days of visits kept (UTC days before today): older ones are removed from the
        /// table. Default: all.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        retain_visits_days: Option<u32>,
        /// Days of conversions kept. Default: all.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        retain_conversions_days: Option<u32>,
        /// Files removed from a table (merged away, dropped) are deleted from the store this
        /// many hours later: readers of an older snapshot still find them until then.
        #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..))]
        vacuum_after_hours: u32,
        /// The vacuum also deletes files no commit names (a crashed upload or merge) once
        /// they are as old; it lists every file of the table, so run it daily.
        #[arg(long)]
        orphans: bool,
    },
    /// Any SQL over the tables `visits` and `conversions`.
    Sql {
        #[command(flatten)]
        common: Common,
        /// The statement, e.g. "SELECT country, count(*) FROM visits GROUP BY 1".
        statement: String,
        #[arg(long, default_value = "table", value_parser = parse_format)]
        format: Format,
    },
}

#[derive(Subcommand)]
enum CatalogAction {
    /// Make the store's catalog the catalog sections of FILE, a config file (its [server]
    /// is skipped): one version that replaces everything, checked first.
    Import {
        file: PathBuf,
        #[arg(long, default_value = DEFAULT_STORE)]
        store: String,
    },
    /// Print the store's catalog as a config file's sections (TOML).
    Export {
        #[arg(long, default_value = DEFAULT_STORE)]
        store: String,
    },
}

#[derive(Subcommand)]
enum CostsAction {
    /// Record that the campaign's visits from --from to --to (UTC, the end excluded) cost
    /// --cost in all.
    Set {
        #[arg(long, default_value = DEFAULT_STORE)]
        store: String,
        #[arg(long)]
        campaign: String,
        /// YYYY-MM-DD[THH:MM[:SS]], UTC.
        #[arg(long)]
        from: String,
        /// YYYY-MM-DD[THH:MM[:SS]], UTC; excluded.
        #[arg(long)]
        to: String,
        /// The total, in the currency's units (e.g. 125.50).
        #[arg(long)]
        cost: String,
    },
    /// Every cost update, oldest first (later ones win where they overlap).
    List {
        #[arg(long, default_value = DEFAULT_STORE)]
        store: String,
    },
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum PostbacksAction {
    /// Follow the store's conversions and send the postbacks they fire, until stopped.
    Run {
        #[arg(long, default_value = DEFAULT_STORE)]
        store: String,
        /// The outbox directory, on local disk (one dispatcher per outbox).
        #[arg(long, default_value = DEFAULT_OUTBOX)]
        outbox: PathBuf,
        /// Take the catalog from this config file (default: the store's catalog).
        #[arg(long)]
        config: Option<PathBuf>,
        /// How often to look for new conversions, in milliseconds.
        #[arg(long, default_value_t = 2_000)]
        poll_ms: u64,
        /// How long a conversion waits for its visit to reach the store, in seconds.
        #[arg(long, default_value_t = 86_400)]
        visit_wait_s: u64,
        /// How long delivered and abandoned postbacks stay listed, in days.
        #[arg(long, default_value_t = 7)]
        keep_days: u64,
        /// Requests in flight to one host.
        #[arg(long, default_value_t = 4)]
        per_host: usize,
        /// Requests a second to one host.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Each attempt's timeout, in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        /// The first retry's delay in milliseconds (doubled after each failure, with jitter).
        #[arg(long, default_value_t = 2_000)]
        retry_base_ms: u64,
        /// The longest delay between retries, in milliseconds.
        #[arg(long, default_value_t = 600_000)]
        retry_max_ms: u64,
        /// Attempts before a postback is given up.
        #[arg(long, default_value_t = 1_000)]
        max_attempts: u32,
        /// Hours after which a postback not yet delivered is given up.
        #[arg(long, default_value_t = 72)]
        give_up_after_h: u64,
        /// Conversions of clicks older than this many days fire nothing.
        #[arg(long, default_value_t = 90)]
        max_click_age_days: u64,
        /// For a new outbox: tell sources of conversions uploaded from this time on
        /// (YYYY-MM-DD[THH:MM[:SS]] UTC, or `all` for everything in the store). Default: now.
        #[arg(long)]
        since: Option<String>,
        /// One pass and one attempt for each due postback, then exit (for cron).
        #[arg(long)]
        once: bool,
        /// Serve /metrics (Prometheus) and /healthz here, e.g. 127.0.0.1:9464.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Memory the dispatcher's queries may use (e.g. 1G; default: half the machine's).
        #[arg(long)]
        memory_limit: Option<String>,
    },
    /// The outbox's postbacks: target, status, attempts, last answer and latency.
    List {
        #[arg(long, default_value = DEFAULT_OUTBOX)]
        outbox: PathBuf,
        /// Only those not delivered or given up yet.
        #[arg(long)]
        pending: bool,
        #[arg(long, default_value = "table", value_parser = parse_format)]
        format: Format,
    },
}

const DEFAULT_STORE: &str = "file://./data/lake";
const DEFAULT_OUTBOX: &str = "./data/postbacks";

#[derive(Args)]
struct Common {
    /// The store: file://PATH, s3://BUCKET[/PREFIX] (AWS_* environment) or memory://.
    #[arg(long, default_value = DEFAULT_STORE)]
    store: String,
    /// The edge's config file, for names and offers' default payouts (default: the catalog
    /// the store keeps, if any).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Memory a query may use (e.g. 512M, 4G; 0 = no limit). Default: half the machine's.
    #[arg(long)]
    memory_limit: Option<String>,
    /// Threads to scan with (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Do not show the progress spinner on a terminal.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct Range {
    /// First UTC date, YYYY-MM-DD (inclusive).
    #[arg(long)]
    from: Option<String>,
    /// Last UTC date, YYYY-MM-DD (inclusive).
    #[arg(long)]
    to: Option<String>,
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

/// `mi_option_purge_delay`: its index in mimalloc.h's `mi_option_e` (v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // Keep freed memory instead of handing it back to the OS after 10 ms: a report frees and
    // reallocates large buffers all the time, and re-faulting them cost up to 200 K page
    // faults and a second of system time per 50 M visits. A query is a short-lived process.
    // SAFETY: sets a process-wide allocator option; no pointers involved.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Report { common, .. }
        | Command::Conversions { common, .. }
        | Command::Sql { common, .. }
        | Command::Log { common, .. } => common.threads,
        Command::Catalog { .. }
        | Command::Templates { .. }
        | Command::Costs { .. }
        | Command::Compact { .. } => 1,
        Command::Serve { .. } | Command::Postbacks { .. } => 0,
    };
    if matches!(
        cli.command,
        Command::Postbacks { .. } | Command::Compact { .. }
    ) {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new(sink::DEFAULT_LOG_FILTER)
                }),
            )
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
    // Postbacks go out over HTTPS with rustls; its crypto is ring's (object_store's too).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // As many workers as scan threads (see `session::runtime`).
    let rt = match session::runtime(threads) {
        Ok((rt, _)) => rt,
        Err(e) => {
            eprintln!("query: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // DataFusion's errors repeat their sources in their own text: print the top only.
            eprintln!("query: {e}");
            ExitCode::from(1)
        }
    }
}

async fn open(common: &Common, names: bool) -> anyhow::Result<(Session, Option<Names>)> {
    let memory_limit = match &common.memory_limit {
        Some(s) => session::parse_size(s)?,
        None => session::default_memory_limit(),
    };
    let opts = SessionOptions {
        memory_limit,
        threads: common.threads,
    };
    let session = Session::open(&common.store, &opts).await?;
    let names = match &common.config {
        _ if !names => None,
        Some(path) => Some(Names::load(path)?),
        None => stored::names(&stored::open(&common.store)?).await?,
    };
    Ok((session, names))
}

fn spinner(common: &Common, what: &str, s: &Session) -> Spinner {
    let show = !common.quiet && std::io::stderr().is_terminal();
    Spinner::start(what, s.read.clone(), show)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match cli.command {
        Command::Report {
            common,
            range,
            by,
            filter,
            include_bots,
            format,
        } => {
            let dims = dims::parse(&by)?;
            if dims.is_empty() {
                anyhow::bail!(
                    "--by needs at least one dimension; valid: {}",
                    dims::fixed_names()
                );
            }
            let req = ReportRequest {
                range: DateRange::parse(range.from.as_deref(), range.to.as_deref())?,
                dims,
                include_bots,
                filters: filter
                    .iter()
                    .map(|f| dims::parse_filter(f))
                    .collect::<Result<_, _>>()?,
            };
            let (session, names) = open(&common, true).await?;
            let report = {
                let _s = spinner(&common, "report", &session);
                query::report::run(&session, &req, names.as_ref()).await?
            };
            output::report(&report, format, &mut out)?;
        }
        Command::Conversions {
            common,
            range,
            campaign,
        } => {
            let req = FeedRequest {
                range: DateRange::parse(range.from.as_deref(), range.to.as_deref())?,
                campaign,
                clicks: None,
            };
            let (session, names) = open(&common, true).await?;
            query::feed::run(&session, &req, names.as_ref(), &mut out).await?;
        }
        Command::Log {
            log,
            common,
            range,
            campaign,
            limit,
            format,
        } => {
            let req = query::log::LogRequest {
                log: query::log::Log::parse(&log).expect("clap checked the name"),
                range: DateRange::parse(range.from.as_deref(), range.to.as_deref())?,
                campaign,
                limit,
            };
            let (session, _) = open(&common, false).await?;
            let batches = {
                let _s = spinner(&common, "log", &session);
                query::log::run(&session, &req).await?
            };
            output::batches(&batches, format, &mut out)?;
        }
        Command::Compact {
            store,
            target_mb,
            min_files,
            settle_minutes,
            retain_visits_days,
            retain_conversions_days,
            vacuum_after_hours,
            orphans,
        } => {
            let opts = sink::storage::compact::Options {
                policy: sink::storage::compact::Policy {
                    target_bytes: target_mb << 20,
                    min_files: min_files as usize,
                    settle_ms: i64::from(settle_minutes) * 60_000,
                },
                now_ms: query::postbacks::send::now_ms(),
                retain_days: None,
                vacuum_after_ms: Some(i64::from(vacuum_after_hours) * 3_600_000),
                orphans,
            };
            let retain = [
                (
                    sink::storage::columns::TableKind::Visits,
                    retain_visits_days,
                ),
                (
                    sink::storage::columns::TableKind::Conversions,
                    retain_conversions_days,
                ),
            ];
            for (kind, done) in query::compact::run(&store, &opts, retain).await? {
                writeln!(out, "{}", query::compact::describe(kind, &done))?;
            }
        }
        Command::Sql {
            common,
            statement,
            format,
        } => {
            let (session, _) = open(&common, false).await?;
            let batches = {
                let _s = spinner(&common, "sql", &session);
                session.ctx.sql(&statement).await?.collect().await?
            };
            output::batches(&batches, format, &mut out)?;
        }
        Command::Serve {
            store,
            listen,
            token,
            edge_url,
            memory_limit,
        } => {
            if token.len() < 16 {
                anyhow::bail!("--token: use at least 16 characters (it guards the catalog)");
            }
            let memory_limit = match memory_limit {
                Some(s) => session::parse_size(&s)?,
                None => session::default_memory_limit(),
            };
            query::serve::serve(query::serve::Options {
                store,
                listen,
                token,
                edge_url,
                session: SessionOptions {
                    memory_limit,
                    threads: 0,
                },
            })
            .await?;
        }
        Command::Postbacks { action } => match action {
            PostbacksAction::Run {
                store,
                outbox,
                config,
                poll_ms,
                visit_wait_s,
                keep_days,
                per_host,
                rate,
                timeout_ms,
                retry_base_ms,
                retry_max_ms,
                max_attempts,
                give_up_after_h,
                max_click_age_days,
                since,
                once,
                listen,
                memory_limit,
            } => {
                let since_ms = match since.as_deref() {
                    None => query::postbacks::send::now_ms(),
                    Some("all") => i64::MIN,
                    Some(t) => query::costs::parse_time("--since", t)?,
                };
                use std::time::Duration;
                if !(rate > 0.0 && rate.is_finite()) {
                    anyhow::bail!("--rate must be a positive number of requests a second");
                }
                let memory_limit = match &memory_limit {
                    Some(s) => session::parse_size(s)?,
                    None => session::default_memory_limit(),
                };
                query::postbacks::run(query::postbacks::Options {
                    store,
                    outbox,
                    config,
                    poll: Duration::from_millis(poll_ms.max(100)),
                    visit_wait: Duration::from_secs(visit_wait_s),
                    keep: Duration::from_secs(keep_days * 86_400),
                    max_click_age: Duration::from_secs(max_click_age_days.max(1) * 86_400),
                    since_ms,
                    send: query::postbacks::send::SendOptions {
                        per_host: per_host.max(1),
                        rate,
                        timeout: Duration::from_millis(timeout_ms.max(1)),
                        retry_base: Duration::from_millis(retry_base_ms.max(1)),
                        retry_max: Duration::from_millis(retry_max_ms.max(retry_base_ms).max(1)),
                        max_attempts: max_attempts.max(1),
                        give_up_after: Duration::from_secs(give_up_after_h.max(1) * 3600),
                    },
                    once,
                    listen,
                    session: SessionOptions {
                        memory_limit,
                        threads: 0,
                    },
                })
                .await?;
            }
            PostbacksAction::List {
                outbox,
                pending,
                format,
            } => {
                let jobs = query::postbacks::list(&outbox, pending)?;
                output::batches(&[query::postbacks::table(&jobs)?], format, &mut out)?;
            }
        },
        Command::Costs { action } => match action {
            CostsAction::Set {
                store,
                campaign,
                from,
                to,
                cost,
            } => {
                let cost_micros =
                    sink::model::money::parse_micros(cost.as_bytes()).map_err(|_| {
                        anyhow::anyhow!("bad --cost {cost:?}: expected an amount like 125.50")
                    })?;
                let u = query::costs::CostUpdate {
                    campaign,
                    from_ms: query::costs::parse_time("--from", &from)?,
                    to_ms: query::costs::parse_time("--to", &to)?,
                    cost_micros,
                    at_ms: query::postbacks::send::now_ms(),
                };
                query::costs::set(&session::open_store(&store)?, &u).await?;
                eprintln!(
                    "query: recorded: campaign {} cost {} from {from} to {to}",
                    u.campaign,
                    output::money(cost_micros)
                );
            }
            CostsAction::List { store } => {
                for u in query::costs::load(&session::open_store(&store)?).await? {
                    let t = |ms: i64| {
                        chrono::DateTime::from_timestamp_millis(ms).map_or_else(String::new, |t| {
                            t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
                        })
                    };
                    writeln!(
                        out,
                        "{}\t{}\t{}\t{}\trecorded {}",
                        u.campaign,
                        t(u.from_ms),
                        t(u.to_ms),
                        output::money(u.cost_micros),
                        t(u.at_ms)
                    )?;
                }
            }
        },
        Command::Templates {
            name,
            edge_url,
            campaign,
        } => {
            out.write_all(
                query::templates::describe(name.as_deref(), &edge_url, &campaign)?.as_bytes(),
            )?;
        }
        Command::Catalog { action } => match action {
            CatalogAction::Import { file, store } => {
                let done = stored::import(&stored::create(&store)?, &file).await?;
                eprintln!("query: {done}");
            }
            CatalogAction::Export { store } => {
                out.write_all(stored::export(&stored::open(&store)?).await?.as_bytes())?;
            }
        },
    }
    out.flush()?;
    Ok(())
}
