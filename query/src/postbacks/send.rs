//! Sending postbacks: at most `per_host` requests in flight and `rate` a second to one host,
//! retries with exponential backoff and full jitter, and a timeout on each attempt.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::outbox::{Attempt, Job, Outcome};

/// How to send.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Requests in flight to one host.
    pub per_host: usize,
    /// Requests a second to one host.
    pub rate: f64,
    /// Each attempt's timeout.
    pub timeout: Duration,
    /// The first retry's delay, doubled after each failure up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Attempts before giving up on a postback.
    pub max_attempts: u32,
    /// Give up on a postback this long after it was decided.
    pub give_up_after: Duration,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            per_host: 4,
            rate: 20.0,
            timeout: Duration::from_secs(10),
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(600),
            max_attempts: 1_000,
            give_up_after: Duration::from_secs(72 * 3600),
        }
    }
}

/// The delay before attempt `n + 1` after `n` failed ones: uniformly random between half and
/// all of `base × 2^(n-1)`, capped at `max` ("equal jitter": retries of many postbacks do not
/// arrive together, and none comes back sooner than half its delay).
pub fn backoff(opts: &SendOptions, failed: u32) -> Duration {
    let exp = opts
        .retry_base
        .saturating_mul(1u32 << failed.saturating_sub(1).min(20));
    let d = exp.min(opts.retry_max);
    let half = d / 2;
    half + Duration::from_nanos(fastrand::u64(
        0..=half.as_nanos().min(u128::from(u64::MAX)) as u64,
    ))
}

/// Per-host limits.
#[derive(Default)]
pub struct Hosts {
    hosts: HashMap<String, Host>,
}

struct Host {
    slots: Arc<Semaphore>,
    /// The earliest time the next request may start.
    next: Instant,
}

impl Hosts {
    /// Waits for the host's rate and takes one of its slots.
    pub async fn acquire(
        &mut self,
        host: &str,
        opts: &SendOptions,
    ) -> tokio::sync::OwnedSemaphorePermit {
        let h = self.hosts.entry(host.to_owned()).or_insert_with(|| Host {
            slots: Arc::new(Semaphore::new(opts.per_host.max(1))),
            next: Instant::now(),
        });
        let now = Instant::now();
        if h.next > now {
            tokio::time::sleep(h.next - now).await;
        }
        let gap = Duration::from_secs_f64(1.0 / opts.rate.max(0.001));
        h.next = h.next.max(now) + gap;
        h.slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// One of the host's slots now, if its rate and concurrency allow; else the time (Unix
    /// ms) to try again.
    pub fn try_take(
        &mut self,
        host: &str,
        opts: &SendOptions,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, i64> {
        let h = self.hosts.entry(host.to_owned()).or_insert_with(|| Host {
            slots: Arc::new(Semaphore::new(opts.per_host.max(1))),
            next: Instant::now(),
        });
        let now = Instant::now();
        if h.next > now {
            return Err(now_ms() + (h.next - now).as_millis() as i64 + 1);
        }
        let permit = h
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| now_ms() + 20)?;
        h.next = h.next.max(now) + Duration::from_secs_f64(1.0 / opts.rate.max(0.001));
        Ok(permit)
    }
}

/// The host a URL goes to ("" when it has none).
pub fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| format!("{h}:{}", u.port_or_known_default().unwrap_or(0)))
        })
        .unwrap_or_default()
}

/// Sends one postback; `attempts` is how many came before. The attempt says whether this
/// was the last.
pub async fn attempt(
    client: &reqwest::Client,
    job: &Job,
    attempts: u32,
    opts: &SendOptions,
) -> Attempt {
    let started = Instant::now();
    let sent = client
        .get(&job.url)
        .header("Idempotency-Key", &job.key)
        .timeout(opts.timeout)
        .send()
        .await;
    let latency_ms = started.elapsed().as_secs_f64() * 1e3;
    let (code, error) = match sent {
        Ok(mut resp) => {
            let code = resp.status();
            let error = if code.is_redirection() {
                let to = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .unwrap_or("?");
                Some(format!(
                    "answered {code}, a redirect to {to} (not followed: fix postback_url)"
                ))
            } else {
                (!code.is_success()).then(|| format!("answered {code}"))
            };
            // Read (and drop) up to 64 KiB of the body so the connection can be reused; a
            // larger body is not read.
            let mut read = 0usize;
            while read < 64 * 1024 {
                match resp.chunk().await {
                    Ok(Some(c)) => read += c.len(),
                    _ => break,
                }
            }
            (Some(code.as_u16()), error)
        }
        Err(e) => (None, Some(error_chain(&e))),
    };
    let last = attempts + 1 >= opts.max_attempts;
    let outcome = match code {
        Some(c) if (200..300).contains(&c) => Some(Outcome::Delivered),
        // A redirect will redirect again.
        Some(c) if (300..400).contains(&c) => Some(Outcome::GaveUp),
        // The receiver refuses this postback: sending it again will not change its mind
        // (408 and 429 ask for a retry).
        Some(c) if (400..500).contains(&c) && c != 408 && c != 429 => Some(Outcome::GaveUp),
        _ if last => Some(Outcome::GaveUp),
        _ => None,
    };
    Attempt {
        key: job.key.clone(),
        at_ms: now_ms(),
        code,
        latency_ms,
        error,
        outcome,
        next_ms: None,
    }
}

/// After a failed attempt (`a`, the `failed`-th, of a postback decided at `created_ms`):
/// gives it up when it has been undelivered for `give_up_after`, else sets when to try again.
/// A delivered or refused attempt is left as it is.
pub fn schedule(a: &mut Attempt, created_ms: i64, failed: u32, opts: &SendOptions) {
    if a.outcome.is_some() {
        return;
    }
    if now_ms() - created_ms > opts.give_up_after.as_millis() as i64 {
        a.outcome = Some(Outcome::GaveUp);
        a.error = Some(format!(
            "{}; given up after {} h",
            a.error.as_deref().unwrap_or("failed"),
            opts.give_up_after.as_secs() / 3600
        ));
    } else {
        a.next_ms = Some(now_ms() + backoff(opts, failed).as_millis() as i64);
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let o = SendOptions {
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(1000),
            ..Default::default()
        };
        for _ in 0..100 {
            let d1 = backoff(&o, 1);
            assert!((50..=100).contains(&d1.as_millis()), "{d1:?}");
            let d3 = backoff(&o, 3);
            assert!((200..=400).contains(&d3.as_millis()), "{d3:?}");
            let d9 = backoff(&o, 40);
            assert!((500..=1000).contains(&d9.as_millis()), "{d9:?}");
        }
        assert_eq!(
            host_of("https://pb.example.com/x?y=1"),
            "pb.example.com:443"
        );
        assert_eq!(host_of("http://127.0.0.1:9000/"), "127.0.0.1:9000");
    }

    /// A rate no test can reach: no gap between requests, so only the slots bound them.
    fn unpaced(per_host: usize) -> SendOptions {
        SendOptions {
            per_host,
            rate: 1e12,
            ..Default::default()
        }
    }

    #[test]
    fn try_take_bounds_each_hosts_requests_in_flight() {
        let mut hosts = Hosts::default();
        let two = unpaced(2);
        let a1 = hosts.try_take("a:443", &two).expect("a first slot");
        let a2 = hosts.try_take("a:443", &two).expect("a second slot");
        // Both slots taken: refused, to try again shortly.
        let before = now_ms();
        let at = hosts.try_take("a:443", &two).unwrap_err();
        assert!((before + 20..=now_ms() + 20).contains(&at), "{at} {before}");
        // Another host has slots of its own.
        let b1 = hosts.try_take("b:443", &two).expect("another host's slot");
        // A released slot is free again, and only one.
        drop(a1);
        let a3 = hosts.try_take("a:443", &two).expect("the released slot");
        assert!(hosts.try_take("a:443", &two).is_err());
        drop((a2, a3, b1));
        let _a4 = hosts
            .try_take("a:443", &two)
            .expect("a slot after all were released");
    }

    #[test]
    fn try_take_spaces_a_hosts_requests_by_its_rate() {
        let mut hosts = Hosts::default();
        // One a second, with slots to spare: the second request waits for the rate alone.
        let slow = SendOptions {
            per_host: 100,
            rate: 1.0,
            ..Default::default()
        };
        let _c1 = hosts.try_take("c:80", &slow).expect("the first request");
        let before = now_ms();
        let at = hosts.try_take("c:80", &slow).unwrap_err();
        let after = now_ms();
        assert!(
            at >= before + 500 && at <= after + 1_001,
            "{at}: {before}..{after}"
        );
        // A refusal does not push the next start back.
        let again = hosts.try_take("c:80", &slow).unwrap_err();
        assert!((again - at).abs() <= 10, "{again} {at}");
        // Another host is not held up by it.
        let _d1 = hosts
            .try_take("d:80", &slow)
            .expect("another host's first request");
        // At 20 a second, the next request may start 50 ms after the first.
        let paced = SendOptions {
            per_host: 100,
            rate: 20.0,
            ..Default::default()
        };
        let _e1 = hosts.try_take("e:80", &paced).expect("the first request");
        std::thread::sleep(Duration::from_millis(60));
        let _e2 = hosts
            .try_take("e:80", &paced)
            .expect("the next, after the gap");
    }

    #[tokio::test]
    async fn acquire_waits_for_a_free_slot_and_for_the_rate() {
        let mut hosts = Hosts::default();
        let one = unpaced(1);
        let held = hosts.acquire("a:443", &one).await;
        // The only slot is taken: the next request waits for it.
        let waited =
            tokio::time::timeout(Duration::from_millis(50), hosts.acquire("a:443", &one)).await;
        assert!(waited.is_err(), "a second request in flight");
        drop(held);
        let _again = tokio::time::timeout(Duration::from_secs(5), hosts.acquire("a:443", &one))
            .await
            .expect("the released slot");
        // At 20 a second, three requests take at least two gaps of 50 ms.
        let paced = SendOptions {
            per_host: 100,
            rate: 20.0,
            ..Default::default()
        };
        let started = Instant::now();
        for _ in 0..3 {
            drop(hosts.acquire("b:443", &paced).await);
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(100), "{took:?}");
    }
}
