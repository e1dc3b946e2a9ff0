//! The conversion lifecycle in reports and the feed (docs/query.md "Statuses"): each
//! report's canonical status from what it sent (its network's `status_map`, then the names
//! every network is understood by) and its network's duplicate policy, as SQL — one
//! character each, as [`catalog::lifecycle`] codes them — and [`settle`], what a
//! conversion's reports make of it.

use catalog::lifecycle::{Duplicates, Status, UNDERSTOOD};

use crate::names::Names;
use crate::sql_literal;

mod aggregate;

pub use aggregate::{SETTLE, SettleUdaf};

/// The network whose statuses and policy a report follows: the one whose postback token it
/// carried (`auth_network`), else its click's (`network`).
pub fn reporting_network(auth_network: &str, network: &str) -> String {
    format!("coalesce({auth_network}, {network})")
}

/// The SQL list of the status codes `keep` selects: `'L', 'P'`.
pub fn codes_sql(keep: impl Fn(Status) -> bool) -> String {
    Status::ALL
        .into_iter()
        .filter(|&s| keep(s))
        .map(|s| format!("'{}'", s.code()))
        .collect::<Vec<_>>()
        .join(", ")
}

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
