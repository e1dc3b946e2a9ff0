//! `query conversions`: one JSON object per conversion, in the shape of the seed's analytics
//! API payload (`../shared/seed/conversion-tracking.txt`): the conversion, the visit it is
//! attributed to (query, remapped parameters, cost), where the visit was sent, who the
//! visitor was, and the payout.

use std::collections::HashMap;
use std::io::Write;

use arrow::array::AsArray;
use arrow::compute::cast;
use arrow::datatypes::DataType;
use chrono::Days;
use futures::StreamExt;

use crate::names::Names;
use crate::session::Session;
use crate::trust::Rules;
use crate::{DateRange, Result};

mod columns;

use columns::Columns;

/// Which conversions to write.
#[derive(Debug, Clone, Default)]
pub struct FeedRequest {
    /// Conversions recorded within this range (by their own time).
    pub range: DateRange,
    /// Only conversions attributed to a visit of this campaign.
    pub campaign: Option<String>,
    /// Only the conversions of these clicks (valid click ids), whenever they came: the
    /// postback dispatcher's question. The visits are read from the hours the ids name.
    pub clicks: Option<Vec<String>>,
}

/// The feed's SQL: every conversion once (the report that decides it, as in reports),
/// joined to its visit, in time order; and every refused report (docs/query.md "Trust"),
/// marked with why. [`history_sql`] gives each conversion's reports.
pub fn sql(req: &FeedRequest, names: Option<&Names>) -> String {
    let q = Parts::new(req, names);
    let campaign = req.campaign.as_deref().map_or_else(
        || "true".to_owned(),
        |c| format!("campaign_id = {}", crate::sql_literal(c)),
    );
    format!(
        "{with}
        j AS (
            SELECT c.event_id, c.ts, c.click_id, c.conversion_type, c.txid, c.status,
                   {payout} AS payout_micros, c.http_method, c.url, c.host, c.referer,
                   c.ip AS c_ip, c.forwarded_for AS c_forwarded_for, c.ua AS c_ua,
                   c.lang AS c_lang,
                   v.event_id AS visit_id, v.ts AS visit_ts, v.query, v.remapped, v.cost_micros,
                   v.campaign_id, v.traffic_source_id,
                   coalesce(v.network_id, k.c_network) AS network_id,
                   coalesce(v.offer_id, k.c_offer) AS offer_id,
                   CASE WHEN v.offer_id IS NULL THEN k.c_offer_link ELSE v.offer_link_id END
                       AS offer_link_id,
                   v.landing_page_id, v.location, v.ip, v.forwarded_for, v.ua, v.lang,
                   v.browser_family, v.browser_major, v.browser_minor, v.browser_patch,
                   v.os_family, v.os_major, v.os_minor, v.os_patch, v.os_patch_minor,
                   v.device_family, v.device_brand, v.device_model, v.mobile, v.bot,
                   v.country, v.geoname_id, v.tz,
                   {refusal} AS refused,
                   row_number() OVER (PARTITION BY c.click_id, coalesce(c.txid, ''),
                                                   ({refusal}) IS NULL
                                      ORDER BY coalesce(c.auth, '') = 'token' DESC,
                                               ({status}) NOT IN ({early}) DESC,
                                               c.event_id DESC) AS nth
            {from}
        )
        SELECT * FROM j
        WHERE (nth = 1 OR refused IS NOT NULL) AND {times} AND {campaign}
        ORDER BY ts, event_id",
        with = q.with,
        from = q.from,
        payout = q.payout,
        refusal = q.refusal,
        status = q.status,
        early = crate::lifecycle::codes_sql(|s| s.stage() == 1),
        times = req.range.times("ts"),
    )
}

/// Each conversion's reports that count (not the refused ones), as [`Reported`](crate::lifecycle::Reported) entries a
/// line each: `click_id`, `tx` (its txid, or empty), `history`. An aggregate, not a window
/// function over the feed's rows: those would keep slices of the visits' batches.
pub fn history_sql(req: &FeedRequest, names: Option<&Names>) -> String {
    let q = Parts::new(req, names);
    let entry = crate::lifecycle::reported_sql(
        "c.event_id",
        "c.auth",
        &q.status,
        &q.duplicates,
        &q.payout,
        "replace(c.status, chr(10), ' ')",
    );
    format!(
        "{with}
        h AS (
            SELECT c.click_id, coalesce(c.txid, '') AS tx, {entry} AS entry
            {from}
            WHERE ({refusal}) IS NULL
        )
        SELECT click_id, tx, string_agg(entry, chr(10)) AS history FROM h GROUP BY click_id, tx",
        with = q.with,
        from = q.from,
        refusal = q.refusal,
    )
}

/// What the feed's two queries share: the reports of every conversion with a report in
/// range (`c`, all of them, whenever they came), each joined to its click's visit (`v`) and
/// latest click-through (`k`), and the rules that read them.
struct Parts {
    with: String,
    from: String,
    refusal: String,
    status: String,
    duplicates: String,
    payout: String,
}

impl Parts {
    fn new(req: &FeedRequest, names: Option<&Names>) -> Parts {
        let r = &req.range;
        // Visits precede their conversions (allowing a day of clock difference between
        // nodes).
        let visit_parts = match r.to {
            Some(t) => format!(
                "v.dt <= '{}'",
                t.checked_add_days(Days::new(1)).unwrap_or(t)
            ),
            None => "true".to_owned(),
        };
        let trust = Rules {
            known: "v.event_id IS NOT NULL",
            method: "c.method",
            auth: "c.auth",
            auth_network: "c.auth_network_id",
            network: "CASE WHEN k.click_of IS NULL THEN v.network_id ELSE k.c_network END",
            token: "CASE WHEN k.click_of IS NULL THEN v.network_token ELSE k.c_token END",
            pixels: "CASE WHEN k.click_of IS NULL THEN v.network_pixels ELSE k.c_pixels END",
            clicked_networks: "k.c_networks",
        };
        let reporting = crate::lifecycle::reporting_network("c.auth_network_id", trust.network);
        let (chosen, visit_parts) = match &req.clicks {
            // Conversions and click-throughs come after their visit.
            Some(clicks) => (
                format!(
                    "click_id IN ({}) AND dt >= '{}'",
                    in_list(clicks),
                    first_day(clicks)
                ),
                click_hours(clicks),
            ),
            None => (
                format!(
                    "click_id IN (SELECT click_id FROM conversions WHERE {})",
                    DateRange { to: None, ..*r }.partitions()
                ),
                visit_parts,
            ),
        };
        Parts {
            with: format!(
                "WITH {clicked}c AS (SELECT * FROM conversions WHERE {chosen}),",
                // A landing-page visit's offer (and network) is its latest click's,
                // whenever it was.
                clicked = crate::report::latest_clicks(&chosen),
            ),
            from: format!(
                "FROM c LEFT JOIN visits v
                   ON v.event_id = c.click_id AND v.kind = 'visit' AND {visit_parts}
                 LEFT JOIN clicked k ON k.click_of = c.click_id"
            ),
            refusal: trust.refusal(),
            status: crate::lifecycle::status_sql(names, &reporting, "c.status"),
            duplicates: crate::lifecycle::duplicates_sql(names, &reporting),
            payout: trust.payout("c.payout_micros"),
        }
    }
}

/// SQL list items for click ids.
fn in_list(clicks: &[String]) -> String {
    if clicks.is_empty() {
        return "NULL".to_owned();
    }
    clicks
        .iter()
        .map(|c| crate::sql_literal(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The day before the earliest of these click ids' (a day of clock difference between nodes
/// allowed, as for visits).
fn first_day(clicks: &[String]) -> String {
    clicks
        .iter()
        .filter_map(|c| i64::from_str_radix(c.get(..12)?, 16).ok())
        .min()
        .map(|ms| ms - 86_400_000)
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || "9999-12-31".to_owned(),
            |t| t.format("%Y-%m-%d").to_string(),
        )
}

/// A predicate on the visits' partitions naming the hours these click ids were made in (an
/// id starts with its Unix milliseconds), so a lookup reads those hours only.
fn click_hours(clicks: &[String]) -> String {
    let mut hours: Vec<(String, String)> = clicks
        .iter()
        .filter_map(|c| {
            let ms = i64::from_str_radix(c.get(..12)?, 16).ok()?;
            let t = chrono::DateTime::from_timestamp_millis(ms)?;
            Some((t.format("%Y-%m-%d").to_string(), t.format("%H").to_string()))
        })
        .collect();
    hours.sort();
    hours.dedup();
    if hours.is_empty() {
        return "false".to_owned();
    }
    let terms: Vec<String> = hours
        .iter()
        .map(|(d, h)| format!("(v.dt = '{d}' AND v.hour = '{h}')"))
        .collect();
    format!("({})", terms.join(" OR "))
}

/// Streams the feed to `out` as NDJSON; returns the number of conversions written.
pub async fn run<W: Write + ?Sized>(
    session: &Session,
    req: &FeedRequest,
    names: Option<&Names>,
    out: &mut W,
) -> Result<u64> {
    let histories = histories(session, req, names).await?;
    let mut stream = session
        .ctx
        .sql(&sql(req, names))
        .await?
        .execute_stream()
        .await?;
    let mut n = 0;
    let empty = Names::default();
    let names = names.unwrap_or(&empty);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let cols = Columns::new(&batch)?;
        for row in 0..batch.num_rows() {
            serde_json::to_writer(&mut *out, &cols.object(row, names, &histories))
                .map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
            n += 1;
        }
    }
    out.flush()?;
    Ok(n)
}

/// Each conversion's reports (by click id and txid, or empty), from [`history_sql`].
type Histories = HashMap<(String, String), String>;

async fn histories(
    session: &Session,
    req: &FeedRequest,
    names: Option<&Names>,
) -> Result<Histories> {
    let batches = session
        .ctx
        .sql(&history_sql(req, names))
        .await?
        .collect()
        .await?;
    let mut out = HashMap::new();
    for b in &batches {
        let col = |i: usize| cast(b.column(i), &DataType::Utf8);
        let (click, tx, history) = (col(0)?, col(1)?, col(2)?);
        let (click, tx, history) = (
            click.as_string::<i32>(),
            tx.as_string::<i32>(),
            history.as_string::<i32>(),
        );
        for i in 0..b.num_rows() {
            out.insert(
                (click.value(i).to_owned(), tx.value(i).to_owned()),
                history.value(i).to_owned(),
            );
        }
    }
    Ok(out)
}
