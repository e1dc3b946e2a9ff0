//! A conversion is answered 200 only once it is in the write-ahead log: checked by reading
//! the log of the real binary, including after `kill -9` in the middle of postback traffic.

use systest as common;

use std::collections::HashMap;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{CAMP, DRIVERS, Edge, TempDir};
use sink::{EventKind, Field};

const CID: &str = "0167a15c98772c0004000001";

#[test]
fn acknowledged_conversions_and_visits_are_in_the_log() {
    for d in DRIVERS {
        let e = Edge::demo(d);
        let mut c = e.connect();
        let mut locations = Vec::new();
        for i in 0..50 {
            c.send(&format!(
                "GET {CAMP}?utm_source=s{i} HTTP/1.1\r\nHost: t\r\n\r\n"
            ));
            locations.push(c.response().header("Location").unwrap().to_owned());
            c.send(&format!(
                "GET /postback?cid={CID}&payout={i}.25&txid=get-{i} HTTP/1.1\r\nHost: t\r\n\r\n"
            ));
            assert_eq!(c.response().status, 200);
            let body = format!("cid={CID}&payout=1&txid=post-{i}&status=pending");
            c.send(&format!(
                "POST /postback HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
            assert_eq!(c.response().status, 200);
            c.send(&format!(
                "GET /p.gif?cid={CID}&payout=2&txid=px-{i} HTTP/1.1\r\nHost: t\r\n\r\n"
            ));
            assert_eq!(c.response().status, 200);
            // Every acknowledged conversion is already on disk, without a shutdown.
            let logged = e.logged_events();
            for txid in [format!("get-{i}"), format!("post-{i}"), format!("px-{i}")] {
                assert!(
                    logged
                        .iter()
                        .any(|ev| ev.get(Field::TxId) == txid.as_bytes()),
                    "{d}: {txid} acknowledged but not in the log"
                );
            }
        }
        let logged = e.logged_events();
        let get7 = logged
            .iter()
            .find(|ev| ev.get(Field::TxId) == b"get-7")
            .unwrap();
        assert_eq!(get7.kind, EventKind::Postback);
        assert_eq!(get7.payout_micros, Some(7_250_000));
        assert_eq!(get7.get(Field::ClickId), CID.as_bytes());
        let post3 = logged
            .iter()
            .find(|ev| ev.get(Field::TxId) == b"post-3")
            .unwrap();
        assert_eq!(post3.get(Field::Status), b"pending");
        let px = logged
            .iter()
            .filter(|ev| ev.kind == EventKind::Pixel)
            .count();
        assert_eq!(px, 50);
        // Visits are group-committed within milliseconds, unawaited.
        std::thread::sleep(Duration::from_millis(100));
        let logged = e.logged_events();
        let visits: Vec<_> = logged
            .iter()
            .filter(|ev| ev.kind == EventKind::Visit)
            .collect();
        assert_eq!(visits.len(), 50, "{d}");
        for (v, loc) in visits.iter().zip(&locations) {
            assert!(
                loc.contains(&v.id.to_string()),
                "{loc} carries the visit's click id"
            );
            assert_eq!(v.get(Field::Location), loc.as_bytes());
        }
        assert_eq!(e.metric("edge_wal_events_total"), 200);
    }
}

/// Sends postbacks as fast as the edge answers until told to stop; returns the txids that
/// were answered 200.
fn postback_load(
    e: &Edge,
    tag: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    let mut c = e.connect();
    std::thread::spawn(move || {
        let mut acked = Vec::new();
        for i in 0.. {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let txid = format!("{tag}-{i}");
            let req =
                format!("GET /postback?cid={CID}&payout=1&txid={txid} HTTP/1.1\r\nHost: t\r\n\r\n");
            if std::io::Write::write_all(&mut c.s, req.as_bytes()).is_err() {
                break;
            }
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.response())) {
                Ok(r) if r.status == 200 => acked.push(txid),
                _ => break,
            }
        }
        acked
    })
}

#[test]
fn kill_9_loses_no_acknowledged_postback() {
    let data = TempDir::new("kill9");
    let acked = Arc::new(Mutex::new(Vec::new()));
    for (round, tag) in ["r0", "r1", "r2", "r3", "r4"].into_iter().enumerate() {
        let d = DRIVERS[round % 2];
        let mut e = Edge::start_in(&["--driver", d, "--workers", "2"], data.path());
        let stop = Arc::new(AtomicBool::new(false));
        let loads: Vec<_> = (0..2)
            .map(|k| postback_load(&e, format!("{tag}-{k}"), stop.clone()))
            .collect();
        std::thread::sleep(Duration::from_millis(150 + 40 * round as u64));
        e.kill9();
        stop.store(true, Ordering::Relaxed);
        for l in loads {
            acked.lock().unwrap().extend(l.join().unwrap());
        }
    }
    // A clean start uploads what the killed runs left in the WAL; SIGTERM flushes the rest.
    let mut e = Edge::start_in(&["--workers", "1"], data.path());
    e.signal("TERM");
    assert!(e.wait(Duration::from_secs(30)).success(), "{}", e.log());
    assert!(e.logged_events().is_empty(), "every segment uploaded");
    let mut seen: HashMap<String, usize> = HashMap::new();
    for txid in common::strings(&e.stored("conversions"), "txid") {
        *seen.entry(txid).or_default() += 1;
    }
    let acked = acked.lock().unwrap();
    assert!(
        acked.len() > 100,
        "the load ran: {} acknowledged",
        acked.len()
    );
    for txid in acked.iter() {
        assert_eq!(
            seen.get(txid),
            Some(&1),
            "{txid}: acknowledged, so stored exactly once"
        );
    }
}

/// Objects are named after WAL segment numbers, and a clean stop uploads and deletes every
/// segment: a restart must not number its segments from 1 again and overwrite the first
/// run's objects of the same hour.
#[test]
fn a_clean_restart_within_the_hour_keeps_the_first_runs_rows() {
    let data = TempDir::new("restart");
    let mut sent = Vec::new();
    for run in 0..3 {
        let mut e = Edge::start_in(&["--driver", "legacy", "--workers", "2"], data.path());
        for i in 0..5 {
            let r = e.get(&format!("{CAMP}?utm_source=run{run}-{i}"));
            assert_eq!(r.status, 302);
            sent.push(format!("{CAMP}?utm_source=run{run}-{i}"));
        }
        e.signal("TERM");
        assert!(e.wait(Duration::from_secs(30)).success(), "{}", e.log());
    }
    let visits = common::read_parquet_tree(&data.path().join("lake").join("visits"));
    let mut stored = common::strings(&visits, "url");
    stored.sort();
    sent.sort();
    assert_eq!(stored, sent);
}
