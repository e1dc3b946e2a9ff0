//! The dashboard in a real browser: headless Chromium driven by Selenium
//! (`systest/browser/dashboard.py`) against `query serve` over a store a real edge follows
//! and writes. It signs in, creates a campaign through the form (after a mistake the API
//! refuses at the field), sends traffic to the URL the form shows, and finds the campaign's
//! row, a drill-down and a phone-sized page; the numbers it saw are compared here with what
//! `query report` prints. Screenshots are kept in `target/<profile>/screenshots/dashboard`
//! (or `$DASHBOARD_SCREENSHOTS`).

use systest as common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Console, Edge, TempDir};
use serde_json::{Value, json};

const TOKEN: &str = "dashboard-test-token-0123456789";
const NETWORK_TOKEN: &str = "network-token-42";

fn screenshots() -> PathBuf {
    if let Some(d) = std::env::var_os("DASHBOARD_SCREENSHOTS") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/dashboard-… → target/<profile>/screenshots/dashboard
    exe.parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("screenshots/dashboard")
}

#[test]
fn the_dashboard_runs_a_campaign_in_a_real_browser() {
    common::ensure_browser();
    let dir = TempDir::new("dashboard");
    let lake = dir.path().join("lake");
    std::fs::create_dir_all(&lake).unwrap();
    let store = format!("file://{}", lake.display());
    let cfg = dir.write(
        "edge.toml",
        "[server]\nnode_id = 1\ncatalog = \"store\"\ncatalog_poll_ms = 200\nflush_interval_ms = 1000\n",
    );
    let edge = Edge::start_with(
        &["--workers", "1", "--config", cfg.to_str().unwrap()],
        &dir.path().join("data"),
        &store,
        &[],
    );
    let console = Console::start(&store, TOKEN, &format!("http://{}", edge.addr));
    let put = |path: &str, body: Value| {
        let (st, v) = console.api("PUT", path, &body.to_string());
        assert_eq!(st, 201, "{path}: {v}");
    };
    put(
        "/api/v1/traffic_sources/ts",
        json!({"name": "Push network", "params": {"zone": "zoneid"}, "cost_param": "cpc"}),
    );
    put(
        "/api/v1/affiliate_networks/net",
        json!({"name": "Affiliate network", "postback_token": NETWORK_TOKEN}),
    );
    put(
        "/api/v1/offers/o1",
        json!({"name": "Sweepstakes", "network": "net", "url": "https://offer.example/?sub={click_id}", "payout": 4.5}),
    );
    // A campaign that already has traffic, so the report has more than one row to sort.
    put(
        "/api/v1/campaigns/older",
        json!({"name": "Older campaign", "traffic_source": "ts", "cost": 0.01,
               "paths": [{"offers": [{"offer": "o1"}]}]}),
    );
    let t = Instant::now();
    while edge.get("/c/older").status != 302 {
        assert!(t.elapsed() < Duration::from_secs(5), "{}", edge.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    for z in 0..11 {
        let r = edge.get(&format!("/c/older?zoneid=z{}", z % 3));
        assert_eq!(r.status, 302);
    }

    let out_dir = screenshots();
    let run = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/browser/dashboard.py"))
        .args(["--console", &format!("http://{}", console.addr)])
        .args(["--token", TOKEN, "--network-token", NETWORK_TOKEN])
        .arg("--out")
        .arg(&out_dir)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the browser test failed (screenshots in {}):\n{}\n{stdout}\nedge:\n{}",
        out_dir.display(),
        String::from_utf8_lossy(&run.stderr),
        edge.log()
    );
    let shown: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    eprintln!("screenshots: {}", out_dir.display());

    // What the browser showed is what `query report` prints.
    let report: Value = serde_json::from_str(&common::query_report(&store, &[])).unwrap();
    let row = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["campaign"] == "browser-test")
        .unwrap_or_else(|| panic!("no row for the campaign: {report}"));
    let cells = |key: &str| -> Vec<String> {
        shown[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key}: {shown}"))
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect()
    };
    let money = |v: &Value| format!("{:.2}", v.as_f64().unwrap());
    let expect = |r: &Value| {
        vec![
            r["visits"].to_string(),
            r["clicks"].to_string(),
            r["conversions"].to_string(),
            money(&r["revenue"]),
            money(&r["cost"]),
            money(&r["profit"]),
        ]
    };
    assert_eq!(cells("row")[1..7], expect(row)[..], "{shown}");
    assert_eq!(
        cells("totals")[1..7],
        expect(&report["totals"])[..],
        "{shown}"
    );
    assert_eq!(row["conversions"], 2, "{report}");
    // The click log listed each of the campaign's visits.
    assert_eq!(shown["log_visits"], row["visits"], "{shown}");
    let statuses: Vec<String> = [
        "leads",
        "sales",
        "pending",
        "rebills",
        "rejected",
        "chargebacks",
    ]
    .iter()
    .map(|k| row[k].to_string())
    .collect();
    assert_eq!(cells("statuses"), statuses, "{shown}");
}
