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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use query::dims::Dimension;
use query::report::{ReportRequest, run as run_report};
use query::{DateRange, Session};
use serde_json::{Value, json};
use sink::EventId;

use crate::ledger::{Ledger, Outcome};

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

fn utf8(b: &RecordBatch, i: usize) -> query::Result<arrow::array::ArrayRef> {
    Ok(cast(b.column(i), &DataType::Utf8)?)
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

fn sql_list(items: &[String]) -> String {
    items
        .iter()
        .map(|c| query::sql_literal(c))
        .collect::<Vec<_>>()
        .join(", ")
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
    let campaigns = sql_list(&l.campaigns);

    // Visits the store holds for the run's campaigns within its window.
    let q = format!(
        "SELECT event_id FROM visits WHERE {} AND kind = 'visit' AND campaign_id IN ({campaigns})",
        range.rows()
    );
    let mut stored_visits: HashSet<EventId> = HashSet::new();
    for b in session.ctx.sql(&q).await?.collect().await? {
        let ids = utf8(&b, 0)?;
        for id in ids.as_string::<i32>().iter().flatten() {
            if let Ok(id) = EventId::parse(id.as_bytes()) {
                stored_visits.insert(id);
            }
        }
    }

    // Click-throughs the store holds for the run's campaigns, per visit.
    let q = format!(
        "SELECT click_id FROM visits WHERE {} AND kind = 'click' AND campaign_id IN ({campaigns})",
        range.rows()
    );
    let mut stored_clicks: HashMap<EventId, u64> = HashMap::new();
    let mut stored_click_rows = 0i64;
    for b in session.ctx.sql(&q).await?.collect().await? {
        let ids = utf8(&b, 0)?;
        for id in ids.as_string::<i32>().iter() {
            stored_click_rows += 1;
            if let Some(id) = id.and_then(|id| EventId::parse(id.as_bytes()).ok()) {
                *stored_clicks.entry(id).or_default() += 1;
            }
        }
    }

    // Conversions of clicks made within the window.
    let q = format!(
        "SELECT click_id, txid, payout_micros, conversion_type, method FROM conversions \
         WHERE {} AND {}",
        range.conversions_of_clicks(),
        range.ids("click_id")
    );
    let mut tallies: BTreeMap<Key, Tally> = BTreeMap::new();
    let mut foreign = 0u64;
    let ledger_clicks: HashSet<EventId> = l.visits.iter().map(|(id, _)| *id).collect();
    for b in session.ctx.sql(&q).await?.collect().await? {
        let (click, txid, kind, method) = (utf8(&b, 0)?, utf8(&b, 1)?, utf8(&b, 3)?, utf8(&b, 4)?);
        let payout = cast(b.column(2), &DataType::Int64)?;
        let payout = payout.as_primitive::<Int64Type>();
        let (click, txid, kind, method) = (
            click.as_string::<i32>(),
            txid.as_string::<i32>(),
            kind.as_string::<i32>(),
            method.as_string::<i32>(),
        );
        for row in 0..b.num_rows() {
            let Ok(id) = EventId::parse(click.value(row).as_bytes()) else {
                continue;
            };
            if !ledger_clicks.contains(&id) {
                foreign += 1;
                continue;
            }
            let key = Key {
                click: id,
                txid: (!txid.is_null(row) && !txid.value(row).is_empty())
                    .then(|| txid.value(row).to_owned()),
                payout_micros: (!payout.is_null(row)).then(|| payout.value(row)),
                kind: if kind.is_null(row) {
                    String::new()
                } else {
                    kind.value(row).to_owned()
                },
                pixel: !method.is_null(row) && method.value(row) == "pixel",
            };
            tallies.entry(key).or_default().stored += 1;
        }
    }
    for c in &l.conversions {
        let key = Key {
            click: c.click,
            txid: c.txid.clone(),
            payout_micros: Some(c.payout_micros),
            kind: c.kind.clone(),
            pixel: c.pixel,
        };
        let t = tallies.entry(key).or_default();
        match c.outcome {
            Outcome::Ok => t.acked += 1,
            Outcome::Doubt => t.doubt += 1,
            Outcome::Refused => t.refused += 1,
        }
    }

    // Visits.
    let crashed = l.transport_errors > 0 || !l.transport_errors_at.is_empty();
    let mut acked_sends: Vec<u64> = l
        .conversions
        .iter()
        .filter(|c| c.outcome == Outcome::Ok)
        .map(|c| c.ms)
        .collect();
    acked_sends.sort_unstable();
    let mut visits_found = 0u64;
    let mut lost_after_last_ack = Vec::new();
    for &(id, ms) in &l.visits {
        if stored_visits.contains(&id) {
            visits_found += 1;
        } else if lost_in_crash(ms, &acked_sends, &l.transport_errors_at) {
            lost_after_last_ack.push(id);
        } else {
            v.differ(limit, || {
                format!("visit {id} was redirected (at {ms} ms) but is not in the store")
            });
        }
    }
    let unknown_stored = stored_visits.len() as u64 - visits_found;
    let in_doubt = l.visits_in_doubt.len() as u64;
    if unknown_stored > in_doubt {
        v.differ(limit, || {
            format!(
                "the store holds {unknown_stored} visits of the run's campaigns and window that the \
                 ledger has no click id for, but only {in_doubt} visits went unanswered"
            )
        });
    }

    // Click-throughs: like visits, answered without waiting for the disk, so a crash may
    // lose the ones answered after the last durable acknowledgement.
    let mut sent_clicks: HashMap<EventId, Tally> = HashMap::new();
    let mut clicks_lost = 0u64;
    for &(id, ms, outcome) in &l.clicks {
        let t = sent_clicks.entry(id).or_default();
        match outcome {
            Outcome::Ok if lost_in_crash(ms, &acked_sends, &l.transport_errors_at) => {
                t.doubt += 1;
                clicks_lost += 1;
            }
            Outcome::Ok => t.acked += 1,
            Outcome::Doubt => t.doubt += 1,
            Outcome::Refused => t.refused += 1,
        }
    }
    let (mut clicks_answered, mut clicks_found) = (0u64, 0u64);
    for (id, t) in &sent_clicks {
        let stored = stored_clicks.get(id).copied().unwrap_or(0);
        clicks_answered += t.acked;
        clicks_found += stored.min(t.acked);
        if stored < t.acked {
            v.differ(limit, || {
                format!(
                    "the click-through of visit {id} was answered {} times but is stored {stored} times",
                    t.acked
                )
            });
        } else if stored > t.acked + t.doubt {
            v.differ(limit, || {
                format!(
                    "the click-through of visit {id} is stored {stored} times but was answered at \
                     most {} times ({} refused)",
                    t.acked + t.doubt,
                    t.refused
                )
            });
        }
    }
    let foreign_clicks: u64 = stored_clicks
        .iter()
        .filter(|(id, _)| !sent_clicks.contains_key(id))
        .map(|(_, n)| n)
        .sum();
    if foreign_clicks > 0 {
        v.differ(limit, || {
            format!(
                "the store holds {foreign_clicks} click-throughs of visits this run never clicked"
            )
        });
    }

    // Conversions.
    let lost: HashSet<EventId> = lost_after_last_ack.iter().copied().collect();
    let mut orphans: HashSet<(EventId, Option<String>)> = HashSet::new();
    let (mut acked, mut acked_stored, mut doubt, mut doubt_stored, mut refused, mut refused_stored) =
        (0, 0, 0, 0, 0, 0);
    for (key, t) in &tallies {
        acked += t.acked;
        doubt += t.doubt;
        refused += t.refused;
        acked_stored += t.stored.min(t.acked);
        let extra = t.stored.saturating_sub(t.acked);
        doubt_stored += extra.min(t.doubt);
        refused_stored += extra.saturating_sub(t.doubt);
        if t.acked + t.doubt + t.refused == 0 {
            v.differ(limit, || {
                format!("{key} is stored {} times but was never sent", t.stored)
            });
        } else if t.stored < t.acked {
            v.differ(limit, || {
                format!(
                    "{key} was acknowledged {} times but is stored {} times",
                    t.acked, t.stored
                )
            });
        } else if t.stored > t.acked + t.doubt {
            v.differ(limit, || {
                format!(
                    "{key} is stored {} times but was accepted at most {} times ({} acknowledged, \
                     {} unanswered, {} refused)",
                    t.stored,
                    t.acked + t.doubt,
                    t.acked,
                    t.doubt,
                    t.refused
                )
            });
        }
        if t.stored > 0 && !stored_visits.contains(&key.click) {
            if lost.contains(&key.click) {
                // Its visit was lost in the crash; the conversion came later (to the restarted
                // edge) and must show in the report as a conversion of an unknown click.
                if t.acked + t.doubt > 0 {
                    orphans.insert((key.click, key.txid.clone()));
                }
            } else {
                v.differ(limit, || {
                    format!("{key} is stored but its click's visit is not")
                });
            }
        }
    }
    if foreign > 0 {
        v.summary.push(format!(
            "note: {foreign} stored conversions in the window are for clicks this run did not make (other traffic)"
        ));
    }

    // The report must agree with the accepted events under the attribution rules: one
    // conversion per click and txid (per click when there is none), its payout the report's.
    let mut groups: HashMap<(EventId, Option<&str>), i64> = HashMap::new();
    for (key, t) in &tallies {
        if t.stored > 0 && stored_visits.contains(&key.click) && t.acked + t.doubt > 0 {
            groups.insert(
                (key.click, key.txid.as_deref()),
                key.payout_micros.unwrap_or(0),
            );
        }
    }
    let expected = Totals {
        visits: stored_visits.len() as i64,
        clicks: stored_click_rows,
        conversions: groups.len() as i64,
        revenue_micros: groups.values().sum(),
    };
    let req = ReportRequest {
        range,
        dims: vec![Dimension::Campaign],
        include_bots: true,
    };
    let report = run_report(session, &req, None).await?;
    let mut got = Totals::default();
    let mut unknown_click = 0;
    for row in &report.rows {
        if row.unknown_click {
            unknown_click += row.metrics.conversions;
        } else if row.dims[0]
            .as_ref()
            .is_some_and(|c| l.campaigns.contains(c))
        {
            got.visits += row.metrics.visits;
            got.clicks += row.metrics.clicks;
            got.conversions += row.metrics.conversions;
            got.revenue_micros += row.metrics.revenue_micros;
        }
    }
    if unknown_click != orphans.len() as i64 {
        v.differ(limit, || {
            format!(
                "the report shows {unknown_click} conversions of unknown clicks in the window; the \
                 conversions whose visits were lost in the crash make {}",
                orphans.len()
            )
        });
    }
    if got != expected {
        v.differ(limit, || {
            format!("the report shows {got}; the accepted events make {expected}")
        });
    }

    // The summary's head lines go before any notes gathered above.
    let notes = std::mem::take(&mut v.summary);
    let s = &mut v.summary;
    s.push(
        format!(
            "ledger: {} requests from {} campaign(s) to {}{}",
            l.requests,
            l.campaigns.len(),
            l.target,
            match l.end_ms {
                Some(_) if crashed => format!(
                    "; the server went away during the run ({} transport errors)",
                    l.transport_errors
                ),
                Some(_) => String::new(),
                None =>
                    "; the ledger has no end line (the generator was stopped before it finished)"
                        .into(),
            }
        ),
    );
    s.push(format!(
        "visits: {} redirected with a click id, {visits_found} stored{}; {in_doubt} unanswered, \
             {} of them stored",
        l.visits.len(),
        if lost_after_last_ack.is_empty() {
            String::new()
        } else {
            format!(
                "; {} lost in a crash, each redirected after the last conversion acknowledged \
                     before the server went away (redirects do not wait for the disk)",
                lost_after_last_ack.len()
            )
        },
        unknown_stored.min(in_doubt),
    ));
    if !l.clicks.is_empty() {
        s.push(format!(
            "click-throughs: {} sent, {clicks_answered} answered 302, {clicks_found} of them \
                 stored{}",
            l.clicks.len(),
            if clicks_lost > 0 {
                format!("; {clicks_lost} answered after the last acknowledgement before a crash")
            } else {
                String::new()
            }
        ));
    }
    s.push(format!(
        "conversions: {acked} acknowledged, {acked_stored} stored; {doubt} unanswered or 5xx, \
             {doubt_stored} of them stored, {} not; {refused} refused, {refused_stored} stored",
        doubt - doubt_stored
    ));
    let mut line = String::new();
    let _ = write!(line, "report: {got} (expected {expected})");
    if unknown_click > 0 || !orphans.is_empty() {
        let _ = write!(
            line,
            "; {unknown_click} conversions of unknown clicks (expected {}: conversions sent after \
             a crash for visits it lost)",
            orphans.len()
        );
    }
    s.push(line);
    s.extend(notes);
    v.json = json!({
        "ok": v.difference_count == 0,
        "differences": v.difference_count,
        "first_differences": v.differences,
        "visits": {
            "answered": l.visits.len(),
            "stored": visits_found,
            "lost_after_last_ack": lost_after_last_ack.len(),
            "conversions_of_lost_visits": orphans.len(),
            "unanswered": in_doubt,
            "unanswered_stored": unknown_stored.min(in_doubt),
        },
        "clicks": {
            "sent": l.clicks.len(),
            "answered": clicks_answered,
            "answered_stored": clicks_found,
            "answered_before_a_crash": clicks_lost,
        },
        "conversions": {
            "acknowledged": acked,
            "acknowledged_stored": acked_stored,
            "unanswered": doubt,
            "unanswered_stored": doubt_stored,
            "refused": refused,
            "refused_stored": refused_stored,
        },
        "report": {
            "visits": got.visits,
            "clicks": got.clicks,
            "conversions": got.conversions,
            "revenue_micros": got.revenue_micros,
        },
        "expected": {
            "visits": expected.visits,
            "clicks": expected.clicks,
            "conversions": expected.conversions,
            "revenue_micros": expected.revenue_micros,
        },
        "crashed": crashed,
    });
    Ok(v)
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
