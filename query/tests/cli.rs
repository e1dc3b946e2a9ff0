//! The `query` binary: clear errors for bad input, an empty report for an empty store, and
//! `--from/--to` attributing conversions to the day of their click, over Parquet written by
//! the sink's own writer.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Output};

use sink::EventId;
use sink::model::event::{Event, EventKind, Field};
use sink::storage::columns::{Builder, TableKind};
use sink::storage::store;

/// 2026-11-01T12:00:00Z and a day later.
const DAY1: u64 = 1_793_534_400_000;
const DAY2: u64 = DAY1 + 86_400_000;

/// A store in a temporary directory, removed when dropped.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new(tag: &str) -> Dir {
        let t = tempfile::Builder::new()
            .prefix(&format!("query-cli-{tag}-"))
            .tempdir()
            .unwrap();
        Dir(t)
    }

    fn path(&self) -> &std::path::Path {
        self.0.path()
    }

    fn url(&self) -> String {
        format!("file://{}", self.path().display())
    }
}

fn query(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_query"))
        .args(args)
        .output()
        .expect("query runs")
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn failure(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn visit(ts: u64, n: u32, campaign: &str, cost: i64) -> Event {
    let raw = format!("GET /c/{campaign}?utm_source=s{n} HTTP/1.1\r\nHost: t\r\n\r\n");
    let id = EventId::new(ts, 1, 0, n);
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut e = Event::new(EventKind::Visit, id, peer, raw.as_bytes(), 64);
    e.set_raw(Field::Method, 0, 3);
    e.set_raw(Field::Target, 4, raw.find(" HTTP").unwrap() - 4);
    e.push(Field::CampaignId, campaign.as_bytes());
    e.push_remapped([(&b"source"[..], format!("s{n}").as_bytes())]);
    e.cost_micros = cost;
    e
}

fn postback(ts: u64, n: u32, click: EventId, payout: i64) -> Event {
    let id = EventId::new(ts, 1, 1, n);
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut e = Event::new(EventKind::Postback, id, peer, b"GET", 64);
    e.set_raw(Field::Method, 0, 3);
    e.push(Field::ClickId, &click.to_hex());
    e.payout_micros = Some(payout);
    e
}

/// Writes `events` (all of one table and hour) as one Parquet file of the store at `dir`.
fn write(dir: &Path, table: TableKind, segment: u64, events: &[Event]) {
    let mut b = Builder::new(table);
    for e in events {
        b.append(e);
    }
    let bytes = store::encode_parquet(table, &b.finish().unwrap()).unwrap();
    let name = store::object_path(table, events[0].ts_ms() as i64, 1, segment);
    let path = dir.join(name.as_ref());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Day 1: three visits of camp-x (one converts on day 2); day 2: one visit of camp-y that
/// converts the same day.
fn two_days() -> Dir {
    let d = Dir::new("data");
    let v1: Vec<Event> = (0..3)
        .map(|n| visit(DAY1 + u64::from(n), n, "camp-x", 250_000))
        .collect();
    let v2 = vec![visit(DAY2, 7, "camp-y", 1_000_000)];
    write(d.path(), TableKind::Visits, 1, &v1);
    write(d.path(), TableKind::Visits, 2, &v2);
    let c2 = vec![
        postback(DAY2 + 10, 1, v1[0].id, 40_000_000),
        postback(DAY2 + 20, 2, v2[0].id, 3_330_000),
    ];
    write(d.path(), TableKind::Conversions, 3, &c2);
    d
}

#[test]
fn a_missing_store_is_named() {
    let e = failure(&query(&["report", "--store", "file:///nonexistent/lake"]));
    assert!(
        e.contains("/nonexistent/lake") && e.contains("does not exist"),
        "{e}"
    );
}

#[test]
fn bad_dates_and_ranges_are_refused() {
    let d = Dir::new("dates");
    let u = d.url();
    let e = failure(&query(&["report", "--store", &u, "--from", "2026-02-30"]));
    assert!(e.contains("--from") && e.contains("YYYY-MM-DD"), "{e}");
    let e = failure(&query(&[
        "report",
        "--store",
        &u,
        "--from",
        "2026-02-02",
        "--to",
        "2026-02-01",
    ]));
    assert!(e.contains("after"), "{e}");
    let e = failure(&query(&["conversions", "--store", &u, "--to", "tomorrow"]));
    assert!(e.contains("--to"), "{e}");
}

#[test]
fn an_unknown_dimension_lists_the_valid_ones() {
    let d = two_days();
    let u = d.url();
    let e = failure(&query(&[
        "report",
        "--store",
        &u,
        "--by",
        "campaign,cuntry",
    ]));
    assert!(
        e.contains("cuntry") && e.contains("country") && e.contains("source"),
        "{e}"
    );
    let e = failure(&query(&["report", "--store", &u, "--by", "a-b"]));
    assert!(
        e.contains("unknown dimension") && e.contains("landing_page"),
        "{e}"
    );
}

#[test]
fn an_empty_store_gives_an_empty_report() {
    let d = Dir::new("empty");
    let u = d.url();
    let table = stdout(&query(&[
        "report",
        "--store",
        &u,
        "--by",
        "campaign,country",
    ]));
    assert!(table.starts_with("campaign"), "{table}");
    assert!(table.contains("(total)"), "{table}");
    let json = stdout(&query(&["report", "--store", &u, "--format", "json"]));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["rows"], serde_json::json!([]));
    assert_eq!(json["totals"]["visits"], 0);
    let csv = stdout(&query(&[
        "sql",
        "--store",
        &u,
        "--format",
        "csv",
        "SELECT count(*) AS n FROM conversions",
    ]));
    assert_eq!(csv, "n\n0\n");
    assert_eq!(stdout(&query(&["conversions", "--store", &u])), "");
}

#[test]
fn conversions_count_on_the_day_of_their_click() {
    let d = two_days();
    let u = d.url();
    let report = |args: &[&str]| -> serde_json::Value {
        let mut a = vec!["report", "--store", &u, "--format", "json"];
        a.extend_from_slice(args);
        serde_json::from_str(&stdout(&query(&a))).unwrap()
    };
    let all = report(&[]);
    assert_eq!(all["totals"]["visits"], 4);
    assert_eq!(all["totals"]["conversions"], 2);
    assert_eq!(all["totals"]["revenue"], 43.33);
    assert_eq!(all["totals"]["cost_micros"], 1_750_000);
    assert_eq!(all["rows"][0]["campaign"], "camp-x", "most visits first");
    // Day 1 holds camp-x's visits and the conversion of one of them (recorded on day 2).
    let day1 = report(&["--from", "2026-11-01", "--to", "2026-11-01"]);
    assert_eq!(day1["totals"]["visits"], 3);
    assert_eq!(day1["totals"]["conversions"], 1);
    assert_eq!(day1["totals"]["revenue_micros"], 40_000_000);
    assert_eq!(day1["totals"]["roi"], 5233.33);
    let day2 = report(&["--from", "2026-11-02"]);
    assert_eq!(day2["totals"]["visits"], 1);
    assert_eq!(day2["totals"]["revenue_micros"], 3_330_000);
    assert_eq!(day2["rows"].as_array().unwrap().len(), 1, "{day2}");
    // By date, rows come in date order; CSV carries the same numbers and a totals row.
    let csv = stdout(&query(&[
        "report", "--store", &u, "--by", "date", "--format", "csv",
    ]));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "date,visits,clicks,conversions,revenue,cost,profit,roi,cr,epc,leads,sales,pending,rebills,rejected,chargebacks,\
         revenue_leads,revenue_sales,revenue_pending,revenue_rebills,revenue_rejected,revenue_chargebacks"
    );
    assert_eq!(
        lines[1],
        "2026-11-01,3,0,1,40.00,0.75,39.25,5233.33,33.33,13.3333,0,1,0,0,0,0,0.00,40.00,0.00,0.00,0.00,0.00"
    );
    assert_eq!(
        lines[2],
        "2026-11-02,1,0,1,3.33,1.00,2.33,233.00,100.00,3.3300,0,1,0,0,0,0,0.00,3.33,0.00,0.00,0.00,0.00"
    );
    assert_eq!(
        lines[3],
        "(total),4,0,2,43.33,1.75,41.58,2376.00,50.00,10.8325,0,2,0,0,0,0,0.00,43.33,0.00,0.00,0.00,0.00"
    );
    // The feed's range is the conversions' own time: both happened on day 2.
    let feed = stdout(&query(&[
        "conversions",
        "--store",
        &u,
        "--from",
        "2026-11-02",
    ]));
    assert_eq!(feed.lines().count(), 2);
    let first: serde_json::Value = serde_json::from_str(feed.lines().next().unwrap()).unwrap();
    assert_eq!(first["visitEvent"]["payload"]["remaped"]["source"], "s0");
    assert_eq!(first["payload"]["data"]["payoutCents"], 4000);
    assert_eq!(first["created_at"], "2026-11-02T12:00:00.010Z");
    let none = stdout(&query(&[
        "conversions",
        "--store",
        &u,
        "--to",
        "2026-11-01",
    ]));
    assert_eq!(none, "");
}

#[test]
fn sql_reads_both_tables_with_partitions() {
    let d = two_days();
    let u = d.url();
    let out = stdout(&query(&[
        "sql",
        "--store",
        &u,
        "--format",
        "json",
        "SELECT v.dt, count(*) AS visits, count(c.event_id) AS converted FROM visits v \
         LEFT JOIN conversions c ON c.click_id = v.event_id GROUP BY v.dt ORDER BY v.dt",
    ]));
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert_eq!(
        rows[0],
        serde_json::json!({"dt": "2026-11-01", "visits": 3, "converted": 1})
    );
    let e = failure(&query(&["sql", "--store", &u, "SELECT nope FROM visits"]));
    assert!(e.contains("nope"), "{e}");
}

const CATALOG: &str = r#"
[server]
listen = "127.0.0.1:9"

[[traffic_sources]]
id = "ts"
name = "Blog"

[[offers]]
id = "o1"
name = "Offer one"
url = "https://o.example/?s={click_id}"
payout = 7.5

[[campaigns]]
id = "camp-x"
name = "Campaign X"
traffic_source = "ts"
  [[campaigns.paths]]
  offers = [ { offer = "o1" } ]
"#;

#[test]
fn a_catalog_imported_into_the_store_names_reports_and_exports_back() {
    let d = two_days();
    let cfg = d.path().join("edge.toml");
    std::fs::write(&cfg, CATALOG).unwrap();
    let store = d.url();
    let o = query(&[
        "catalog",
        "import",
        cfg.to_str().unwrap(),
        "--store",
        &store,
    ]);
    let said = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{said}");
    assert!(said.contains("catalog version 1: 1 traffic_sources, 0 affiliate_networks, 1 offers, 0 landing_pages, 1 campaigns"), "{said}");
    let again = query(&[
        "catalog",
        "import",
        cfg.to_str().unwrap(),
        "--store",
        &store,
    ]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("version 1 (unchanged)"));

    // No --config: the names come from the store.
    let json = stdout(&query(&["report", "--store", &store, "--format", "json"]));
    assert!(json.contains("Campaign X"), "{json}");

    // Exported, it parses as a config file's catalog again and re-imports as unchanged.
    let exported = stdout(&query(&["catalog", "export", "--store", &store]));
    assert!(!exported.contains("[server]"), "{exported}");
    let back = d.path().join("back.toml");
    std::fs::write(&back, &exported).unwrap();
    let o = query(&[
        "catalog",
        "import",
        back.to_str().unwrap(),
        "--store",
        &store,
    ]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("(unchanged)"),
        "{exported}"
    );

    // A bad catalog is refused naming the key, and the store keeps what it had.
    std::fs::write(
        &cfg,
        CATALOG.replace("traffic_source = \"ts\"", "traffic_source = \"nope\""),
    )
    .unwrap();
    let e = failure(&query(&[
        "catalog",
        "import",
        cfg.to_str().unwrap(),
        "--store",
        &store,
    ]));
    assert!(e.contains("campaigns[0].traffic_source"), "{e}");
    let exported_again = stdout(&query(&["catalog", "export", "--store", &store]));
    assert_eq!(exported_again, exported);
}

/// A report by offer joins the visits to their latest clicks: the clicks must be the hash
/// join's build side. Built from the visits, the table held every visit (18.9 GiB for 50 M;
/// docs/performance.md).
#[test]
fn a_report_by_offer_hashes_the_clicks_not_the_visits() {
    let d = two_days();
    let req = query::report::ReportRequest {
        dims: query::dims::parse("campaign,offer").unwrap(),
        ..Default::default()
    };
    let sql = format!("EXPLAIN {}", query::report::sql(&req, None));
    let plan = stdout(&query(&[
        "sql",
        "--store",
        &d.url(),
        "--quiet",
        "--format",
        "csv",
        &sql,
    ]));
    let joins: Vec<&str> = plan
        .split("HashJoinExec: ")
        .skip(1)
        .filter_map(|j| j.lines().next())
        .filter(|j| j.contains("click_of@") && j.contains("event_id@"))
        .collect();
    assert_eq!(joins.len(), 1, "{plan}");
    assert!(
        joins[0].starts_with("mode=CollectLeft, join_type=Right, on=[(click_of@"),
        "{plan}"
    );
}

/// `query templates`: the presets listed, a source's campaign URL with its own macros in
/// place, a network's postback URL, and an unknown name refused by name.
#[test]
fn templates_are_listed_and_print_the_urls_to_paste() {
    let list = stdout(&query(&["templates"]));
    let split = list
        .find("Affiliate networks")
        .unwrap_or_else(|| panic!("{list}"));
    let (sources, networks) = list.split_at(split);
    let row = |section: &str, name: &str| -> Option<String> {
        section
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(str::to_owned)
    };
    // Zeropark among the sources, with its click id parameter (`cid`) and cost parameter.
    let zp = row(sources, "zeropark").unwrap_or_else(|| panic!("{list}"));
    assert!(zp.contains("Zeropark"), "{zp}");
    let cells: Vec<&str> = zp.split_whitespace().collect();
    assert!(cells.contains(&"cid") && cells.contains(&"cost"), "{zp}");
    // Everflow among the networks, with its click id macro.
    let ef = row(networks, "everflow").unwrap_or_else(|| panic!("{list}"));
    assert!(ef.contains("Everflow") && ef.contains("{sub1}"), "{ef}");
    assert!(row(networks, "zeropark").is_none(), "{list}");

    // One source: the campaign URL starts at the edge and carries Zeropark's own macros for
    // its click id and cost.
    let zp = stdout(&query(&[
        "templates",
        "zeropark",
        "--edge-url",
        "http://e.example",
        "--campaign",
        "c1",
    ]));
    assert!(zp.contains("template = \"zeropark\""), "{zp}");
    let mut lines = zp.lines();
    assert!(
        lines.any(|l| l.starts_with("Campaign URL to paste into Zeropark:")),
        "{zp}"
    );
    let url = lines.next().unwrap_or_default().trim();
    assert!(url.starts_with("http://e.example/c/c1?"), "{zp}");
    let pairs: Vec<&str> = url.split(['?', '&']).collect();
    assert!(pairs.contains(&"cid={cid}"), "{zp}");
    assert!(pairs.contains(&"cost={visit_cost}"), "{zp}");
    assert!(pairs.contains(&"target={target}"), "{zp}");
    // Its postback, with the account value still to fill in.
    assert!(
        zp.contains("zppostback/${ZEROPARK_KEY}?cid={external_id}&payout={payout}"),
        "{zp}"
    );

    // One network: the postback URL to paste into it, at the edge, with its macros.
    let ef = stdout(&query(&[
        "templates",
        "everflow",
        "--edge-url",
        "http://e.example/",
    ]));
    let mut lines = ef.lines();
    assert!(
        lines.any(|l| l.starts_with("Postback URL to paste into Everflow:")),
        "{ef}"
    );
    let url = lines.next().unwrap_or_default().trim();
    assert!(
        url.starts_with("http://e.example/postback?cid={sub1}&payout={payout_amount}"),
        "{ef}"
    );
    assert!(url.contains("&network=everflow"), "{ef}");

    // An unknown name fails, naming it.
    let e = failure(&query(&["templates", "no-such-source"]));
    assert!(
        e.contains("no-such-source") && e.contains("query templates"),
        "{e}"
    );
}
