//! End to end: known traffic through the real edge — duplicate postbacks, upsells, declined
//! and charged-back sales, conversions without a txid or a payout, pixels, unknown click ids —
//! then the edge is stopped and the query tool's report and conversion feed over the Parquet
//! it wrote must match what was sent, to the micro-unit, and agree with DuckDB.

use systest as common;

use std::collections::{BTreeMap, HashMap};

use common::{Edge, block_on, ensure_python_readers, python};
use query::dims;
use query::names::Names;
use query::report::{Figures, ReportRequest};
use query::{DateRange, Session, SessionOptions};

const CONFIG: &str = r#"
[[traffic_sources]]
id = "ts-blog"
name = "Blog"
params = { source = "utm_source", var_2 = "utm_medium" }
cost_param = "cost"

[[traffic_sources]]
id = "ts-push"
name = "Push network"
params = { source = "src", zone = "zone" }
cost_param = "cpc"

[[affiliate_networks]]
id = "net-a"
name = "Network A"

[[offers]]
id = "offer-a"
name = "Offer A"
network = "net-a"
url = "https://a.example.com/?sub={click_id}"
payout = 92.4

[[offers]]
id = "offer-b"
name = "Offer B"
network = "net-a"
url = "https://b.example.com/?sub={click_id}"
payout = 12.5

[[campaigns]]
id = "camp-a"
name = "Campaign A"
traffic_source = "ts-blog"
cost = 0.05
  [[campaigns.paths]]
  offers = [ { offer = "offer-a" } ]

[[campaigns]]
id = "camp-b"
name = "Campaign B"
traffic_source = "ts-push"
  [[campaigns.paths]]
  offers = [ { offer = "offer-b" } ]
"#;

/// One conversion report as sent: click, txid, status, payout in micro-units.
struct Sent {
    click: String,
    txid: Option<&'static str>,
    status: Option<&'static str>,
    payout: Option<i64>,
}

/// What the attribution rules (docs/query.md) make of the conversions sent, per click: the count
/// and the revenue (offers' default payouts for conversions that carried none).
fn attribute(sent: &[Sent], default_payout: &dyn Fn(&str) -> i64) -> HashMap<String, (i64, i64)> {
    let mut latest: BTreeMap<(String, &str), &Sent> = BTreeMap::new();
    for s in sent {
        latest.insert((s.click.clone(), s.txid.unwrap_or("")), s);
    }
    let mut out: HashMap<String, (i64, i64)> = HashMap::new();
    for s in latest.values() {
        let reversed = matches!(
            s.status.map(str::to_ascii_lowercase).as_deref(),
            Some("declined" | "rejected" | "chargeback")
        );
        if reversed {
            continue;
        }
        let e = out.entry(s.click.clone()).or_default();
        e.0 += 1;
        e.1 += s.payout.unwrap_or_else(|| default_payout(&s.click));
    }
    out
}

fn micros_text(m: i64) -> String {
    format!("{}.{:06}", m / 1_000_000, m % 1_000_000)
}

const DUCKDB_BY_CAMPAIGN: &str = r#"
import duckdb, json, os, sys
lake = sys.argv[1]
rows = duckdb.sql(f"""
WITH v AS (
  SELECT campaign_id AS d0, kind, cost_micros, CASE WHEN kind = 'visit' THEN event_id END AS k
  FROM read_parquet('{lake}/visits/*/*/*.parquet', hive_partitioning = true)),
latest AS (
  SELECT click_id, arg_max_null(status, event_id) AS status,
         arg_max_null(payout_micros, event_id) AS payout
  FROM read_parquet('{lake}/conversions/*/*/*.parquet', hive_partitioning = true)
  GROUP BY click_id, coalesce(txid, '')),
c AS (
  SELECT click_id, count(*) AS n, coalesce(sum(payout), 0) AS rev FROM latest
  WHERE lower(coalesce(status, '')) NOT IN ('declined', 'rejected', 'chargeback')
  GROUP BY click_id)
SELECT coalesce(d0, '?'), count(k), coalesce(sum(c.n), 0), coalesce(sum(c.rev), 0),
       coalesce(sum(cost_micros), 0)
FROM c FULL OUTER JOIN v ON v.k = c.click_id GROUP BY 1 ORDER BY 1""").fetchall()
print(json.dumps({r[0]: [int(x) for x in r[1:]] for r in rows}))
sys.stdout.flush()
os._exit(0)
"#;

#[test]
fn reports_and_the_feed_match_the_traffic_sent_to_the_cent() {
    ensure_python_readers();
    let mut e = Edge::with_config("io_uring", CONFIG);
    let mut c = e.connect();
    // Visits: campaign, click id, cost, source.
    let mut visits: Vec<(&str, String, i64, String)> = Vec::new();
    for i in 0..30i64 {
        let source = if i % 3 == 0 { "news" } else { "blog" };
        // Every other visit names its cost; the rest cost the campaign's 0.05.
        let (cost, param) = if i % 2 == 0 {
            (i * 10_000, format!("&cost={}", micros_text(i * 10_000)))
        } else {
            (50_000, String::new())
        };
        c.send(&format!(
            "GET /c/camp-a?utm_source={source}&utm_medium=m{param} HTTP/1.1\r\nHost: t\r\n\
             User-Agent: test-agent/{i}\r\n\r\n"
        ));
        let r = c.response();
        assert_eq!(r.status, 302);
        let loc = r.header("Location").unwrap();
        visits.push((
            "camp-a",
            loc[loc.len() - 24..].to_owned(),
            cost,
            source.to_owned(),
        ));
    }
    for i in 0..20i64 {
        c.send(&format!(
            "GET /c/camp-b?src=push{}&zone=z{i}&cpc={} HTTP/1.1\r\nHost: t\r\n\r\n",
            i % 2,
            micros_text(1_000 * i)
        ));
        let r = c.response();
        assert_eq!(r.status, 302);
        let loc = r.header("Location").unwrap();
        visits.push((
            "camp-b",
            loc[loc.len() - 24..].to_owned(),
            1_000 * i,
            format!("push{}", i % 2),
        ));
    }
    let a = |n: usize| visits[n].1.clone();
    let b = |n: usize| visits[30 + n].1.clone();
    let unknown1 = sink::EventId::new(1_000, 9, 9, 1).to_string();
    let unknown2 = sink::EventId::new(2_000, 9, 9, 2).to_string();
    let s = |click: String, txid, status, payout| Sent {
        click,
        txid,
        status,
        payout,
    };
    let sent = vec![
        s(a(0), Some("T1"), None, Some(10_000_000)),
        s(a(0), Some("T1"), None, Some(10_000_000)), // the network retries: counted once
        s(a(0), Some("T2"), None, Some(5_500_000)),  // upsell: a second conversion
        s(a(1), Some("T1"), Some("approved"), Some(20_000_000)),
        s(a(1), Some("T1"), Some("declined"), Some(20_000_000)), // latest status wins
        s(a(2), None, None, Some(3_000_000)),
        s(a(2), None, None, Some(4_000_000)), // no txid: once per click, latest payout
        s(a(3), Some("T9"), None, None),      // no payout: the offer's 92.40
        s(a(6), Some("T1"), Some("Rejected"), Some(8_000_000)),
        s(a(7), Some("T1"), Some("approved"), Some(30_000_000)),
        s(a(7), Some("T1"), Some("chargeback"), None),
        s(b(0), Some("X"), None, Some(2_000_000)),
        s(b(1), Some("X"), Some("declined"), Some(1_000_000)),
        s(b(1), Some("X"), Some("approved"), Some(1_000_000)), // approved after all
        s(b(2), Some("X"), Some("pending"), Some(1_250_000)),
        s(unknown1.clone(), Some("U"), None, Some(1_000_000)),
        s(unknown2.clone(), None, None, Some(2_500_000)),
    ];
    for x in &sent {
        let mut q = format!("cid={}", x.click);
        if let Some(t) = x.txid {
            q.push_str(&format!("&txid={t}"));
        }
        if let Some(st) = x.status {
            q.push_str(&format!("&status={st}"));
        }
        if let Some(p) = x.payout {
            q.push_str(&format!("&payout={}", micros_text(p)));
        }
        c.send(&format!(
            "GET /postback?{q}&type=cps HTTP/1.1\r\nHost: t\r\n\r\n"
        ));
        assert_eq!(c.response().status, 200, "{q}");
    }
    // Pixels: the seed's and ours; neither carries a txid.
    c.send(&format!(
        "GET /acct/a.gif?c=cps&h={}&a=7.77 HTTP/1.1\r\nHost: t\r\n\r\n",
        a(4)
    ));
    assert_eq!(c.response().status, 200);
    c.send(&format!(
        "GET /p.gif?cid={}&payout=1.25 HTTP/1.1\r\nHost: t\r\n\r\n",
        a(5)
    ));
    assert_eq!(c.response().status, 200);
    let mut sent = sent;
    sent.push(s(a(4), None, None, Some(7_770_000)));
    sent.push(s(a(5), None, None, Some(1_250_000)));
    e.stop();
    let lake = e.data.join("lake");
    let store = e.store_url();

    // What was sent, attributed independently of the query tool.
    let campaign_of: HashMap<&str, &str> = visits.iter().map(|v| (v.1.as_str(), v.0)).collect();
    let default_payout = |click: &str| match campaign_of.get(click) {
        Some(&"camp-a") => 92_400_000,
        Some(&"camp-b") => 12_500_000,
        _ => 0,
    };
    let per_click = attribute(&sent, &default_payout);
    let mut want: BTreeMap<&str, Figures> = BTreeMap::new();
    for (camp, _, cost, _) in &visits {
        let m = want.entry(camp).or_default();
        m.visits += 1;
        m.cost_micros += cost;
    }
    for (click, (n, rev)) in &per_click {
        let m = want
            .entry(campaign_of.get(click.as_str()).copied().unwrap_or("?"))
            .or_default();
        m.conversions += n;
        m.revenue_micros += rev;
    }
    assert_eq!(want["camp-a"].conversions, 6, "the model itself");
    assert_eq!(want["?"].conversions, 2);

    let names = Names::parse(CONFIG).unwrap();
    let session = block_on(Session::open(&store, &SessionOptions::default())).unwrap();
    let req = |by: &str, range: DateRange| ReportRequest {
        range,
        dims: dims::parse(by).unwrap(),
        include_bots: false,
        ..Default::default()
    };
    let report = block_on(query::report::run(
        &session,
        &req("campaign", DateRange::default()),
        Some(&names),
    ))
    .unwrap();
    let mut got: BTreeMap<&str, Figures> = BTreeMap::new();
    for r in &report.rows {
        let key = if r.unknown_click {
            "?"
        } else {
            r.dims[0].as_deref().unwrap()
        };
        got.insert(key, r.figures);
    }
    assert_eq!(got, want);
    assert!(
        report.rows.last().unwrap().unknown_click,
        "the unknown-click row comes last"
    );
    let total = want.values().fold(Figures::default(), |mut t, m| {
        t.visits += m.visits;
        t.conversions += m.conversions;
        t.revenue_micros += m.revenue_micros;
        t.cost_micros += m.cost_micros;
        t
    });
    assert_eq!(report.totals, total);
    let mut table = Vec::new();
    query::output::report(&report, query::output::Format::Table, &mut table).unwrap();
    let table = String::from_utf8(table).unwrap();
    assert!(
        table.contains("(unknown click)") && table.contains("(total)"),
        "{table}"
    );
    assert!(
        table.contains(&query::output::money(total.revenue_micros)),
        "{table}"
    );

    // By a remapped parameter: visits split by the source each carried.
    let by_source = block_on(query::report::run(
        &session,
        &req("campaign,source", DateRange::default()),
        None,
    ))
    .unwrap();
    let mut sources: BTreeMap<(String, String), i64> = BTreeMap::new();
    for (camp, _, _, src) in &visits {
        *sources.entry((camp.to_string(), src.clone())).or_default() += 1;
    }
    for r in by_source.rows.iter().filter(|r| !r.unknown_click) {
        let key = (r.dims[0].clone().unwrap(), r.dims[1].clone().unwrap());
        assert_eq!(sources.remove(&key), Some(r.figures.visits), "{key:?}");
    }
    assert!(sources.is_empty(), "rows missing: {sources:?}");
    let err = block_on(query::report::run(
        &session,
        &req("campaign,sourse", DateRange::default()),
        None,
    ))
    .unwrap_err();
    let err = err.to_string();
    assert!(
        err.contains("sourse") && err.contains("source") && err.contains("country"),
        "{err}"
    );

    // A range with no visits: an empty report, not an error.
    let future = DateRange::parse(Some("2999-01-01"), None).unwrap();
    let empty = block_on(query::report::run(&session, &req("campaign", future), None)).unwrap();
    assert!(empty.rows.is_empty(), "{:?}", empty.rows);
    assert_eq!(empty.totals, Figures::default());

    // DuckDB over the same files, the same rules (no default payouts without a config).
    let without_defaults = attribute(&sent, &|_| 0);
    let ours = block_on(query::report::run(
        &session,
        &req("campaign", DateRange::default()),
        None,
    ))
    .unwrap();
    let db = python(DUCKDB_BY_CAMPAIGN, &lake);
    for r in &ours.rows {
        let key = if r.unknown_click {
            "?"
        } else {
            r.dims[0].as_deref().unwrap()
        };
        let m = r.figures;
        assert_eq!(
            db[key],
            serde_json::json!([m.visits, m.conversions, m.revenue_micros, m.cost_micros]),
            "{key}"
        );
    }
    let rev: i64 = without_defaults.values().map(|v| v.1).sum();
    assert_eq!(ours.totals.revenue_micros, rev);

    // The feed: one object per counted-once conversion (declined ones included, with their
    // status), in the seed's shape.
    let mut out = Vec::new();
    let feed = query::feed::FeedRequest::default();
    let n = block_on(query::feed::run(&session, &feed, Some(&names), &mut out)).unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let distinct: std::collections::BTreeSet<_> = sent
        .iter()
        .map(|s| (s.click.clone(), s.txid.unwrap_or("")))
        .collect();
    assert_eq!(n as usize, lines.len());
    assert_eq!(lines.len(), distinct.len());
    let upsell = lines
        .iter()
        .find(|l| l["visitEvent"]["id"] == a(0) && l["payload"]["data"]["conversion_id"] == "T2")
        .expect("the upsell is in the feed");
    assert_eq!(upsell["type"], "conversion");
    assert_eq!(upsell["id"].as_str().unwrap().len(), 24);
    assert_eq!(upsell["visitEvent"]["type"], "visit");
    assert_eq!(
        upsell["visitEvent"]["payload"]["query"]["utm_source"],
        "news"
    );
    assert_eq!(upsell["visitEvent"]["payload"]["remaped"]["source"], "news");
    assert_eq!(upsell["visitEvent"]["payload"]["remaped"]["event_id"], a(0));
    assert_eq!(upsell["visitEvent"]["payload"]["data"]["costCents"], 0);
    assert_eq!(upsell["destination"]["campaign"]["id"], "camp-a");
    assert_eq!(upsell["destination"]["campaign"]["name"], "Campaign A");
    assert_eq!(upsell["destination"]["trafficSource"]["name"], "Blog");
    assert_eq!(upsell["destination"]["affiliateNetwork"]["id"], "net-a");
    assert_eq!(upsell["destination"]["offer"]["name"], "Offer A");
    assert_eq!(
        upsell["destination"]["landingPage"],
        serde_json::Value::Null
    );
    assert_eq!(upsell["source"]["method"], "GET");
    assert!(
        upsell["source"]["url"]
            .as_str()
            .unwrap()
            .starts_with("/postback?cid=")
    );
    assert_eq!(upsell["client"]["ua"], "test-agent/0");
    assert_eq!(upsell["client"]["ip"], "127.0.0.1");
    assert_eq!(upsell["payload"]["data"]["conversion_type"], "cps");
    assert_eq!(upsell["payload"]["data"]["payout"], 5.5);
    assert_eq!(upsell["payload"]["data"]["payoutCents"], 550);
    for l in &lines {
        let t = l["created_at"].as_str().unwrap();
        assert!(
            t.len() == 24 && t.ends_with('Z') && t.as_bytes()[19] == b'.',
            "{t}"
        );
        for key in [
            "id",
            "type",
            "visitEvent",
            "destination",
            "source",
            "client",
            "geo",
            "payload",
        ] {
            assert!(l.get(key).is_some(), "{key} missing in {l}");
        }
    }
    let default_paid = lines
        .iter()
        .find(|l| l["visitEvent"]["id"] == a(3))
        .unwrap();
    assert_eq!(default_paid["payload"]["data"]["payoutCents"], 9240);
    let declined = lines
        .iter()
        .find(|l| l["visitEvent"]["id"] == a(1))
        .unwrap();
    assert_eq!(declined["payload"]["data"]["status"], "declined");
    let unknown = lines
        .iter()
        .find(|l| l["visitEvent"]["id"] == unknown1)
        .unwrap();
    assert_eq!(unknown["visitEvent"]["payload"], serde_json::Value::Null);
    assert_eq!(unknown["destination"]["campaign"], serde_json::Value::Null);

    // --campaign keeps that campaign's conversions only.
    let mut out = Vec::new();
    let only_b = query::feed::FeedRequest {
        campaign: Some("camp-b".into()),
        ..Default::default()
    };
    let n = block_on(query::feed::run(&session, &only_b, Some(&names), &mut out)).unwrap();
    assert_eq!(n, 3);
}
