//! What the store holds of the run: its visits, click-throughs and conversions, read with the
//! query tool over the run's window, and each conversion tallied against the ledger's sends.

use std::collections::{BTreeMap, HashMap, HashSet};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use query::{DateRange, Session};
use sink::EventId;

use super::{Key, Tally};
use crate::ledger::{Ledger, Outcome};

/// The run's events as the store holds them.
pub(super) struct Stored {
    /// Visits of the run's campaigns within its window.
    pub visits: HashSet<EventId>,
    /// Click-throughs of the run's campaigns, per visit, and their rows (with unreadable ids).
    pub clicks: HashMap<EventId, u64>,
    pub click_rows: i64,
    /// Each distinct conversion: how often it was stored, acknowledged, left in doubt, refused.
    pub tallies: BTreeMap<Key, Tally>,
    /// Stored conversions in the window of clicks this run did not make.
    pub foreign: u64,
}

fn utf8(b: &RecordBatch, i: usize) -> query::Result<arrow::array::ArrayRef> {
    Ok(cast(b.column(i), &DataType::Utf8)?)
}

/// The run's campaigns as an SQL list.
fn sql_list(items: &[String]) -> String {
    items
        .iter()
        .map(|c| query::sql_literal(c))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Stored {
    pub async fn read(l: &Ledger, session: &Session, range: &DateRange) -> query::Result<Self> {
        let campaigns = sql_list(&l.campaigns);
        let ids = |kind: &str, column: &str| {
            format!(
                "SELECT {column} FROM visits WHERE {} AND kind = '{kind}' AND campaign_id IN ({campaigns})",
                range.rows()
            )
        };
        let mut visits = HashSet::new();
        for b in session
            .ctx
            .sql(&ids("visit", "event_id"))
            .await?
            .collect()
            .await?
        {
            let ids = utf8(&b, 0)?;
            for id in ids.as_string::<i32>().iter().flatten() {
                if let Ok(id) = EventId::parse(id.as_bytes()) {
                    visits.insert(id);
                }
            }
        }
        let (mut clicks, mut click_rows) = (HashMap::<EventId, u64>::new(), 0i64);
        for b in session
            .ctx
            .sql(&ids("click", "click_id"))
            .await?
            .collect()
            .await?
        {
            let ids = utf8(&b, 0)?;
            for id in ids.as_string::<i32>().iter() {
                click_rows += 1;
                if let Some(id) = id.and_then(|id| EventId::parse(id.as_bytes()).ok()) {
                    *clicks.entry(id).or_default() += 1;
                }
            }
        }
        let mut s = Stored {
            visits,
            clicks,
            click_rows,
            tallies: BTreeMap::new(),
            foreign: 0,
        };
        s.read_conversions(l, session, range).await?;
        s.tally_sends(l);
        Ok(s)
    }

    /// Conversions of clicks made within the window, keyed as the ledger keys them.
    async fn read_conversions(
        &mut self,
        l: &Ledger,
        session: &Session,
        range: &DateRange,
    ) -> query::Result<()> {
        let q = format!(
            "SELECT click_id, txid, payout_micros, conversion_type, method FROM conversions \
             WHERE {} AND {}",
            range.conversions_of_clicks(),
            range.ids("click_id")
        );
        let ledger_clicks: HashSet<EventId> = l.visits.iter().map(|(id, _)| *id).collect();
        for b in session.ctx.sql(&q).await?.collect().await? {
            let (click, txid, kind, method) =
                (utf8(&b, 0)?, utf8(&b, 1)?, utf8(&b, 3)?, utf8(&b, 4)?);
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
                    self.foreign += 1;
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
                self.tallies.entry(key).or_default().stored += 1;
            }
        }
        Ok(())
    }

    /// Adds what the ledger sent of each conversion, and how it was answered.
    fn tally_sends(&mut self, l: &Ledger) {
        for c in &l.conversions {
            let key = Key {
                click: c.click,
                txid: c.txid.clone(),
                payout_micros: Some(c.payout_micros),
                kind: c.kind.clone(),
                pixel: c.pixel,
            };
            let t = self.tallies.entry(key).or_default();
            match c.outcome {
                Outcome::Ok => t.acked += 1,
                Outcome::Doubt => t.doubt += 1,
                Outcome::Refused => t.refused += 1,
            }
        }
    }
}
