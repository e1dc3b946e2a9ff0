//! `--from/--to`: inclusive UTC dates, and the predicates that let a scan skip what lies
//! outside them — partition values (`dt=`) for whole directories, and the time a click id
//! carries in its first 12 hex digits for the conversions of those clicks.

use chrono::{Days, NaiveDate};

use crate::QueryError;

/// Days of clock difference between nodes allowed for when a conversion's own partition is
/// pruned by its click's date (a conversion is never recorded before its click, but the
/// nodes that saw each may disagree on the time).
const SKEW_DAYS: u64 = 1;

/// An inclusive range of UTC dates; either end may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DateRange {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    /// Exact bounds in Unix milliseconds `[start, end)` within those dates, when the range is
    /// narrower than whole days (a load test's run; see [`DateRange::window`]).
    pub window: Option<(i64, i64)>,
}

/// Parses `YYYY-MM-DD`, naming the flag in the error.
pub fn parse_date(flag: &str, s: &str) -> Result<NaiveDate, QueryError> {
    let bad = || QueryError::BadDate {
        flag: flag.to_owned(),
        value: s.to_owned(),
    };
    if s.len() != 10 {
        return Err(bad());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| bad())
}

impl DateRange {
    /// The range given by the optional `--from` and `--to` values.
    pub fn parse(from: Option<&str>, to: Option<&str>) -> Result<Self, QueryError> {
        let from = from.map(|s| parse_date("--from", s)).transpose()?;
        let to = to.map(|s| parse_date("--to", s)).transpose()?;
        if let (Some(f), Some(t)) = (from, to)
            && f > t
        {
            return Err(QueryError::EmptyRange { from: f, to: t });
        }
        Ok(DateRange {
            from,
            to,
            window: None,
        })
    }

    /// The milliseconds `[start_ms, end_ms)`, within the UTC dates that hold them.
    pub fn window(start_ms: i64, end_ms: i64) -> Self {
        let day = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).map(|t| t.date_naive());
        DateRange {
            from: day(start_ms),
            to: day(end_ms.max(start_ms + 1) - 1),
            window: Some((start_ms, end_ms)),
        }
    }

    /// First millisecond of the range, if bounded below.
    pub fn start_ms(&self) -> Option<i64> {
        match self.window {
            Some((start, _)) => Some(start),
            None => self.from.map(midnight_ms),
        }
    }

    /// First millisecond after the range, if bounded above.
    pub fn end_ms(&self) -> Option<i64> {
        match self.window {
            Some((_, end)) => Some(end),
            None => self
                .to
                .map(|d| midnight_ms(d.checked_add_days(Days::new(1)).unwrap_or(d))),
        }
    }

    /// SQL predicate selecting a table's rows made within the range: its partitions and,
    /// for a window narrower than whole days, its event ids too.
    pub fn rows(&self) -> String {
        match self.window {
            Some(_) => format!("{} AND {}", self.partitions(), self.ids("event_id")),
            None => self.partitions(),
        }
    }

    /// SQL predicate on a table's `dt` partition column (always true when unbounded).
    pub fn partitions(&self) -> String {
        let mut p = Vec::new();
        if let Some(f) = self.from {
            p.push(format!("dt >= '{f}'"));
        }
        if let Some(t) = self.to {
            p.push(format!("dt <= '{t}'"));
        }
        and(p)
    }

    /// SQL predicate selecting rows of `column`, an event id column, whose ids were made
    /// within the range. Ids start with their millisecond time as 12 lowercase hex digits, so
    /// comparing strings compares times and Parquet statistics can skip row groups.
    pub fn ids(&self, column: &str) -> String {
        let mut p = Vec::new();
        if let Some(ms) = self.start_ms() {
            p.push(format!("{column} >= '{ms:012x}'"));
        }
        if let Some(ms) = self.end_ms() {
            p.push(format!("{column} < '{ms:012x}'"));
        }
        and(p)
    }

    /// SQL predicate on the `dt` partitions that can hold conversions of clicks made within
    /// the range: from the range's first day (less the allowed clock skew) on, with no end —
    /// a conversion may come any time after its click.
    pub fn conversions_of_clicks(&self) -> String {
        match self.from {
            Some(f) => {
                let f = f.checked_sub_days(Days::new(SKEW_DAYS)).unwrap_or(f);
                format!("dt >= '{f}'")
            }
            None => "true".to_owned(),
        }
    }

    /// SQL predicate on a `ts` column (timestamp, UTC) within the range.
    pub fn times(&self, column: &str) -> String {
        let mut p = Vec::new();
        if let Some(ms) = self.start_ms() {
            p.push(format!("{column} >= to_timestamp_millis({ms})"));
        }
        if let Some(ms) = self.end_ms() {
            p.push(format!("{column} < to_timestamp_millis({ms})"));
        }
        and(p)
    }
}

fn midnight_ms(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0)
        .map_or(0, |t| t.and_utc().timestamp_millis())
}

fn and(parts: Vec<String>) -> String {
    if parts.is_empty() {
        "true".to_owned()
    } else {
        parts.join(" AND ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_strict_iso() {
        assert!(parse_date("--from", "2026-11-27").is_ok());
        for bad in [
            "2026-11-31",
            "2026-1-27",
            "27-11-2026",
            "2026-11-27T00:00",
            "",
            "yesterday",
        ] {
            let e = parse_date("--from", bad).unwrap_err().to_string();
            assert!(
                e.contains("--from") && e.contains("YYYY-MM-DD"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_reversed_range_is_refused() {
        let e = DateRange::parse(Some("2026-11-28"), Some("2026-11-27")).unwrap_err();
        assert!(e.to_string().contains("after"), "{e}");
        assert!(DateRange::parse(Some("2026-11-27"), Some("2026-11-27")).is_ok());
    }

    #[test]
    fn predicates_cover_whole_utc_days() {
        let r = DateRange::parse(Some("2026-11-27"), Some("2026-11-28")).unwrap();
        assert_eq!(r.partitions(), "dt >= '2026-11-27' AND dt <= '2026-11-28'");
        // 2026-11-27T00:00Z = 1795737600000 ms; 2026-11-29T00:00Z = 1795910400000 ms.
        assert_eq!(r.start_ms(), Some(1_795_737_600_000));
        assert_eq!(r.end_ms(), Some(1_795_910_400_000));
        assert_eq!(
            r.ids("click_id"),
            format!(
                "click_id >= '{:012x}' AND click_id < '{:012x}'",
                1_795_737_600_000u64, 1_795_910_400_000u64
            )
        );
        assert_eq!(r.conversions_of_clicks(), "dt >= '2026-11-26'");
        let open = DateRange::default();
        assert_eq!(open.partitions(), "true");
        assert_eq!(open.ids("click_id"), "true");
        assert_eq!(open.times("ts"), "true");
        assert_eq!(open.conversions_of_clicks(), "true");
    }

    #[test]
    fn id_bounds_order_like_the_ids_they_bound() {
        let r = DateRange::parse(Some("2026-11-27"), Some("2026-11-27")).unwrap();
        let inside = sink::EventId::new(r.start_ms().unwrap() as u64 + 5, 7, 1, 9).to_hex();
        let inside = std::str::from_utf8(&inside).unwrap().to_owned();
        let lo = format!("{:012x}", r.start_ms().unwrap());
        let hi = format!("{:012x}", r.end_ms().unwrap());
        assert!(inside.as_str() >= lo.as_str() && inside.as_str() < hi.as_str());
        let last_ms =
            sink::EventId::new(r.end_ms().unwrap() as u64 - 1, 65535, 255, 1 << 23).to_hex();
        assert!(std::str::from_utf8(&last_ms).unwrap() < hi.as_str());
    }

    #[test]
    fn a_window_bounds_ids_to_the_millisecond_and_dates_to_its_days() {
        // 2026-11-27T23:59:59.500Z to 2026-11-28T00:00:01Z.
        let (start, end) = (1_795_823_999_500, 1_795_824_001_000);
        let r = DateRange::window(start, end);
        assert_eq!(r.partitions(), "dt >= '2026-11-27' AND dt <= '2026-11-28'");
        assert_eq!(
            r.rows(),
            format!(
                "dt >= '2026-11-27' AND dt <= '2026-11-28' AND event_id >= '{start:012x}' \
                 AND event_id < '{end:012x}'"
            )
        );
        assert_eq!(r.conversions_of_clicks(), "dt >= '2026-11-26'");
        let day = DateRange::parse(Some("2026-11-27"), None).unwrap();
        assert_eq!(day.rows(), day.partitions());
    }
}
