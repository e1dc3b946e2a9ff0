//! The conversion lifecycle: the canonical statuses a network's reports are read as, the
//! order in which they succeed one another, and how repeated reports of one conversion count
//! (docs/query.md "Statuses"). The edge stores what the network sent; reports apply this.

use std::collections::BTreeMap;
use std::fmt;

use crate::ConfigError;

/// A conversion's canonical status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Lead,
    Pending,
    Sale,
    Rebill,
    Rejected,
    Chargeback,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Lead,
        Status::Pending,
        Status::Sale,
        Status::Rebill,
        Status::Rejected,
        Status::Chargeback,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Status::Lead => "lead",
            Status::Pending => "pending",
            Status::Sale => "sale",
            Status::Rebill => "rebill",
            Status::Rejected => "rejected",
            Status::Chargeback => "chargeback",
        }
    }

    /// A canonical name as a `status_map` value gives it (`hold` is `pending`).
    pub fn parse(s: &str) -> Option<Status> {
        let s = s.trim().to_ascii_lowercase();
        if s == "hold" {
            return Some(Status::Pending);
        }
        Status::ALL.into_iter().find(|st| st.name() == s)
    }

    /// Its stage: a report of an earlier stage than the conversion has reached is not a
    /// change (a lead that arrives after the sale does not undo it); within the final stage
    /// the latest report decides (a sale can be rejected, and a rejection reversed).
    pub fn stage(self) -> u8 {
        match self {
            Status::Lead | Status::Pending => 1,
            _ => 2,
        }
    }

    /// Whether a conversion with this final status counts (in `conversions` and revenue).
    pub fn counts(self) -> bool {
        !matches!(self, Status::Rejected | Status::Chargeback)
    }

    /// The status [`Status::code`] stands for.
    pub fn from_code(c: char) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.code() == c)
    }

    /// One character standing for it in generated SQL.
    pub fn code(self) -> char {
        match self {
            Status::Lead => 'L',
            Status::Pending => 'P',
            Status::Sale => 'S',
            Status::Rebill => 'B',
            Status::Rejected => 'R',
            Status::Chargeback => 'C',
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Statuses one network may map at most.
pub const MAX_STATUSES: usize = 256;

/// A sent status as it is compared: without the spaces around it, in lower case (as SQL's
/// `lower(trim(…))`).
pub fn normal(sent: &str) -> String {
    sent.trim_matches(' ').to_lowercase()
}

/// What every network's reports are understood as without a `status_map` (compared without
/// case). An absent or empty status, or one neither the network's map nor this list knows,
/// is a sale.
pub const UNDERSTOOD: [(&str, Status); 9] = [
    ("lead", Status::Lead),
    ("pending", Status::Pending),
    ("hold", Status::Pending),
    ("sale", Status::Sale),
    ("approved", Status::Sale),
    ("rebill", Status::Rebill),
    ("rejected", Status::Rejected),
    ("declined", Status::Rejected),
    ("chargeback", Status::Chargeback),
];

/// How repeated reports of one conversion at its final status count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Duplicates {
    /// Once, with the first report's payout.
    Once,
    /// Each report is a conversion, with its own payout.
    Every,
    /// Once, with the latest report's payout.
    #[default]
    Replace,
    /// Once, with the reports' payouts added.
    Add,
}

impl Duplicates {
    pub const ALL: [Duplicates; 4] = [
        Duplicates::Once,
        Duplicates::Every,
        Duplicates::Replace,
        Duplicates::Add,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Duplicates::Once => "once",
            Duplicates::Every => "every",
            Duplicates::Replace => "replace",
            Duplicates::Add => "add",
        }
    }

    /// The policy [`Duplicates::code`] stands for.
    pub fn from_code(c: char) -> Option<Duplicates> {
        Duplicates::ALL.into_iter().find(|d| d.code() == c)
    }

    /// One character standing for it in generated SQL.
    pub fn code(self) -> char {
        match self {
            Duplicates::Once => 'o',
            Duplicates::Every => 'e',
            Duplicates::Replace => 'r',
            Duplicates::Add => 'a',
        }
    }
}

/// A network's rules: what it sends for each status, and its duplicate policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lifecycle {
    /// Sent value (lower case) → status, in the map's order.
    pub statuses: Vec<(Box<str>, Status)>,
    pub duplicates: Duplicates,
}

impl Lifecycle {
    /// Checks a network's `status_map` and `duplicates` (`key` is the network's).
    pub fn compile(
        key: &str,
        status_map: &BTreeMap<String, String>,
        duplicates: Option<&str>,
    ) -> Result<Lifecycle, ConfigError> {
        if status_map.len() > MAX_STATUSES {
            return Err(ConfigError::invalid(
                format!("{key}.status_map"),
                format!("at most {MAX_STATUSES} statuses"),
            ));
        }
        let mut statuses: Vec<(Box<str>, Status)> = Vec::with_capacity(status_map.len());
        for (sent, status) in status_map {
            let at = || format!("{key}.status_map.{sent}");
            let sent = normal(sent);
            if sent.is_empty() || sent.chars().count() > 64 {
                return Err(ConfigError::invalid(
                    at(),
                    "a sent status is 1 to 64 characters",
                ));
            }
            let st = Status::parse(status).ok_or_else(|| {
                ConfigError::invalid(
                    at(),
                    format!(
                        "{status:?} is not one of lead, sale, pending (or hold), rejected, chargeback, rebill"
                    ),
                )
            })?;
            if statuses.iter().any(|(s, _)| **s == *sent) {
                return Err(ConfigError::invalid(
                    at(),
                    format!("{sent:?} is mapped twice (sent statuses are compared without case)"),
                ));
            }
            statuses.push((sent.into(), st));
        }
        let duplicates = match duplicates {
            None => Duplicates::default(),
            Some(d) => Duplicates::ALL
                .into_iter()
                .find(|x| x.name() == d)
                .ok_or_else(|| {
                    ConfigError::invalid(
                        format!("{key}.duplicates"),
                        format!("{d:?} is not one of once, every, replace, add"),
                    )
                })?,
        };
        Ok(Lifecycle {
            statuses,
            duplicates,
        })
    }

    /// The status a report that sent `raw` has: the network's map, then [`UNDERSTOOD`], then
    /// a sale.
    pub fn status(&self, raw: Option<&str>) -> Status {
        let raw = normal(raw.unwrap_or_default());
        self.statuses
            .iter()
            .find(|(s, _)| **s == *raw)
            .map(|&(_, st)| st)
            .or_else(|| {
                UNDERSTOOD
                    .iter()
                    .find(|(s, _)| *s == raw)
                    .map(|&(_, st)| st)
            })
            .unwrap_or(Status::Sale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn a_network_map_comes_first_then_the_understood_names_then_sale() {
        let l = Lifecycle::compile(
            "n",
            &map(&[("1", "sale"), ("2", "Rejected"), ("Approved", "pending")]),
            Some("add"),
        )
        .unwrap();
        assert_eq!(l.duplicates, Duplicates::Add);
        assert_eq!(l.status(Some("2")), Status::Rejected);
        assert_eq!(l.status(Some("APPROVED")), Status::Pending, "the map wins");
        assert_eq!(l.status(Some("declined")), Status::Rejected);
        assert_eq!(l.status(Some("hold")), Status::Pending);
        assert_eq!(l.status(Some("weird")), Status::Sale);
        assert_eq!(l.status(None), Status::Sale);
    }

    #[test]
    fn bad_maps_and_policies_name_their_key() {
        let e = Lifecycle::compile("affiliate_networks[0]", &map(&[("1", "won")]), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("affiliate_networks[0].status_map.1") && e.contains("won"),
            "{e}"
        );
        let e = Lifecycle::compile("n", &map(&[("A", "sale"), ("a", "lead")]), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mapped twice"), "{e}");
        let e = Lifecycle::compile("n", &map(&[]), Some("twice"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("n.duplicates"), "{e}");
    }

    #[test]
    fn stages_order_the_statuses() {
        assert!(Status::Lead.stage() < Status::Sale.stage());
        assert_eq!(Status::Sale.stage(), Status::Rejected.stage());
        assert!(!Status::Chargeback.counts() && Status::Pending.counts());
        let codes: std::collections::BTreeSet<char> =
            Status::ALL.iter().map(|s| s.code()).collect();
        assert_eq!(codes.len(), Status::ALL.len());
    }
}
