//! A run's plan: the command line, checked and resolved (target address, stop condition,
//! rates), so a bad flag fails before any traffic is sent.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use sink::model::money;

/// The built-in demo config's campaign, so a bare `loadtest` drives `cargo run -p edge`.
pub const DEMO_CAMPAIGN: &str = "5aaea5a02d38914cfd2ad8c1";

/// When a run stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    After(Duration),
    /// After this many requests in all (visits, click-throughs and conversions).
    Requests(u64),
}

/// A checked plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `http://host:port` as given (written to the ledger).
    pub target: String,
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: String,
    pub campaigns: Vec<String>,
    pub connections: usize,
    pub threads: usize,
    /// Requests written on a connection before its answers are read (1 = no pipelining).
    pub pipeline: usize,
    pub stop: Stop,
    /// Open loop at this many requests per second in all; `None` = closed loop.
    pub rate: Option<f64>,
    pub conversion_rate: f64,
    /// Share of conversions reported by pixel rather than postback.
    pub pixel_share: f64,
    /// Share of conversions the network reports twice (a retry of the same txid).
    pub duplicate_rate: f64,
    /// Share of conversions followed by an upsell (a new txid on the same click).
    pub upsell_rate: f64,
    /// Share of visits followed by a landing page click-through (`/click?cid=`).
    pub click_through: f64,
    pub payout_min_micros: i64,
    pub payout_max_micros: i64,
    pub token: Option<String>,
    /// How long an answer (or a connection) may take before it counts as lost.
    pub timeout: Duration,
    /// How often a conversion that got no answer (or a 5xx) is sent again.
    pub retries: u8,
    pub ledger: Option<PathBuf>,
    pub driver: driver::Choice,
    pub seed: u64,
    /// Who the visitors are: how many distinct user agents, and whether their addresses go
    /// in `X-Forwarded-For`.
    pub visitors: crate::funnel::Visitors,
}

/// A bad flag, named.
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {what}")]
pub struct PlanError {
    pub flag: &'static str,
    pub what: String,
}

fn bad(flag: &'static str, what: impl Into<String>) -> PlanError {
    PlanError {
        flag,
        what: what.into(),
    }
}

/// Parses `30s`, `500ms`, `2m`, `1h` or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 500ms, 2m"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("{s:?} is not a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `http://host:port[/]` → (address, Host header).
pub fn parse_target(t: &str) -> Result<(SocketAddr, String), PlanError> {
    let rest = t.strip_prefix("http://").ok_or_else(|| {
        bad(
            "--target",
            format!("{t:?}: only http://host:port targets are supported"),
        )
    })?;
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        return Err(bad(
            "--target",
            format!("{t:?}: give the server only, like http://127.0.0.1:8080"),
        ));
    }
    let with_port = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_owned()
    } else {
        format!("{host}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| bad("--target", format!("{t:?}: {e}")))?
        .next()
        .ok_or_else(|| bad("--target", format!("{t:?} resolves to no address")))?;
    Ok((addr, host.to_owned()))
}

/// Checks a probability flag.
pub fn rate(flag: &'static str, v: f64) -> Result<f64, PlanError> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(bad(flag, format!("{v} is not between 0 and 1")))
    }
}

/// Parses a payout amount into micro-units.
pub fn payout(flag: &'static str, s: &str) -> Result<i64, PlanError> {
    let v = money::parse_micros(s.as_bytes()).map_err(|e| bad(flag, format!("{s:?} {e}")))?;
    if v < 0 {
        return Err(bad(flag, "a payout is not negative"));
    }
    Ok(v)
}

impl Plan {
    /// A plan for `target` with the command line's defaults: the demo campaign, 64
    /// connections on one thread, no pipelining, closed loop for 10 s, 5 % conversions.
    pub fn new(target: &str) -> Result<Plan, PlanError> {
        let (addr, host) = parse_target(target)?;
        Ok(Plan {
            target: target.trim_end_matches('/').to_owned(),
            addr,
            host,
            campaigns: vec![DEMO_CAMPAIGN.to_owned()],
            connections: 64,
            threads: 1,
            pipeline: 1,
            stop: Stop::After(Duration::from_secs(10)),
            rate: None,
            conversion_rate: 0.05,
            pixel_share: 0.2,
            duplicate_rate: 0.1,
            upsell_rate: 0.05,
            click_through: 0.0,
            payout_min_micros: 1_000_000,
            payout_max_micros: 100_000_000,
            token: None,
            timeout: Duration::from_secs(10),
            retries: 3,
            ledger: None,
            // As a client on loopback, epoll measured 1.6x the requests per second of io_uring
            // (docs/loadtest.md "Modes"), so the generator defaults to it.
            driver: driver::Choice::Legacy,
            seed: 1,
            visitors: crate::funnel::Visitors::default(),
        })
    }

    /// Cross-flag checks.
    pub fn check(&self) -> Result<(), PlanError> {
        if self.campaigns.is_empty() {
            return Err(bad("--campaign", "at least one campaign id is needed"));
        }
        if let Some(c) = self.campaigns.iter().find(|c| {
            c.is_empty()
                || !c
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
        }) {
            return Err(bad("--campaign", format!("{c:?} is not a URL-safe id")));
        }
        if self.connections == 0 {
            return Err(bad("--connections", "at least 1"));
        }
        if self.threads == 0 || self.threads > self.connections {
            return Err(bad("--threads", "between 1 and the number of connections"));
        }
        if self.pipeline == 0 || self.pipeline > 1024 {
            return Err(bad("--pipeline", "between 1 and 1024"));
        }
        if let Some(r) = self.rate
            && !(r.is_finite() && r > 0.0)
        {
            return Err(bad("--rate", "a positive number of requests per second"));
        }
        if let Stop::Requests(0) = self.stop {
            return Err(bad("--requests", "at least 1"));
        }
        if self.payout_min_micros > self.payout_max_micros {
            return Err(bad("--payout-min", "is above --payout-max"));
        }
        Ok(())
    }

    /// The funnel needs the click id of every visit.
    pub fn needs_click_ids(&self) -> bool {
        self.conversion_rate > 0.0 || self.click_through > 0.0 || self.ledger.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_targets_parse_or_name_the_problem() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("3d").unwrap_err().contains("unit"));
        let (addr, host) = parse_target("http://127.0.0.1:8080/").unwrap();
        assert_eq!((addr.port(), host.as_str()), (8080, "127.0.0.1:8080"));
        assert_eq!(parse_target("http://127.0.0.1").unwrap().0.port(), 80);
        for t in [
            "https://127.0.0.1:8080",
            "127.0.0.1:8080",
            "http://127.0.0.1:8080/c/x",
        ] {
            let e = parse_target(t).unwrap_err();
            assert_eq!(e.flag, "--target", "{t}");
        }
        assert_eq!(payout("--payout-min", "1.5").unwrap(), 1_500_000);
        assert!(payout("--payout-min", "-1").is_err());
        assert!(rate("--conversion-rate", 1.5).is_err());
    }
}
