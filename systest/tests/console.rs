//! The console's API end to end: `query serve` over a store that two edges with
//! `catalog = "store"` follow. Objects created through the API answer on both edges within
//! seconds; bad objects are refused naming the field; nothing is answered without the token;
//! traffic and a postback go through an edge, and the report through the API is what
//! `query report` prints.

use systest as common;

use std::time::{Duration, Instant};

use common::{Console, Edge, TempDir};

const TOKEN: &str = "console-test-token-0123456789";

fn until(e: &Edge, target: &str, status: u16) -> Duration {
    let t = Instant::now();
    while e.get(target).status != status {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{target} never {status}:\n{}",
            e.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    t.elapsed()
}

#[test]
fn the_console_api_runs_a_campaign_end_to_end() {
    let dir = TempDir::new("console");
    let lake = dir.path().join("lake");
    std::fs::create_dir_all(&lake).unwrap();
    let store = format!("file://{}", lake.display());
    let console = Console::start(&store, TOKEN, "http://track.example");

    // No token, or a wrong one: nothing.
    let (st, _) = console.call("GET", "/api/v1/campaigns", None, "");
    assert_eq!(st, 401);
    let (st, _) = console.call("GET", "/api/v1/campaigns", Some("wrong"), "");
    assert_eq!(st, 401);
    let (st, _) = console.call("PUT", "/api/v1/offers/o1", None, "{}");
    assert_eq!(st, 401);

    let edges: Vec<Edge> = [1u16, 2]
        .into_iter()
        .map(|node| {
            let cfg = dir.write(
                &format!("edge{node}.toml"),
                &format!(
                    "[server]\nnode_id = {node}\ncatalog = \"store\"\ncatalog_poll_ms = 200\n"
                ),
            );
            Edge::start_with(
                &["--workers", "1", "--config", cfg.to_str().unwrap()],
                &dir.path().join(format!("data{node}")),
                &store,
                &[],
            )
        })
        .collect();

    let put = |path: &str, body: serde_json::Value| console.api("PUT", path, &body.to_string());
    let (st, ts) = put(
        "/api/v1/traffic_sources/ts",
        serde_json::json!({"name": "Push", "params": {"zone": "zoneid"}, "cost_param": "cpc"}),
    );
    assert_eq!(st, 201, "{ts}");
    let (st, net) = put(
        "/api/v1/affiliate_networks/net",
        serde_json::json!({"name": "Network", "postback_token": "s3cret-token"}),
    );
    assert_eq!(st, 201, "{net}");
    assert_eq!(
        net["postback_url"],
        "http://track.example/postback?cid={aff_sub}&payout={payout}&network=net&token=s3cret-token"
    );
    let (st, offer) = put(
        "/api/v1/offers/o1",
        serde_json::json!({"name": "Offer", "network": "net", "url": "https://offer.example/?sub={click_id}", "payout": 4.5}),
    );
    assert_eq!(st, 201, "{offer}");

    // Bad objects are refused naming the field, and change nothing.
    let (st, e) = put(
        "/api/v1/offers/o2",
        serde_json::json!({"url": "https://x.example/", "payuot": 1}),
    );
    assert_eq!(
        (st, e["field"].as_str()),
        (400, Some("offers/o2.payuot")),
        "{e}"
    );
    let (st, e) = put(
        "/api/v1/campaigns/c1",
        serde_json::json!({"traffic_source": "ts", "paths": [{"offers": [{"offer": "nope"}]}]}),
    );
    assert_eq!(
        (st, e["field"].as_str()),
        (400, Some("campaigns/c1.paths[0].offers[0].offer")),
        "{e}"
    );
    let (st, e) = put(
        "/api/v1/campaigns/c1",
        serde_json::json!({"id": "other", "traffic_source": "ts"}),
    );
    assert_eq!((st, e["field"].as_str()), (400, Some("id")), "{e}");
    let (st, _) = console.api("GET", "/api/v1/campaigns/c1", "");
    assert_eq!(st, 404);
    let (st, _) = console.api("GET", "/api/v1/widgets", "");
    assert_eq!(st, 404);

    let created = Instant::now();
    let (st, camp) = put(
        "/api/v1/campaigns/c1",
        serde_json::json!({"name": "Campaign one", "traffic_source": "ts", "cost": 0.02,
                           "paths": [{"offers": [{"offer": "o1"}]}]}),
    );
    assert_eq!(st, 201, "{camp}");
    assert_eq!(
        camp["campaign_url"],
        "http://track.example/c/c1?zoneid={zone}&cpc={cost}"
    );
    for e in &edges {
        until(e, "/c/c1", 302);
    }
    assert!(created.elapsed() < Duration::from_secs(5));
    // Conditional requests: create only what does not exist, replace only what was read.
    let (st, e) = console.call_with(
        "PUT",
        "/api/v1/offers/o1",
        &["If-None-Match: *"],
        &serde_json::json!({"url": "https://elsewhere.example/"}).to_string(),
    );
    assert_eq!((st, e["field"].as_str()), (412, Some("id")), "{e}");
    let (st, e) = console.call_with(
        "PUT",
        "/api/v1/offers/o1",
        &["If-Match: \"0000000000000000\""],
        &serde_json::json!({"url": "https://elsewhere.example/"}).to_string(),
    );
    assert_eq!(st, 412, "{e}");
    let (_, offer_now) = console.api("GET", "/api/v1/offers/o1", "");
    assert_eq!(offer_now, offer, "a refused change changes nothing");
    let (st, again) = console.call_with(
        "PUT",
        "/api/v1/offers/o1",
        &["If-Match: *"],
        &offer.to_string(),
    );
    assert_eq!((st, &again), (200, &offer));
    let (st, list) = console.api("GET", "/api/v1/campaigns", "");
    assert_eq!(st, 200);
    assert_eq!(list["items"][0]["name"], "Campaign one");
    // Pages: one object each, in id order, then none.
    let (_, first) = console.api("GET", "/api/v1/offers?limit=1", "");
    assert_eq!(
        (&first["total"], &first["items"][0]["id"]),
        (&1.into(), &"o1".into())
    );
    assert!(first.get("next").is_none(), "{first}");
    let (_, sources) = console.api("GET", "/api/v1/traffic_sources?limit=1&after=ts", "");
    assert_eq!(sources["items"], serde_json::json!([]));
    let (st, _) = console.api("GET", "/api/v1/offers?limit=0", "");
    assert_eq!(st, 400);

    // Still used: 409, and it stays.
    let (st, e) = console.api("DELETE", "/api/v1/offers/o1", "");
    assert_eq!(st, 409, "{e}");
    assert!(e["error"].as_str().unwrap().contains("campaigns/c1"), "{e}");

    // Traffic: two visits on each edge, one postback with the network's token.
    let mut clicks = Vec::new();
    for e in &edges {
        for _ in 0..2 {
            let r = e.get("/c/c1?zoneid=9");
            assert_eq!(r.status, 302);
            let loc = r.header("location").unwrap().to_owned();
            clicks.push(loc.split("sub=").nth(1).unwrap().to_owned());
        }
    }
    let r = edges[1].get(&format!(
        "/postback?cid={}&txid=t1&network=net&token=s3cret-token",
        clicks[0]
    ));
    assert_eq!(r.status, 200, "{}", r.body_str());
    for mut e in edges {
        e.signal("TERM");
        assert!(e.wait(Duration::from_secs(20)).success(), "{}", e.log());
    }

    // The report through the API is what `query report` prints, names and default payout
    // from the store's catalog.
    let (st, report) = console.call("GET", "/api/v1/report?by=campaign", Some(TOKEN), "");
    assert_eq!(st, 200, "{report}");
    assert_eq!(report, common::query_report(&store, &[]));
    let v: serde_json::Value = serde_json::from_str(&report).unwrap();
    let row = &v["rows"][0];
    assert_eq!(
        (
            &row["campaign"],
            &row["campaign_name"],
            &row["visits"],
            &row["conversions"],
            &row["revenue"]
        ),
        (
            &"c1".into(),
            &"Campaign one".into(),
            // Four visits, and the one on each edge that showed the campaign was live.
            &6.into(),
            &1.into(),
            &4.5.into()
        )
    );
    let (st, feed) = console.call("GET", "/api/v1/conversions", Some(TOKEN), "");
    assert_eq!(st, 200);
    assert_eq!(feed.lines().count(), 1, "{feed}");
    // The logs: every event as it came, newest first, as `query log` lists them.
    let (st, log) = console.call("GET", "/api/v1/log/conversions", Some(TOKEN), "");
    assert_eq!(st, 200, "{log}");
    let cli = common::query(&[
        "log",
        "conversions",
        "--quiet",
        "--format",
        "json",
        "--store",
        &store,
    ]);
    assert_eq!(log, cli);
    let reports: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reports.len(), 1, "{log}");
    assert_eq!(reports[0]["campaign_id"], "c1", "{log}");
    let (st, clicks) = console.call("GET", "/api/v1/log/clicks?limit=2", Some(TOKEN), "");
    assert_eq!((st, clicks.lines().count()), (200, 2), "{clicks}");
    let (st, csv) = console.call(
        "GET",
        "/api/v1/log/clicks?campaign=c1&format=csv",
        Some(TOKEN),
        "",
    );
    assert_eq!(st, 200);
    assert!(csv.starts_with("ts,event_id,kind,"), "{csv}");
    assert_eq!(csv.lines().count(), 1 + 6, "{csv}");
    for (path, status) in [
        ("/api/v1/log/nope", 404),
        ("/api/v1/log/clicks?limit=0", 400),
        ("/api/v1/log/clicks?format=xml", 400),
        ("/api/v1/log/clicks?from=yesterday", 400),
    ] {
        let (st, e) = console.api("GET", path, "");
        assert_eq!(st, status, "{path}: {e}");
        assert!(e["error"].as_str().is_some_and(|e| !e.is_empty()), "{e}");
    }
    let (st, _) = console.call("GET", "/api/v1/log/clicks", None, "");
    assert_eq!(st, 401);
    let (st, e) = console.api("GET", "/api/v1/report?by=nonsense", "");
    assert_eq!(st, 400, "{e}");

    // A drill-down: one campaign's offers, through the API and the CLI alike.
    let (st, drill) = console.call(
        "GET",
        "/api/v1/report?by=offer&filter=campaign%3Dc1",
        Some(TOKEN),
        "",
    );
    assert_eq!(st, 200, "{drill}");
    assert_eq!(
        drill,
        common::query_report(&store, &["--by", "offer", "--filter", "campaign=c1"])
    );
    let v: serde_json::Value = serde_json::from_str(&drill).unwrap();
    assert_eq!(
        (&v["rows"][0]["offer"], &v["totals"]["visits"]),
        (&"o1".into(), &6.into())
    );
    let (_, none) = console.api("GET", "/api/v1/report?by=offer&filter=campaign%3Dnope", "");
    assert_eq!(none["rows"], serde_json::json!([]), "{none}");
    let (st, quoted) = console.api(
        "GET",
        "/api/v1/report?filter=campaign%3Dx%27%20OR%20%271",
        "",
    );
    assert_eq!(
        (st, &quoted["rows"]),
        (200, &serde_json::json!([])),
        "{quoted}"
    );
    let (st, e) = console.api("GET", "/api/v1/report?filter=campaign", "");
    assert_eq!(
        (
            st,
            e["error"]
                .as_str()
                .is_some_and(|e| e.contains("bad filter"))
        ),
        (400, true),
        "{e}"
    );
    let (st, dims) = console.api("GET", "/api/v1/dimensions", "");
    assert_eq!(st, 200);
    assert!(
        dims["dimensions"]
            .as_array()
            .unwrap()
            .contains(&"zone".into()),
        "{dims}"
    );
    let (st, _) = console.call("GET", "/api/v1/dimensions", None, "");
    assert_eq!(st, 401);
    // The dashboard's files need no token, and load nothing from elsewhere.
    let (st, page) = console.call("GET", "/", None, "");
    assert_eq!(st, 200);
    assert!(
        page.contains("/assets/app.js") && !page.contains("//cdn"),
        "{page}"
    );
}
