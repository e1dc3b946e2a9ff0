//! The edge's config file: `[server]`, as written by users (SPEC.md "Config"), with its
//! defaults; the catalog's sections are [`catalog::File`]'s. [`crate::settings::Settings`]
//! validates `[server]` and [`crate::routing::Routing::compile`] the rest. Unknown keys are
//! rejected here, by serde, with the key's name.

use std::path::PathBuf;

use serde::Deserialize;

use crate::http;

/// The built-in demo config served when `edge` runs without `--config`.
pub const DEMO_CONFIG: &str = include_str!("demo.toml");

/// The config file the edge reads: `[server]` (its settings) and the catalog.
pub type ConfigFile = catalog::File<ServerConfig>;

pub use catalog::ConfigError;

/// Default `server.event_queue`: events buffered between the workers and the WAL writer,
/// enough to ride out a disk stall of a few hundred milliseconds at full load.
pub const DEFAULT_EVENT_QUEUE: usize = 32_768;
/// Default `server.event_queue_bytes`: 32 MiB of queued events, however large each is.
pub const DEFAULT_EVENT_QUEUE_BYTES: u64 = 32 << 20;
/// Default `server.catalog_poll_ms`: a change of the store's catalog is live within about
/// this long (plus one read of the store).
pub const DEFAULT_CATALOG_POLL_MS: u64 = 1_000;

/// Default `server.max_cost`, in currency units per visit.
pub const DEFAULT_MAX_COST: f64 = 1_000.0;
/// Default `server.max_payout`, in currency units per conversion.
pub const DEFAULT_MAX_PAYOUT: f64 = 100_000.0;

/// `[server]`: the keys of SPEC.md plus the request limits, which SPEC.md asks to be
/// configurable.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    /// 0 = one worker per core.
    pub workers: usize,
    pub node_id: u16,
    pub data_dir: PathBuf,
    pub store: String,
    pub flush_interval_ms: u64,
    pub commit_interval_ms: u64,
    pub geoip_db: String,
    pub ua_regexes: String,
    pub trusted_proxies: Vec<String>,
    /// Data-centre ranges (CIDRs) whose visitors count as bots.
    pub bot_networks: Vec<String>,
    /// A file of more such ranges, one per line (`#` comments).
    pub bot_networks_file: String,
    /// Signs landing-page click state; nodes behind one balancer share it. Empty: a random
    /// secret kept in `data_dir/click-secret`.
    pub click_secret: String,
    pub fallback_url: String,
    /// `auto` (io_uring where the kernel allows it, else legacy), `io_uring` or `legacy`.
    pub driver: String,
    /// Pin worker N to core N modulo the core count.
    pub pin_workers: bool,
    /// Request head limit in bytes (431 past it).
    pub max_request_head: usize,
    /// Request target limit in bytes (414 past it).
    pub max_target: usize,
    /// Request body limit in bytes (413 past it).
    pub max_body: usize,
    /// Time a request may take to arrive, from its first byte (408 past it).
    pub head_timeout_ms: u64,
    /// Time an idle keep-alive connection is kept open.
    pub idle_timeout_ms: u64,
    /// Time a write may wait for a peer that does not read before the connection is closed.
    pub send_timeout_ms: u64,
    /// Answered but unsent bytes past which a connection's pipelined requests wait.
    pub max_unsent_output: usize,
    /// Events buffered between the workers and the sink (split evenly between workers).
    pub event_queue: usize,
    /// On SIGTERM, time given to in-flight requests before the workers stop.
    pub shutdown_timeout_ms: u64,
    /// How long a conversion waits to be made durable before it is answered 503.
    pub durable_timeout_ms: u64,
    /// Longest time a visit waits in memory before its group commit to the WAL.
    pub wal_commit_delay_ms: u64,
    /// Size at which a WAL segment is sealed.
    pub wal_segment_bytes: u64,
    /// Events at which a WAL segment is sealed.
    pub wal_segment_events: u64,
    /// Disk the WAL may use; past it conversions are answered 503 (redirects go on).
    pub wal_max_bytes: u64,
    /// Bytes of events buffered between the workers and the sink (split between workers).
    pub event_queue_bytes: u64,
    /// Largest cost a visit's cost parameter may set (currency units); larger is ignored.
    pub max_cost: f64,
    /// Largest payout a conversion may carry (either sign); larger is answered 400.
    pub max_payout: f64,
    /// Addresses or CIDRs (the socket's peer) that may read `/metrics`; others get 403.
    pub metrics_allow: Vec<String>,
    /// Where the catalog comes from: `file` (this file's sections) or `store` (the store's
    /// `catalog/`, loaded at start and followed while running).
    pub catalog: String,
    /// How often an edge with `catalog = "store"` looks for a new version.
    pub catalog_poll_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            workers: 0,
            node_id: 1,
            data_dir: PathBuf::from("./data"),
            store: "file://./data/lake".into(),
            flush_interval_ms: sink::storage::writer::DEFAULT_MAX_AGE.as_millis() as u64,
            commit_interval_ms: sink::storage::uploader::DEFAULT_COMMIT_INTERVAL.as_millis() as u64,
            geoip_db: String::new(),
            ua_regexes: String::new(),
            trusted_proxies: Vec::new(),
            bot_networks: Vec::new(),
            bot_networks_file: String::new(),
            click_secret: String::new(),
            fallback_url: String::new(),
            driver: "auto".into(),
            pin_workers: true,
            max_request_head: http::MAX_REQUEST_HEAD,
            max_target: http::MAX_TARGET,
            max_body: http::MAX_BODY,
            head_timeout_ms: http::HEAD_TIMEOUT_MS,
            idle_timeout_ms: http::IDLE_TIMEOUT_MS,
            send_timeout_ms: http::SEND_TIMEOUT_MS,
            max_unsent_output: http::MAX_UNSENT_OUTPUT,
            event_queue: DEFAULT_EVENT_QUEUE,
            shutdown_timeout_ms: 10_000,
            durable_timeout_ms: 5_000,
            wal_commit_delay_ms: sink::storage::writer::DEFAULT_COMMIT_DELAY.as_millis() as u64,
            wal_segment_bytes: sink::storage::writer::DEFAULT_SEGMENT_BYTES,
            wal_segment_events: sink::storage::writer::DEFAULT_SEGMENT_EVENTS,
            wal_max_bytes: sink::storage::writer::DEFAULT_MAX_BYTES,
            event_queue_bytes: DEFAULT_EVENT_QUEUE_BYTES,
            max_cost: DEFAULT_MAX_COST,
            max_payout: DEFAULT_MAX_PAYOUT,
            catalog: "file".into(),
            catalog_poll_ms: DEFAULT_CATALOG_POLL_MS,
            metrics_allow: vec!["127.0.0.0/8".into(), "::1".into()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_parses() {
        let c = ConfigFile::parse(DEMO_CONFIG).unwrap();
        assert_eq!(c.campaigns.len(), 2);
        assert_eq!(c.server.listen, "127.0.0.1:8080");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = ConfigFile::parse("[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen_port"), "{e}");
    }

    #[test]
    fn node_id_out_of_range_is_an_error() {
        let e = ConfigFile::parse("[server]\nnode_id = 70000\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("node_id") || e.contains("70000"), "{e}");
    }
}
