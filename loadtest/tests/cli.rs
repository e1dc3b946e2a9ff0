//! The `loadtest` binary's own errors and exit codes (the runs themselves are tested against
//! the real edge in `systest/tests/loadtest.rs`).

use std::process::{Command, Output};

fn loadtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .output()
        .expect("run loadtest")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn temp(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("loadtest-cli-{tag}-"))
        .tempdir()
        .unwrap()
}

#[test]
fn bad_flags_are_named() {
    for (args, needle) in [
        (&["--target", "https://x:1"][..], "--target"),
        (&["--conversion-rate", "2"][..], "--conversion-rate"),
        (&["--connections", "0"][..], "--connections"),
        (&["--payout-min", "abc"][..], "--payout-min"),
        (&["--campaign", "a b"][..], "--campaign"),
        (&["--duration", "ten"][..], "--duration"),
    ] {
        let o = loadtest(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn nobody_listening_exits_non_zero() {
    // A port nothing listens on: every connection is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("http://127.0.0.1:{port}");
    let o = loadtest(&[
        "--target",
        &target,
        "-c",
        "2",
        "-d",
        "300ms",
        "--timeout",
        "200ms",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no request was answered"),
        "{}",
        stderr(&o)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("connect"));
}

#[test]
fn verify_names_unreadable_ledgers_and_lists_what_the_store_lacks() {
    let tmp = temp("verify");
    let dir = tmp.path();
    let missing = dir.join("nope.ledger");
    let o = loadtest(&["verify", "--ledger", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nope.ledger"), "{}", stderr(&o));

    let bad = dir.join("bad.ledger");
    std::fs::write(&bad, "hello\n").unwrap();
    let o = loadtest(&["verify", "--ledger", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("not a loadtest ledger"),
        "{}",
        stderr(&o)
    );

    // An acknowledged visit and postback against an empty store: both are differences.
    let lake = dir.join("lake");
    std::fs::create_dir_all(&lake).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let click = sink::EventId::new(now, 1, 0, 1);
    let ledger = dir.join("run.ledger");
    std::fs::write(
        &ledger,
        format!(
            "#clicktracker-loadtest-ledger\t1\nstart\t{now}\thttp://127.0.0.1:1\tcamp\n\
             V\t{now}\t{click}\nC\t{now}\tp\t{click}\ttx1\t2500000\tsale\tok\t200\n\
             end\t{now}\t2\t0\n"
        ),
    )
    .unwrap();
    let store = format!("file://{}", lake.display());
    let ledger = ledger.to_str().unwrap();
    let o = loadtest(&["verify", "--ledger", ledger, "--store", &store]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    assert!(out.contains(&format!("visit {click}")), "{out}");
    assert!(
        out.contains("txid tx1") && out.contains("acknowledged 1 times but is stored 0"),
        "{out}"
    );
    let o = loadtest(&["verify", "--ledger", ledger, "--store", &store, "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["ok"], false);
    assert_eq!(j["differences"], 2);
}
