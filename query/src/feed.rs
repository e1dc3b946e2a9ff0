//! `query conversions`: one JSON object per conversion, in the shape of the seed's analytics
//! API payload (`../shared/seed/conversion-tracking.txt`): the conversion, the visit it is
//! attributed to (query, remapped parameters, cost), where the visit was sent, who the
//! visitor was, and the payout.

use std::collections::HashMap;
use std::io::Write;

use arrow::array::{Array, ArrayRef, AsArray, MapArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use chrono::Days;
use futures::StreamExt;
use serde_json::{Map, Value, json};

use catalog::lifecycle::Status;

use crate::lifecycle::{Reported, settle};
use crate::names::Names;
use crate::output::cents;
use crate::session::Session;
use crate::trust::Rules;
use crate::{DateRange, QueryError, Result};

/// Which conversions to write.
#[derive(Debug, Clone, Default)]
pub struct FeedRequest {
    /// Conversions recorded within this range (by their own time).
    pub range: DateRange,
    /// Only conversions attributed to a visit of this campaign.
    pub campaign: Option<String>,
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
        early = Status::ALL
            .into_iter()
            .filter(|s| s.stage() == 1)
            .map(|s| format!("'{}'", s.code()))
            .collect::<Vec<_>>()
            .join(", "),
        times = req.range.times("ts"),
    )
}

/// Each conversion's reports that count (not the refused ones), as [`Reported`] entries a
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
        // A report's statuses and policy are those of the network whose token it carried,
        // else its click's network's (as in reports).
        let reporting = format!("coalesce(c.auth_network_id, {})", trust.network);
        let from_parts = DateRange { to: None, ..*r }.partitions();
        Parts {
            with: format!(
                "WITH {clicked}c AS (
                    SELECT * FROM conversions
                    WHERE click_id IN (SELECT click_id FROM conversions WHERE {from_parts})
                ),",
                // A landing-page visit's offer (and network) is its latest click's,
                // whenever it was.
                clicked = crate::report::latest_clicks(&format!(
                    "click_id IN (SELECT click_id FROM conversions WHERE {from_parts})"
                )),
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

/// The batch's columns, cast once to the types the writer reads.
struct Columns<'a> {
    batch: &'a RecordBatch,
    strings: Vec<(&'static str, ArrayRef)>,
    ints: Vec<(&'static str, ArrayRef)>,
}

const STRINGS: [&str; 39] = [
    "event_id",
    "refused",
    "click_id",
    "conversion_type",
    "txid",
    "status",
    "http_method",
    "url",
    "host",
    "referer",
    "c_ip",
    "c_forwarded_for",
    "c_ua",
    "c_lang",
    "visit_id",
    "campaign_id",
    "traffic_source_id",
    "network_id",
    "offer_id",
    "landing_page_id",
    "location",
    "ip",
    "forwarded_for",
    "ua",
    "lang",
    "browser_family",
    "browser_major",
    "browser_minor",
    "browser_patch",
    "os_family",
    "os_major",
    "os_minor",
    "os_patch",
    "os_patch_minor",
    "device_family",
    "device_brand",
    "device_model",
    "country",
    "tz",
];

/// The integer and timestamp columns (timestamps read as milliseconds).
const INTS: [&str; 5] = [
    "payout_micros",
    "cost_micros",
    "geoname_id",
    "ts",
    "visit_ts",
];

impl<'a> Columns<'a> {
    fn new(batch: &'a RecordBatch) -> Result<Self> {
        let cast_all = |names: &[&'static str], to: &DataType| {
            names
                .iter()
                .map(|n| Ok((*n, cast(column(batch, n)?, to)?)))
                .collect::<Result<Vec<_>>>()
        };
        Ok(Columns {
            batch,
            strings: cast_all(&STRINGS, &DataType::Utf8)?,
            ints: cast_all(&INTS, &DataType::Int64)?,
        })
    }

    fn s(&self, name: &str, row: usize) -> Option<&str> {
        let (_, a) = self.strings.iter().find(|(n, _)| *n == name)?;
        let a = a.as_string::<i32>();
        (!a.is_null(row)).then(|| a.value(row))
    }

    fn str_value(&self, name: &str, row: usize) -> Value {
        self.s(name, row)
            .map_or(Value::Null, |s| Value::String(s.to_owned()))
    }

    fn int(&self, name: &str, row: usize) -> Option<i64> {
        let (_, a) = self.ints.iter().find(|(n, _)| *n == name)?;
        let a = a.as_primitive::<Int64Type>();
        (!a.is_null(row)).then(|| a.value(row))
    }

    fn ts(&self, name: &str, row: usize) -> Value {
        self.int(name, row)
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map_or(Value::Null, |t| {
                Value::String(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            })
    }

    fn boolean(&self, name: &str, row: usize) -> Value {
        match column(self.batch, name)
            .ok()
            .and_then(|a| a.as_boolean_opt())
        {
            Some(a) if !a.is_null(row) => a.value(row).into(),
            _ => Value::Null,
        }
    }

    fn map(&self, name: &str, row: usize) -> Map<String, Value> {
        let mut o = Map::new();
        let Some(m) = column(self.batch, name).ok().and_then(|a| a.as_map_opt()) else {
            return o;
        };
        if m.is_null(row) {
            return o;
        }
        let entries = map_entries(m, row);
        for (k, v) in entries {
            o.insert(k, v.map_or(Value::Null, Value::String));
        }
        o
    }

    /// `{"id": …, "name": …}` for an id, or null when there is none.
    fn named<'n>(&self, col: &str, row: usize, name: impl Fn(&str) -> Option<&'n str>) -> Value {
        match self.s(col, row) {
            Some(id) => json!({ "id": id, "name": name(id) }),
            None => Value::Null,
        }
    }

    fn object(&self, row: usize, names: &Names, histories: &Histories) -> Value {
        let known = self.s("visit_id", row).is_some();
        let refused = self.s("refused", row);
        let click_id = self.str_value("click_id", row);
        let cost = self.int("cost_micros", row).unwrap_or(0);
        let offer = self.s("offer_id", row).unwrap_or_default();
        let default_payout = |event_id: &str| names.default_payout(offer, event_id);
        let mut payout = self
            .int("payout_micros", row)
            .unwrap_or_else(|| default_payout(self.s("event_id", row).unwrap_or_default()));
        // What its reports make of the conversion (a refused report stands alone).
        let key = (
            self.s("click_id", row).unwrap_or_default().to_owned(),
            self.s("txid", row).unwrap_or_default().to_owned(),
        );
        let mut history: Vec<Reported> = histories
            .get(&key)
            .map(|h| h.split('\n').filter_map(Reported::parse).collect())
            .unwrap_or_default();
        let mut settled = None;
        if refused.is_none() {
            settled = settle(&mut history, default_payout);
            if let Some(x) = settled {
                // A rejected or charged-back conversion earns nothing.
                payout = if x.status.counts() { x.revenue } else { 0 };
            }
        }
        let visit = if known {
            let mut remapped = Map::new();
            remapped.insert("event_id".into(), click_id.clone());
            remapped.extend(self.map("remapped", row));
            json!({
                "id": click_id,
                "type": "visit",
                "payload": {
                    "query": self.map("query", row),
                    "remaped": remapped,
                    "data": { "cost": units(cost), "costCents": cents(cost) },
                },
                "created_at": self.ts("visit_ts", row),
            })
        } else {
            json!({ "id": click_id, "type": "visit", "payload": null, "created_at": null })
        };
        // Who converted: the visitor as seen at the visit, or the conversion's own request
        // when the click is unknown.
        let p = if known { "" } else { "c_" };
        let client = json!({
            "ip": self.str_value(&format!("{p}ip"), row),
            "forwardedFor": self.str_value(&format!("{p}forwarded_for"), row),
            "ua": self.str_value(&format!("{p}ua"), row),
            "agent": {
                "family": self.str_value("browser_family", row),
                "major": self.str_value("browser_major", row),
                "minor": self.str_value("browser_minor", row),
                "patch": self.str_value("browser_patch", row),
            },
            "mobile": self.boolean("mobile", row),
            "bot": self.boolean("bot", row),
            "os": {
                "family": self.str_value("os_family", row),
                "major": self.str_value("os_major", row),
                "minor": self.str_value("os_minor", row),
                "patch": self.str_value("os_patch", row),
                "patchMinor": self.str_value("os_patch_minor", row),
            },
            "device": {
                "family": self.str_value("device_family", row),
                "brand": self.str_value("device_brand", row),
                "model": self.str_value("device_model", row),
            },
            "lang": self.str_value(&format!("{p}lang"), row),
        });
        let mut conversion = json!({
            "id": self.str_value("event_id", row),
            "type": "conversion",
            "visitEvent": visit,
            "destination": {
                "campaign": self.named("campaign_id", row, |id| names.campaign(id)),
                "category": null,
                "url": self.str_value("location", row),
                "trafficSource": self.named("traffic_source_id", row, |id| names.traffic_source(id)),
                "affiliateNetwork": self.named("network_id", row, |id| names.network(id)),
                "offer": self.named("offer_id", row, |id| names.offer(id)),
                // One link per offer in this tracker: the link is the offer's URL.
                "offerLink": self.named("offer_id", row, |id| names.offer(id)),
                "landingPage": self.named("landing_page_id", row, |id| names.landing_page(id)),
            },
            "source": {
                "method": self.str_value("http_method", row),
                "url": self.str_value("url", row),
                "referer": self.str_value("referer", row),
                "protocol": "http",
                "host": self.str_value("host", row),
            },
            "client": client,
            "geo": {
                "country": self.str_value("country", row),
                "geoname_id": self.int("geoname_id", row),
                "tz": self.str_value("tz", row),
            },
            "payload": {
                "data": {
                    "conversion_type": self.str_value("conversion_type", row),
                    "conversion_id": self.str_value("txid", row),
                    "status": match refused {
                        Some(_) => Value::String("refused".into()),
                        None => self.str_value("status", row),
                    },
                    "payout": units(payout),
                    "payoutCents": cents(payout),
                    "cost": units(cost),
                    "costCents": cents(cost),
                }
            },
            "created_at": self.ts("ts", row),
        });
        if let Some(why) = refused {
            // Kept for audit: never counted, and never shown as approved.
            let data = &mut conversion["payload"]["data"];
            data["original_status"] = self.str_value("status", row);
            data["refused"] = Value::String(why.to_owned());
        }
        if let Some(x) = settled {
            let data = &mut conversion["payload"]["data"];
            data["final_status"] = x.status.name().into();
            data["counts"] = if x.status.counts() { x.count } else { 0 }.into();
            conversion["history"] = history
                .iter()
                .map(|r| {
                    json!({
                        "id": r.event_id,
                        "status": r.sent,
                        "final_status": r.status.name(),
                        "payout": r.payout.map(units),
                        "created_at": id_time(&r.event_id),
                    })
                })
                .collect();
        }
        conversion
    }
}

fn column<'b>(batch: &'b RecordBatch, name: &str) -> Result<&'b ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| {
        QueryError::DataFusion(datafusion::error::DataFusionError::Internal(format!(
            "the feed query returned no column {name}"
        )))
    })
}

/// The entries of one map value as owned strings.
fn map_entries(m: &MapArray, row: usize) -> Vec<(String, Option<String>)> {
    let entries = m.value(row);
    let (Ok(keys), Ok(values)) = (
        cast(entries.column(0), &DataType::Utf8),
        cast(entries.column(1), &DataType::Utf8),
    ) else {
        return Vec::new();
    };
    let (keys, values) = (keys.as_string::<i32>(), values.as_string::<i32>());
    (0..keys.len())
        .map(|i| {
            let v = (!values.is_null(i)).then(|| values.value(i).to_owned());
            (keys.value(i).to_owned(), v)
        })
        .collect()
}

/// The time an event id carries (its first 12 hex digits are Unix milliseconds).
fn id_time(id: &str) -> Value {
    id.get(..12)
        .and_then(|ms| i64::from_str_radix(ms, 16).ok())
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or(Value::Null, |t| {
            Value::String(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        })
}

/// Micro-units as a JSON number of currency units (exact for up to six decimals).
fn units(micros: i64) -> Value {
    json!(micros as f64 / 1e6)
}
