//! Wiring: load the config, start the sink consumer and the workers, then serve signals —
//! SIGHUP reloads the catalog into a new routing, SIGTERM and SIGINT drain and stop.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use sink::storage::uploader::Uploader;
use sink::storage::writer::WalWriter;
use sink::visitors::Visitors;
use sink::visitors::agent::Agents;
use sink::visitors::geo::{GeoDb, Locator, Networks};

use crate::config::{ConfigError, ConfigFile, DEMO_CONFIG};
use crate::follow;
use crate::metrics::Metrics;
use crate::routing::{Limits, Routing};
use crate::server::Server;
use crate::settings::Settings;
use catalog::store::CatalogStore;

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
    pub routing: Routing,
}

/// Reads (or takes the demo), applies overrides, validates and compiles.
pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Loaded, ConfigError> {
    let mut file = match path {
        Some(p) => ConfigFile::load(p)?,
        None => ConfigFile::parse(DEMO_CONFIG)?,
    };
    overrides.apply(&mut file);
    let settings = Settings::from_config(&file.server)?;
    if settings.catalog_poll.is_some() {
        let sections = [
            ("traffic_sources", file.traffic_sources.len()),
            ("affiliate_networks", file.affiliate_networks.len()),
            ("offers", file.offers.len()),
            ("landing_pages", file.landing_pages.len()),
            ("campaigns", file.campaigns.len()),
        ];
        if let Some((name, _)) = sections.iter().find(|(_, n)| *n > 0) {
            return Err(ConfigError::invalid(
                "server.catalog",
                format!(
                    "is \"store\", so the file's [[{name}]] would be ignored: import them with `query catalog import` and leave only [server] here"
                ),
            ));
        }
    }
    // With the store's catalog this is an empty routing until the store's is loaded.
    let routing = Routing::compile(&file)?;
    Ok(Loaded {
        file,
        settings,
        routing,
    })
}

/// Reloads the catalog from `path` into a new [`Routing`]; on any error the running one stays.
fn reload(path: &Path, overrides: &Overrides, running: &ConfigFile, server: &Server) {
    let shared = server.shared();
    match load(Some(path), overrides) {
        Ok(new) => {
            for w in &new.routing.warnings {
                tracing::warn!("config: {w}");
            }
            let mut old_server = running.server.clone();
            old_server.fallback_url = new.file.server.fallback_url.clone();
            if old_server != new.file.server {
                tracing::warn!(
                    "config: [server] changes other than fallback_url take effect only after a restart"
                );
            }
            warn_unmatchable(&new.routing, &shared.visitors);
            let campaigns = new.routing.campaigns.len();
            shared.routing.store(Arc::new(new.routing));
            bump(&shared.metrics.reloads);
            tracing::info!(campaigns, "config reloaded from {}", path.display());
        }
        Err(e) => {
            bump(&shared.metrics.reload_failures);
            tracing::error!("config reload refused, keeping the running campaigns: {e}");
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

/// Rules that can never match for want of a data file: one line per kind, naming a few.
fn warn_unmatchable(routing: &Routing, v: &Visitors) {
    let few = |ids: Vec<&str>| {
        let more = ids.len().saturating_sub(5);
        let mut s = ids[..ids.len().min(5)].join(", ");
        if more > 0 {
            s.push_str(&format!(" and {more} more"));
        }
        s
    };
    if v.geo.is_none() {
        let ids: Vec<&str> = routing
            .campaigns
            .iter()
            .filter(|c| c.has_country_rules())
            .map(|c| &*c.id)
            .collect();
        if !ids.is_empty() {
            tracing::warn!(
                "config: rules on countries never match without server.geoip_db (campaigns {})",
                few(ids)
            );
        }
    }
    if v.agents.is_none() {
        let ids: Vec<&str> = routing
            .campaigns
            .iter()
            .filter(|c| c.has_agent_rules())
            .map(|c| &*c.id)
            .collect();
        if !ids.is_empty() {
            tracing::warn!(
                "config: rules on devices, os or browsers never match without server.ua_regexes, bot rules see only bot_networks (campaigns {})",
                few(ids)
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
    let mut loaded = load(path.as_deref(), &overrides)?;
    let settings = loaded.settings.clone();
    let limits = Limits::of(&loaded.file.server)?;
    // The store's catalog, when it is the catalog: loaded now; if the store cannot be read
    // the edge starts with no campaigns and the follower keeps trying.
    let catalog = match settings.catalog_poll {
        None => {
            for w in &loaded.routing.warnings {
                tracing::warn!("config: {w}");
            }
            None
        }
        Some(_) => {
            let cs = CatalogStore::new(sink::storage::store::open(&settings.store)?);
            let rt = follow::runtime()?;
            let ready = match follow::load(&rt, &cs, &limits) {
                Ok(r) => {
                    for w in &r.warnings {
                        tracing::warn!("catalog: {w}");
                    }
                    loaded.routing = r;
                    true
                }
                Err(e) => {
                    tracing::error!(
                        "cannot load the store's catalog, starting with no campaigns and trying again: {e}"
                    );
                    false
                }
            };
            Some((cs, rt, ready))
        }
    };
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..settings.workers)
        .map(|_| {
            sink::storage::queue::queue(settings.queue_per_worker, settings.queue_bytes_per_worker)
        })
        .unzip();
    let depth_rxs = rxs.clone();
    let store = sink::storage::store::Target::open(&settings.store)?;
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
        settings.node_id,
        settings.commit_interval,
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
    let campaigns = loaded.routing.campaigns.len();
    metrics
        .catalog_version
        .store(loaded.routing.version, std::sync::atomic::Ordering::Relaxed);
    let routing = Arc::new(ArcSwap::from_pointee(loaded.routing));
    warn_unmatchable(&routing.load(), &edge_visitors);
    let server = Server::start(
        settings.clone(),
        Arc::clone(&routing),
        Arc::clone(&metrics),
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
        catalog = if catalog.is_some() { "store" } else { "file" },
        "listening on http://{}",
        server.local_addr
    );
    let follower = match (catalog, settings.catalog_poll) {
        (Some((cs, rt, ready)), Some(poll)) => {
            drop(rt);
            Some(follow::spawn(
                cs,
                Arc::clone(&routing),
                limits.clone(),
                poll,
                Arc::clone(&metrics),
                ready,
            )?)
        }
        _ => None,
    };
    tracing::info!(
        wal = %settings.wal.dir.display(),
        store = %settings.store,
        "events go to the write-ahead log, then to Parquet in the store"
    );
    for sig in signals.forever() {
        match sig {
            SIGHUP if follower.is_some() => {
                tracing::info!("SIGHUP: loading the store's whole catalog");
                let loaded = follow::runtime().and_then(|rt| {
                    let cs = CatalogStore::new(sink::storage::store::open(&settings.store)?);
                    follow::load(&rt, &cs, &limits)
                });
                match loaded {
                    Ok(r) => follow::install(&routing, r, &metrics),
                    Err(e) => tracing::error!("SIGHUP: {e}; the running campaigns stay"),
                }
            }
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
    drop(follower);
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
        "{left} WAL segments could not be uploaded to {} and committed; they stay in {} and are uploaded at the next start",
        settings.store,
        settings.wal.dir.display()
    );
    tracing::info!(emitted, logged, "stopped");
    Ok(())
}
