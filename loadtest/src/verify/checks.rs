//! The checks, one per kind of event, each adding its differences to the verdict and
//! answering the counts the summary reports.

use std::collections::{HashMap, HashSet};

use query::dims::Dimension;
use query::report::{ReportRequest, run as run_report};
use query::{DateRange, Session};
use sink::EventId;

use super::store::Stored;
use super::{Tally, Totals, Verdict, lost_in_crash};
use crate::ledger::{Ledger, Outcome};

/// The send times of acknowledged conversions, in order.
pub(super) fn acked_sends(l: &Ledger) -> Vec<u64> {
    let mut acked: Vec<u64> = l
        .conversions
        .iter()
        .filter(|c| c.outcome == Outcome::Ok)
        .map(|c| c.ms)
        .collect();
    acked.sort_unstable();
    acked
}

pub(super) struct Visits {
    pub found: u64,
    /// Visits redirected after the last acknowledgement before a crash, not stored.
    pub lost: Vec<EventId>,
    /// Stored visits the ledger has no click id for (allowed up to the unanswered ones).
    pub unknown_stored: u64,
    pub in_doubt: u64,
}

/// Every visit answered with a click id is stored, unless a crash may have taken it.
pub(super) fn visits(
    l: &Ledger,
    s: &Stored,
    acked_sends: &[u64],
    v: &mut Verdict,
    limit: usize,
) -> Visits {
    let mut out = Visits {
        found: 0,
        lost: Vec::new(),
        unknown_stored: 0,
        in_doubt: l.visits_in_doubt.len() as u64,
    };
    for &(id, ms) in &l.visits {
        if s.visits.contains(&id) {
            out.found += 1;
        } else if lost_in_crash(ms, acked_sends, &l.transport_errors_at) {
            out.lost.push(id);
        } else {
            v.differ(limit, || {
                format!("visit {id} was redirected (at {ms} ms) but is not in the store")
            });
        }
    }
    out.unknown_stored = s.visits.len() as u64 - out.found;
    if out.unknown_stored > out.in_doubt {
        let (unknown, in_doubt) = (out.unknown_stored, out.in_doubt);
        v.differ(limit, || {
            format!(
                "the store holds {unknown} visits of the run's campaigns and window that the \
                 ledger has no click id for, but only {in_doubt} visits went unanswered"
            )
        });
    }
    out
}

pub(super) struct Clicks {
    pub answered: u64,
    pub found: u64,
    /// Answered after the last acknowledgement before a crash.
    pub lost: u64,
}

/// Click-throughs: like visits, answered without waiting for the disk, so a crash may lose
/// the ones answered after the last durable acknowledgement.
pub(super) fn clicks(
    l: &Ledger,
    s: &Stored,
    acked_sends: &[u64],
    v: &mut Verdict,
    limit: usize,
) -> Clicks {
    let mut sent: HashMap<EventId, Tally> = HashMap::new();
    let mut out = Clicks {
        answered: 0,
        found: 0,
        lost: 0,
    };
    for &(id, ms, outcome) in &l.clicks {
        let t = sent.entry(id).or_default();
        match outcome {
            Outcome::Ok if lost_in_crash(ms, acked_sends, &l.transport_errors_at) => {
                t.doubt += 1;
                out.lost += 1;
            }
            Outcome::Ok => t.acked += 1,
            Outcome::Doubt => t.doubt += 1,
            Outcome::Refused => t.refused += 1,
        }
    }
    for (id, t) in &sent {
        let stored = s.clicks.get(id).copied().unwrap_or(0);
        out.answered += t.acked;
        out.found += stored.min(t.acked);
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
    let foreign: u64 = s
        .clicks
        .iter()
        .filter(|(id, _)| !sent.contains_key(id))
        .map(|(_, n)| n)
        .sum();
    if foreign > 0 {
        v.differ(limit, || {
            format!("the store holds {foreign} click-throughs of visits this run never clicked")
        });
    }
    out
}

#[derive(Default)]
pub(super) struct Conversions {
    pub acked: u64,
    pub acked_stored: u64,
    pub doubt: u64,
    pub doubt_stored: u64,
    pub refused: u64,
    pub refused_stored: u64,
    /// Conversions (click, txid) stored for visits lost in a crash: the report shows them as
    /// conversions of unknown clicks.
    pub orphans: HashSet<(EventId, Option<String>)>,
}

/// Each distinct conversion is stored at least as often as acknowledged, at most as often as
/// accepted, and its click's visit is stored (unless a crash took it).
pub(super) fn conversions(
    s: &Stored,
    lost_visits: &[EventId],
    v: &mut Verdict,
    limit: usize,
) -> Conversions {
    let lost: HashSet<EventId> = lost_visits.iter().copied().collect();
    let mut out = Conversions::default();
    for (key, t) in &s.tallies {
        out.acked += t.acked;
        out.doubt += t.doubt;
        out.refused += t.refused;
        out.acked_stored += t.stored.min(t.acked);
        let extra = t.stored.saturating_sub(t.acked);
        out.doubt_stored += extra.min(t.doubt);
        out.refused_stored += extra.saturating_sub(t.doubt);
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
        if t.stored > 0 && !s.visits.contains(&key.click) {
            if lost.contains(&key.click) {
                // Its visit was lost in the crash; the conversion came later (to the restarted
                // edge) and must show in the report as a conversion of an unknown click.
                if t.acked + t.doubt > 0 {
                    out.orphans.insert((key.click, key.txid.clone()));
                }
            } else {
                v.differ(limit, || {
                    format!("{key} is stored but its click's visit is not")
                });
            }
        }
    }
    out
}

pub(super) struct Report {
    pub got: Totals,
    pub expected: Totals,
    /// Conversions of unknown clicks the report shows in the window.
    pub unknown_click: i64,
}

/// The report must agree with the accepted events under the attribution rules: one
/// conversion per click and txid (per click when there is none), its payout the report's.
pub(super) async fn report(
    l: &Ledger,
    session: &Session,
    range: DateRange,
    s: &Stored,
    orphans: usize,
    v: &mut Verdict,
    limit: usize,
) -> query::Result<Report> {
    let mut groups: HashMap<(EventId, Option<&str>), i64> = HashMap::new();
    for (key, t) in &s.tallies {
        if t.stored > 0 && s.visits.contains(&key.click) && t.acked + t.doubt > 0 {
            groups.insert(
                (key.click, key.txid.as_deref()),
                key.payout_micros.unwrap_or(0),
            );
        }
    }
    let expected = Totals {
        visits: s.visits.len() as i64,
        clicks: s.click_rows,
        conversions: groups.len() as i64,
        revenue_micros: groups.values().sum(),
    };
    let req = ReportRequest {
        range,
        dims: vec![Dimension::Campaign],
        include_bots: true,
        ..Default::default()
    };
    let report = run_report(session, &req, None).await?;
    let mut got = Totals::default();
    let mut unknown_click = 0;
    for row in &report.rows {
        if row.unknown_click {
            unknown_click += row.figures.conversions;
        } else if row.dims[0]
            .as_ref()
            .is_some_and(|c| l.campaigns.contains(c))
        {
            got.visits += row.figures.visits;
            got.clicks += row.figures.clicks;
            got.conversions += row.figures.conversions;
            got.revenue_micros += row.figures.revenue_micros;
        }
    }
    if unknown_click != orphans as i64 {
        v.differ(limit, || {
            format!(
                "the report shows {unknown_click} conversions of unknown clicks in the window; the \
                 conversions whose visits were lost in the crash make {orphans}"
            )
        });
    }
    if got != expected {
        v.differ(limit, || {
            format!("the report shows {got}; the accepted events make {expected}")
        });
    }
    Ok(Report {
        got,
        expected,
        unknown_click,
    })
}
