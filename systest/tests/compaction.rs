//! The store as a table under fire: two edges write one store with a fifth-of-a-second seal
//! while `query compact` runs pass after pass (every third one killed with SIGKILL part-way)
//! and readers count over and over: the project's `query` and, through the tables' Delta
//! logs, the `deltalake` package with DuckDB. One edge is killed with SIGKILL mid-run and
//! restarted on its write-ahead log. No count ever shows an event twice or drops one it
//! showed before; at the end the store holds every acknowledged conversion exactly once,
//! every visit of the edge never killed, and a handful of files.

use systest as common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Edge, TempDir, ensure_python_readers, python, query, query_bin};

const CONFIG: &str = r#"
[[traffic_sources]]
id = "ts"
name = "Push source"

[[affiliate_networks]]
id = "net"
name = "Network"

[[offers]]
id = "o1"
name = "Offer one"
network = "net"
url = "https://offer.example/?sub={click_id}"
payout = 2

[[campaigns]]
id = "c1"
name = "Campaign one"
traffic_source = "ts"
  [[campaigns.paths]]
  offers = [ { offer = "o1" } ]
"#;

/// Rows and distinct event ids of both tables, and live files, through delta-rs' reader
/// and DuckDB over the files the log names.
const COUNT: &str = r#"
import json, os, sys
import duckdb
from deltalake import DeltaTable
lake = sys.argv[1]
out = {}
con = duckdb.connect()
for name in ("visits", "conversions"):
    t = DeltaTable(f"{lake}/{name}")
    files = t.file_uris()
    rows, ids = con.execute(
        f"select count(*), count(distinct event_id) from read_parquet({files!r})").fetchone()
    out[name] = {"rows": rows, "ids": ids, "files": len(files),
                 "delta": t.to_pyarrow_table(columns=["event_id"]).num_rows}
print(json.dumps(out))
sys.stdout.flush()
os._exit(0)
"#;

fn edge(dir: &TempDir, node: u16, store: &str) -> Edge {
    let cfg = dir.write(
        &format!("edge{node}.toml"),
        &format!(
            "[server]\nnode_id = {node}\nflush_interval_ms = 200\ncommit_interval_ms = 200\n{CONFIG}"
        ),
    );
    Edge::start_with(
        &["--workers", "1", "--config", cfg.to_str().unwrap()],
        &dir.path().join(format!("data{node}")),
        store,
        &[],
    )
}

/// `(rows, distinct event ids)` of each table, by `query sql`.
fn counted(store: &str) -> BTreeMap<&'static str, (u64, u64)> {
    let mut out = BTreeMap::new();
    for table in ["visits", "conversions"] {
        let csv = query(&[
            "sql",
            "--store",
            store,
            "--quiet",
            "--format",
            "csv",
            &format!("SELECT count(*), count(DISTINCT event_id) FROM {table}"),
        ]);
        let last = csv.lines().last().unwrap_or_default().to_owned();
        let (rows, ids) = last.split_once(',').expect("two numbers");
        out.insert(table, (rows.parse().unwrap(), ids.parse().unwrap()));
    }
    out
}

/// Checks one reading against the ones before: no event twice, none lost.
fn check(seen: &Mutex<BTreeMap<String, u64>>, who: &str, table: &str, rows: u64, ids: u64) {
    assert_eq!(rows, ids, "{who} counted an event of {table} twice");
    let mut seen = seen.lock().unwrap();
    let before = seen.entry(format!("{who}/{table}")).or_default();
    assert!(
        rows >= *before,
        "{who} counted {rows} rows of {table} after {before}: rows went missing"
    );
    *before = rows;
}

#[test]
fn compaction_under_writes_readers_and_kill_9_never_doubles_or_loses_an_event() {
    ensure_python_readers();
    let dir = TempDir::new("compaction");
    let lake = dir.path().join("lake");
    let store = format!("file://{}", lake.display());
    let mut edges = [edge(&dir, 1, &store), edge(&dir, 2, &store)];

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let (passes, killed, reads) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut threads = Vec::new();
    // The compactor: pass after pass, every third one killed part-way.
    {
        let (stop, store, passes, killed) = (
            Arc::clone(&stop),
            store.clone(),
            Arc::clone(&passes),
            Arc::clone(&killed),
        );
        threads.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let mut child = Command::new(query_bin())
                    .args(["compact", "--store", &store, "--min-files", "2"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("query compact runs");
                if n.is_multiple_of(3) {
                    std::thread::sleep(Duration::from_millis(20 + (n * 37) % 200));
                    let _ = child.kill();
                    let _ = child.wait();
                    killed.fetch_add(1, Ordering::Relaxed);
                } else {
                    let out = child.wait_with_output().unwrap();
                    assert!(
                        out.status.success(),
                        "query compact: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    passes.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
    }
    // The readers.
    {
        let (stop, store, seen, reads) = (
            Arc::clone(&stop),
            store.clone(),
            Arc::clone(&seen),
            Arc::clone(&reads),
        );
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if !lake_has_tables(&store) {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                for (table, (rows, ids)) in counted(&store) {
                    check(&seen, "query", table, rows, ids);
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    {
        let (stop, lake, seen, reads) = (
            Arc::clone(&stop),
            lake.clone(),
            Arc::clone(&seen),
            Arc::clone(&reads),
        );
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if !lake.join("conversions/_delta_log").is_dir()
                    || !lake.join("visits/_delta_log").is_dir()
                {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                let v = python(COUNT, &lake);
                for table in ["visits", "conversions"] {
                    let t = &v[table];
                    let rows = t["rows"].as_u64().unwrap();
                    assert_eq!(t["delta"].as_u64().unwrap(), rows, "{v}");
                    check(&seen, "duckdb", table, rows, t["ids"].as_u64().unwrap());
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // The traffic: a visit, then its conversion, on each edge in turn.
    let mut visits = [0u64; 2];
    let mut acknowledged = 0u64;
    let rounds = 1200;
    for i in 0..rounds {
        if i == rounds / 2 {
            // SIGKILL, mid-commit as likely as not, and back on the same log.
            edges[1].kill9();
            edges[1] = edge(&dir, 2, &store);
        }
        let e = &edges[i % 2];
        let r = e.get("/c/c1");
        assert_eq!(r.status, 302, "{}", e.log());
        visits[i % 2] += 1;
        let loc = r.header("location").unwrap();
        let cid = loc.split("sub=").nth(1).unwrap();
        let p = e.get(&format!("/postback?cid={cid}&txid=t{i}&payout=1"));
        assert_eq!(p.status, 200, "{}", p.body_str());
        acknowledged += 1;
        if i % 100 == 0 {
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    // Everything acknowledged lands and is counted once, while compaction goes on.
    let t = Instant::now();
    loop {
        let c = counted(&store);
        if c["conversions"].0 >= acknowledged && c["visits"].0 >= visits[0] {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the store holds {c:?}; acknowledged {acknowledged} conversions, {visits:?} visits"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        passes.load(Ordering::Relaxed) >= 3 && killed.load(Ordering::Relaxed) >= 1,
        "{} passes, {} killed",
        passes.load(Ordering::Relaxed),
        killed.load(Ordering::Relaxed)
    );
    assert!(reads.load(Ordering::Relaxed) >= 4);
    for e in &mut edges {
        e.stop();
    }

    // One last pass; then every reader agrees, exactly.
    let last = query(&["compact", "--store", &store, "--min-files", "2"]);
    assert!(
        last.contains("visits:") && last.contains("conversions:"),
        "{last}"
    );
    let c = counted(&store);
    assert_eq!(c["conversions"], (acknowledged, acknowledged), "{c:?}");
    let (rows, ids) = c["visits"];
    assert_eq!(rows, ids);
    assert!(
        rows >= visits[0] && rows <= visits[0] + visits[1],
        "{rows} visits stored; answered {visits:?} (the killed edge may lose what it had not logged)"
    );
    let node1 = query(&[
        "sql",
        "--store",
        &store,
        "--quiet",
        "--format",
        "csv",
        "SELECT count(*) FROM visits WHERE node_id = 1",
    ]);
    assert_eq!(
        node1.lines().last().unwrap().parse::<u64>().unwrap(),
        visits[0],
        "every visit of the edge never killed"
    );
    let v = python(COUNT, &lake);
    eprintln!(
        "{} passes, {} killed, {} readings; last pass: {last}; readers: {v}",
        passes.load(Ordering::Relaxed),
        killed.load(Ordering::Relaxed),
        reads.load(Ordering::Relaxed)
    );
    for (table, rows) in [("visits", rows), ("conversions", acknowledged)] {
        assert_eq!(v[table]["rows"].as_u64().unwrap(), rows, "{v}");
        assert_eq!(v[table]["ids"].as_u64().unwrap(), rows, "{v}");
        // Many hundred small files went in; an hour's are merged as they come.
        let files = v[table]["files"].as_u64().unwrap();
        assert!(files <= 12, "{table}: {files} live files");
    }
}

fn lake_has_tables(store: &str) -> bool {
    let dir = store.trim_start_matches("file://");
    ["visits", "conversions"].iter().all(|t| {
        std::path::Path::new(dir)
            .join(t)
            .join("_delta_log")
            .is_dir()
    })
}
