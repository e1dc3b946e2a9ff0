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

/// The report's SQL. Dimensions come from the visit; see the README's attribution rules.
pub fn sql(req: &ReportRequest, names: Option<&Names>) -> String {
    let r = &req.range;
    let dims: String = req
        .dims
        .iter()
        .enumerate()
        .map(|(i, d)| format!("CAST({} AS VARCHAR) AS d{i}, ", d.sql()))
        .collect();
    let keys: String = (0..req.dims.len()).map(|i| format!(", d{i}")).collect();
    let keep = if req.include_bots {
        "true"
    } else {
        "bot IS NOT TRUE"
    };
    let reversed = REVERSED_STATUSES.map(|s| format!("'{s}'")).join(", ");
    let default_payout = names.map_or_else(|| "0".to_owned(), |n| n.default_payout_sql("v.offer"));
    format!(
        "WITH v AS (
            SELECT {dims}kind, cost_micros, offer_id AS offer, {keep} AS keep,
                   CASE WHEN kind = 'visit' THEN event_id END AS visit_key
            FROM visits WHERE {visits}
        ),
        latest AS (
            SELECT click_id,
                   last_value(status ORDER BY event_id) AS status,
                   last_value(payout_micros ORDER BY event_id) AS payout
            FROM conversions
            WHERE {conv_parts} AND {conv_ids}
            GROUP BY click_id, coalesce(txid, '')
        ),
        c AS (
            SELECT click_id, count(*) AS conversions,
                   coalesce(sum(payout), 0) AS priced, count(*) - count(payout) AS unpriced
            FROM latest
            WHERE lower(coalesce(status, '')) NOT IN ({reversed})
            GROUP BY click_id
        )
        SELECT v.kind IS NULL AS unknown_click{keys},
               count(v.visit_key) AS visits,
               count(*) FILTER (WHERE v.kind = 'click') AS clicks,
               coalesce(sum(c.conversions), 0) AS conversions,
               coalesce(sum(c.priced + c.unpriced * {default_payout}), 0) AS revenue_micros,
               coalesce(sum(v.cost_micros) FILTER (WHERE v.kind = 'visit'), 0) AS cost_micros
        FROM c FULL OUTER JOIN v ON v.visit_key = c.click_id
        WHERE coalesce(v.keep, true)
        GROUP BY 1{keys}",
        visits = r.partitions(),
        conv_parts = r.conversions_of_clicks(),
        conv_ids = r.ids("click_id"),
    )
}

/// Runs the report.
pub async fn run(session: &Session, req: &ReportRequest, names: Option<&Names>) -> Result<Report> {
    check_remapped(session, req, names).await?;
    let batches = session.ctx.sql(&sql(req, names)).await?.collect().await?;
    let mut rows = Vec::new();
    for b in &batches {
        read_rows(b, req.dims.len(), &mut rows)?;
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

/// Refuses a dimension that is neither fixed nor a remapped name the config (or, without one,
/// some visit in the range) knows, listing the valid ones.
async fn check_remapped(
    session: &Session,
    req: &ReportRequest,
    names: Option<&Names>,
) -> Result<()> {
    let asked: Vec<&str> = req
        .dims
        .iter()
        .filter_map(|d| match d {
            Dimension::Remapped(n) => Some(n.as_str()),
            _ => None,
        })
        .collect();
    if asked.is_empty() {
        return Ok(());
    }
    let known: Vec<String> = match names {
        Some(n) => n.remapped.iter().cloned().collect(),
        None => {
            let q = format!(
                "SELECT DISTINCT k FROM (SELECT unnest(map_keys(remapped)) AS k FROM visits \
                 WHERE {}) ORDER BY k",
                req.range.partitions()
            );
            let batches = session.ctx.sql(&q).await?.collect().await?;
            let mut known = Vec::new();
            for b in &batches {
                let col = cast(b.column(0), &DataType::Utf8)?;
                known.extend(col.as_string::<i32>().iter().flatten().map(str::to_owned));
            }
            if known.is_empty() {
                // No visits in range: nothing to check against, and the report is empty.
                return Ok(());
            }
            known
        }
    };
    match asked.iter().find(|n| !known.iter().any(|k| k == *n)) {
        Some(n) => Err(dims::unknown(n, &known)),
        None => Ok(()),
    }
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
