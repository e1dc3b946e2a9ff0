//! Which postbacks a conversion fires (docs/postbacks.md "What fires"): read from the
//! conversion feed, so the trust rules, the network's status map and the lifecycle are the
//! reports' own.

use std::collections::{HashMap, HashSet};

use catalog::Catalog;
use catalog::lifecycle::{Duplicates, Status};
use catalog::postback::{PostbackToken, decimal, stable_hash};
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
    authenticated: bool,
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

/// The jobs the reports `fresh` (event ids: those of the conversion objects being decided)
/// fire, from the feed's conversions `feed` (its NDJSON objects, every report of their
/// conversions: the others are context), with `catalog`'s sources and networks; `now_ms`
/// stamps them.
pub fn decide(
    feed: &[Value],
    fresh: &HashSet<String>,
    catalog: &Catalog,
    names: &Names,
    now_ms: i64,
) -> Decided {
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
                    authenticated: h["authenticated"].as_bool().unwrap_or(false),
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
        // An authenticated report outranks the others (as it does in reports): once a
        // conversion has one, only authenticated reports fire.
        let any_authenticated = reports.iter().any(|r| r.authenticated);
        for (i, r) in reports.iter().enumerate() {
            let before = &reports[..i];
            if !fresh.contains(&r.id)
                || !pb.fires_for(r.status, kind)
                || (any_authenticated && !r.authenticated)
            {
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
            // The key names what the source is told, so the same news reported twice (by two
            // edges, in either order) is one postback: a conversion's status, or the click's
            // first conversion's; each report only where repeats count.
            let key = if repeats_count || r.status == Status::Rebill {
                format!("{}-{}", r.id, source.id)
            } else if pb.first_only {
                format!("{click}-first-{}-{}", r.status.name(), source.id)
            } else {
                format!(
                    "{click}-{:016x}-{}-{}",
                    stable_hash(txid),
                    r.status.name(),
                    source.id
                )
            };
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CONFIG: &str = r#"
[[traffic_sources]]
id = "s"
external_id_param = "ext"
postback_url = "https://pb.example/?c={external_id}&s={status}&p={payout}"
postback_statuses = ["lead", "sale", "rebill"]
[[affiliate_networks]]
id = "n"
[[offers]]
id = "o"
network = "n"
url = "https://o.example/"
[[campaigns]]
id = "c"
traffic_source = "s"
  [[campaigns.paths]]
  offers = [ { offer = "o" } ]
"#;

    /// A feed object: click `k`, txid `T`, with these reports (id, status, authenticated).
    fn conversion(reports: &[(&str, &str, bool)]) -> Value {
        let history: Vec<Value> = reports
            .iter()
            .map(|(id, st, auth)| {
                json!({"id": id, "status": st, "final_status": st, "authenticated": auth, "payout": 2.0})
            })
            .collect();
        json!({
            "visitEvent": {"id": "k", "payload": {"query": {"ext": "E1"}, "remaped": {}}},
            "destination": {"trafficSource": {"id": "s"}, "affiliateNetwork": {"id": "n"},
                            "campaign": {"id": "c"}, "offer": {"id": "o"}},
            "payload": {"data": {"conversion_id": "T", "conversion_type": null, "refused": null}},
            "geo": {"country": "US"},
            "history": history,
        })
    }

    fn run(feed: &[Value], fresh: &[&str]) -> Vec<(String, String)> {
        let catalog =
            Catalog::compile(&catalog::File::<serde::de::IgnoredAny>::parse(CONFIG).unwrap())
                .unwrap();
        let names = Names::from_catalog(&catalog);
        let fresh = fresh.iter().map(|s| s.to_string()).collect();
        decide(feed, &fresh, &catalog, &names, 0)
            .jobs
            .into_iter()
            .map(|j| (j.key, j.url))
            .collect()
    }

    #[test]
    fn news_fires_once_whatever_order_reports_arrive_in() {
        // Lead then sale: both news the first time.
        let both = run(
            &[conversion(&[("r1", "lead", false), ("r2", "sale", false)])],
            &["r1", "r2"],
        );
        assert_eq!(both.len(), 2, "{both:?}");
        assert!(both[1].1.ends_with("c=E1&s=sale&p=2"), "{both:?}");
        // A repeat sale decided later (another edge's) has the first sale's key: one
        // postback.
        let repeat = run(
            &[conversion(&[
                ("r1", "lead", false),
                ("r0", "sale", false),
                ("r2", "sale", false),
            ])],
            &["r0"],
        );
        assert_eq!(repeat.len(), 1);
        assert_eq!(repeat[0].0, both[1].0);
        // Old reports are context, not news.
        assert!(
            run(
                &[conversion(&[("r1", "lead", false), ("r2", "sale", false)])],
                &[]
            )
            .is_empty()
        );
        // A lead after the sale changes nothing; each rebill is news.
        let late = run(
            &[conversion(&[
                ("r2", "sale", false),
                ("r3", "lead", false),
                ("r4", "rebill", false),
                ("r5", "rebill", false),
            ])],
            &["r3", "r4", "r5"],
        );
        assert_eq!(late.len(), 2, "{late:?}");
        // Once a report carried the token, unauthenticated ones (a pixel anyone can send)
        // fire nothing.
        let forged = run(
            &[conversion(&[("r1", "sale", true), ("r6", "rebill", false)])],
            &["r6"],
        );
        assert!(forged.is_empty(), "{forged:?}");
    }
}
