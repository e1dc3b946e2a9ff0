//! `[server]` validated into the settings the workers run with (not reloadable: a change
//! needs a restart).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sink::storage::writer::WalConfig;
use sink::visitors::geo::Cidr;

use crate::config::{ConfigError, ServerConfig};
use crate::http::Limits;

/// Largest worker count: the worker id is 8 bits of every event id.
pub const MAX_WORKERS: usize = 256;

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Resolved worker count (never 0).
    pub workers: usize,
    pub node_id: u16,
    pub driver: driver::Choice,
    pub pin_workers: bool,
    pub limits: Limits,
    /// Channel capacity per worker, in events...
    pub queue_per_worker: usize,
    /// ...and in bytes of events.
    pub queue_bytes_per_worker: u64,
    /// Peers that may read `/metrics`.
    pub metrics_allow: Vec<Cidr>,
    pub shutdown_timeout: Duration,
    pub durable_timeout: Duration,
    pub wal: WalConfig,
    /// Object store URL the Parquet files go to.
    pub store: String,
    /// How long uploaded files may wait for their commit to the tables' logs.
    pub commit_interval: Duration,
    /// The MaxMind database visits are located with, if any.
    pub geoip_db: Option<PathBuf>,
    /// uap-core's `regexes.yaml`, if any.
    pub ua_regexes: Option<PathBuf>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Data-centre ranges whose visitors count as bots, and a file of more.
    pub bot_networks: Vec<Cidr>,
    pub bot_networks_file: Option<PathBuf>,
    /// The configured click-state secret, if any.
    pub click_secret: Option<String>,
    pub data_dir: PathBuf,
    /// With the store's catalog, how often to look for a new version; `None`: the config
    /// file's catalog.
    pub catalog_poll: Option<Duration>,
}

fn positive(v: u64, key: &str) -> Result<u64, ConfigError> {
    if v == 0 {
        return Err(ConfigError::invalid(key, "must be greater than 0"));
    }
    Ok(v)
}

fn cidrs(list: &[String], key: &str) -> Result<Vec<Cidr>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, cidr)| {
            Cidr::parse(cidr).ok_or_else(|| {
                ConfigError::invalid(
                    format!("{key}[{i}]"),
                    format!("{cidr:?} is not an address or CIDR like 10.0.0.0/8"),
                )
            })
        })
        .collect()
}

impl Settings {
    pub fn from_config(s: &ServerConfig) -> Result<Settings, ConfigError> {
        let listen: SocketAddr = s.listen.parse().map_err(|_| {
            ConfigError::invalid(
                "server.listen",
                format!("{:?} is not an address like 127.0.0.1:8080", s.listen),
            )
        })?;
        let workers = match s.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
        .min(MAX_WORKERS);
        if s.workers > MAX_WORKERS {
            return Err(ConfigError::invalid(
                "server.workers",
                format!("at most {MAX_WORKERS} workers"),
            ));
        }
        let driver = s
            .driver
            .parse::<driver::Choice>()
            .map_err(|e| ConfigError::invalid("server.driver", e))?;
        if sink::storage::store::StoreUrl::parse(&s.store).is_none() {
            return Err(ConfigError::invalid(
                "server.store",
                format!("{:?} is not a file://, s3:// or memory:// URL", s.store),
            ));
        }
        let trusted_proxies = cidrs(&s.trusted_proxies, "server.trusted_proxies")?;
        let bot_networks = cidrs(&s.bot_networks, "server.bot_networks")?;
        let metrics_allow = cidrs(&s.metrics_allow, "server.metrics_allow")?;
        if !s.click_secret.is_empty() && s.click_secret.len() < 16 {
            return Err(ConfigError::invalid(
                "server.click_secret",
                "use at least 16 characters (or leave it empty for a generated one)",
            ));
        }
        positive(s.flush_interval_ms, "server.flush_interval_ms")?;
        let limits = Limits {
            max_head: positive(s.max_request_head as u64, "server.max_request_head")? as usize,
            max_target: positive(s.max_target as u64, "server.max_target")? as usize,
            max_body: s.max_body,
            head_timeout: Duration::from_millis(positive(
                s.head_timeout_ms,
                "server.head_timeout_ms",
            )?),
            idle_timeout: Duration::from_millis(positive(
                s.idle_timeout_ms,
                "server.idle_timeout_ms",
            )?),
            send_timeout: Duration::from_millis(positive(
                s.send_timeout_ms,
                "server.send_timeout_ms",
            )?),
            max_unsent_output: positive(s.max_unsent_output as u64, "server.max_unsent_output")?
                as usize,
        };
        let queue = positive(s.event_queue as u64, "server.event_queue")? as usize;
        let mut wal = WalConfig::new(s.data_dir.join("wal"));
        wal.max_age = Duration::from_millis(s.flush_interval_ms);
        wal.commit_delay = Duration::from_millis(s.wal_commit_delay_ms);
        wal.segment_bytes = positive(s.wal_segment_bytes, "server.wal_segment_bytes")?;
        wal.segment_events = positive(s.wal_segment_events, "server.wal_segment_events")?;
        wal.max_bytes = positive(s.wal_max_bytes, "server.wal_max_bytes")?;
        Ok(Settings {
            listen,
            workers,
            node_id: s.node_id,
            driver,
            pin_workers: s.pin_workers,
            limits,
            queue_per_worker: queue.div_ceil(workers).max(1),
            queue_bytes_per_worker: positive(s.event_queue_bytes, "server.event_queue_bytes")?
                .div_ceil(workers as u64),
            metrics_allow,
            shutdown_timeout: Duration::from_millis(s.shutdown_timeout_ms),
            durable_timeout: Duration::from_millis(positive(
                s.durable_timeout_ms,
                "server.durable_timeout_ms",
            )?),
            wal,
            store: s.store.clone(),
            commit_interval: Duration::from_millis(positive(
                s.commit_interval_ms,
                "server.commit_interval_ms",
            )?),
            geoip_db: (!s.geoip_db.is_empty()).then(|| PathBuf::from(&s.geoip_db)),
            ua_regexes: (!s.ua_regexes.is_empty()).then(|| PathBuf::from(&s.ua_regexes)),
            trusted_proxies,
            bot_networks,
            bot_networks_file: (!s.bot_networks_file.is_empty())
                .then(|| PathBuf::from(&s.bot_networks_file)),
            click_secret: (!s.click_secret.is_empty()).then(|| s.click_secret.clone()),
            data_dir: s.data_dir.clone(),
            catalog_poll: match s.catalog.as_str() {
                "file" => None,
                "store" => Some(Duration::from_millis(positive(
                    s.catalog_poll_ms,
                    "server.catalog_poll_ms",
                )?)),
                other => {
                    return Err(ConfigError::invalid(
                        "server.catalog",
                        format!("{other:?} is not one of file, store"),
                    ));
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(f: impl FnOnce(&mut ServerConfig)) -> String {
        let mut s = ServerConfig::default();
        f(&mut s);
        Settings::from_config(&s).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_valid() {
        let s = Settings::from_config(&ServerConfig::default()).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert!(s.workers >= 1);
        assert_eq!(s.driver, driver::Choice::Auto);
        assert_eq!(s.limits.max_head, 16384);
        assert_eq!(s.limits.max_target, 8192);
        assert_eq!(s.limits.max_body, 65536);
        assert_eq!(s.limits.head_timeout, Duration::from_secs(10));
    }

    #[test]
    fn bad_values_name_their_key() {
        assert!(err(|s| s.listen = "localhost".into()).starts_with("server.listen:"));
        assert!(err(|s| s.workers = 1000).starts_with("server.workers:"));
        assert!(err(|s| s.driver = "kqueue".into()).starts_with("server.driver:"));
        assert!(err(|s| s.store = "ftp://x".into()).starts_with("server.store:"));
        assert!(err(|s| s.catalog = "db".into()).starts_with("server.catalog:"));
        assert!(
            err(|s| {
                s.catalog = "store".into();
                s.catalog_poll_ms = 0;
            })
            .starts_with("server.catalog_poll_ms:")
        );
        assert!(
            err(|s| s.trusted_proxies = vec!["10.0.0.0/33".into()])
                .starts_with("server.trusted_proxies[0]:")
        );
        assert!(err(|s| s.head_timeout_ms = 0).starts_with("server.head_timeout_ms:"));
        assert!(
            err(|s| s.bot_networks = vec!["1.2.3.0/24".into(), "x".into()])
                .starts_with("server.bot_networks[1]:")
        );
        assert!(err(|s| s.click_secret = "short".into()).starts_with("server.click_secret:"));
        assert!(err(|s| s.event_queue = 0).starts_with("server.event_queue:"));
    }

    #[test]
    fn trusted_proxies_are_parsed_at_load() {
        let c = ServerConfig {
            trusted_proxies: vec![
                "127.0.0.1".into(),
                "10.0.0.0/8".into(),
                "2001:db8::/32".into(),
            ],
            ..ServerConfig::default()
        };
        let s = Settings::from_config(&c).unwrap();
        assert_eq!(s.trusted_proxies.len(), 3);
        assert!(s.trusted_proxies[1].contains("10.9.8.7".parse().unwrap()));
        for bad in ["1.2.3.4/33", "::/129", "x/8", "1.2.3/8", ""] {
            let e = err(|s| s.trusted_proxies = vec!["::1".into(), bad.into()]);
            assert!(e.starts_with("server.trusted_proxies[1]:"), "{bad}: {e}");
        }
    }
}
