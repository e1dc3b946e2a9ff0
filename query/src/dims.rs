//! Report dimensions: the fixed ones of SPEC.md and any remapped parameter name, each the SQL
//! expression over `visits` that yields it.

use crate::QueryError;

/// One column a report can be broken down by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dimension {
    Campaign,
    TrafficSource,
    Network,
    Offer,
    /// The offer's link taken (offers with links), as `offer/link`.
    OfferLink,
    LandingPage,
    Path,
    Country,
    Os,
    Browser,
    Device,
    Date,
    Hour,
    /// A traffic source's remapped parameter (`source`, `var_2`, …).
    Remapped(String),
}

/// The fixed dimensions, by the name `--by` takes.
pub const FIXED: [(&str, Dimension); 13] = [
    ("campaign", Dimension::Campaign),
    ("traffic_source", Dimension::TrafficSource),
    ("network", Dimension::Network),
    ("offer", Dimension::Offer),
    ("offer_link", Dimension::OfferLink),
    ("landing_page", Dimension::LandingPage),
    ("path", Dimension::Path),
    ("country", Dimension::Country),
    ("os", Dimension::Os),
    ("browser", Dimension::Browser),
    ("device", Dimension::Device),
    ("date", Dimension::Date),
    ("hour", Dimension::Hour),
];

impl Dimension {
    /// The name `--by` takes and the output's column header.
    pub fn name(&self) -> &str {
        match self {
            Dimension::Remapped(n) => n,
            d => FIXED.iter().find(|(_, f)| f == d).map_or("", |(n, _)| n),
        }
    }

    /// SQL expression over a `visits` row (Utf8; null when the visit has no value).
    pub fn sql(&self) -> String {
        match self {
            Dimension::Campaign => "campaign_id".into(),
            Dimension::TrafficSource => "traffic_source_id".into(),
            Dimension::Network => "network_id".into(),
            Dimension::Offer => "offer_id".into(),
            // `offer/link`: a link's id is unique within its offer only.
            Dimension::OfferLink => OFFER_LINK.into(),
            Dimension::LandingPage => "landing_page_id".into(),
            Dimension::Path => "CAST(path_index AS VARCHAR)".into(),
            Dimension::Country => "country".into(),
            Dimension::Os => "os_family".into(),
            Dimension::Browser => "browser_family".into(),
            Dimension::Device => "device_type".into(),
            Dimension::Date => "dt".into(),
            Dimension::Hour => "hour".into(),
            // The name is checked to be [a-z0-9_] by `parse`, so quoting it is safe.
            Dimension::Remapped(n) => format!("remapped['{n}']"),
        }
    }

    /// Whether rows sort by this dimension's value (time) rather than by traffic.
    pub fn is_time(&self) -> bool {
        matches!(self, Dimension::Date | Dimension::Hour)
    }
}

/// The `offer_link` dimension's value over a `visits` row: `{offer_id}/{offer_link_id}` (ids
/// have no `/`), null for an offer without links.
const OFFER_LINK: &str =
    "CASE WHEN offer_link_id IS NOT NULL THEN concat(offer_id, '/', offer_link_id) END";

/// The fixed dimension names, for error messages.
pub fn fixed_names() -> String {
    FIXED.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// Parses `--by a,b,c`. A name that is not a fixed dimension is taken as a remapped parameter
/// name when it could be one (letters, digits, `_`); whether any visit carries it is checked
/// against the config or the store by the caller.
pub fn parse(list: &str) -> Result<Vec<Dimension>, QueryError> {
    let mut out: Vec<Dimension> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let d = match FIXED.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some((_, d)) => d.clone(),
            None if is_param_name(name) => Dimension::Remapped(name.to_owned()),
            None => return Err(unknown(name, &[])),
        };
        if !out.contains(&d) {
            out.push(d);
        }
    }
    Ok(out)
}

/// Parses a drill-down filter, `campaign=c1`: a dimension as [`parse`] takes it and the value
/// (everything after the first `=`). A filter matches only rows that have a value.
pub fn parse_filter(text: &str) -> Result<(Dimension, String), QueryError> {
    let bad = || QueryError::BadFilter(text.to_owned());
    let (name, value) = text.split_once('=').ok_or_else(bad)?;
    let mut d = parse(name)?;
    if d.len() != 1 {
        return Err(bad());
    }
    let d = d.remove(0);
    // Hours are stored without a leading zero: `hour=07` is hour 7.
    if d == Dimension::Hour {
        return match value.parse::<u8>() {
            Ok(h) if h < 24 => Ok((d, h.to_string())),
            _ => Err(bad()),
        };
    }
    Ok((d, value.to_owned()))
}

/// A remapped name as traffic sources define them.
fn is_param_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// The error for an unknown dimension, listing the fixed ones and the remapped names known.
pub fn unknown(name: &str, remapped: &[String]) -> QueryError {
    let mut valid = fixed_names();
    if remapped.is_empty() {
        valid.push_str(", or a remapped parameter name the traffic sources define");
    } else {
        valid.push_str(", and the remapped names ");
        valid.push_str(&remapped.join(", "));
    }
    QueryError::UnknownDimension {
        name: name.to_owned(),
        valid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_and_remapped_names_parse() {
        let d = parse("campaign, country,source,Date,campaign").unwrap();
        assert_eq!(
            d,
            [
                Dimension::Campaign,
                Dimension::Country,
                Dimension::Remapped("source".into()),
                Dimension::Date
            ]
        );
        assert_eq!(d[2].sql(), "remapped['source']");
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn names_that_cannot_be_parameters_are_refused_with_the_list() {
        for bad in ["country'", "a b", "x;drop", "ü"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("unknown dimension") && e.contains("traffic_source"),
                "{e}"
            );
        }
    }

    #[test]
    fn filters_name_one_dimension_and_a_value() {
        assert_eq!(
            parse_filter("campaign=c=1").unwrap(),
            (Dimension::Campaign, "c=1".to_owned())
        );
        assert_eq!(
            parse_filter("zone=").unwrap(),
            (Dimension::Remapped("zone".into()), String::new())
        );
        assert_eq!(
            parse_filter("hour=07").unwrap(),
            (Dimension::Hour, "7".to_owned())
        );
        for bad in ["campaign", "=c1", "campaign,offer=c1", "hour=24", "hour=x"] {
            assert!(
                parse_filter(bad)
                    .unwrap_err()
                    .to_string()
                    .contains("bad filter"),
                "{bad}"
            );
        }
        assert!(parse_filter("camp'aign=x").is_err());
    }

    #[test]
    fn every_fixed_dimension_names_itself() {
        for (n, d) in FIXED {
            assert_eq!(d.name(), n);
        }
    }
}
