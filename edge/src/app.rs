//! Wiring: load the config, start the sink consumer and the workers, then serve signals —
//! SIGHUP reloads the campaign table, SIGTERM and SIGINT drain and stop.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use sink::agent::Agents;
use sink::geo::{GeoDb, Locator, Networks};
use sink::uploader::Uploader;
use sink::visitors::Visitors;
use sink::writer::WalWriter;

use crate::config::{ConfigError, ConfigFile, DEMO_CONFIG};
use crate::metrics::Metrics;
use crate::server::Server;
use crate::settings::Settings;
use crate::table::Table;

/// Command-line values that override `[server]`.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub workers: Option<usize>,
    pub driver: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub store: Option<String>,
}

impl Overrides {
    fn apply(&self, cfg: &mut ConfigFile) {
        if let Some(l) = &self.listen {
            cfg.server.listen = l.clone();
        }
        if let Some(w) = self.workers {
            cfg.server.workers = w;
        }
        if let Some(d) = &self.driver {
            cfg.server.driver = d.clone();
        }
        if let Some(d) = &self.data_dir {
            cfg.server.data_dir = d.clone();
        }
        if let Some(s) = &self.store {
            cfg.server.store = s.clone();
        }
    }
}

/// A config that passed every check.
pub struct Loaded {
    pub file: ConfigFile,
    pub settings: Settings,
    pub table: Table,
}

/// Reads (or takes the demo), applies overrides, validates and compiles.
pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Loaded, ConfigError> {
    let mut file = match path {
        Some(p) => ConfigFile::load(p)?,
        None => ConfigFile::parse(DEMO_CONFIG)?,
    };
    overrides.apply(&mut file);
    let settings = Settings::from_config(&file.server)?;
    let table = Table::compile(&file)?;
    Ok(Loaded {
        file,
        settings,
        table,
    })
}

/// Reloads the campaign table from `path`; on any error the old table stays.
fn reload(path: &Path, overrides: &Overrides, running: &ConfigFile, server: &Server) {
    let shared = server.shared();
    match load(Some(path), overrides) {
        Ok(new) => {
            for w in &new.table.warnings {
                tracing::warn!("config: {w}");
            }
            let mut old_server = running.server.clone();
            old_server.fallback_url = new.file.server.fallback_url.clone();
            if old_server != new.file.server {
                tracing::warn!(
                    "config: [server] changes other than fallback_url take effect only after a restart"
                );
            }
            warn_unmatchable(&new.table, &shared.visitors);
            let campaigns = new.table.campaigns.len();
            shared.table.store(Arc::new(new.table));
            bump(&shared.metrics.reloads);
            tracing::info!(campaigns, "config reloaded from {}", path.display());
        }
        Err(e) => {
            bump(&shared.metrics.reload_failures);
            tracing::error!("config reload refused, keeping the running table: {e}");
        }
    }
}

fn bump(c: &std::sync::atomic::AtomicU64) {
    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Where `scripts/fetch-data.sh` puts the data files, which the built-in demo uses (from its
/// `data_dir`) when they are there.
const DEMO_GEOIP_DB: &str = "GeoLite2-City.mmdb";
const DEMO_UA_REGEXES: &str = "regexes.yaml";

/// The configured file, or for the demo the fetched one if present.
fn data_file(
    configured: &Option<PathBuf>,
    settings: &Settings,
    demo: bool,
    name: &str,
) -> Option<PathBuf> {
    match (configured, settings.wal.dir.parent()) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(data)) if demo && data.join(name).is_file() => Some(data.join(name)),
        _ => None,
    }
}

/// Opens `server.geoip_db` and `server.ua_regexes` (for the demo: the fetched files in
/// `data_dir`, if present).
fn visitors(settings: &Settings, demo: bool) -> anyhow::Result<Visitors> {
    let mut v = Visitors::default();
    match data_file(&settings.geoip_db, settings, demo, DEMO_GEOIP_DB) {
        Some(path) => {
            let db = GeoDb::open(&path).map_err(|e| anyhow::anyhow!("server.geoip_db: {e}"))?;
            tracing::info!(database = db.kind(), path = %path.display(), "visitors are located by GeoIP");
            v.geo = Some(Arc::new(Locator {
                db,
                proxies: settings.trusted_proxies.clone(),
            }));
        }
        None => tracing::info!(
            "no GeoIP database (server.geoip_db): country, geoname_id and tz stay empty"
        ),
    }
    match data_file(&settings.ua_regexes, settings, demo, DEMO_UA_REGEXES) {
        Some(path) => {
            let agents =
                Agents::load(&path).map_err(|e| anyhow::anyhow!("server.ua_regexes: {e}"))?;
            tracing::info!(path = %path.display(), "user agents are parsed with uap-core's regexes");
            v.agents = Some(Arc::new(agents));
        }
        None => tracing::info!(
            "no user-agent regexes (server.ua_regexes): browser, os, device and bot stay empty"
        ),
    }
    let mut ranges = settings.bot_networks.clone();
    if let Some(path) = &settings.bot_networks_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("server.bot_networks_file: {}: {e}", path.display()))?;
        ranges.extend(
            Networks::parse_list(&text).map_err(|e| {
                anyhow::anyhow!("server.bot_networks_file: {}: {e}", path.display())
            })?,
        );
    }
    if !ranges.is_empty() {
        let n = Networks::new(&ranges);
        tracing::info!(
            ranges = n.len(),
            "visitors from data-centre ranges count as bots"
        );
        v.datacenters = Some(Arc::new(n));
    }
    v.proxies = settings.trusted_proxies.clone();
    Ok(v)
}

/// Rules that can never match for want of a data file.
fn warn_unmatchable(table: &Table, v: &Visitors) {
    for c in &table.campaigns {
        if v.geo.is_none() && c.has_country_rules() {
            tracing::warn!(
                "config: campaign {:?}: rules on countries never match without server.geoip_db",
                c.id
            );
        }
        if v.agents.is_none() && c.has_agent_rules() {
            tracing::warn!(
                "config: campaign {:?}: rules on devices, os or browsers never match without server.ua_regexes (bot rules see only bot_networks)",
                c.id
            );
        }
    }
}

/// Where a generated click-state secret is kept, in `data_dir`.
const CLICK_SECRET_FILE: &str = "click-secret";

/// The secret that signs click state: `server.click_secret`, else one generated once and
/// kept in `data_dir` (so cookies outlive a restart; nodes that share cookies need the
/// configured one).
fn click_secret(settings: &Settings) -> anyhow::Result<Vec<u8>> {
    if let Some(s) = &settings.click_secret {
        return Ok(s.as_bytes().to_vec());
    }
    let path = settings.data_dir.join(CLICK_SECRET_FILE);
    let why = |e: std::io::Error| anyhow::anyhow!("click secret {}: {e}", path.display());
    match std::fs::read(&path) {
        Ok(s) if s.trim_ascii().len() >= 16 => return Ok(s.trim_ascii().to_vec()),
        Ok(_) => anyhow::bail!(
            "click secret {}: shorter than 16 bytes; delete it to have a new one made",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(why(e)),
    }
    let mut raw = [0u8; 32];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").map_err(why)?,
        &mut raw,
    )
    .map_err(why)?;
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(&settings.data_dir).map_err(why)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(&path) {
        Ok(mut f) => {
            std::io::Write::write_all(&mut f, hex.as_bytes()).map_err(why)?;
            f.sync_all().map_err(why)?;
            Ok(hex.into_bytes())
        }
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(std::fs::read(&path).map_err(why)?.trim_ascii().to_vec())
        }
        Err(e) => Err(why(e)),
    }
}

/// Runs the edge until SIGTERM or SIGINT.
pub fn run(path: Option<PathBuf>, overrides: Overrides) -> anyhow::Result<()> {
    // Signals first, so one that arrives during start-up is not lost to the default action.
    let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT])?;
    let loaded = load(path.as_deref(), &overrides)?;
    for w in &loaded.table.warnings {
        tracing::warn!("config: {w}");
    }
    let settings = loaded.settings.clone();
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..settings.workers)
        .map(|_| sink::queue::queue(settings.queue_per_worker, settings.queue_bytes_per_worker))
        .unzip();
    let depth_rxs = rxs.clone();
    let store = sink::store::Target::open(&settings.store)?;
    let (sealed_tx, sealed_rx) = crossbeam_channel::unbounded();
    let wal = WalWriter::spawn(rxs, settings.wal.clone(), Some(sealed_tx))
        .map_err(|e| anyhow::anyhow!("cannot open the write-ahead log: {e}"))?;
    if !wal.backlog.is_empty() {
        tracing::info!(
            segments = wal.backlog.len(),
            "uploading WAL segments left by an earlier run"
        );
    }
    let visitors = visitors(&settings, path.is_none())?;
    let secret = click_secret(&settings)?;
    let edge_visitors = visitors.clone();
    let uploader = Uploader::spawn(
        store,
        wal.backlog.clone(),
        sealed_rx,
        Arc::clone(&wal.stats),
        visitors,
    )?;
    let metrics = Arc::new(Metrics::new(
        settings.workers,
        settings.queue_per_worker * settings.workers,
        Box::new(move || {
            depth_rxs
                .iter()
                .fold((0, 0), |(n, b), r| (n + r.len(), b + r.bytes()))
        }),
        Arc::clone(&wal.stats),
        Arc::clone(&uploader.stats),
    ));
    let campaigns = loaded.table.campaigns.len();
    let table = Arc::new(ArcSwap::from_pointee(loaded.table));
    warn_unmatchable(&table.load(), &edge_visitors);
    let server = Server::start(
        settings.clone(),
        table,
        metrics,
        txs,
        edge_visitors,
        &secret,
    )?;
    tracing::info!(
        workers = settings.workers,
        node_id = settings.node_id,
        driver = server.driver.as_str(),
        campaigns,
        config = path
            .as_ref()
            .map_or("built-in demo".into(), |p| p.display().to_string()),
        "listening on http://{}",
        server.local_addr
    );
    tracing::info!(
        wal = %settings.wal.dir.display(),
        store = %settings.store,
        "events go to the write-ahead log, then to Parquet in the store"
    );
    for sig in signals.forever() {
        match sig {
            SIGHUP => match &path {
                Some(p) => reload(p, &overrides, &loaded.file, &server),
                None => {
                    tracing::warn!("SIGHUP: running the built-in demo config, nothing to reload")
                }
            },
            _ => {
                tracing::info!(
                    signal = sig,
                    "draining: no new connections, finishing requests"
                );
                break;
            }
        }
    }
    let metrics = Arc::clone(&server.shared().metrics);
    server.shutdown();
    // The log stays locked until the uploader is done with its segments.
    let (wal, _lock) = wal.join_keeping_lock();
    let emitted: u64 = sink::EventKind::ALL
        .iter()
        .map(|&k| metrics.emitted(k))
        .sum();
    let logged = wal.events.load(std::sync::atomic::Ordering::Relaxed);
    let lost = wal.lost.load(std::sync::atomic::Ordering::Relaxed);
    let left = uploader.join();
    anyhow::ensure!(
        lost == 0,
        "{lost} events could not be written to the write-ahead log in {} and are lost (see the errors above)",
        settings.wal.dir.display()
    );
    anyhow::ensure!(
        left == 0,
        "{left} WAL segments could not be uploaded to {}; they stay in {} and are uploaded at the next start",
        settings.store,
        settings.wal.dir.display()
    );
    tracing::info!(emitted, logged, "stopped");
    Ok(())
}
