//! What a run measured: an HDR latency histogram and the answers per funnel step, errors by
//! kind, and the funnel's counts. Each worker thread fills its own; they are merged at the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::funnel::Step;

/// Why a request got no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The connection could not be opened (refused, unreachable, timed out).
    Connect,
    /// Reading or writing failed (reset) or the server closed with requests unanswered.
    Io,
    /// No answer within `--timeout`.
    Timeout,
    /// The answer was not HTTP/1.x this tool can frame.
    BadResponse,
    /// A visit's redirect carried no click id, so its funnel could not go on.
    NoClickId,
}

impl ErrorKind {
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Io => "io",
            ErrorKind::Timeout => "timeout",
            ErrorKind::BadResponse => "bad_response",
            ErrorKind::NoClickId => "no_click_id",
        }
    }

    /// The server went away or stopped answering (as opposed to answering oddly).
    pub fn is_transport(self) -> bool {
        matches!(
            self,
            ErrorKind::Connect | ErrorKind::Io | ErrorKind::Timeout
        )
    }
}

/// One step's figures.
#[derive(Debug, Clone)]
pub struct StepStats {
    /// Microseconds from when the request was due (open loop) or sent (closed loop) to its answer.
    pub latency: Histogram<u64>,
    /// Answers by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests sent that got no answer.
    pub unanswered: u64,
}

impl Default for StepStats {
    fn default() -> Self {
        StepStats {
            // 1 µs to 100 s at 3 significant digits.
            latency: Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid bounds"),
            statuses: BTreeMap::new(),
            unanswered: 0,
        }
    }
}

impl StepStats {
    pub fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }
}

/// A thread's (or, merged, the run's) figures.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub steps: [StepStats; 4],
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Conversions queued by the funnel: first reports, duplicates (resent), upsells.
    pub conversions: u64,
    pub duplicates: u64,
    pub upsells: u64,
    /// Funnel follow-ups (conversions, click-throughs) still queued when the run stopped.
    pub left_queued: u64,
}

impl Stats {
    pub fn record(&mut self, step: Step, status: u16, latency: Duration) {
        let s = &mut self.steps[step.index()];
        s.latency
            .saturating_record((latency.as_micros() as u64).max(1));
        *s.statuses.entry(status).or_default() += 1;
    }

    pub fn error(&mut self, kind: ErrorKind, n: u64) {
        *self.errors.entry(kind).or_default() += n;
    }

    pub fn transport_errors(&self) -> u64 {
        self.errors
            .iter()
            .filter(|(k, _)| k.is_transport())
            .map(|(_, n)| n)
            .sum()
    }

    pub fn merge(&mut self, o: &Stats) {
        for (a, b) in self.steps.iter_mut().zip(&o.steps) {
            a.latency.add(&b.latency).expect("same bounds");
            for (s, n) in &b.statuses {
                *a.statuses.entry(*s).or_default() += n;
            }
            a.unanswered += b.unanswered;
        }
        for (k, n) in &o.errors {
            *self.errors.entry(*k).or_default() += n;
        }
        self.conversions += o.conversions;
        self.duplicates += o.duplicates;
        self.upsells += o.upsells;
        self.left_queued += o.left_queued;
    }

    pub fn answered(&self) -> u64 {
        self.steps.iter().map(StepStats::answered).sum()
    }
}

/// Counters a worker bumps as it goes, read by the progress line.
#[derive(Debug, Default)]
pub struct Live {
    pub answered: AtomicU64,
    pub errors: AtomicU64,
}

impl Live {
    pub fn add(&self, answered: u64, errors: u64) {
        if answered > 0 {
            self.answered.fetch_add(answered, Ordering::Relaxed);
        }
        if errors > 0 {
            self.errors.fetch_add(errors, Ordering::Relaxed);
        }
    }
}

/// Percentiles reported for each step.
pub const PERCENTILES: [(&str, f64); 4] =
    [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9)];

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The run's figures as the `--json` summary.
pub fn to_json(stats: &Stats, elapsed: Duration, header: Value) -> Value {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut steps = serde_json::Map::new();
    for step in Step::ALL {
        let s = &stats.steps[step.index()];
        if s.answered() == 0 && s.unanswered == 0 {
            continue;
        }
        let mut latency = serde_json::Map::new();
        for (name, q) in PERCENTILES {
            latency.insert(
                format!("{name}_ms"),
                json!(ms(s.latency.value_at_quantile(q / 100.0))),
            );
        }
        latency.insert("max_ms".into(), json!(ms(s.latency.max())));
        latency.insert("mean_ms".into(), json!(s.latency.mean() / 1000.0));
        let ok = s.statuses.get(&step.expected()).copied().unwrap_or(0);
        steps.insert(
            step.name().into(),
            json!({
                "requests": s.answered() + s.unanswered,
                "ok": ok,
                "rps": s.answered() as f64 / secs,
                "statuses": s.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "unanswered": s.unanswered,
                "latency": latency,
            }),
        );
    }
    let mut out = header;
    out["elapsed_s"] = json!(secs);
    out["requests"] = json!(stats.answered());
    out["rps"] = json!(stats.answered() as f64 / secs);
    out["steps"] = Value::Object(steps);
    out["errors"] = json!(
        stats
            .errors
            .iter()
            .map(|(k, v)| (k.name().to_owned(), json!(v)))
            .collect::<serde_json::Map<_, _>>()
    );
    out["funnel"] = json!({
        "conversions": stats.conversions,
        "duplicates": stats.duplicates,
        "upsells": stats.upsells,
        "left_queued": stats.left_queued,
    });
    out
}

/// The run's figures as a table for people.
pub fn to_text(stats: &Stats, elapsed: Duration) -> String {
    use std::fmt::Write as _;
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{} answers in {:.1} s: {:.0} req/s",
        stats.answered(),
        secs,
        stats.answered() as f64 / secs
    );
    let _ = writeln!(
        t,
        "{:9} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}  statuses",
        "step", "answered", "rps", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    for step in Step::ALL {
        let s = &stats.steps[step.index()];
        if s.answered() == 0 && s.unanswered == 0 {
            continue;
        }
        let h = &s.latency;
        let statuses: Vec<String> = s.statuses.iter().map(|(k, v)| format!("{k}×{v}")).collect();
        let _ = writeln!(
            t,
            "{:9} {:>10} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}  {}{}",
            step.name(),
            s.answered(),
            s.answered() as f64 / secs,
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.9)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max()),
            statuses.join(" "),
            if s.unanswered > 0 {
                format!(" unanswered×{}", s.unanswered)
            } else {
                String::new()
            }
        );
    }
    if stats.errors.is_empty() {
        let _ = writeln!(t, "errors: none");
    } else {
        let e: Vec<String> = stats
            .errors
            .iter()
            .map(|(k, v)| format!("{} {v}", k.name()))
            .collect();
        let _ = writeln!(t, "errors: {}", e.join(", "));
    }
    let _ = writeln!(
        t,
        "funnel: {} conversions, {} resent as duplicates, {} upsells; {} follow-ups left unsent at the end",
        stats.conversions, stats.duplicates, stats.upsells, stats.left_queued
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_figures_add_up() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        for us in 1..=1000 {
            a.record(Step::Visit, 302, Duration::from_micros(us));
        }
        b.record(Step::Visit, 404, Duration::from_millis(50));
        b.record(Step::Postback, 200, Duration::from_micros(300));
        b.error(ErrorKind::Io, 2);
        b.error(ErrorKind::NoClickId, 1);
        a.merge(&b);
        let v = &a.steps[Step::Visit.index()];
        assert_eq!(v.answered(), 1001);
        assert_eq!(v.statuses[&404], 1);
        assert_eq!(v.latency.max() / 1000, 50);
        assert!((495..=505).contains(&v.latency.value_at_quantile(0.5)));
        assert_eq!(a.transport_errors(), 2);
        let j = to_json(&a, Duration::from_secs(2), json!({}));
        assert_eq!(j["requests"], 1002);
        assert_eq!(j["steps"]["visit"]["ok"], 1000);
        assert_eq!(j["steps"]["postback"]["statuses"]["200"], 1);
        assert_eq!(j["errors"]["io"], 2);
        assert!(j["steps"].get("pixel").is_none());
        let text = to_text(&a, Duration::from_secs(2));
        assert!(text.contains("io 2") && text.contains("302×1000"), "{text}");
    }
}
