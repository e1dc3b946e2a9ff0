//! Disk faults against the real binary: a damaged byte in a log segment, fsync errors
//! injected with strace, and a full disk (a small tmpfs). In each the log recovers by
//! itself once the fault passes, and nothing acknowledged is lost.
//!
//! The strace and tmpfs tests need `strace` and root (to mount); `.ci/run` provides both.
//! Without them they say so and do nothing.

use systest as common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{CAMP, Edge, TempDir, strings};

/// One request on a fresh connection; its status.
fn status(e: &Edge, target: &str) -> u16 {
    e.get(target).status
}

fn postback(e: &Edge, txid: &str) -> u16 {
    status(
        e,
        &format!("/postback?cid=0167a15c98772c0004000001&payout=1&txid={txid}"),
    )
}

/// The txids stored in the conversions table under `lake`.
fn stored_txids(lake: &Path) -> BTreeSet<String> {
    strings(
        &common::read_parquet_tree(&lake.join("conversions")),
        "txid",
    )
    .into_iter()
    .collect()
}

#[test]
fn a_damaged_byte_in_a_segment_loses_only_its_record_and_the_segment_is_kept() {
    let data = TempDir::new("damage");
    let mut e = Edge::start_in(&["--workers", "1"], data.path());
    let txids: Vec<String> = (0..100).map(|i| format!("t{i:03}")).collect();
    for t in &txids {
        assert_eq!(postback(&e, t), 200);
    }
    // A crash leaves the segment in the log; then a byte of it goes bad on disk.
    e.kill9();
    let wal = data.path().join("wal");
    let (_, seg) = sink::storage::wal::list_segments(&wal).unwrap().remove(0);
    let mut bytes = std::fs::read(&seg).unwrap();
    let third = bytes.len() / 3;
    bytes[third] ^= 0x08;
    std::fs::write(&seg, &bytes).unwrap();

    let mut e = Edge::start_in(&["--workers", "1"], data.path());
    let t = Instant::now();
    while e.metric("edge_store_damaged_segments_total") == 0 {
        assert!(t.elapsed() < Duration::from_secs(20), "{}", e.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    e.signal("TERM");
    assert!(e.wait(Duration::from_secs(30)).success(), "{}", e.log());
    let log = e.log();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("WAL segment")),
        "{log}"
    );
    assert!(
        !log.contains("torn tail"),
        "damage is not a torn tail:\n{log}"
    );
    let stored = stored_txids(&data.path().join("lake"));
    let lost: Vec<_> = txids.iter().filter(|t| !stored.contains(*t)).collect();
    assert_eq!(lost.len(), 1, "only the damaged record is lost: {lost:?}");
    let kept = wal
        .join(sink::storage::wal::DAMAGED_DIR)
        .join(seg.file_name().unwrap());
    assert_eq!(std::fs::read(kept).unwrap(), bytes, "kept for inspection");
}

/// Whether `strace` can trace here.
fn strace_works() -> bool {
    Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

/// The pid of the edge running under strace (strace's child).
fn traced_pid(strace: u32) -> u32 {
    let t = Instant::now();
    loop {
        let children = std::fs::read_to_string(format!("/proc/{strace}/task/{strace}/children"))
            .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            return pid.parse().unwrap();
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no traced child");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn fsync_errors_from_the_disk_heal_by_themselves() {
    if !strace_works() {
        eprintln!("skipped: strace is not installed or cannot trace here (apt-get install strace)");
        return;
    }
    let data = TempDir::new("eio");
    let mut cmd = Command::new("strace");
    // The 5th to 8th commits fail with EIO (fdatasync is the commit's sync, and nothing
    // else calls it), as a disk's transient error would.
    cmd.args([
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=fdatasync",
        "-e",
        "inject=fdatasync:error=EIO:when=5..8",
        common::bin(),
    ]);
    let mut e = Edge::start_cmd(cmd, &["--workers", "1"], data.path());
    let mut answers = Vec::new();
    let t = Instant::now();
    // Postbacks one at a time (one commit each) until the log has failed and recovered.
    let mut n = 0;
    loop {
        let txid = format!("e{n}");
        let st = postback(&e, &txid);
        assert!(st == 200 || st == 503, "{st}");
        answers.push((txid, st));
        n += 1;
        let failed = answers.iter().any(|(_, s)| *s == 503);
        if failed && st == 200 && n > 10 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{answers:?}\n{}",
            e.log()
        );
    }
    for i in 0..20 {
        assert_eq!(status(&e, &format!("{CAMP}?utm_source=v{i}")), 302);
    }
    assert!(e.metric("edge_wal_failures_total") >= 1);
    assert_eq!(e.metric("edge_wal_failing"), 0);
    assert_eq!(e.metric("edge_wal_events_lost_total"), 0);
    let edge = traced_pid(e.pid());
    assert!(
        Command::new("kill")
            .args(["-TERM", &edge.to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(e.wait(Duration::from_secs(30)).success(), "{}", e.log());
    let log = e.log();
    assert!(log.contains("Input/output error"), "{log}");
    assert!(log.contains("the write-ahead log recovered"), "{log}");
    assert!(!log.contains("File exists"), "{log}");
    let stored = stored_txids(&data.path().join("lake"));
    for (txid, st) in &answers {
        if *st == 200 {
            assert!(
                stored.contains(txid),
                "{txid} was acknowledged but is not stored"
            );
        }
    }
    let visits = common::read_parquet_tree(&data.path().join("lake").join("visits"));
    assert_eq!(visits.iter().map(|b| b.num_rows()).sum::<usize>(), 20);
}

/// A tmpfs of `size` mounted at `dir`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_refuses_conversions_until_the_uploader_frees_room() {
    let root = TempDir::new("full");
    let data = root.path().join("data");
    let Some(_disk) = Tmpfs::mount(&data, "3m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let cfg = root.write(
        "edge.toml",
        // Segments larger than the disk: the current one fills it before it is sealed.
        &edge::config::DEMO_CONFIG.replacen(
            "flush_interval_ms = 1000",
            "flush_interval_ms = 600000\nwal_segment_bytes = 67108864",
            1,
        ),
    );
    let lake = root.path().join("lake");
    let store = format!("file://{}", lake.display());
    let mut e = Edge::start_with(
        &["--workers", "1", "--config", cfg.to_str().unwrap()],
        &data,
        &store,
        &[],
    );
    // Visits with long targets fill the disk; postbacks between them see it.
    let pad = "p".repeat(6000);
    let mut answers = Vec::new();
    let mut visits = 0;
    let t = Instant::now();
    let mut n = 0;
    loop {
        for _ in 0..20 {
            assert_eq!(status(&e, &format!("{CAMP}?utm_source=s&pad={pad}")), 302);
            visits += 1;
        }
        let txid = format!("f{n}");
        n += 1;
        let st = postback(&e, &txid);
        answers.push((txid, st));
        let refused = answers.iter().any(|(_, s)| *s == 503);
        if refused && st == 200 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{answers:?}\n{}",
            e.log()
        );
    }
    let log = e.log();
    assert!(log.contains("No space left on device"), "{log}");
    assert_eq!(e.metric("edge_events_dropped_total{kind=\"visit\"}"), 0);
    e.signal("TERM");
    assert!(e.wait(Duration::from_secs(60)).success(), "{}", e.log());
    let stored = stored_txids(&lake);
    for (txid, st) in &answers {
        if *st == 200 {
            assert!(stored.contains(txid), "{txid} acknowledged but not stored");
        }
    }
    let rows: usize = common::read_parquet_tree(&lake.join("visits"))
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, visits, "every visit answered is stored");
}
