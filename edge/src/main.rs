//! `edge`: the tracker's HTTP server. With no flags it serves the built-in demo config.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use edge::app::{self, Overrides};

/// Campaign redirects, conversion pixels and postbacks, thread-per-core on io_uring.
#[derive(Debug, Parser)]
#[command(name = "edge", version)]
struct Cli {
    /// TOML config file (SPEC.md); without it the built-in demo config is served.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate FILE and exit: 0 when it is usable, 1 with the bad key named when not.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    /// Override server.listen, e.g. 127.0.0.1:0 for any free port.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Override server.workers (0 = one per core).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Override server.driver: auto, io_uring or legacy.
    #[arg(long, value_name = "DRIVER")]
    driver: Option<String>,
    /// Override server.data_dir (the write-ahead log lives in DIR/wal).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Override server.store (file://PATH, s3://BUCKET/PREFIX, memory://).
    #[arg(long, value_name = "URL")]
    store: Option<String>,
}

/// Allocations from this size up are mapped on their own and unmapped when freed.
const MMAP_THRESHOLD: i32 = 64 * 1024;

/// glibc raises its mmap threshold each time a large block is freed, after which connection
/// buffers grown by long or pipelined requests (64–256 KiB) come from the per-thread arenas,
/// which keep them: 150 clients pipelining without reading grew the edge by ~280 MiB, ~10 MiB
/// with the threshold fixed. Fixing it also turns the dynamic adjustment off.
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

fn main() -> ExitCode {
    fix_mmap_threshold();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(sink::DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let overrides = Overrides {
        listen: cli.listen,
        workers: cli.workers,
        driver: cli.driver,
        data_dir: cli.data_dir,
        store: cli.store,
    };
    if let Some(path) = cli.check_config {
        return match app::load(Some(&path), &overrides) {
            Ok(l) if l.settings.catalog_poll.is_some() => {
                println!(
                    "{}: ok ([server]; the catalog is the store's, {})",
                    path.display(),
                    l.settings.store
                );
                ExitCode::SUCCESS
            }
            Ok(l) => {
                for w in &l.routing.warnings {
                    eprintln!("warning: {w}");
                }
                println!(
                    "{}: ok ({} campaigns, {} offers, {} traffic sources, {} networks, {} landing pages)",
                    path.display(),
                    l.routing.campaigns.len(),
                    l.routing.offers.len(),
                    l.routing.sources.len(),
                    l.routing.networks.len(),
                    l.routing.landing_pages.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("edge: config error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match app::run(cli.config, overrides) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("edge: {e:#}");
            ExitCode::FAILURE
        }
    }
}
