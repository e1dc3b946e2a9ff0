//! Cost models end to end (docs/query.md "Cost"): CPC, CPM (a thousandth per visit), CPA (per
//! conversion that counts) and RevShare (a share of the revenue) through the real edge, and
//! the cost, profit and ROI `query report` makes of them; cost updates after the fact
//! (`query costs set`), which reports recompute from.

use systest as common;

use common::{Edge, block_on};
use query::report::ReportRequest;
use query::{Session, SessionOptions, dims, names::Names};

const CONFIG: &str = r#"
[server]
node_id = 5

[[traffic_sources]]
id = "ts"
cost_param = "cost"

[[affiliate_networks]]
id = "net"

[[offers]]
id = "o"
network = "net"
url = "https://offer.example/?s={click_id}"
payout = 10.0

[[campaigns]]
id = "cpc"
traffic_source = "ts"
cost = 0.05
  [[campaigns.paths]]
  offers = [ { offer = "o" } ]

[[campaigns]]
id = "cpm"
traffic_source = "ts"
cost_model = "cpm"
cost = 2.5
  [[campaigns.paths]]
  offers = [ { offer = "o" } ]

[[campaigns]]
id = "cpa"
traffic_source = "ts"
cost_model = "cpa"
cost = 4.0
  [[campaigns.paths]]
  offers = [ { offer = "o" } ]

[[campaigns]]
id = "revshare"
traffic_source = "ts"
cost_model = "revshare"
cost = 0.3
  [[campaigns.paths]]
  offers = [ { offer = "o" } ]
"#;

#[test]
fn each_cost_model_shows_in_cost_profit_and_roi() {
    let mut e = Edge::with_config("legacy", CONFIG);
    // 1000 visits to each; on each campaign, 3 conversions (one of them rejected, one
    // reported twice) of 10.00 each.
    for campaign in ["cpc", "cpm", "cpa", "revshare"] {
        let mut c = e.connect();
        let mut clicks = Vec::new();
        for i in 0..1000 {
            let q = if campaign == "cpc" && i == 0 {
                "?cost=1.05"
            } else {
                ""
            };
            c.send(&format!("GET /c/{campaign}{q} HTTP/1.1\r\nHost: t\r\n\r\n"));
            let r = c.response();
            assert_eq!(r.status, 302);
            let loc = r.header("Location").unwrap();
            clicks.push(loc[loc.len() - 24..].to_owned());
        }
        for (i, click) in clicks.iter().take(3).enumerate() {
            let status = if i == 2 { "rejected" } else { "sale" };
            let times = if i == 1 { 2 } else { 1 };
            for _ in 0..times {
                c.send(&format!(
                    "GET /postback?cid={click}&txid=T{i}&status={status} HTTP/1.1\r\nHost: t\r\n\r\n"
                ));
                assert_eq!(c.response().status, 200);
            }
        }
    }
    e.stop();
    let store = e.store_url();
    let names = Names::parse(CONFIG).unwrap();
    let session = block_on(Session::open(&store, &SessionOptions::default())).unwrap();
    let req = ReportRequest {
        dims: dims::parse("campaign").unwrap(),
        ..Default::default()
    };
    let report = block_on(query::report::run(&session, &req, Some(&names))).unwrap();
    let row = |id: &str| {
        report
            .rows
            .iter()
            .find(|r| r.dims[0].as_deref() == Some(id))
            .unwrap_or_else(|| panic!("no row {id}: {:?}", report.rows))
            .figures
    };
    // Two conversions count on each campaign: revenue 20.00.
    for id in ["cpc", "cpm", "cpa", "revshare"] {
        let f = row(id);
        assert_eq!(
            (f.visits, f.conversions, f.revenue_micros),
            (1000, 2, 20_000_000),
            "{id}"
        );
    }
    // CPC: 999 × 0.05 and one visit whose source said 1.05.
    assert_eq!(row("cpc").cost_micros, 999 * 50_000 + 1_050_000);
    // CPM: 2.50 per thousand visits; profit 20.00 − 2.50, ROI 17.50 / 2.50.
    let cpm = row("cpm");
    assert_eq!(cpm.cost_micros, 2_500_000);
    assert_eq!(cpm.profit_micros(), 17_500_000);
    assert_eq!(cpm.roi(), Some(700.0));
    // CPA: 4.00 per conversion that counts (not the rejected one).
    let cpa = row("cpa");
    assert_eq!(cpa.cost_micros, 8_000_000);
    assert_eq!(cpa.profit_micros(), 12_000_000);
    assert_eq!(cpa.roi(), Some(150.0));
    // RevShare: 30 % of the revenue.
    let rs = row("revshare");
    assert_eq!(rs.cost_micros, 6_000_000);
    assert_eq!(rs.profit_micros(), 14_000_000);
    // The totals add the conversions' costs to the visits'.
    let total: i64 = report.rows.iter().map(|r| r.figures.cost_micros).sum();
    assert_eq!(
        total,
        999 * 50_000 + 1_050_000 + 2_500_000 + 8_000_000 + 6_000_000
    );
    // The same through the command line, with the config's catalog.
    let dir = common::TempDir::new("costs");
    let cfg = dir.write("edge.toml", CONFIG);
    let json = common::query_report(
        &store,
        &["--by", "campaign", "--config", cfg.to_str().unwrap()],
    );
    let out: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let rows = out["rows"].as_array().unwrap_or_else(|| panic!("{json}"));
    let cpa = rows
        .iter()
        .find(|r| r["campaign"] == "cpa")
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(cpa["cost"], 8.0, "{json}");
    assert_eq!(cpa["profit"], 12.0, "{json}");
    let cpm = rows
        .iter()
        .find(|r| r["campaign"] == "cpm")
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(cpm["cost"], 2.5, "{json}");
    assert_eq!(cpm["profit"], 17.5, "{json}");
    assert_eq!(cpm["roi"], 700.0, "{json}");

    // The source reports later that the CPC campaign's visits cost 30.00 in all, and then
    // that the last hour's (all of them, here) cost 40.00: the later update wins, spread
    // over the visits, and the report recomputes.
    let costs = |args: &[&str]| {
        let mut all = vec!["costs"];
        all.extend_from_slice(args);
        all.extend(["--store", store.as_str()]);
        common::query(&all)
    };
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let next = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    costs(&[
        "set",
        "--campaign",
        "cpc",
        "--from",
        &day,
        "--to",
        &next,
        "--cost",
        "30",
    ]);
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let soon = (chrono::Utc::now() + chrono::Duration::minutes(5))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    costs(&[
        "set",
        "--campaign",
        "cpc",
        "--from",
        &hour_ago,
        "--to",
        &soon,
        "--cost",
        "40",
    ]);
    assert_eq!(costs(&["list"]).lines().count(), 2);
    let report = block_on(query::report::run(&session, &req, Some(&names))).unwrap();
    let cpc = report
        .rows
        .iter()
        .find(|r| r.dims[0].as_deref() == Some("cpc"))
        .unwrap()
        .figures;
    assert_eq!(cpc.cost_micros, 40_000_000);
    assert_eq!(cpc.profit_micros(), -20_000_000);
    assert_eq!(cpc.roi(), Some(-50.0));
    // Other campaigns keep their cost.
    let cpm = report
        .rows
        .iter()
        .find(|r| r.dims[0].as_deref() == Some("cpm"))
        .unwrap()
        .figures;
    assert_eq!(cpm.cost_micros, 2_500_000);
    // The logs: each report of the CPA campaign as it came (three conversions, one reported
    // twice), newest first; its last visits.
    let log = |args: &[&str]| {
        let out = std::process::Command::new(common::query_bin())
            .args(["log"])
            .args(args)
            .args(["--store", &store, "--quiet", "--format", "csv"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let reports = log(&["conversions", "--campaign", "cpa"]);
    let lines: Vec<&str> = reports.lines().collect();
    assert_eq!(lines.len(), 1 + 4, "{reports}");
    assert!(
        lines[0].starts_with("ts,event_id,click_id,txid,status"),
        "{reports}"
    );
    assert!(lines[1].contains(",T2,rejected,"), "{reports}");
    assert!(lines[1..].iter().all(|l| l.contains(",cpa,")), "{reports}");
    let clicks = log(&["clicks", "--campaign", "cpm", "--limit", "5"]);
    assert_eq!(clicks.lines().count(), 1 + 5, "{clicks}");
    assert!(
        clicks
            .lines()
            .skip(1)
            .all(|l| l.contains(",visit,") && l.contains(",cpm,")),
        "{clicks}"
    );

    // A bad range is refused, naming the flag.
    let out = std::process::Command::new(common::query_bin())
        .args([
            "costs",
            "set",
            "--campaign",
            "cpc",
            "--from",
            "soon",
            "--to",
            &next,
            "--cost",
            "1",
        ])
        .args(["--store", &store])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from"));
}
