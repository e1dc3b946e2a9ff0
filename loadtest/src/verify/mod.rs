//! `loadtest verify`: the ledger against the store, event by event, read with the query
//! tool's own code.
//!
//! - Every visit answered with a click id must be stored under its campaign. The one
//!   exception is a crash: redirects do not wait for the disk, so when the run saw the edge go
//!   away, visits answered after the last conversion acknowledged as durable may be lost —
//!   they are listed, not counted as differences. A visit answered *before* a conversion was
//!   sent that the edge acknowledged is durable whatever happened after (the WAL commits
//!   everything queued before an acknowledged event), so its loss is a difference.
//! - Stored visits the ledger has no click id for are allowed up to the number of visits sent
//!   without an answer.
//! - Each distinct conversion (click, txid, payout, type, route) must be stored at least as
//!   many times as it was acknowledged and at most as many times as it was sent without a
//!   refusal; its click's visit must be stored.
//! - The query tool's report over the run's window must show the visits, conversions and
//!   revenue the ledger's accepted events make under the attribution rules.

mod checks;
mod store;

use std::fmt::Write as _;

use query::{DateRange, Session};
use serde_json::{Value, json};
use sink::EventId;

use crate::ledger::Ledger;

/// Slack around the run's window for clocks and for events made just before the `start` line.
const WINDOW_SLACK_MS: u64 = 5_000;

/// A conversion as both sides can key it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    click: EventId,
    txid: Option<String>,
    payout_micros: Option<i64>,
    kind: String,
    pixel: bool,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of click {} (txid {}, payout {}, type {})",
            if self.pixel { "pixel" } else { "postback" },
            self.click,
            self.txid.as_deref().unwrap_or("-"),
            self.payout_micros
                .map_or("-".to_owned(), query::output::money),
            self.kind
        )
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    acked: u64,
    doubt: u64,
    refused: u64,
    stored: u64,
}

/// Totals of a report row set.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub visits: i64,
    pub clicks: i64,
    pub conversions: i64,
    pub revenue_micros: i64,
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} visits, {} clicks, {} conversions, revenue {}",
            self.visits,
            self.clicks,
            self.conversions,
            query::output::money(self.revenue_micros)
        )
    }
}

/// What verify found.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Problems: acknowledged events missing, events stored more often than sent, totals off.
    pub differences: Vec<String>,
    /// How many differences there are in all (`differences` holds the first ones).
    pub difference_count: u64,
    pub summary: Vec<String>,
    pub json: Value,
}

impl Verdict {
    fn differ(&mut self, limit: usize, msg: impl FnOnce() -> String) {
        self.difference_count += 1;
        if self.differences.len() < limit {
            self.differences.push(msg());
        }
    }
}

/// The run's window: from its start to its end (or its last event), with slack.
pub fn window(l: &Ledger) -> DateRange {
    let last = l
        .visits
        .iter()
        .map(|v| v.1)
        .chain(l.conversions.iter().map(|c| c.ms))
        .chain(l.end_ms)
        .max()
        .unwrap_or(l.start_ms);
    DateRange::window(
        l.start_ms.saturating_sub(WINDOW_SLACK_MS) as i64,
        (last + WINDOW_SLACK_MS) as i64,
    )
}

/// Whether a visit redirected at `visit_ms` may have been lost in a crash: the server went
/// away after it (a transport error at `E` ≥ `visit_ms`) and no conversion sent after the
/// visit and before `E` was acknowledged — such an acknowledgement would have made the
/// visit durable too. Times are whole milliseconds, so ties do not count as "after".
pub fn lost_in_crash(visit_ms: u64, acked_sends: &[u64], errors_at: &[u64]) -> bool {
    let Some(&crash) = errors_at.get(errors_at.partition_point(|&e| e < visit_ms)) else {
        return false;
    };
    let next_ack = acked_sends.get(acked_sends.partition_point(|&c| c <= visit_ms));
    next_ack.is_none_or(|&c| c >= crash)
}

/// Checks the store against the ledger; `limit` caps the differences listed.
pub async fn verify(l: &Ledger, session: &Session, limit: usize) -> query::Result<Verdict> {
    let mut v = Verdict::default();
    let range = window(l);
    let stored = store::Stored::read(l, session, &range).await?;
    let acked_sends = checks::acked_sends(l);
    let visits = checks::visits(l, &stored, &acked_sends, &mut v, limit);
    let clicks = checks::clicks(l, &stored, &acked_sends, &mut v, limit);
    let conversions = checks::conversions(&stored, &visits.lost, &mut v, limit);
    if stored.foreign > 0 {
        v.summary.push(format!(
            "note: {} stored conversions in the window are for clicks this run did not make (other traffic)",
            stored.foreign
        ));
    }
    let report = checks::report(
        l,
        session,
        range,
        &stored,
        conversions.orphans.len(),
        &mut v,
        limit,
    )
    .await?;
    // The summary's head lines go before any notes gathered above.
    let notes = std::mem::take(&mut v.summary);
    let counts = Counts {
        visits,
        clicks,
        conversions,
        report,
    };
    v.summary = counts.summary(l);
    v.summary.extend(notes);
    v.json = counts.json(l, &v);
    Ok(v)
}

/// What the checks counted: the summary's lines and the JSON verdict say the same.
struct Counts {
    visits: checks::Visits,
    clicks: checks::Clicks,
    conversions: checks::Conversions,
    report: checks::Report,
}

/// Whether the run saw the server go away.
fn crashed(l: &Ledger) -> bool {
    l.transport_errors > 0 || !l.transport_errors_at.is_empty()
}

impl Counts {
    fn summary(&self, l: &Ledger) -> Vec<String> {
        let Counts {
            visits,
            clicks,
            conversions: c,
            report,
        } = self;
        let mut s = vec![format!(
            "ledger: {} requests from {} campaign(s) to {}{}",
            l.requests,
            l.campaigns.len(),
            l.target,
            match l.end_ms {
                Some(_) if crashed(l) => format!(
                    "; the server went away during the run ({} transport errors)",
                    l.transport_errors
                ),
                Some(_) => String::new(),
                None =>
                    "; the ledger has no end line (the generator was stopped before it finished)"
                        .into(),
            }
        )];
        s.push(format!(
            "visits: {} redirected with a click id, {} stored{}; {} unanswered, {} of them stored",
            l.visits.len(),
            visits.found,
            if visits.lost.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} lost in a crash, each redirected after the last conversion acknowledged \
                     before the server went away (redirects do not wait for the disk)",
                    visits.lost.len()
                )
            },
            visits.in_doubt,
            visits.unknown_stored.min(visits.in_doubt),
        ));
        if !l.clicks.is_empty() {
            s.push(format!(
                "click-throughs: {} sent, {} answered 302, {} of them stored{}",
                l.clicks.len(),
                clicks.answered,
                clicks.found,
                if clicks.lost > 0 {
                    format!(
                        "; {} answered after the last acknowledgement before a crash",
                        clicks.lost
                    )
                } else {
                    String::new()
                }
            ));
        }
        s.push(format!(
            "conversions: {} acknowledged, {} stored; {} unanswered or 5xx, {} of them stored, \
             {} not; {} refused, {} stored",
            c.acked,
            c.acked_stored,
            c.doubt,
            c.doubt_stored,
            c.doubt - c.doubt_stored,
            c.refused,
            c.refused_stored
        ));
        let mut line = String::new();
        let _ = write!(
            line,
            "report: {} (expected {})",
            report.got, report.expected
        );
        if report.unknown_click > 0 || !c.orphans.is_empty() {
            let _ = write!(
                line,
                "; {} conversions of unknown clicks (expected {}: conversions sent after a crash \
                 for visits it lost)",
                report.unknown_click,
                c.orphans.len()
            );
        }
        s.push(line);
        s
    }

    fn json(&self, l: &Ledger, v: &Verdict) -> Value {
        let Counts {
            visits,
            clicks,
            conversions: c,
            report,
        } = self;
        let totals = |t: &Totals| {
            json!({
                "visits": t.visits,
                "clicks": t.clicks,
                "conversions": t.conversions,
                "revenue_micros": t.revenue_micros,
            })
        };
        json!({
            "ok": v.difference_count == 0,
            "differences": v.difference_count,
            "first_differences": v.differences,
            "visits": {
                "answered": l.visits.len(),
                "stored": visits.found,
                "lost_after_last_ack": visits.lost.len(),
                "conversions_of_lost_visits": c.orphans.len(),
                "unanswered": visits.in_doubt,
                "unanswered_stored": visits.unknown_stored.min(visits.in_doubt),
            },
            "clicks": {
                "sent": l.clicks.len(),
                "answered": clicks.answered,
                "answered_stored": clicks.found,
                "answered_before_a_crash": clicks.lost,
            },
            "conversions": {
                "acknowledged": c.acked,
                "acknowledged_stored": c.acked_stored,
                "unanswered": c.doubt,
                "unanswered_stored": c.doubt_stored,
                "refused": c.refused,
                "refused_stored": c.refused_stored,
            },
            "report": totals(&report.got),
            "expected": totals(&report.expected),
            "crashed": crashed(l),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::lost_in_crash;

    #[test]
    fn only_visits_after_the_last_durable_acknowledgement_before_a_crash_may_be_lost() {
        let acks = [100, 200, 300];
        let errors = [250, 260];
        // Redirected at 150: the conversion sent at 200 was acknowledged before the crash.
        assert!(!lost_in_crash(150, &acks, &errors));
        // Redirected at 220: nothing acknowledged between it and the crash at 250.
        assert!(lost_in_crash(220, &acks, &errors));
        // Redirected at 200, the same millisecond as the last acknowledged send: not after it.
        assert!(lost_in_crash(200, &acks, &errors));
        // Redirected at 270, after every error: no crash followed it.
        assert!(!lost_in_crash(270, &acks, &errors));
        // Without errors, nothing may be lost.
        assert!(!lost_in_crash(220, &acks, &[]));
        // A crash with no acknowledgement at all before it.
        assert!(lost_in_crash(50, &[], &errors));
    }
}
