//! The conversion lifecycle as SQL: each report's canonical status from what it sent (its
//! network's `status_map`, then the names every network is understood by), and its
//! network's duplicate policy — one character each, as [`catalog::lifecycle`] codes them.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, StringArray};
use arrow::datatypes::DataType;
use catalog::lifecycle::{Duplicates, Status, UNDERSTOOD};
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

use crate::names::Names;
use crate::sql_literal;

/// The status code of a report whose network is `network` and which sent `raw`.
pub fn status_sql(names: Option<&Names>, network: &str, raw: &str) -> String {
    let sent = format!("lower(trim(coalesce({raw}, '')))");
    let understood = {
        let mut s = format!("CASE {sent}");
        for (name, st) in UNDERSTOOD {
            s.push_str(&format!(" WHEN '{name}' THEN '{}'", st.code()));
        }
        s.push_str(&format!(" ELSE '{}' END", Status::Sale.code()));
        s
    };
    let mapped: Vec<_> = names
        .map(|n| {
            n.lifecycles
                .iter()
                .filter(|(_, l)| !l.statuses.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if mapped.is_empty() {
        return understood;
    }
    let mut s = format!("CASE {network}");
    for (network_id, l) in mapped {
        s.push_str(&format!(
            " WHEN {} THEN CASE {sent}",
            sql_literal(network_id)
        ));
        for (value, st) in &l.statuses {
            s.push_str(&format!(
                " WHEN {} THEN '{}'",
                sql_literal(value),
                st.code()
            ));
        }
        s.push_str(&format!(" ELSE {understood} END"));
    }
    s.push_str(&format!(" ELSE {understood} END"));
    s
}

/// The duplicate policy code of a report whose network is `network`.
pub fn duplicates_sql(names: Option<&Names>, network: &str) -> String {
    let default = catalog::lifecycle::Duplicates::default().code();
    let set: Vec<_> = names
        .map(|n| {
            n.lifecycles
                .iter()
                .filter(|(_, l)| l.duplicates.code() != default)
                .collect()
        })
        .unwrap_or_default();
    if set.is_empty() {
        return format!("'{default}'");
    }
    let mut s = format!("CASE {network}");
    for (network_id, l) in set {
        s.push_str(&format!(
            " WHEN {} THEN '{}'",
            sql_literal(network_id),
            l.duplicates.code()
        ));
    }
    s.push_str(&format!(" ELSE '{default}' END"));
    s
}

/// One report of a conversion, as [`reported_sql`] writes it:
/// `event_id|authenticated|status code|policy code|payout micros|what it sent`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reported {
    pub event_id: String,
    /// It carried its network's postback token: it outranks reports that did not.
    pub authenticated: bool,
    pub status: Status,
    /// Its network's duplicate policy.
    pub duplicates: Duplicates,
    /// None: the offer's default payout.
    pub payout: Option<i64>,
    /// The status as the network sent it.
    pub sent: String,
}

/// The SQL of one [`Reported`] entry, from SQL expressions for each part.
pub fn reported_sql(
    event_id: &str,
    auth: &str,
    status: &str,
    duplicates: &str,
    payout: &str,
    sent: &str,
) -> String {
    format!(
        "concat({event_id}, '|', CASE WHEN coalesce({auth}, '') = 'token' THEN '1' ELSE '0' END, \
         '|', {status}, '|', {duplicates}, '|', coalesce(CAST({payout} AS VARCHAR), ''), '|', \
         coalesce({sent}, ''))"
    )
}

impl Reported {
    /// As [`reported_sql`] writes it.
    pub fn encode(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}",
            self.event_id,
            if self.authenticated { '1' } else { '0' },
            self.status.code(),
            self.duplicates.code(),
            self.payout.map(|p| p.to_string()).unwrap_or_default(),
            self.sent
        )
    }

    pub fn parse(entry: &str) -> Option<Reported> {
        let mut it = entry.splitn(6, '|');
        let event_id = it.next()?.to_owned();
        let authenticated = it.next()? == "1";
        let status = Status::from_code(it.next()?.chars().next()?)?;
        let duplicates = Duplicates::from_code(it.next()?.chars().next()?)?;
        let payout = it.next()?;
        let payout = if payout.is_empty() {
            None
        } else {
            Some(payout.parse().ok()?)
        };
        Some(Reported {
            event_id,
            authenticated,
            status,
            duplicates,
            payout,
            sent: it.next()?.to_owned(),
        })
    }

    /// The level that decides between reports: authenticated first, then the later stage.
    fn level(&self) -> (bool, u8) {
        (self.authenticated, self.status.stage())
    }
}

/// What a conversion's reports make of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Its final status.
    pub status: Status,
    /// How many conversions it counts as (more than one only under `every`).
    pub count: i64,
    /// Its revenue in micro-units.
    pub revenue: i64,
    /// How many of its duplicates count under each status, in [`Status::ALL`]' order: under
    /// `every` each under its own, else the conversion once under its final status.
    pub by_status: [i64; 6],
}

/// What a conversion's reports make of it (docs/query.md "Statuses"): the deciding report is
/// the latest of the highest level (authenticated, then stage), and its policy applies; its
/// duplicates are the reports of that level that count as it does, since the last one that
/// did not. `default_payout` gives a report that carried none its payout, from its event id.
/// `reports` end up in time order. Reports and the feed both settle conversions with it.
pub fn settle(reports: &mut [Reported], default_payout: impl Fn(&str) -> i64) -> Option<Settled> {
    reports.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    let last = reports
        .iter()
        .max_by(|a, b| (a.level(), &a.event_id).cmp(&(b.level(), &b.event_id)))?;
    let (level, status, policy) = (last.level(), last.status, last.duplicates);
    let counts = status.counts();
    let boundary = reports
        .iter()
        .filter(|r| r.level() == level && r.status.counts() != counts)
        .map(|r| r.event_id.as_str())
        .max();
    let dups: Vec<&Reported> = reports
        .iter()
        .filter(|r| r.level() == level && r.status.counts() == counts)
        .filter(|r| boundary.is_none_or(|b| r.event_id.as_str() > b))
        .collect();
    let amount = |r: &Reported| r.payout.unwrap_or_else(|| default_payout(&r.event_id));
    let index = |st: Status| Status::ALL.iter().position(|&s| s == st).unwrap_or(0);
    let mut by_status = [0; 6];
    let (count, revenue) = match policy {
        Duplicates::Once => (1, amount(dups[0])),
        Duplicates::Replace => (1, amount(dups[dups.len() - 1])),
        Duplicates::Add => (1, dups.iter().map(|r| amount(r)).sum()),
        Duplicates::Every => (dups.len() as i64, dups.iter().map(|r| amount(r)).sum()),
    };
    if policy == Duplicates::Every {
        for r in &dups {
            by_status[index(r.status)] += 1;
        }
    } else {
        by_status[index(status)] = 1;
    }
    Some(Settled {
        status,
        count,
        revenue,
        by_status,
    })
}

impl Settled {
    /// As the report's SQL reads it: `code|count|revenue|` then the counts by status.
    pub fn encode(&self) -> String {
        let mut s = format!("{}|{}|{}", self.status.code(), self.count, self.revenue);
        for n in self.by_status {
            s.push_str(&format!("|{n}"));
        }
        s
    }
}

/// The SQL part `i` (1-based) of [`SETTLE`]'s answer `s`.
pub fn settled_part(s: &str, i: usize) -> String {
    format!("split_part({s}, '|', {i})")
}

/// The part of [`SETTLE`]'s answer that counts conversions of status `st`.
pub fn settled_count_part(st: Status) -> usize {
    4 + Status::ALL.iter().position(|&s| s == st).unwrap_or(0)
}

/// The name reports call [`SettleUdaf`] by.
pub const SETTLE: &str = "ct_settle";

/// The aggregate `ct_settle(entry)`: [`settle`] over one conversion's [`Reported`] entries,
/// as text ([`Settled::encode`]). The entries carry their payouts (the report's SQL fills in
/// the default ones) and no sent status. Each group keeps its reports parsed, and says how
/// much memory they take, so the aggregate is accounted at its size.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SettleUdaf {
    signature: Signature,
}

impl Default for SettleUdaf {
    fn default() -> Self {
        SettleUdaf {
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for SettleUdaf {
    fn name(&self) -> &str {
        SETTLE
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn accumulator(&self, _: AccumulatorArgs) -> datafusion::error::Result<Box<dyn Accumulator>> {
        Ok(Box::<Settling>::default())
    }

    fn groups_accumulator_supported(&self, _: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _: AccumulatorArgs,
    ) -> datafusion::error::Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::<SettlingGroups>::default())
    }
}

/// Every group's reports at once: what a `GROUP BY` over a million conversions wants.
#[derive(Debug, Default)]
struct SettlingGroups {
    groups: Vec<Vec<Reported>>,
    /// Reports held, and the bytes of their strings.
    reports: usize,
    text: usize,
}

impl SettlingGroups {
    fn add(&mut self, group: usize, entry: &str) -> datafusion::error::Result<()> {
        let r = Reported::parse(entry).ok_or_else(|| {
            DataFusionError::Execution(format!("{SETTLE}: not a report entry: {entry:?}"))
        })?;
        self.reports += 1;
        self.text += r.event_id.capacity() + r.sent.capacity();
        self.groups[group].push(r);
        Ok(())
    }

    /// The groups `emit_to` asks for, no longer held.
    fn take(&mut self, emit_to: EmitTo) -> Vec<Vec<Reported>> {
        let taken = emit_to.take_needed(&mut self.groups);
        for r in taken.iter().flatten() {
            self.reports -= 1;
            self.text -= r.event_id.capacity() + r.sent.capacity();
        }
        taken
    }
}

impl GroupsAccumulator for SettlingGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> datafusion::error::Result<()> {
        self.groups.resize_with(total_num_groups, Vec::new);
        let Some(a) = values.first() else {
            return Ok(());
        };
        let entries = a.as_string::<i32>();
        for (i, &g) in group_indices.iter().enumerate() {
            if opt_filter.is_some_and(|f| !f.is_valid(i) || !f.value(i)) || entries.is_null(i) {
                continue;
            }
            self.add(g, entries.value(i))?;
        }
        Ok(())
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> datafusion::error::Result<()> {
        self.groups.resize_with(total_num_groups, Vec::new);
        let Some(a) = values.first() else {
            return Ok(());
        };
        let states = a.as_string::<i32>();
        for (i, &g) in group_indices.iter().enumerate() {
            if states.is_null(i) {
                continue;
            }
            for entry in states.value(i).split('\n').filter(|e| !e.is_empty()) {
                self.add(g, entry)?;
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> datafusion::error::Result<ArrayRef> {
        let out: StringArray = self
            .take(emit_to)
            .iter_mut()
            .map(|reports| settle(reports, |_| 0).map(|x| x.encode()))
            .collect();
        Ok(Arc::new(out))
    }

    fn state(&mut self, emit_to: EmitTo) -> datafusion::error::Result<Vec<ArrayRef>> {
        let out: StringArray = self
            .take(emit_to)
            .iter()
            .map(|reports| {
                let text: Vec<String> = reports.iter().map(Reported::encode).collect();
                Some(text.join("\n"))
            })
            .collect();
        Ok(vec![Arc::new(out)])
    }

    /// A report's entry is the state of a group of one.
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> datafusion::error::Result<Vec<ArrayRef>> {
        let Some(a) = values.first() else {
            return Ok(Vec::new());
        };
        let entries = a.as_string::<i32>();
        let out: StringArray = (0..entries.len())
            .map(|i| {
                let kept = opt_filter.is_none_or(|f| f.is_valid(i) && f.value(i));
                (kept && !entries.is_null(i)).then(|| entries.value(i))
            })
            .collect();
        Ok(vec![Arc::new(out)])
    }

    fn size(&self) -> usize {
        self.groups.capacity() * std::mem::size_of::<Vec<Reported>>()
            + self.reports * std::mem::size_of::<Reported>()
            + self.text
    }
}

/// One conversion's reports, gathered.
#[derive(Debug, Default)]
struct Settling {
    reports: Vec<Reported>,
    /// Bytes the reports' strings hold.
    text: usize,
}

impl Settling {
    fn add(&mut self, entry: &str) -> datafusion::error::Result<()> {
        let r = Reported::parse(entry).ok_or_else(|| {
            DataFusionError::Execution(format!("{SETTLE}: not a report entry: {entry:?}"))
        })?;
        self.text += r.event_id.capacity() + r.sent.capacity();
        self.reports.push(r);
        Ok(())
    }
}

impl Accumulator for Settling {
    fn update_batch(&mut self, values: &[ArrayRef]) -> datafusion::error::Result<()> {
        let Some(a) = values.first() else {
            return Ok(());
        };
        for entry in a.as_string::<i32>().iter().flatten() {
            self.add(entry)?;
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> datafusion::error::Result<()> {
        let Some(a) = states.first() else {
            return Ok(());
        };
        for state in a.as_string::<i32>().iter().flatten() {
            for entry in state.split('\n').filter(|e| !e.is_empty()) {
                self.add(entry)?;
            }
        }
        Ok(())
    }

    fn state(&mut self) -> datafusion::error::Result<Vec<ScalarValue>> {
        let text: Vec<String> = self.reports.iter().map(Reported::encode).collect();
        Ok(vec![ScalarValue::Utf8(Some(text.join("\n")))])
    }

    fn evaluate(&mut self) -> datafusion::error::Result<ScalarValue> {
        Ok(ScalarValue::Utf8(
            settle(&mut self.reports, |_| 0).map(|x| x.encode()),
        ))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self.reports.capacity() * std::mem::size_of::<Reported>()
            + self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: &str, st: Status, payout: Option<i64>) -> Reported {
        Reported {
            event_id: id.into(),
            authenticated: false,
            status: st,
            duplicates: Duplicates::Replace,
            payout,
            sent: st.name().into(),
        }
    }

    fn with(mut v: Vec<Reported>, d: Duplicates) -> Vec<Reported> {
        for x in &mut v {
            x.duplicates = d;
        }
        v
    }

    fn summary(x: Option<Settled>) -> Option<(Status, i64, i64)> {
        x.map(|s| (s.status, s.count, s.revenue))
    }

    #[test]
    fn settling_follows_the_documented_rules() {
        let reports = |d| {
            with(
                vec![
                    r("03", Status::Sale, Some(5)),
                    r("01", Status::Lead, Some(1)),
                    r("02", Status::Sale, None),
                    r("04", Status::Lead, Some(1)),
                ],
                d,
            )
        };
        let default = |_: &str| 7;
        let mut x = reports(Duplicates::Replace);
        assert_eq!(summary(settle(&mut x, default)), Some((Status::Sale, 1, 5)));
        assert_eq!(x[0].event_id, "01", "in time order");
        let all = |d| summary(settle(&mut reports(d), default));
        assert_eq!(all(Duplicates::Once), Some((Status::Sale, 1, 7)));
        assert_eq!(all(Duplicates::Add), Some((Status::Sale, 1, 12)));
        assert_eq!(all(Duplicates::Every), Some((Status::Sale, 2, 12)));
        // An authenticated report outranks any stage.
        let mut x = reports(Duplicates::Replace);
        x[3].authenticated = true;
        assert_eq!(summary(settle(&mut x, default)), Some((Status::Lead, 1, 1)));
        assert_eq!(settle(&mut [], default), None);
    }

    #[test]
    fn a_reversal_starts_the_duplicates_afresh_and_a_rebill_adds_to_its_sale() {
        let default = |_: &str| 0;
        let mut x = with(
            vec![
                r("01", Status::Sale, Some(10)),
                r("02", Status::Rejected, None),
                r("03", Status::Sale, Some(10)),
            ],
            Duplicates::Add,
        );
        assert_eq!(
            summary(settle(&mut x, default)),
            Some((Status::Sale, 1, 10))
        );
        let pair = |d| {
            with(
                vec![
                    r("01", Status::Sale, Some(30)),
                    r("02", Status::Rebill, Some(30)),
                ],
                d,
            )
        };
        let add = settle(&mut pair(Duplicates::Add), default).unwrap();
        assert_eq!(
            (add.status, add.count, add.revenue),
            (Status::Rebill, 1, 60)
        );
        assert_eq!(add.by_status, [0, 0, 0, 1, 0, 0]);
        let every = settle(&mut pair(Duplicates::Every), default).unwrap();
        assert_eq!((every.count, every.revenue), (2, 60));
        assert_eq!(every.by_status, [0, 0, 1, 1, 0, 0], "each under its own");
        assert_eq!(every.encode(), "B|2|60|0|0|1|1|0|0");
    }

    #[test]
    fn history_entries_read_back() {
        let e = Reported::parse("0a|1|R|a|-250|de|clined").unwrap();
        assert_eq!(
            (
                e.authenticated,
                e.status,
                e.duplicates,
                e.payout,
                e.sent.as_str()
            ),
            (
                true,
                Status::Rejected,
                Duplicates::Add,
                Some(-250),
                "de|clined"
            )
        );
        assert_eq!(Reported::parse("0a|0|S|r||").unwrap().payout, None);
        assert!(Reported::parse("0a|0|X|r||").is_none());
        assert!(Reported::parse("0a|0|S|z||").is_none());
        assert_eq!(Reported::parse(&e.encode()), Some(e));
    }
}
