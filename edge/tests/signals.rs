//! Signals and config handling of the real binary: SIGHUP reloads under load, SIGTERM drains,
//! `--check-config` names bad keys.

use systest as common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{CAMP, DRIVERS, Edge, TempDir};
use edge::config::DEMO_CONFIG;

const EXTRA_CAMPAIGN: &str = r#"
[[campaigns]]
id = "camp-two"
traffic_source = "ts-blog"
  [[campaigns.paths]]
  offers = [ { offer = "offer-drip-trial" } ]
"#;

#[test]
fn sighup_reloads_good_files_and_keeps_the_table_on_bad_ones_under_load() {
    for d in DRIVERS {
        let dir = TempDir::new("reload");
        let path = dir.write("edge.toml", DEMO_CONFIG);
        let e = Edge::start(
            &[
                "--driver",
                d,
                "--workers",
                "2",
                "--config",
                path.to_str().unwrap(),
            ],
            None,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let load: Vec<_> = (0..2)
            .map(|_| {
                let mut c = e.connect();
                let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        c.send(&format!("GET {CAMP} HTTP/1.1\r\nHost: t\r\n\r\n"));
                        let counter = if c.response().status == 302 {
                            &ok
                        } else {
                            &bad
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();

        assert_eq!(e.get("/c/camp-two").status, 404);
        dir.write("edge.toml", &format!("{DEMO_CONFIG}{EXTRA_CAMPAIGN}"));
        e.signal("HUP");
        e.wait_for_log("config reloaded", Duration::from_secs(5));
        assert_eq!(e.get("/c/camp-two").status, 302, "{d}");

        dir.write("edge.toml", &format!("{DEMO_CONFIG}{EXTRA_CAMPAIGN}[[campaigns]]\nid = \"x\"\ntraffic_source = \"missing\"\n"));
        e.signal("HUP");
        e.wait_for_log("config reload refused", Duration::from_secs(5));
        assert!(
            e.log()
                .contains("traffic_source: no traffic source with id \"missing\""),
            "{}",
            e.log()
        );
        assert_eq!(e.get("/c/camp-two").status, 302, "the old campaigns stay");

        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        for t in load {
            t.join().unwrap();
        }
        assert!(
            ok.load(Ordering::Relaxed) > 50,
            "load ran: {}",
            ok.load(Ordering::Relaxed)
        );
        assert_eq!(
            bad.load(Ordering::Relaxed),
            0,
            "no request failed during reloads"
        );
        assert_eq!(e.metric("edge_config_reloads_total"), 1);
        assert_eq!(e.metric("edge_config_reload_failures_total"), 1);
    }
}

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    for d in DRIVERS {
        let mut e = Edge::demo(d);
        let mut idle = e.connect();
        idle.send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(idle.response().status, 200);
        let mut busy = e.connect();
        busy.send(&format!("GET {CAMP} HTTP/1.1\r\nHost: t\r\n"));
        std::thread::sleep(Duration::from_millis(100));
        e.signal("TERM");
        std::thread::sleep(Duration::from_millis(200));
        busy.send("User-Agent: late\r\n\r\n");
        let r = busy.response();
        assert_eq!(r.status, 302, "{d}: the in-flight request is answered");
        assert_eq!(r.header("Connection"), Some("close"));
        let st = e.wait(Duration::from_secs(10));
        assert!(st.success(), "{d}: exit status {st:?}\n{}", e.log());
        assert!(idle.closed(), "idle keep-alive connections are closed");
        assert!(
            std::net::TcpStream::connect(e.addr).is_err(),
            "no longer accepting"
        );
        e.wait_for_log("stopped emitted=1 logged=1", Duration::from_secs(5));
        let visits = e.stored("visits");
        assert_eq!(
            visits.iter().map(|b| b.num_rows()).sum::<usize>(),
            1,
            "flushed to the store"
        );
        assert!(e.logged_events().is_empty(), "and the WAL emptied");
    }
}

#[test]
fn sigint_also_drains() {
    let mut e = Edge::demo("io_uring");
    assert_eq!(e.get(CAMP).status, 302);
    e.signal("INT");
    assert!(e.wait(Duration::from_secs(10)).success());
}

fn check(text: &str) -> (bool, String, String) {
    let dir = TempDir::new("check");
    let path = dir.write("c.toml", text);
    let out = Command::new(common::bin())
        .args(["--check-config", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn check_config_names_the_bad_key() {
    let (ok, stdout, _) = check(DEMO_CONFIG);
    assert!(ok);
    assert!(stdout.contains("ok (2 campaigns, 2 offers"), "{stdout}");
    for (text, key) in [
        (
            DEMO_CONFIG.replace("node_id = 1", "node_id = 1\nlisten_port = 9"),
            "listen_port",
        ),
        (
            DEMO_CONFIG.replace("offer = \"offer-drip\"", "offer = \"offer-gone\""),
            "campaigns[0].paths[0].offers[0].offer",
        ),
        (
            DEMO_CONFIG.replace("{click_id}&src", "{click_id&src"),
            "offers[0].url",
        ),
        (
            DEMO_CONFIG.replace("127.0.0.1:8080", "nowhere"),
            "server.listen",
        ),
        ("[[campaigns]]\nid = 5\n".into(), "id"),
        ("not toml at all [".into(), "TOML"),
    ] {
        let (ok, _, stderr) = check(&text);
        assert!(!ok, "{key} should fail");
        assert!(stderr.contains(key), "{key}: {stderr}");
    }
    let out = Command::new(common::bin())
        .args(["--check-config", "/nonexistent/edge.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/edge.toml"));
}
