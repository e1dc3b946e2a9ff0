//! Which postbacks a conversion fires (docs/postbacks.md "What fires"): read from the
//! conversion feed, so the trust rules, the network's status map and the lifecycle are the
//! reports' own.

use std::collections::HashMap;

use catalog::Catalog;
use catalog::lifecycle::{Duplicates, Status};
use catalog::postback::{PostbackToken, decimal};
use serde_json::Value;

use super::outbox::Job;
use crate::names::Names;

/// One report of a conversion, as the feed's history gives it.
#[derive(Debug, Clone)]
struct Report {
    id: String,
    sent: String,
    status: Status,
    payout: Option<i64>,
}

/// What the feed says of the conversions of some clicks.
#[derive(Debug, Default)]
pub struct Decided {
    pub jobs: Vec<Job>,
    /// Clicks whose visit is not in the store (yet).
    pub unresolved: Vec<String>,
}

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn micros(v: &Value) -> Option<i64> {
    v.as_f64().map(|x| (x * 1e6).round() as i64)
}

/// The jobs the feed's conversions `feed` (its NDJSON objects) fire, with `catalog`'s
/// sources and networks; `now_ms` stamps them.
pub fn decide(feed: &[Value], catalog: &Catalog, names: &Names, now_ms: i64) -> Decided {
    let mut out = Decided::default();
    // A click's first conversion: the one with the earliest report.
    let mut first: HashMap<&str, &str> = HashMap::new();
    for o in feed {
        let (Some(click), Some(earliest)) = (
            s(o, &["visitEvent", "id"]),
            o["history"].get(0).and_then(|h| h["id"].as_str()),
        ) else {
            continue;
        };
        let e = first.entry(click).or_insert(earliest);
        if earliest < *e {
            *e = earliest;
        }
    }
    for o in feed {
        let Some(click) = s(o, &["visitEvent", "id"]) else {
            continue;
        };
        if o["visitEvent"]["payload"].is_null() {
            out.unresolved.push(click.to_owned());
            continue;
        }
        // Refused reports never fire (nor does a conversion with none that counts).
        if !o["payload"]["data"]["refused"].is_null() {
            continue;
        }
        let Some(source_id) = s(o, &["destination", "trafficSource", "id"]) else {
            continue;
        };
        let Some(source) = catalog.sources.iter().find(|t| &*t.id == source_id) else {
            continue;
        };
        let Some(pb) = &source.postback else {
            continue;
        };
        let reports: Vec<Report> = o["history"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| {
                Some(Report {
                    id: h["id"].as_str()?.to_owned(),
                    sent: h["status"].as_str().unwrap_or_default().to_owned(),
                    status: Status::parse(h["final_status"].as_str()?)?,
                    payout: micros(&h["payout"]),
                })
            })
            .collect();
        let Some(earliest) = reports.first() else {
            continue;
        };
        if pb.first_only && first.get(click).is_some_and(|f| *f != earliest.id) {
            continue;
        }
        let txid = s(o, &["payload", "data", "conversion_id"]).unwrap_or_default();
        if !pb.sends(&format!("{click}:{txid}")) {
            continue;
        }
        let kind = s(o, &["payload", "data", "conversion_type"]).unwrap_or_default();
        let network = s(o, &["destination", "affiliateNetwork", "id"]);
        let policy = network
            .and_then(|n| catalog.networks.iter().find(|x| &*x.id == n))
            .map_or(Duplicates::default(), |n| n.lifecycle.duplicates);
        let repeats_count = matches!(policy, Duplicates::Every | Duplicates::Add);
        let offer = s(o, &["destination", "offer", "id"]);
        let query = &o["visitEvent"]["payload"]["query"];
        let remapped = &o["visitEvent"]["payload"]["remaped"];
        let external = source
            .external_id_param
            .as_deref()
            .and_then(|p| query.get(p))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty());
        for (i, r) in reports.iter().enumerate() {
            let before = &reports[..i];
            if !pb.fires_for(r.status, kind) {
                continue;
            }
            // A lead after the sale changes nothing; a repeat fires only when the network's
            // repeats count (or it is a rebill, each its own revenue).
            if r.status.stage() == 1 && before.iter().any(|b| b.status.stage() == 2) {
                continue;
            }
            if before.iter().any(|b| b.status == r.status)
                && !(repeats_count || r.status == Status::Rebill)
            {
                continue;
            }
            let payout = r
                .payout
                .unwrap_or_else(|| offer.map_or(0, |off| names.default_payout(off, &r.id)));
            let told = pb.share_of(payout);
            let key = format!("{}-{}", r.id, source.id);
            let payout_text = decimal(told);
            let url = pb.url.fill(|t| match t {
                PostbackToken::ExternalId => external,
                PostbackToken::Payout => Some(&payout_text),
                PostbackToken::Status => Some(r.status.name()),
                PostbackToken::RawStatus => Some(&r.sent),
                PostbackToken::Txid => Some(txid),
                PostbackToken::Type => Some(kind),
                PostbackToken::CampaignId => s(o, &["destination", "campaign", "id"]),
                PostbackToken::ClickId => Some(click),
                PostbackToken::ConversionId => Some(&r.id),
                PostbackToken::OfferId => offer,
                PostbackToken::NetworkId => network,
                PostbackToken::Country => s(o, &["geo", "country"]),
                PostbackToken::IdempotencyKey => Some(&key),
                PostbackToken::Param(p) => remapped.get(&**p).and_then(Value::as_str),
            });
            let skipped = match (&source.external_id_param, external) {
                (Some(p), None) if pb.url.tokens().any(|t| *t == PostbackToken::ExternalId) => {
                    Some(format!("the visit carried no {p} (the source's click id)"))
                }
                _ => None,
            };
            out.jobs.push(Job {
                key,
                source: source.id.to_string(),
                url,
                report: r.id.clone(),
                click: click.to_owned(),
                status: r.status.name().to_owned(),
                payout_micros: told,
                created_ms: now_ms,
                skipped,
            });
        }
    }
    out
}
