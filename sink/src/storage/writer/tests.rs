use super::*;
use crate::model::ack::{self, tests::block_on};
use crate::model::event::EventKind;
use crate::model::id::EventId;
use crate::storage::wal::read_segment;
use std::net::{IpAddr, Ipv4Addr};

/// A path (not yet created) in a fresh temporary directory, removed when the guard drops.
fn tmp(tag: &str) -> (tempfile::TempDir, PathBuf) {
    let guard = tempfile::tempdir().unwrap();
    let path = guard.path().join(tag);
    (guard, path)
}

fn event(kind: EventKind, n: u32) -> Event {
    let raw = format!("GET /postback?cid=0167a15c98772c0004000001&n={n} HTTP/1.1\r\n\r\n");
    Event::new(
        kind,
        EventId::new(1_764_000_000_000, 1, 0, n),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        raw.as_bytes(),
        0,
    )
}

/// Every event in the log, in order, decoded.
fn logged(dir: &std::path::Path) -> Vec<Event> {
    list_segments(dir)
        .unwrap()
        .into_iter()
        .flat_map(|(_, p)| read_segment(&p).unwrap().to_vec())
        .map(|r| Event::decode(&r).unwrap())
        .collect()
}

#[test]
fn an_ack_completes_only_once_its_event_is_on_disk() {
    let (_tmp, dir) = tmp("ack");
    let (tx, rx) = crate::storage::queue::queue(64, u64::MAX);
    let w = WalWriter::spawn(vec![rx], WalConfig::new(dir.clone()), None).unwrap();
    for n in 0..20 {
        let mut e = event(EventKind::Postback, n);
        let (sender, receiver) = ack::pair();
        e.ack = Some(sender);
        tx.try_send(e).unwrap();
        assert!(block_on(receiver), "durable");
        let on_disk = logged(&dir);
        assert_eq!(
            on_disk.len(),
            n as usize + 1,
            "acknowledged before it was written"
        );
        assert_eq!(on_disk.last().unwrap().id.counter(), n);
    }
    drop(tx);
    let stats = w.join();
    assert_eq!(stats.events.load(Ordering::Relaxed), 20);
}

#[test]
fn visits_are_committed_within_the_delay_and_batched() {
    let (_tmp, dir) = tmp("visits");
    let (tx, rx) = crate::storage::queue::queue(10_000, u64::MAX);
    let mut cfg = WalConfig::new(dir.clone());
    cfg.commit_delay = Duration::from_millis(20);
    let w = WalWriter::spawn(vec![rx], cfg, None).unwrap();
    for n in 0..1000 {
        tx.try_send(event(EventKind::Visit, n)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(logged(&dir).len(), 1000, "committed without anyone waiting");
    let commits = w.stats.commits.load(Ordering::Relaxed);
    assert!(
        commits < 100,
        "group commit batches visits: {commits} commits"
    );
    drop(tx);
    w.join();
}

#[test]
fn segments_roll_and_a_restart_starts_a_new_one() {
    let (_tmp, dir) = tmp("roll");
    let mut cfg = WalConfig::new(dir.clone());
    cfg.segment_bytes = 4096;
    cfg.max_batch_bytes = 1024;
    let (tx1, rx1) = crate::storage::queue::queue(1000, u64::MAX);
    let (tx2, rx2) = crate::storage::queue::queue(1000, u64::MAX);
    let w = WalWriter::spawn(vec![rx1, rx2], cfg.clone(), None).unwrap();
    for n in 0..300 {
        let tx = if n % 2 == 0 { &tx1 } else { &tx2 };
        tx.try_send(event(EventKind::Visit, n)).unwrap();
    }
    drop((tx1, tx2));
    let stats = w.join();
    let segments = list_segments(&dir).unwrap();
    assert!(segments.len() > 3, "{} segments", segments.len());
    assert!(stats.sealed.load(Ordering::Relaxed) >= segments.len() as u64 - 1);
    let mut counters: Vec<u32> = logged(&dir).iter().map(|e| e.id.counter()).collect();
    counters.sort();
    assert_eq!(
        counters,
        (0..300).collect::<Vec<_>>(),
        "every event exactly once"
    );

    let last = segments.last().unwrap().0;
    let (tx, rx) = crate::storage::queue::queue(4, u64::MAX);
    let w = WalWriter::spawn(vec![rx], cfg, None).unwrap();
    tx.try_send(event(EventKind::Pixel, 300)).unwrap();
    drop(tx);
    w.join();
    let after = list_segments(&dir).unwrap();
    assert!(
        after.last().unwrap().0 > last && after.len() == segments.len() + 1,
        "a restart never appends to an old segment"
    );
    assert_eq!(logged(&dir).len(), 301);
}

#[test]
fn an_unusable_directory_fails_at_start() {
    let (_tmp, file) = tmp("notadir");
    std::fs::write(&file, "x").unwrap();
    let (_tx, rx) = crate::storage::queue::queue(1, u64::MAX);
    assert!(WalWriter::spawn(vec![rx], WalConfig::new(file.clone()), None).is_err());
    std::fs::remove_file(file).unwrap();
}

#[test]
fn a_full_log_refuses_commits_and_fails_their_acks() {
    let (_tmp, dir) = tmp("full");
    let mut cfg = WalConfig::new(dir.clone());
    cfg.max_bytes = 2000;
    cfg.give_up_after_stop = Duration::from_millis(100);
    let (tx, rx) = crate::storage::queue::queue(64, u64::MAX);
    let w = WalWriter::spawn(vec![rx], cfg, None).unwrap();
    let mut outcomes = Vec::new();
    for n in 0..30 {
        let mut e = event(EventKind::Postback, n);
        let (sender, receiver) = ack::pair();
        e.ack = Some(sender);
        tx.try_send(e).unwrap();
        outcomes.push(block_on(receiver));
    }
    let durable = outcomes.iter().filter(|&&d| d).count();
    assert!(durable > 0 && durable < 30, "{durable} of 30 fit");
    assert!(
        outcomes[..durable].iter().all(|&d| d),
        "the first ones fit, then none"
    );
    assert_eq!(
        logged(&dir).len(),
        durable,
        "a refused event is not in the log"
    );
    assert!(w.stats.refused_full.load(Ordering::Relaxed) > 0);
    drop(tx);
    // Nothing frees room (no uploader here): the refused events are given up at the stop,
    // and counted.
    let stats = w.join();
    assert_eq!(stats.lost.load(Ordering::Relaxed), 30 - durable as u64);
}

#[test]
fn segments_also_roll_by_event_count_and_age() {
    let (_tmp, dir) = tmp("count");
    let mut cfg = WalConfig::new(dir.clone());
    cfg.segment_events = 10;
    cfg.max_batch_bytes = 1;
    let (sealed_tx, sealed_rx) = crossbeam_channel::unbounded();
    let (tx, rx) = crate::storage::queue::queue(100, u64::MAX);
    let w = WalWriter::spawn(vec![rx], cfg, Some(sealed_tx)).unwrap();
    for n in 0..35 {
        tx.try_send(event(EventKind::Visit, n)).unwrap();
    }
    let mut sealed = 0;
    wait_for("three full segments of 10", || {
        sealed += sealed_rx.try_iter().count();
        sealed >= 3
    });
    std::thread::sleep(Duration::from_millis(50));
    sealed += sealed_rx.try_iter().count();
    assert_eq!(
        sealed, 3,
        "three full segments of 10, and the fourth not full"
    );
    drop(tx);
    w.join();
    assert_eq!(
        sealed_rx.try_iter().count(),
        1,
        "the last one is sealed at the end"
    );

    let mut cfg = WalConfig::new(dir.clone());
    cfg.max_age = Duration::from_millis(50);
    let (sealed_tx, sealed_rx) = crossbeam_channel::unbounded();
    let (tx, rx) = crate::storage::queue::queue(100, u64::MAX);
    let w = WalWriter::spawn(vec![rx], cfg, Some(sealed_tx)).unwrap();
    tx.try_send(event(EventKind::Visit, 0)).unwrap();
    let sealed = sealed_rx
        .recv_timeout(Duration::from_secs(2))
        .expect("sealed by age");
    assert_eq!(read_segment(&sealed.path).unwrap().len(), 1);
    drop(tx);
    w.join();
}

#[test]
fn a_batch_with_an_ack_holds_every_event_queued_before_it_on_any_channel() {
    // Worker 0 queues a visit just after the sweep passed its channel; worker 1 then queues
    // the postback for that visit's click. The visit must be in the batch that acknowledges
    // the postback, or a crash after the acknowledgement could lose the visit.
    let (_tmp, dir) = tmp("causal");
    let (tx0, rx0) = crate::storage::queue::queue(8, u64::MAX);
    let (tx1, rx1) = crate::storage::queue::queue(8, u64::MAX);
    let mut st = State::new(
        WalConfig::new(dir.clone()),
        1,
        Arc::new(WalStats::default()),
        None,
    );
    let mut rxs = vec![rx0, rx1];
    let mut once = true;
    let mut receivers = Vec::new();
    let mut after = |channel: usize| {
        if channel == 0 && std::mem::take(&mut once) {
            tx0.try_send(event(EventKind::Visit, 1)).unwrap();
            let mut postback = event(EventKind::Postback, 2);
            let (sender, receiver) = ack::pair();
            postback.ack = Some(sender);
            receivers.push(receiver);
            tx1.try_send(postback).unwrap();
        }
    };
    assert!(gather(&mut rxs, &mut st, &mut after));
    assert!(st.due(), "a batch with an ack is due at once");
    assert_eq!(
        st.records(),
        2,
        "the visit queued first is in the same batch"
    );
    st.commit();
    assert!(block_on(receivers.pop().unwrap()));
    let kinds: Vec<_> = logged(&dir).iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::Postback, EventKind::Visit]);
}

#[test]
fn every_segment_rolled_by_size_is_handed_to_the_uploader() {
    // A loadtest run found segments that filled up inside a commit left in the log, never
    // announced, so their events reached the store only after a restart.
    let (_tmp, dir) = tmp("announce");
    let (tx, rx) = crate::storage::queue::queue(64, u64::MAX);
    let (sealed_tx, sealed_rx) = crossbeam_channel::unbounded();
    let mut cfg = WalConfig::new(dir.clone());
    cfg.segment_bytes = 1024;
    let w = WalWriter::spawn(vec![rx], cfg, Some(sealed_tx)).unwrap();
    for n in 0..60 {
        let mut e = event(EventKind::Postback, n);
        let (sender, receiver) = ack::pair();
        e.ack = Some(sender);
        tx.try_send(e).unwrap();
        assert!(block_on(receiver));
    }
    drop(tx);
    w.join();
    let announced: Vec<u64> = sealed_rx.try_iter().map(|s| s.seq).collect();
    let on_disk: Vec<u64> = list_segments(&dir)
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert!(on_disk.len() > 3, "the test must roll several segments");
    assert_eq!(
        announced, on_disk,
        "every segment written is announced once"
    );
}

#[test]
fn segment_numbers_never_repeat_across_runs_even_when_the_log_was_emptied() {
    let (_tmp, dir) = tmp("seq");
    let run = |n: u32| {
        let (tx, rx) = crate::storage::queue::queue(64, u64::MAX);
        let w = WalWriter::spawn(vec![rx], WalConfig::new(dir.clone()), None).unwrap();
        tx.try_send(event(EventKind::Visit, n)).unwrap();
        drop(tx);
        w.join();
        let segs = list_segments(&dir).unwrap();
        // The uploader deletes uploaded segments: all of them, after a clean stop.
        for (_, p) in &segs {
            std::fs::remove_file(p).unwrap();
        }
        segs.into_iter().map(|(s, _)| s).collect::<Vec<_>>()
    };
    let first = run(1);
    let second = run(2);
    assert!(!first.is_empty() && !second.is_empty());
    assert!(
        second.iter().all(|s| first.iter().all(|f| s > f)),
        "{first:?} then {second:?}: objects are named after segment numbers"
    );
    std::fs::write(dir.join(crate::storage::wal::NEXT_SEGMENT_FILE), "junk").unwrap();
    let (_tx, rx) = crate::storage::queue::queue(1, u64::MAX);
    let Err(e) = WalWriter::spawn(vec![rx], WalConfig::new(dir.clone()), None) else {
        panic!("a garbled next-segment file must stop the start");
    };
    assert!(e.to_string().contains("next-segment"), "{e}");
}

/// Sends a postback and waits for its acknowledgement.
fn postback(tx: &crate::storage::queue::EventSender, n: u32) -> bool {
    let mut e = event(EventKind::Postback, n);
    let (sender, receiver) = ack::pair();
    e.ack = Some(sender);
    tx.try_send(e).unwrap();
    block_on(receiver)
}

/// The counters of the events in the log, sorted (duplicates would show twice).
fn counters(dir: &std::path::Path) -> Vec<u32> {
    let mut c: Vec<u32> = logged(dir).iter().map(|e| e.id.counter()).collect();
    c.sort();
    c
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn an_fsync_error_while_a_segment_is_created_heals_by_itself() {
    // One EIO from the fsync of a new segment's creation used to leave its file behind with
    // the number not advanced: every later commit failed with "File exists", postbacks got
    // 503 and visits were dropped until a restart.
    let (_tmp, dir) = tmp("create-eio");
    let faults = Arc::new(Faults::default());
    let mut cfg = WalConfig::new(dir.clone());
    cfg.segment_events = 5;
    cfg.faults = Some(Arc::clone(&faults));
    let (tx, rx) = crate::storage::queue::queue(1000, u64::MAX);
    let (sealed_tx, sealed_rx) = crossbeam_channel::unbounded();
    let w = WalWriter::spawn(vec![rx], cfg, Some(sealed_tx)).unwrap();
    for n in 0..5 {
        assert!(postback(&tx, n));
    }
    // The segment is full and sealed: the next commit creates a new one, and its fsync fails.
    wait_for("the first segment sealed", || {
        w.stats.sealed.load(Ordering::Relaxed) == 1
    });
    faults.fail_next(|f| &f.sync, 1);
    assert!(
        !postback(&tx, 5),
        "the failed commit's conversion is answered 503"
    );
    assert!(w.stats.failures.load(Ordering::Relaxed) >= 1);
    for n in 6..25 {
        tx.try_send(event(EventKind::Visit, n)).unwrap();
    }
    // The fault has passed: the next commits go through, within milliseconds.
    let mut n = 25;
    wait_for("recovery", || {
        n += 1;
        postback(&tx, n - 1)
    });
    assert_eq!(w.stats.failing.load(Ordering::Relaxed), 0);
    drop(tx);
    let stats = w.join();
    assert_eq!(stats.lost.load(Ordering::Relaxed), 0);
    assert_eq!(
        counters(&dir),
        (0..n).collect::<Vec<_>>(),
        "nothing lost, nothing twice"
    );
    assert!(sealed_rx.try_iter().count() >= 2);
}

#[test]
fn failed_commits_keep_their_events_and_never_log_one_twice() {
    for (what, which) in [
        (
            "write",
            (|f: &Faults| &f.write) as fn(&Faults) -> &std::sync::atomic::AtomicU32,
        ),
        ("fdatasync", |f: &Faults| &f.sync),
    ] {
        let (_tmp, dir) = tmp(&format!("fail-{what}"));
        let faults = Arc::new(Faults::default());
        let mut cfg = WalConfig::new(dir.clone());
        cfg.faults = Some(Arc::clone(&faults));
        let (tx, rx) = crate::storage::queue::queue(1000, u64::MAX);
        let w = WalWriter::spawn(vec![rx], cfg, None).unwrap();
        assert!(postback(&tx, 0));
        // Three attempts fail; a failed fdatasync leaves the batch written but not synced,
        // and the segment is cut back before the batch goes to a new one.
        faults.fail_next(which, 3);
        faults.fail_next(|f| &f.truncate, 1);
        for n in 1..50 {
            tx.try_send(event(EventKind::Visit, n)).unwrap();
        }
        assert!(!postback(&tx, 50), "{what}: refused while failing");
        let mut n = 51;
        wait_for("recovery", || {
            n += 1;
            postback(&tx, n - 1)
        });
        drop(tx);
        let stats = w.join();
        assert!(stats.failures.load(Ordering::Relaxed) >= 3, "{what}");
        assert_eq!(stats.lost.load(Ordering::Relaxed), 0, "{what}");
        // Conversions answered 503 are kept too (the network's retry is a duplicate report,
        // which reports count once).
        assert_eq!(counters(&dir), (0..n).collect::<Vec<_>>(), "{what}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn a_disk_that_never_recovers_loses_events_only_at_the_stop_and_says_so() {
    let (_tmp, dir) = tmp("dead");
    let faults = Arc::new(Faults::default());
    let mut cfg = WalConfig::new(dir.clone());
    cfg.faults = Some(Arc::clone(&faults));
    cfg.give_up_after_stop = Duration::from_millis(200);
    let (tx, rx) = crate::storage::queue::queue(1000, u64::MAX);
    let w = WalWriter::spawn(vec![rx], cfg, None).unwrap();
    faults.fail_next(|f| &f.write, u32::MAX);
    for n in 0..10 {
        tx.try_send(event(EventKind::Visit, n)).unwrap();
    }
    assert!(!postback(&tx, 10));
    drop(tx);
    let t = Instant::now();
    let stats = w.join();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(stats.lost.load(Ordering::Relaxed), 11);
    assert_eq!(stats.failing.load(Ordering::Relaxed), 1);
}

#[test]
fn one_log_has_one_writer() {
    let (_tmp, dir) = tmp("lock");
    let (tx, rx) = crate::storage::queue::queue(8, u64::MAX);
    let w = WalWriter::spawn(vec![rx], WalConfig::new(dir.clone()), None).unwrap();
    let (_tx2, rx2) = crate::storage::queue::queue(8, u64::MAX);
    let Err(e) = WalWriter::spawn(vec![rx2], WalConfig::new(dir.clone()), None) else {
        panic!("a second writer on the same log must be refused");
    };
    assert!(matches!(e, WalError::InUse(_)), "{e}");
    assert!(e.to_string().contains("in use by another process"), "{e}");
    drop(tx);
    w.join();
    // Once the first is done, the log can be taken again.
    let (tx3, rx3) = crate::storage::queue::queue(8, u64::MAX);
    let w = WalWriter::spawn(vec![rx3], WalConfig::new(dir.clone()), None).unwrap();
    drop(tx3);
    w.join();
}
