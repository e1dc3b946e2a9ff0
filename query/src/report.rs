//! Campaign reports: visits, clicks, conversions, revenue, cost, profit, ROI, CR and EPC by
//! any dimensions, with conversions attributed to their click's visit (README "Attribution").

use std::cmp::Ordering;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};

use crate::dims::{self, Dimension};
use crate::names::Names;
use crate::session::Session;
use crate::{DateRange, Result};

/// Statuses that take a conversion out of the counts and the revenue (compared without case).
pub const REVERSED_STATUSES: [&str; 3] = ["declined", "rejected", "chargeback"];

/// Characters of an event id in text (see `sink::id`).
const ID_LEN: usize = 24;

/// What to report on.
#[derive(Debug, Clone, Default)]
pub struct ReportRequest {
    pub range: DateRange,
    pub dims: Vec<Dimension>,
    /// Count visits flagged as bots (left out by default).
    pub include_bots: bool,
}

/// The summed metrics of one row; money in micro-units, exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metrics {
    pub visits: i64,
    pub clicks: i64,
    pub conversions: i64,
    pub revenue_micros: i64,
    pub cost_micros: i64,
}

impl Metrics {
    pub fn profit_micros(&self) -> i64 {
        self.revenue_micros - self.cost_micros
    }

    /// Profit as a percentage of cost; none without cost.
    pub fn roi(&self) -> Option<f64> {
        (self.cost_micros != 0)
            .then(|| self.profit_micros() as f64 * 100.0 / self.cost_micros as f64)
    }

    /// Conversions per 100 visits; none without visits.
    pub fn cr(&self) -> Option<f64> {
        (self.visits != 0).then(|| self.conversions as f64 * 100.0 / self.visits as f64)
    }

    /// Revenue per visit (currency units); none without visits.
    pub fn epc(&self) -> Option<f64> {
        (self.visits != 0).then(|| self.revenue_micros as f64 / 1e6 / self.visits as f64)
    }

    fn add(&mut self, o: &Metrics) {
        self.visits += o.visits;
        self.clicks += o.clicks;
        self.conversions += o.conversions;
        self.revenue_micros += o.revenue_micros;
        self.cost_micros += o.cost_micros;
    }
}

/// One row: its dimension values (none where the visit had no value) and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub dims: Vec<Option<String>>,
    /// The row of conversions whose click id matches no visit in the store.
    pub unknown_click: bool,
    pub metrics: Metrics,
}

/// A finished report: rows in display order and their totals.
#[derive(Debug, Clone)]
pub struct Report {
    pub dims: Vec<Dimension>,
    pub rows: Vec<Row>,
    pub totals: Metrics,
}

/// A `clicked` CTE (and its trailing comma): for each visit with click-throughs among the
/// visits rows matching `filter`, the offer and network of its latest click (`click_of`,
/// `c_offer`, `c_network`). Ids lead the concatenation, so the max is the latest click.
pub(crate) fn latest_clicks(filter: &str) -> String {
    let latest = "max(concat(event_id, '|', offer_id, '|', network_id))";
    format!(
        "clicked AS (
            SELECT click_id AS click_of,
                   nullif(split_part({latest}, '|', 2), '') AS c_offer,
                   nullif(split_part({latest}, '|', 3), '') AS c_network
            FROM visits
            WHERE kind = 'click' AND {filter}
            GROUP BY click_id
        ),
        "
    )
}

/// The report's SQL. Dimensions come from the visit; see the README's attribution rules.
pub fn sql(req: &ReportRequest, names: Option<&Names>) -> String {
    let r = &req.range;
    let priced_offers = names.is_some_and(|n| !n.default_payouts.is_empty());
    // A landing-page visit gets its offer at the click-through: such a visit (and its
    // conversions) goes to the offer of its latest click. Only joined when the offer counts.
    let by_click = priced_offers
        || req
            .dims
            .iter()
            .any(|d| matches!(d, Dimension::Offer | Dimension::Network));
    let dim_sql = |d: &Dimension| match d {
        Dimension::Offer if by_click => "coalesce(offer_id, c_offer)".to_owned(),
        Dimension::Network if by_click => "coalesce(network_id, c_network)".to_owned(),
        d => d.sql(),
    };
    let dims: String = req
        .dims
        .iter()
        .enumerate()
        .map(|(i, d)| format!("CAST({} AS VARCHAR) AS d{i}, ", dim_sql(d)))
        .collect();
    let keys: String = (0..req.dims.len()).map(|i| format!(", d{i}")).collect();
    let keep = if req.include_bots {
        "true"
    } else {
        "bot IS NOT TRUE"
    };
    let reversed = REVERSED_STATUSES.map(|s| format!("'{s}'")).join(", ");
    // Without default payouts a conversion without one earns 0, and the offer is not needed.
    let (offer, revenue) = match names.filter(|n| !n.default_payouts.is_empty()) {
        Some(n) => (
            "coalesce(offer_id, c_offer) AS offer, ",
            format!(
                "c.priced + c.unpriced * {}",
                n.default_payout_sql("v.offer")
            ),
        ),
        None => ("", "c.priced".to_owned()),
    };
    // Plan notes: the conversions side (a few % of the visits) is the hash join's build side
    // and is shared by every probing thread (see `session`). The latest report of each
    // conversion is found as the max of `event_id || reversed-flag || payout`: ids are
    // fixed-width, time-ordered and unique, so the max string is the latest report's, and a
    // max over strings runs several times faster than `last_value(… ORDER BY event_id)`.
    // Clicks are counted as rows with a kind but no visit key, sparing a string comparison.
    let (clicked, join) = if by_click {
        (
            latest_clicks(&format!(
                "{} AND {}",
                r.conversions_of_clicks(),
                r.ids("click_id")
            )),
            " LEFT JOIN clicked ON click_of = event_id",
        )
    } else {
        (String::new(), "")
    };
    format!(
        "WITH {clicked}v AS (
            SELECT {dims}{offer}kind, {keep} AS keep,
                   CASE WHEN kind = 'visit' THEN cost_micros END AS cost,
                   CASE WHEN kind = 'visit' THEN event_id END AS visit_key
            FROM visits{join} WHERE {visits}
        ),
        latest AS (
            SELECT click_id,
                   max(concat(event_id,
                              CASE WHEN lower(status) IN ({reversed}) THEN '1' ELSE '0' END,
                              CAST(payout_micros AS VARCHAR))) AS last
            FROM conversions
            WHERE {conv_parts} AND {conv_ids}
            GROUP BY click_id, txid
        ),
        c AS (
            SELECT click_id, count(*) AS conversions,
                   coalesce(sum(CAST(NULLIF(substr(last, {p}), '') AS BIGINT)), 0) AS priced,
                   count(*) - count(NULLIF(substr(last, {p}), '')) AS unpriced
            FROM latest
            WHERE substr(last, {f}, 1) = '0'
            GROUP BY click_id
        )
        SELECT v.kind IS NULL AS unknown_click{keys},
               count(v.visit_key) AS visits,
               count(v.kind) - count(v.visit_key) AS clicks,
               coalesce(sum(c.conversions), 0) AS conversions,
               coalesce(sum({revenue}), 0) AS revenue_micros,
               coalesce(sum(v.cost), 0) AS cost_micros
        FROM c FULL OUTER JOIN v ON v.visit_key = c.click_id
        WHERE coalesce(v.keep, true)
        GROUP BY 1{keys}",
        visits = r.rows(),
        conv_parts = r.conversions_of_clicks(),
        conv_ids = r.ids("click_id"),
        f = ID_LEN + 1,
        p = ID_LEN + 2,
    )
}

/// Runs the report.
pub async fn run(session: &Session, req: &ReportRequest, names: Option<&Names>) -> Result<Report> {
    if let Some(n) = names {
        check_remapped(req, &n.remapped.iter().cloned().collect::<Vec<_>>(), |_| {
            true
        })?;
    }
    let batches = session.ctx.sql(&sql(req, names)).await?.collect().await?;
    let mut rows = Vec::new();
    for b in &batches {
        read_rows(b, req.dims.len(), &mut rows)?;
    }
    if names.is_none() {
        // Without a config, a remapped name is known when some visit carries it. Only when a
        // remapped column came out empty is it worth a scan of the names visits do carry.
        let empty = |i: usize| rows.iter().all(|r| r.unknown_click || r.dims[i].is_none());
        if rows.iter().any(|r| !r.unknown_click)
            && req
                .dims
                .iter()
                .enumerate()
                .any(|(i, d)| matches!(d, Dimension::Remapped(_)) && empty(i))
        {
            let known = remapped_names(session, &req.range).await?;
            check_remapped(req, &known, empty)?;
        }
    }
    sort(&req.dims, &mut rows);
    let mut totals = Metrics::default();
    for r in &rows {
        totals.add(&r.metrics);
    }
    Ok(Report {
        dims: req.dims.clone(),
        rows,
        totals,
    })
}

/// Refuses a remapped dimension that is not in `known` (when `suspect` says its column may
/// be unknown), listing the valid names.
fn check_remapped(
    req: &ReportRequest,
    known: &[String],
    suspect: impl Fn(usize) -> bool,
) -> Result<()> {
    for (i, d) in req.dims.iter().enumerate() {
        if let Dimension::Remapped(n) = d
            && suspect(i)
            && !known.iter().any(|k| k == n)
        {
            return Err(dims::unknown(n, known));
        }
    }
    Ok(())
}

/// The remapped names the visits within `range` carry.
async fn remapped_names(session: &Session, range: &DateRange) -> Result<Vec<String>> {
    let q = format!(
        "SELECT DISTINCT k FROM (SELECT unnest(map_keys(remapped)) AS k FROM visits \
         WHERE {}) ORDER BY k",
        range.partitions()
    );
    let batches = session.ctx.sql(&q).await?.collect().await?;
    let mut known = Vec::new();
    for b in &batches {
        let col = cast(b.column(0), &DataType::Utf8)?;
        known.extend(col.as_string::<i32>().iter().flatten().map(str::to_owned));
    }
    Ok(known)
}

fn read_rows(b: &RecordBatch, ndims: usize, out: &mut Vec<Row>) -> Result<()> {
    let unknown = b.column(0).as_boolean();
    let dims: Vec<_> = (0..ndims)
        .map(|i| cast(b.column(1 + i), &DataType::Utf8))
        .collect::<Result<_, _>>()?;
    let metric = |i: usize| cast(b.column(1 + ndims + i), &DataType::Int64);
    let m: Vec<_> = (0..5).map(metric).collect::<Result<_, _>>()?;
    let m: Vec<_> = m.iter().map(|a| a.as_primitive::<Int64Type>()).collect();
    for row in 0..b.num_rows() {
        let value = |a: &arrow::array::PrimitiveArray<Int64Type>| {
            if a.is_null(row) { 0 } else { a.value(row) }
        };
        out.push(Row {
            dims: dims
                .iter()
                .map(|d| {
                    let s = d.as_string::<i32>();
                    (!s.is_null(row)).then(|| s.value(row).to_owned())
                })
                .collect(),
            unknown_click: unknown.value(row),
            metrics: Metrics {
                visits: value(m[0]),
                clicks: value(m[1]),
                conversions: value(m[2]),
                revenue_micros: value(m[3]),
                cost_micros: value(m[4]),
            },
        });
    }
    Ok(())
}

/// Display order: by time when a time dimension is asked for, else by traffic (visits, then
/// conversions, then revenue, descending), ties by the values; missing values after present
/// ones; the unknown-click row last.
fn sort(dims: &[Dimension], rows: &mut [Row]) {
    let by_values = |a: &Row, b: &Row| {
        a.dims
            .iter()
            .zip(&b.dims)
            .map(|(x, y)| match (x, y) {
                (Some(x), Some(y)) => x.cmp(y),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            })
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    };
    let by_time = dims.iter().any(Dimension::is_time);
    rows.sort_by(|a, b| {
        a.unknown_click.cmp(&b.unknown_click).then_with(|| {
            if by_time {
                by_values(a, b)
            } else {
                let (x, y) = (&a.metrics, &b.metrics);
                (y.visits, y.conversions, y.revenue_micros)
                    .cmp(&(x.visits, x.conversions, x.revenue_micros))
                    .then_with(|| by_values(a, b))
            }
        })
    });
}
