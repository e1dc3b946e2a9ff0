//! The catalog kept in the store: two edges with `catalog = "store"` sharing one bucket
//! follow what `query catalog import` writes (a new campaign answers on both within
//! seconds, a removed one stops answering), an edge that cannot read the catalog at start
//! recovers by itself, and the report over the store names campaigns and applies the
//! default payout in force when each conversion arrived, with no `--config`.

use systest as common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Edge, TempDir, block_on};
use query::dims;
use query::report::ReportRequest;
use query::{DateRange, Session, SessionOptions, stored};

const CATALOG: &str = r#"
[[traffic_sources]]
id = "ts"
name = "Push source"
params = { zone = "zoneid" }

[[affiliate_networks]]
id = "net"
name = "Network"

[[offers]]
id = "o1"
name = "Offer one"
network = "net"
url = "https://offer.example/?sub={click_id}&z={zone}"
payout = 2

[[campaigns]]
id = "c1"
name = "Campaign one"
traffic_source = "ts"
  [[campaigns.paths]]
  offers = [ { offer = "o1" } ]
"#;

const C2: &str = r#"
[[campaigns]]
id = "c2"
name = "Campaign two"
traffic_source = "ts"
  [[campaigns.paths]]
  offers = [ { offer = "o1" } ]
"#;

fn server(node: u16) -> String {
    format!("[server]\nnode_id = {node}\ncatalog = \"store\"\ncatalog_poll_ms = 200\n")
}

fn import(dir: &TempDir, store: &str, text: &str) -> stored::Imported {
    let path = dir.write("catalog.toml", text);
    block_on(async { stored::import(&stored::create(store)?, &path).await }).unwrap()
}

/// Waits until `target` answers `status` on `e`; returns how long it took.
fn until(e: &Edge, target: &str, status: u16, limit: Duration) -> Duration {
    let t = Instant::now();
    loop {
        if e.get(target).status == status {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < limit,
            "{target} never answered {status}:\n{}",
            e.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn click_id(location: &str) -> String {
    location
        .split("sub=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn edges_sharing_a_store_follow_its_catalog() {
    let dir = TempDir::new("catalog");
    let store = format!("file://{}", dir.path().join("lake").display());
    let first = import(&dir, &store, CATALOG);
    assert_eq!((first.version, first.changed), (1, true));
    // The same file again writes nothing.
    assert!(!import(&dir, &store, CATALOG).changed);

    let edges: Vec<Edge> = [1u16, 2]
        .into_iter()
        .map(|node| {
            let cfg = dir.write(&format!("edge{node}.toml"), &server(node));
            let data = dir.path().join(format!("data{node}"));
            Edge::start_with(
                &["--workers", "1", "--config", cfg.to_str().unwrap()],
                &data,
                &store,
                &[],
            )
        })
        .collect();
    for e in &edges {
        let r = e.get("/c/c1?zoneid=77");
        assert_eq!(r.status, 302, "{}", e.log());
        assert!(r.header("location").unwrap().ends_with("&z=77"));
        assert_eq!(e.get("/c/c2").status, 404);
        assert_eq!(e.metric("edge_catalog_version "), 1);
    }
    let clicked = click_id(edges[0].get("/c/c1").header("location").unwrap());
    let r = edges[0].get(&format!("/postback?cid={clicked}&txid=t1"));
    assert_eq!(r.status, 200, "{}", r.body_str());

    // A new campaign, and the offer's default payout raised: live on both edges.
    std::thread::sleep(Duration::from_millis(5));
    let v2 = import(
        &dir,
        &store,
        &format!("{}{C2}", CATALOG.replace("payout = 2", "payout = 3")),
    );
    assert_eq!(v2.version, 2);
    for e in &edges {
        let took = until(e, "/c/c2", 302, Duration::from_secs(5));
        assert!(took < Duration::from_secs(5), "{took:?}");
        e.wait_for_log("catalog changed", Duration::from_secs(1));
    }
    let clicked2 = click_id(edges[1].get("/c/c2").header("location").unwrap());
    assert_eq!(
        edges[1]
            .get(&format!("/postback?cid={clicked2}&txid=t2"))
            .status,
        200
    );
    // Removed: no longer answered.
    import(
        &dir,
        &store,
        CATALOG.replace("payout = 2", "payout = 3").as_str(),
    );
    for e in &edges {
        until(e, "/c/c2", 404, Duration::from_secs(5));
    }
    for mut e in edges {
        e.signal("TERM");
        assert!(e.wait(Duration::from_secs(20)).success(), "{}", e.log());
    }

    // The report over the store names things from its catalog, and each conversion earns
    // the default payout of its time: 2 before the change, 3 after.
    let session = block_on(Session::open(&store, &SessionOptions::default())).unwrap();
    let names = block_on(async { stored::names(&stored::open(&store)?).await })
        .unwrap()
        .expect("the store has a catalog");
    assert_eq!(names.campaign("c2"), Some("Campaign two"));
    let req = ReportRequest {
        range: DateRange::parse(None, None).unwrap(),
        dims: dims::parse("campaign").unwrap(),
        include_bots: true,
        ..Default::default()
    };
    let report = block_on(query::report::run(&session, &req, Some(&names))).unwrap();
    let got: BTreeMap<String, (i64, i64)> = report
        .rows
        .iter()
        .map(|r| {
            (
                r.dims[0].clone().unwrap_or_default(),
                (r.figures.conversions, r.figures.revenue_micros),
            )
        })
        .collect();
    assert_eq!(got["c1"], (1, 2_000_000), "{got:?}");
    assert_eq!(got["c2"], (1, 3_000_000), "{got:?}");
    let mut json = Vec::new();
    query::output::report(&report, query::output::Format::Json, &mut json).unwrap();
    let json = String::from_utf8(json).unwrap();
    assert!(json.contains("Campaign two"), "{json}");
}

#[test]
fn an_edge_that_cannot_read_the_catalog_at_start_recovers_by_itself() {
    let dir = TempDir::new("catalog-bad");
    let lake = dir.path().join("lake");
    let store = format!("file://{}", lake.display());
    let log = lake.join("catalog/log");
    std::fs::create_dir_all(&log).unwrap();
    let first = log.join("00000000000000000001.json");
    std::fs::write(&first, "{\"version\": 1, \"ts").unwrap();
    let cfg = dir.write("edge.toml", &server(1));
    let e = Edge::start_with(
        &["--workers", "1", "--config", cfg.to_str().unwrap()],
        &dir.path().join("data"),
        &store,
        &[],
    );
    e.wait_for_log("cannot load the store's catalog", Duration::from_secs(5));
    assert!(e.log().contains("00000000000000000001.json"), "{}", e.log());
    assert_eq!(e.get("/c/c1").status, 404);
    assert_eq!(e.get("/healthz").status, 200);
    // The damaged version is replaced (as an operator would, from a backup): served.
    std::fs::remove_file(&first).unwrap();
    import(&dir, &store, CATALOG);
    until(&e, "/c/c1", 302, Duration::from_secs(10));
}

#[test]
fn a_config_with_both_a_store_catalog_and_campaigns_is_refused() {
    let dir = TempDir::new("catalog-both");
    let cfg = dir.write("edge.toml", &format!("{}{CATALOG}", server(1)));
    let out = std::process::Command::new(common::bin())
        .args(["--check-config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.catalog") && err.contains("query catalog import"),
        "{err}"
    );
}
