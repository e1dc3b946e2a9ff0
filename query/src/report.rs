//! Campaign reports: visits, clicks, conversions, revenue, cost, profit, ROI, CR and EPC by
//! any dimensions, with conversions attributed to their click's visit (docs/query.md "Attribution").

use arrow::array::AsArray;
use arrow::compute::cast;
use arrow::datatypes::DataType;

use catalog::lifecycle::Status;

use crate::dims::{self, Dimension};
use crate::names::Names;
use crate::session::Session;
use crate::trust::Rules;
use crate::{DateRange, Result};

mod rows;

use rows::{read_rows, sort};

/// The report's conversion counts by final status, as their output columns name them.
pub const STATUS_COLUMNS: [(&str, Status); 6] = [
    ("leads", Status::Lead),
    ("sales", Status::Sale),
    ("pending", Status::Pending),
    ("rebills", Status::Rebill),
    ("rejected", Status::Rejected),
    ("chargebacks", Status::Chargeback),
];

/// What to report on.
#[derive(Debug, Clone, Default)]
pub struct ReportRequest {
    pub range: DateRange,
    pub dims: Vec<Dimension>,
    /// Count visits flagged as bots (left out by default).
    pub include_bots: bool,
    /// Only rows whose dimension has this value (a drill-down: `campaign = c1`, then by offer).
    pub filters: Vec<(Dimension, String)>,
}

impl ReportRequest {
    /// The dimensions the SQL groups by: the asked ones, then each filtered one not among them.
    fn grouped(&self) -> Vec<Dimension> {
        let mut all = self.dims.clone();
        for (d, _) in &self.filters {
            if !all.contains(d) {
                all.push(d.clone());
            }
        }
        all
    }
}

/// The summed figures of one row (visits, clicks, conversions, revenue, cost; profit, ROI,
/// CR and EPC derived from them); money in micro-units, exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    pub visits: i64,
    pub clicks: i64,
    pub conversions: i64,
    pub revenue_micros: i64,
    pub cost_micros: i64,
}

impl Figures {
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

    fn add(&mut self, o: &Figures) {
        self.visits += o.visits;
        self.clicks += o.clicks;
        self.conversions += o.conversions;
        self.revenue_micros += o.revenue_micros;
        self.cost_micros += o.cost_micros;
    }
}

/// Conversions by final status, in [`STATUS_COLUMNS`]' order: leads, sales, pending and
/// rebills are among the row's `conversions`; rejected ones and chargebacks are not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts(pub [i64; 6]);

impl StatusCounts {
    fn add(&mut self, o: &StatusCounts) {
        for (a, b) in self.0.iter_mut().zip(o.0) {
            *a += b;
        }
    }
}

/// One row: its dimension values (none where the visit had no value) and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub dims: Vec<Option<String>>,
    /// The row of conversions whose click id matches no visit in the store.
    pub unknown_click: bool,
    pub figures: Figures,
    pub statuses: StatusCounts,
    /// The revenue of the conversions of each final status (micro-units; for rejected ones
    /// and chargebacks, what they would have earned).
    pub status_revenue: StatusCounts,
    /// Conversions of each of the report's `types`.
    pub types: Vec<i64>,
    /// The catalog's name for each dimension value that has one (campaigns, sources,
    /// networks, offers, landing pages), when the report was given names.
    pub names: Vec<Option<String>>,
}

/// A finished report: rows in display order and their totals.
#[derive(Debug, Clone)]
pub struct Report {
    pub dims: Vec<Dimension>,
    pub rows: Vec<Row>,
    pub totals: Figures,
    pub status_totals: StatusCounts,
    pub status_revenue_totals: StatusCounts,
    /// Which dimensions carry names (`{dim}_name` columns in the output).
    pub named: Vec<bool>,
    /// The conversion types with a column (`type:{name}`), and their totals.
    pub types: Vec<String>,
    pub type_totals: Vec<i64>,
}

/// A `clicked` CTE (and its trailing comma): for each visit with click-throughs among the
/// visits rows matching `filter`, the offer, offer link and network of its latest click
/// (`click_of`, `c_offer`, `c_offer_link`, `c_network`), that network's conversion rules (`c_token`, `c_pixels`), and every
/// network its clicks went to (`c_networks`). Ids lead the concatenation, so the max is the
/// latest click.
pub(crate) fn latest_clicks(filter: &str) -> String {
    let latest = "max(concat(event_id, '|', offer_id, '|', network_id, '|', \
                  CAST(network_token AS VARCHAR), '|', network_pixels, '|', offer_link_id))";
    format!(
        "clicked AS (
            SELECT click_id AS click_of,
                   nullif(split_part({latest}, '|', 2), '') AS c_offer,
                   nullif(split_part({latest}, '|', 3), '') AS c_network,
                   CASE split_part({latest}, '|', 4) WHEN 'true' THEN true
                        WHEN 'false' THEN false END AS c_token,
                   nullif(split_part({latest}, '|', 5), '') AS c_pixels,
                   nullif(split_part({latest}, '|', 6), '') AS c_offer_link,
                   array_agg(DISTINCT network_id) AS c_networks
            FROM visits
            WHERE kind = 'click' AND {filter}
            GROUP BY click_id
        ),
        "
    )
}

/// The report's SQL. Dimensions come from the visit; see the attribution and trust
/// rules of docs/query.md.
///
/// Plan notes: visits are counted by their dimensions in one scan that needs no event id
/// (`v`). Conversion reports (a few % of the visits) are joined to their click's visit in a
/// second (`j`): they are the hash join's build side, shared by every probing thread (see
/// `session`), and the visits' scan only materialises the rows that match. Each report is
/// judged there against its click's network, before the reports of each conversion are
/// settled (docs/query.md "Statuses"), so a refused report can never replace one that
/// counts. Each conversion's reports are gathered by one aggregate and settled by
/// [`crate::lifecycle::settle`] (`ct_settle`, which the session registers), the code the
/// feed settles with too. Not window functions nor `array_agg`: they keep slices of the
/// joined batches, which share the visits' buffers and are accounted many times their
/// size; and not CTEs read twice, which are planned twice, the visits' join with them.
pub fn sql(req: &ReportRequest, names: Option<&Names>) -> String {
    sql_with(req, names, "cost_micros", &[])
}

/// [`sql`] with `visit_cost` as a visit's cost (an expression over the visits' columns:
/// [`crate::costs::visit_cost_sql`] applies cost updates), and a column counting the
/// conversions of each of `types` (lower case), after the status columns.
pub fn sql_with(
    req: &ReportRequest,
    names: Option<&Names>,
    visit_cost: &str,
    types: &[String],
) -> String {
    let r = &req.range;
    let grouped = req.grouped();
    let priced_offers = names.is_some_and(|n| !n.default_payouts.is_empty());
    // A landing-page visit gets its offer at the click-through: such a visit (and its
    // conversions) goes to the offer of its latest click.
    let by_click = |d: &Dimension| {
        matches!(
            d,
            Dimension::Offer | Dimension::OfferLink | Dimension::Network
        )
    };
    let visits_by_click = grouped.iter().any(by_click);
    let click_of = |d: &Dimension| match d {
        Dimension::Offer => "c_offer",
        Dimension::OfferLink => {
            "CASE WHEN c_offer_link IS NOT NULL THEN concat(c_offer, '/', c_offer_link) END"
        }
        _ => "c_network",
    };
    // The output's dimensions lead `grouped`; the filtered-only ones after them are computed
    // only to be filtered on, where each visit and each conversion gets its values.
    let keys: String = (0..req.dims.len()).map(|i| format!(", d{i}")).collect();
    let filter: String = req
        .filters
        .iter()
        .map(|(d, value)| {
            let i = grouped.iter().position(|g| g == d).unwrap_or_default();
            format!(" AND d{i} = {}", crate::sql_literal(value))
        })
        .collect();
    let dims_as = |f: &dyn Fn(usize, &Dimension) -> String| -> String {
        grouped
            .iter()
            .enumerate()
            .map(|(i, d)| format!("{} AS d{i}, ", f(i, d)))
            .collect()
    };
    // Visits (and clicks) by their dimensions.
    let v_dims = dims_as(&|_, d| {
        if by_click(d) {
            format!("CAST(coalesce({}, {}) AS VARCHAR)", d.sql(), click_of(d))
        } else {
            format!("CAST({} AS VARCHAR)", d.sql())
        }
    });
    // The visit of each report: its dimensions (an offer or network still to be completed
    // from the latest click), and its network's rules.
    let x_dims = dims_as(&|_, d| format!("CAST({} AS VARCHAR)", d.sql()));
    let j_dims = dims_as(&|i, d| {
        if by_click(d) {
            format!(
                "coalesce(d{i}, CASE WHEN visit_key IS NOT NULL THEN {} END)",
                click_of(d)
            )
        } else {
            format!("d{i}")
        }
    });
    let keep = if req.include_bots {
        "true"
    } else {
        "bot IS NOT TRUE"
    };
    let trust = Rules {
        known: "visit_key IS NOT NULL",
        method: "method",
        auth: "auth",
        auth_network: "auth_network_id",
        network: "CASE WHEN click_of IS NULL THEN x_network ELSE c_network END",
        token: "CASE WHEN click_of IS NULL THEN x_token ELSE c_token END",
        pixels: "CASE WHEN click_of IS NULL THEN x_pixels ELSE c_pixels END",
        clicked_networks: "c_networks",
    };
    let reporting = crate::lifecycle::reporting_network("auth_network_id", trust.network);
    // Without default payouts a conversion without one earns 0.
    let default_payout = match names.filter(|_| priced_offers) {
        Some(n) => n.default_payout_sql("offer", "event_id"),
        None => "0".to_owned(),
    };
    // CPA and RevShare campaigns cost per conversion: the conversions then keep their
    // visit's campaign.
    let priced_conversions = names.is_some_and(|n| !n.conversion_costs.is_empty());
    let clicks_in_range = format!("{} AND {}", r.conversions_of_clicks(), r.ids("click_id"));
    // The clicks are the join's build side, the visits its probe: built the other way round
    // (a LEFT JOIN from the visits), the hash table held every visit — 19 GiB for 50 M.
    let v_from = if visits_by_click {
        "clicked RIGHT JOIN visits ON click_of = event_id"
    } else {
        "visits"
    };
    format!(
        "WITH {clicked}v AS (
            SELECT * FROM (
                SELECT {v_dims}kind, CASE WHEN kind = 'visit' THEN {visit_cost} END AS cost
                FROM {v_from} WHERE {visits} AND {keep}
            ) WHERE true{filter}
        ),
        r AS (
            SELECT click_id, txid, event_id, status, payout_micros, method, auth, auth_network_id{r_type}
            FROM conversions
            WHERE {conv_parts} AND {conv_ids}
        ),
        vx AS (
            SELECT event_id AS visit_key, {x_dims}{x_campaign}offer_id AS x_offer, network_id AS x_network,
                   network_token AS x_token, network_pixels AS x_pixels, {keep} AS keep
            FROM visits WHERE kind = 'visit' AND {visits}
        ),
        j AS (
            SELECT * FROM (
                SELECT {j_dims}{j_campaign}visit_key IS NULL AS unknown_click,
                       coalesce(x_offer, c_offer) AS offer, click_id, txid, event_id,{j_type}
                       {payout} AS payout, auth, {status} AS st, {duplicates} AS dup
                FROM r LEFT JOIN vx ON visit_key = click_id
                       LEFT JOIN clicked ON click_of = click_id
                WHERE coalesce(keep, true) AND {refusal} IS NULL
            ) WHERE true{filter}
        ),
        per AS (
            SELECT unknown_click{keys}{campaign}, {settle}({entry}) AS settled{per_type}
            FROM j
            GROUP BY click_id, coalesce(txid, ''), unknown_click{keys}{campaign}, offer
        ),
        fin AS (
            SELECT unknown_click{keys}{campaign}{fin_type}, {fst} AS fst, CAST({n} AS BIGINT) AS n,
                   CAST({revenue} AS BIGINT) AS revenue, {by_status}
            FROM per
        ),
        c AS (
            SELECT unknown_click{keys},
                   sum(CASE WHEN fst IN ({counted}) THEN n ELSE 0 END) AS conversions,
                   sum(CASE WHEN fst IN ({counted}) THEN revenue ELSE 0 END) AS revenue_micros,
                   sum(CASE WHEN fst IN ({counted}) THEN {conversion_cost} ELSE 0 END)
                       AS cost_micros,
                   {sum_by_status}
            FROM fin
            GROUP BY unknown_click{keys}
        )
        SELECT unknown_click{keys},
               sum(visits) AS visits, sum(clicks) AS clicks,
               sum(conversions) AS conversions, sum(revenue_micros) AS revenue_micros,
               sum(cost_micros) AS cost_micros{sum_statuses}
        FROM (
            SELECT false AS unknown_click{keys},
                   sum(CASE WHEN kind = 'visit' THEN 1 ELSE 0 END) AS visits,
                   sum(CASE WHEN kind = 'click' THEN 1 ELSE 0 END) AS clicks,
                   CAST(0 AS BIGINT) AS conversions, CAST(0 AS BIGINT) AS revenue_micros,
                   coalesce(sum(cost), 0) AS cost_micros{zero_statuses}
            FROM v GROUP BY 1{keys}
            UNION ALL
            SELECT unknown_click{keys}, CAST(0 AS BIGINT), CAST(0 AS BIGINT),
                   conversions, revenue_micros, CAST(cost_micros AS BIGINT){statuses}
            FROM c
        )
        GROUP BY unknown_click{keys}",
        clicked = latest_clicks(&clicks_in_range),
        // Each conversion's type, only when some are columns.
        r_type = if types.is_empty() { "" } else { ", conversion_type" },
        j_type = if types.is_empty() {
            ""
        } else {
            " lower(trim(coalesce(conversion_type, ''))) AS ctype,"
        },
        per_type = if types.is_empty() { "" } else { ", max(ctype) AS ctype" },
        fin_type = if types.is_empty() { "" } else { ", ctype" },
        x_campaign = if priced_conversions { "campaign_id AS x_campaign, " } else { "" },
        j_campaign = if priced_conversions { "x_campaign AS campaign, " } else { "" },
        campaign = if priced_conversions { ", campaign" } else { "" },
        conversion_cost = names.map_or_else(
            || "0".to_owned(),
            |n| n.conversion_cost_sql("campaign", "n", "revenue")
        ),
        visits = r.rows(),
        conv_parts = r.conversions_of_clicks(),
        conv_ids = r.ids("click_id"),
        refusal = trust.refusal(),
        payout = trust.payout("payout_micros"),
        status = crate::lifecycle::status_sql(names, &reporting, "status"),
        duplicates = crate::lifecycle::duplicates_sql(names, &reporting),
        counted = crate::lifecycle::codes_sql(Status::counts),
        settle = crate::lifecycle::SETTLE,
        entry = crate::lifecycle::reported_sql(
            "event_id",
            "auth",
            "st",
            "dup",
            &format!("coalesce(payout, {default_payout})"),
            "''"
        ),
        fst = crate::lifecycle::settled_part("settled", 1),
        n = crate::lifecycle::settled_part("settled", 2),
        revenue = crate::lifecycle::settled_part("settled", 3),
        by_status = STATUS_COLUMNS
            .map(|(name, st)| format!(
                "CAST({} AS BIGINT) AS {name}",
                crate::lifecycle::settled_part("settled", crate::lifecycle::settled_count_part(st))
            ))
            .join(", "),
        sum_by_status = STATUS_COLUMNS
            .map(|(name, _)| format!("sum({name}) AS {name}"))
            .join(", ")
            + &STATUS_COLUMNS
                .map(|(name, st)| format!(
                    ", sum(CASE WHEN fst = '{}' THEN revenue ELSE 0 END) AS revenue_{name}",
                    st.code()
                ))
                .concat()
            + &(0..types.len())
                .map(|i| format!(
                    ", sum(CASE WHEN fst IN ({counted}) AND ctype = {} THEN n ELSE 0 END) AS t{i}",
                    crate::sql_literal(&types[i]),
                    counted = crate::lifecycle::codes_sql(Status::counts),
                ))
                .collect::<String>(),
        statuses = STATUS_COLUMNS.map(|(name, _)| format!(", {name}")).concat()
            + &STATUS_COLUMNS.map(|(name, _)| format!(", revenue_{name}")).concat()
            + &(0..types.len()).map(|i| format!(", t{i}")).collect::<String>(),
        zero_statuses = STATUS_COLUMNS
            .map(|(name, _)| format!(", CAST(0 AS BIGINT) AS {name}"))
            .concat()
            + &STATUS_COLUMNS
                .map(|(name, _)| format!(", CAST(0 AS BIGINT) AS revenue_{name}"))
                .concat()
            + &(0..types.len())
                .map(|i| format!(", CAST(0 AS BIGINT) AS t{i}"))
                .collect::<String>(),
        sum_statuses = STATUS_COLUMNS
            .map(|(name, _)| format!(", sum({name}) AS {name}"))
            .concat()
            + &STATUS_COLUMNS
                .map(|(name, _)| format!(", sum(revenue_{name}) AS revenue_{name}"))
                .concat()
            + &(0..types.len())
                .map(|i| format!(", sum(t{i}) AS t{i}"))
                .collect::<String>(),
    )
}

/// Runs the report.
pub async fn run(session: &Session, req: &ReportRequest, names: Option<&Names>) -> Result<Report> {
    if let Some(n) = names {
        let known: Vec<String> = n.remapped.iter().cloned().collect();
        check_remapped(&req.grouped(), &known, |_| true)?;
    }
    let updates = crate::costs::load(&session.store).await?;
    let types = conversion_types(session, req).await?;
    let visit_cost = crate::costs::visit_cost_sql(session, &updates)
        .await?
        .unwrap_or_else(|| "cost_micros".to_owned());
    let batches = session
        .ctx
        .sql(&sql_with(req, names, &visit_cost, &types))
        .await?
        .collect()
        .await?;
    let mut rows = Vec::new();
    for b in &batches {
        read_rows(b, req.dims.len(), types.len(), &mut rows)?;
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
            check_remapped(&req.dims, &known, empty)?;
        }
        // A filter on a misspelt name would match nothing rather than say so.
        let filtered: Vec<Dimension> = req.filters.iter().map(|(d, _)| d.clone()).collect();
        if rows.is_empty() && filtered.iter().any(|d| matches!(d, Dimension::Remapped(_))) {
            let known = remapped_names(session, &req.range).await?;
            if !known.is_empty() {
                check_remapped(&filtered, &known, |_| true)?;
            }
        }
    }
    sort(&req.dims, &mut rows);
    let named: Vec<bool> = req
        .dims
        .iter()
        .map(|d| names.is_some_and(|n| n.has_names(d)))
        .collect();
    if let Some(n) = names {
        for r in &mut rows {
            r.names = r
                .dims
                .iter()
                .zip(&req.dims)
                .map(|(v, d)| {
                    v.as_deref()
                        .and_then(|id| n.name_of(d, id))
                        .map(str::to_owned)
                })
                .collect();
        }
    }
    let mut totals = Figures::default();
    let mut status_totals = StatusCounts::default();
    let mut status_revenue_totals = StatusCounts::default();
    let mut type_totals = vec![0; types.len()];
    for r in &rows {
        totals.add(&r.figures);
        status_totals.add(&r.statuses);
        status_revenue_totals.add(&r.status_revenue);
        for (t, n) in type_totals.iter_mut().zip(&r.types) {
            *t += n;
        }
    }
    Ok(Report {
        dims: req.dims.clone(),
        rows,
        totals,
        status_totals,
        status_revenue_totals,
        named,
        types,
        type_totals,
    })
}

/// The conversion types (`type=`, trimmed, lower case) reported in the range, most frequent
/// first, at most [`MAX_TYPE_COLUMNS`]: each becomes a column.
async fn conversion_types(session: &Session, req: &ReportRequest) -> Result<Vec<String>> {
    let sql = format!(
        "SELECT lower(trim(conversion_type)) AS t, count(*) AS n FROM conversions
         WHERE {} AND conversion_type IS NOT NULL AND trim(conversion_type) <> ''
         GROUP BY 1 ORDER BY n DESC, t LIMIT {MAX_TYPE_COLUMNS}",
        req.range.conversions_of_clicks()
    );
    let batches = session.ctx.sql(&sql).await?.collect().await?;
    let mut out = Vec::new();
    for b in &batches {
        let t = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)?;
        out.extend(t.as_string::<i32>().iter().flatten().map(str::to_owned));
    }
    Ok(out)
}

/// Conversion types reported as columns at most (the rest count only among `conversions`):
/// a pixel is public, and any value it sends would otherwise be a column.
pub const MAX_TYPE_COLUMNS: usize = 20;

/// Refuses a remapped dimension that is not in `known` (when `suspect` says its column may
/// be unknown), listing the valid names.
fn check_remapped(
    asked: &[Dimension],
    known: &[String],
    suspect: impl Fn(usize) -> bool,
) -> Result<()> {
    for (i, d) in asked.iter().enumerate() {
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
