//! Forged conversions through the real edge and the real query tool: click ids are public, so
//! postbacks naming another network, carrying another network's token or none, and pixels
//! of networks that do not take them, are stored for audit but never counted, never replace
//! a conversion that counts, and show in the feed as refused. What is stored is read by
//! DuckDB and pyarrow, every file of it (a visit with a repeated query key once made files
//! unreadable).

use systest as common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Edge, TempDir, block_on, ensure_python_readers, python, strings};
use query::dims;
use query::names::Names;
use query::report::{Figures, ReportRequest};
use query::{DateRange, Session, SessionOptions};

const CONFIG: &str = r#"
[[traffic_sources]]
id = "ts"
params = { source = "utm_source" }

[[affiliate_networks]]
id = "net-a"
postback_token = "tok-a"

[[affiliate_networks]]
id = "net-b"

[[affiliate_networks]]
id = "net-c"
postback_token = "tok-c"
pixels = "default_payout"

[[offers]]
id = "offer-a"
network = "net-a"
url = "https://a.example.com/?sub={click_id}"
payout = 10

[[offers]]
id = "offer-b"
network = "net-b"
url = "https://b.example.com/?sub={click_id}"
payout = 20

[[offers]]
id = "offer-c"
network = "net-c"
url = "https://c.example.com/?sub={click_id}"
payout = 30

[[landing_pages]]
id = "lp"
url = "https://lp.example.com/?cid={click_id}"

[[campaigns]]
id = "camp-a"
traffic_source = "ts"
  [[campaigns.paths]]
  offers = [ { offer = "offer-a" } ]

[[campaigns]]
id = "camp-b"
traffic_source = "ts"
  [[campaigns.paths]]
  offers = [ { offer = "offer-b" } ]

[[campaigns]]
id = "camp-c"
traffic_source = "ts"
  [[campaigns.paths]]
  offers = [ { offer = "offer-c" } ]

[[campaigns]]
id = "camp-lp"
traffic_source = "ts"
  [[campaigns.paths]]
  landing_page = "lp"
  offers = [ { offer = "offer-a" }, { offer = "offer-c", weight = 0 } ]
"#;

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";

/// One GET; its status and `Location`.
fn get(e: &Edge, target: &str) -> (u16, String) {
    let mut c = e.connect();
    c.send(&format!(
        "GET {target} HTTP/1.1\r\nHost: t\r\nUser-Agent: {BROWSER}\r\nConnection: close\r\n\r\n"
    ));
    let r = c.response();
    (
        r.status,
        r.header("location").unwrap_or_default().to_owned(),
    )
}

/// A visit's click id, from its redirect.
fn visit(e: &Edge, campaign: &str) -> String {
    let (st, loc) = get(
        e,
        &format!("/c/{campaign}?utm_source=news&k=1&k=2&utm_source=again"),
    );
    assert_eq!(st, 302, "{loc}");
    let cid = loc.rsplit('=').next().unwrap().to_owned();
    assert_eq!(cid.len(), 24, "{loc}");
    cid
}

fn report(session: &Session, names: &Names, by: &str) -> BTreeMap<String, Figures> {
    let req = ReportRequest {
        range: DateRange::default(),
        dims: dims::parse(by).unwrap(),
        include_bots: true,
        ..Default::default()
    };
    let r = block_on(query::report::run(session, &req, Some(names))).unwrap();
    let mut out: BTreeMap<String, Figures> = r
        .rows
        .into_iter()
        .map(|r| {
            let key = if r.unknown_click {
                "(unknown click)".to_owned()
            } else {
                r.dims[0].clone().unwrap_or_default()
            };
            (key, r.figures)
        })
        .collect();
    out.insert("(total)".into(), r.totals);
    out
}

const DUCKDB_EVERY_FILE: &str = r#"
import glob, json, os, sys
import duckdb
lake = sys.argv[1]
con = duckdb.connect()
files = sorted(f for f in glob.glob(f"{lake}/**/*.parquet", recursive=True) if "/_delta_log/" not in f)
rows = 0
for f in files:
    # Every column of every file, the map columns included.
    rows += len(con.execute(f"select * from read_parquet('{f}')").fetchall())
k = con.execute(
    f"select query['k'], query['utm_source'] from read_parquet('{lake}/visits/*/*/*.parquet') where kind = 'visit' limit 1"
).fetchone()
urls = [u for (u,) in con.execute(
    f"select url from read_parquet('{lake}/conversions/*/*/*.parquet')").fetchall()]
# And pyarrow, file by file and as one dataset.
import pyarrow.parquet as pq
import pyarrow.dataset as ds
arrow_rows = sum(pq.read_table(f).num_rows for f in files)
visits = ds.dataset(f"{lake}/visits", format="parquet", partitioning="hive").to_table()
first = dict(visits.filter(ds.field("kind") == "visit").column("query").to_pylist()[0])
print(json.dumps({"files": len(files), "rows": rows, "k": k[0], "source": k[1], "urls": urls,
                  "arrow_rows": arrow_rows, "arrow_k": first["k"]}))
sys.stdout.flush()
os._exit(0)
"#;

#[test]
fn forged_conversions_are_stored_for_audit_and_never_counted() {
    let dir = TempDir::new("trust-cfg");
    let cfg = dir.write("edge.toml", CONFIG);
    let data = TempDir::new("trust-data");
    let mut e = Edge::start_in(
        &["--workers", "2", "--config", cfg.to_str().unwrap()],
        data.path(),
    );
    let (a, b, c, lp, lp2) = (
        visit(&e, "camp-a"),
        visit(&e, "camp-b"),
        visit(&e, "camp-c"),
        visit(&e, "camp-lp"),
        visit(&e, "camp-lp"),
    );
    // The landing page's visitor clicks through to offer-a (net-a), then to offer-c (net-c);
    // the second landing-page visitor never clicks.
    // Event ids order clicks by the millisecond: two in the same millisecond on different
    // workers are simultaneous, so the second waits for the next one.
    for (n, host) in [(1, "https://a.example.com/"), (2, "https://c.example.com/")] {
        std::thread::sleep(Duration::from_millis(3));
        let (st, loc) = get(&e, &format!("/click/{n}?cid={lp}"));
        assert_eq!(st, 302);
        assert!(loc.starts_with(host), "{loc}");
    }
    let unknown = "01a21be4e4a0000100000042";
    let pb = |q: &str| get(&e, &format!("/postback?{q}")).0;
    let px = |q: &str| get(&e, &format!("/p.gif?{q}")).0;
    // Tokens that match nothing, or not the network named, are refused at the door.
    assert_eq!(pb(&format!("cid={a}&payout=5&token=wrong")), 403);
    assert_eq!(
        pb(&format!("cid={a}&payout=5&token=tok-c&network=net-a")),
        403
    );
    // Everything else is stored; what counts is decided against the click's network.
    let sent = [
        (
            pb(&format!("cid={a}&payout=5&txid=A1&token=tok-a")),
            "counts",
        ),
        (
            pb(&format!("cid={a}&payout=777&txid=A2&network=net-b")),
            "forged: another network named",
        ),
        (
            px(&format!("cid={a}&payout=999&txid=A3")),
            "forged: net-a takes no pixels",
        ),
        (
            pb(&format!("cid={a}&txid=A1&status=rejected&network=net-b")),
            "forged: would cancel A1",
        ),
        (
            pb(&format!("cid={a}&payout=50&txid=A5&token=tok-c")),
            "forged: net-c's token",
        ),
        (
            pb(&format!("cid={b}&payout=7&txid=B1&network=net-b")),
            "counts: net-b has no token",
        ),
        (
            px(&format!("cid={b}&payout=3")),
            "counts: net-b takes pixels",
        ),
        (
            px(&format!("cid={c}&payout=999")),
            "counts at offer-c's payout",
        ),
        (
            pb(&format!("cid={c}&payout=4&txid=C2&token=tok-c")),
            "counts",
        ),
        (
            pb(&format!("cid={lp}&payout=8&txid=L1&token=tok-a")),
            "counts: a clicked network, though not the latest",
        ),
        (
            pb(&format!("cid={lp}&payout=3&txid=L3&token=tok-c")),
            "counts: the latest click's network",
        ),
        (
            px(&format!("cid={lp2}&payout=500")),
            "forged: no offer reached, no pixel counts",
        ),
        (
            pb(&format!("cid={lp2}&payout=600&network=net-b")),
            "forged: no offer reached, no token",
        ),
        (
            pb(&format!("cid={lp2}&payout=6&txid=M1&token=tok-a")),
            "counts: a network's token",
        ),
        (
            px(&format!("cid={c}&txid=C2&status=chargeback")),
            "a pixel net-c takes, outranked by C2's authenticated postback",
        ),
        (
            pb(&format!("cid={lp}&payout=888&txid=L2&network=net-b")),
            "forged",
        ),
        (
            pb(&format!("cid={unknown}&payout=1000&network=net-b")),
            "forged: unknown click",
        ),
        (
            pb(&format!("cid={unknown}&payout=2&txid=U2&token=tok-a")),
            "counts: authenticated",
        ),
    ];
    for (status, what) in sent {
        assert_eq!(status, 200, "{what}");
    }
    e.signal("TERM");
    assert!(e.wait(Duration::from_secs(30)).success(), "{}", e.log());

    let store = format!("file://{}", data.path().join("lake").display());
    let session = block_on(Session::open(&store, &SessionOptions::default())).unwrap();
    let names = Names::parse(CONFIG).unwrap();
    let m = |visits, clicks, conversions, revenue: i64| Figures {
        visits,
        clicks,
        conversions,
        revenue_micros: revenue * 1_000_000,
        cost_micros: 0,
    };
    assert_eq!(
        report(&session, &names, "campaign"),
        BTreeMap::from([
            ("camp-a".to_owned(), m(1, 0, 1, 5)),
            ("camp-b".to_owned(), m(1, 0, 2, 10)),
            ("camp-c".to_owned(), m(1, 0, 2, 34)),
            ("camp-lp".to_owned(), m(2, 2, 3, 17)),
            ("(unknown click)".to_owned(), m(0, 0, 1, 2)),
            ("(total)".to_owned(), m(5, 2, 9, 68)),
        ])
    );
    // By offer: the landing-page visit goes to its click's offer, with its conversion.
    let by_offer = report(&session, &names, "offer");
    // By offer: a landing-page visit goes to its latest click's offer, with its conversions.
    assert_eq!(by_offer["offer-a"], m(1, 1, 1, 5));
    assert_eq!(by_offer["offer-c"], m(2, 1, 4, 45));
    assert_eq!(
        by_offer[""],
        m(1, 0, 1, 6),
        "the visit that reached no offer"
    );

    // The feed: each conversion that counts once, and every refused report, marked.
    let mut out = Vec::new();
    let feed = query::feed::FeedRequest {
        range: DateRange::default(),
        campaign: None,
        clicks: None,
    };
    block_on(query::feed::run(&session, &feed, Some(&names), &mut out)).unwrap();
    let text = String::from_utf8(out).unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let payload = |v: &serde_json::Value| v["payload"]["data"].clone();
    let refused: Vec<_> = rows
        .iter()
        .filter(|v| payload(v)["status"] == "refused")
        .collect();
    let counted: Vec<_> = rows
        .iter()
        .filter(|v| payload(v)["status"] != "refused")
        .collect();
    assert_eq!((counted.len(), refused.len()), (9, 8), "{text}");
    for v in &refused {
        assert!(payload(v)["refused"].as_str().unwrap().len() > 10, "{v}");
        assert_ne!(payload(v)["status"], "approved");
    }
    let a1 = counted
        .iter()
        .find(|v| payload(v)["conversion_id"] == "A1")
        .unwrap();
    assert_eq!(
        (
            payload(a1)["status"].as_str(),
            payload(a1)["payout"].as_f64()
        ),
        (Some("approved"), Some(5.0)),
        "a forged rejection does not replace the real report"
    );
    let c1 = counted
        .iter()
        .find(|v| v["visitEvent"]["id"] == c.as_str() && payload(v)["conversion_id"].is_null())
        .unwrap();
    assert_eq!(
        payload(c1)["payout"].as_f64(),
        Some(30.0),
        "net-c believes no pixel payout"
    );
    let c2 = counted
        .iter()
        .find(|v| payload(v)["conversion_id"] == "C2")
        .unwrap();
    assert_eq!(
        (
            payload(c2)["status"].as_str(),
            payload(c2)["payout"].as_f64()
        ),
        (Some("approved"), Some(4.0)),
        "a later pixel does not outrank the authenticated postback"
    );

    // What was stored: tokens redacted, and every file readable by DuckDB.
    let lake = data.path().join("lake");
    let urls = strings(&common::read_parquet_tree(&lake.join("conversions")), "url");
    assert!(urls.iter().all(|u| !u.contains("tok-")), "{urls:?}");
    assert!(
        urls.iter().any(|u| u.contains("token=REDACTED")),
        "{urls:?}"
    );
    ensure_python_readers();
    let d = python(DUCKDB_EVERY_FILE, &lake);
    assert_eq!(d["rows"], 5 + 2 + 18, "{d}");
    assert_eq!(
        (d["arrow_rows"].as_u64(), d["arrow_k"].as_str()),
        (Some(25), Some("1")),
        "{d}"
    );
    assert_eq!(
        (d["k"].as_str(), d["source"].as_str()),
        (Some("1"), Some("news"))
    );
    let d_urls: Vec<&str> = d["urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert!(d_urls.iter().all(|u| !u.contains("tok-")));
}
