//! The feed's rows as the seed's conversion objects.

use arrow::array::{Array, ArrayRef, AsArray, MapArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use serde_json::{Map, Value, json};

use super::Histories;
use crate::lifecycle::{Reported, settle};
use crate::names::Names;
use crate::output::cents;
use crate::{QueryError, Result};

/// The batch's columns, cast once to the types the writer reads.
pub(super) struct Columns<'a> {
    batch: &'a RecordBatch,
    strings: Vec<(&'static str, ArrayRef)>,
    ints: Vec<(&'static str, ArrayRef)>,
}

const STRINGS: [&str; 40] = [
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
    "offer_link_id",
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
    pub(super) fn new(batch: &'a RecordBatch) -> Result<Self> {
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

    pub(super) fn object(&self, row: usize, names: &Names, histories: &Histories) -> Value {
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
                "category": self
                    .s("campaign_id", row)
                    .and_then(|c| names.category(c))
                    .map_or(Value::Null, |c| Value::String(c.to_owned())),
                "url": self.str_value("location", row),
                "trafficSource": self.named("traffic_source_id", row, |id| names.traffic_source(id)),
                "affiliateNetwork": self.named("network_id", row, |id| names.network(id)),
                "offer": self.named("offer_id", row, |id| names.offer(id)),
                // An offer with a `url` is its own one link.
                "offerLink": match self.s("offer_link_id", row) {
                    Some(link) => json!({
                        "id": link,
                        "name": names.offer_link(offer, link),
                    }),
                    None => self.named("offer_id", row, |id| names.offer(id)),
                },
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
                        "authenticated": r.authenticated,
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
