//! The loadtest harness against the real edge binary: a run's ledger must match the store
//! event by event, a store missing acknowledged events must be caught, and a `kill -9` in
//! the middle of a run must lose nothing that was acknowledged.

use systest as common;

use std::io::Write as _;
use std::time::Duration;

use common::{DRIVERS, Edge, TempDir, block_on};
use loadtest::ledger::Ledger;
use loadtest::plan::{Plan, Stop};
use loadtest::verify::{Verdict, verify};
use query::{Session, SessionOptions};

fn check(ledger: &std::path::Path, lake: &std::path::Path) -> Verdict {
    let l = Ledger::read(ledger).unwrap();
    let store = format!("file://{}", lake.display());
    block_on(async {
        let s = Session::open(&store, &SessionOptions::default()).await?;
        verify(&l, &s, 50).await
    })
    .unwrap()
}

/// A busy funnel: many conversions, pixels, duplicates and upsells.
fn plan(edge: &Edge, ledger: &std::path::Path, stop: Stop, driver: &str) -> Plan {
    let mut p = Plan::new(&format!("http://{}", edge.addr)).unwrap();
    p.connections = 8;
    p.pipeline = 4;
    p.stop = stop;
    p.conversion_rate = 0.2;
    p.pixel_share = 0.3;
    p.duplicate_rate = 0.3;
    p.upsell_rate = 0.2;
    p.ledger = Some(ledger.to_owned());
    p.driver = match driver {
        "legacy" => driver::Choice::Legacy,
        _ => driver::Choice::IoUring,
    };
    p
}

#[test]
fn a_run_matches_the_store_event_by_event_and_a_missing_event_is_caught() {
    for driver in DRIVERS {
        let dir = TempDir::new("lt-run");
        let ledger = dir.path().join("run.ledger");
        let mut e = Edge::demo(driver);
        let done =
            loadtest::run::run(plan(&e, &ledger, Stop::Requests(20_000), driver), false).unwrap();
        e.signal("TERM");
        assert!(e.wait(Duration::from_secs(30)).success(), "{}", e.log());
        let s = &done.stats;
        assert_eq!(s.answered(), 20_000, "{driver}: every request answered");
        assert!(s.errors.is_empty(), "{driver}: {:?}", s.errors);
        assert!(s.conversions > 1000 && s.duplicates > 100 && s.upsells > 100);
        let pixels = s.steps[loadtest::funnel::Step::Pixel.index()].answered();
        assert!(pixels > 100, "{driver}: pixels sent");

        let lake = e.data.join("lake");
        let v = check(&ledger, &lake);
        assert_eq!(v.difference_count, 0, "{driver}: {:#?}", v.differences);
        assert_eq!(v.json["visits"]["stored"], v.json["visits"]["answered"]);
        assert_eq!(
            v.json["conversions"]["acknowledged_stored"],
            v.json["conversions"]["acknowledged"]
        );
        // Duplicates count once in the report: fewer conversions than acknowledged calls.
        let reported = v.json["report"]["conversions"].as_i64().unwrap();
        let acked = v.json["conversions"]["acknowledged"].as_i64().unwrap();
        assert!(reported > 0 && reported < acked, "{reported} vs {acked}");

        // A ledger claiming one more acknowledged postback and one more redirected visit
        // than the edge ever saw: both are reported, nothing else.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&ledger)
            .unwrap();
        let ghost = sink::EventId::new(v_start(&ledger) + 1, 9, 9, 9);
        writeln!(f, "V\t{}\t{ghost}", v_start(&ledger) + 1).unwrap();
        let real = Ledger::read(&ledger).unwrap().visits[0].0;
        writeln!(
            f,
            "C\t{}\tp\t{real}\tghost-txid\t1000000\tsale\tok\t200",
            v_start(&ledger) + 2
        )
        .unwrap();
        drop(f);
        let v = check(&ledger, &lake);
        assert_eq!(v.difference_count, 2, "{:#?}", v.differences);
        assert!(v.differences.iter().any(|d| d.contains(&ghost.to_string())));
        assert!(v.differences.iter().any(|d| d.contains("ghost-txid")));

        // Conversions gone from the store: every acknowledged one is listed as missing.
        std::fs::remove_dir_all(lake.join("conversions")).unwrap();
        std::fs::create_dir_all(lake.join("conversions")).unwrap();
        let v = check(&ledger, &lake);
        assert!(
            v.difference_count as i64 > acked / 2,
            "{}",
            v.difference_count
        );
        assert!(
            v.differences
                .iter()
                .filter(|d| d.contains("acknowledged 1 times but is stored 0"))
                .count()
                > 10,
            "{:#?}",
            v.differences
        );
    }
}

#[test]
fn landing_page_click_throughs_are_verified_one_by_one() {
    let dir = TempDir::new("lt-lp");
    let ledger = dir.path().join("run.ledger");
    let mut e = Edge::demo("legacy");
    let mut p = plan(&e, &ledger, Stop::Requests(6_000), "legacy");
    p.campaigns = vec!["demo-lp".into(), loadtest::plan::DEMO_CAMPAIGN.into()];
    p.click_through = 0.5;
    let done = loadtest::run::run(p, false).unwrap();
    e.signal("TERM");
    assert!(e.wait(Duration::from_secs(30)).success(), "{}", e.log());
    assert!(done.stats.errors.is_empty(), "{:?}", done.stats.errors);
    let lake = e.data.join("lake");
    let v = check(&ledger, &lake);
    assert_eq!(v.difference_count, 0, "{:#?}", v.differences);
    // The landing-page campaign's click-throughs are answered 302 and stored; the plain
    // campaign's are unknown (404) and are not.
    let answered = v.json["clicks"]["answered"].as_u64().unwrap();
    let sent = v.json["clicks"]["sent"].as_u64().unwrap();
    assert!(answered > 300 && answered < sent, "{answered} of {sent}");
    assert_eq!(v.json["clicks"]["answered_stored"], answered);
    assert_eq!(v.json["report"]["clicks"].as_u64(), Some(answered));

    // Click rows gone from the store: each answered click-through is reported missing. The
    // files are rewritten in place, which a Delta table's log does not allow (it records
    // their sizes), so the log goes too and the table is read by listing its directories.
    std::fs::remove_dir_all(lake.join("visits").join("_delta_log")).unwrap();
    rewrite_parquet_tree(&lake.join("visits"), &|b| {
        use arrow::array::AsArray;
        let kind = b.column_by_name("kind").unwrap().as_string::<i32>();
        let keep: arrow::array::BooleanArray =
            kind.iter().map(|k| Some(k == Some("visit"))).collect();
        arrow::compute::filter_record_batch(b, &keep).unwrap()
    });
    let v = check(&ledger, &lake);
    assert!(v.difference_count >= answered, "{:#?}", v.differences);
    assert!(
        v.differences
            .iter()
            .any(|d| d.contains("click-through of visit") && d.contains("stored 0 times")),
        "{:#?}",
        v.differences
    );
}

/// Rewrites every Parquet file below `dir` with `f` applied to its batches.
fn rewrite_parquet_tree(
    dir: &std::path::Path,
    f: &dyn Fn(&arrow::record_batch::RecordBatch) -> arrow::record_batch::RecordBatch,
) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rewrite_parquet_tree(&p, f);
            continue;
        }
        let batches: Vec<_> = common::read_parquet_file(&p).iter().map(f).collect();
        let file = std::fs::File::create(&p).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, batches[0].schema(), None).unwrap();
        for b in &batches {
            w.write(b).unwrap();
        }
        w.close().unwrap();
    }
}

fn v_start(ledger: &std::path::Path) -> u64 {
    Ledger::read(ledger).unwrap().start_ms
}

#[test]
fn kill_9_mid_run_loses_nothing_acknowledged() {
    let data = TempDir::new("lt-kill");
    let ledger = data.path().join("run.ledger");
    let mut e = Edge::start_in(&["--workers", "2"], data.path());
    let p = plan(
        &e,
        &ledger,
        Stop::After(Duration::from_millis(2500)),
        "io_uring",
    );
    let run = std::thread::spawn(move || loadtest::run::run(p, false).unwrap());
    std::thread::sleep(Duration::from_millis(1000));
    e.kill9();
    let killed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // Back on the same address: the run goes on against it, including the conversions of
    // clicks whose visits died with the first process. The new edge first uploads what the
    // killed one left in its WAL.
    std::thread::sleep(Duration::from_millis(200));
    let store = format!("file://{}", data.path().join("lake").display());
    let mut e = Edge::start_at(
        &e.addr.to_string(),
        &["--workers", "2"],
        data.path(),
        &store,
        &[],
    );
    let done = run.join().unwrap();
    assert!(done.stats.transport_errors() > 0, "the run saw the edge go");
    let after = Ledger::read(&ledger)
        .unwrap()
        .visits
        .iter()
        .filter(|v| v.1 > killed_ms)
        .count();
    assert!(
        after > 1000,
        "the run went on after the restart: {after} visits"
    );
    e.signal("TERM");
    assert!(e.wait(Duration::from_secs(30)).success(), "{}", e.log());
    let v = check(&ledger, &data.path().join("lake"));
    assert_eq!(
        v.difference_count, 0,
        "{:#?}\n{:#?}",
        v.differences, v.summary
    );
    assert_eq!(v.json["crashed"], true);
    let visits = &v.json["visits"];
    assert!(visits["stored"].as_u64().unwrap() > 1000);
    assert_eq!(
        visits["stored"].as_u64().unwrap() + visits["lost_after_last_ack"].as_u64().unwrap(),
        visits["answered"].as_u64().unwrap()
    );
    let c = &v.json["conversions"];
    assert_eq!(c["acknowledged_stored"], c["acknowledged"]);
}

#[test]
fn the_open_loop_keeps_its_schedule() {
    // 4 000 requests per second for 1.5 s: about 6 000 requests, whatever the edge's speed
    // (a closed loop would send as many as it could).
    let dir = TempDir::new("lt-open");
    let mut e = Edge::demo("io_uring");
    let mut p = plan(
        &e,
        &dir.path().join("open.ledger"),
        Stop::After(Duration::from_millis(1500)),
        "legacy",
    );
    p.rate = Some(4000.0);
    p.connections = 4;
    p.pipeline = 1;
    let done = loadtest::run::run(p, false).unwrap();
    e.signal("TERM");
    assert!(e.wait(Duration::from_secs(30)).success(), "{}", e.log());
    // At most the schedule; a closed loop against this edge would answer tens of thousands.
    // The floor is loose: other tests share the two cores, and a starved generator sends
    // late rather than more.
    let n = done.stats.answered();
    assert!(
        (3_000..=6_200).contains(&n),
        "{n} answers at 4000/s for 1.5 s"
    );
    assert!(done.stats.errors.is_empty(), "{:?}", done.stats.errors);
}
