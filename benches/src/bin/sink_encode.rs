//! `sink_encode`: the sink's events → Arrow → zstd Parquet path timed on one thread, and the
//! Parquet file it writes saved, so that `benches/sink_vs_pyarrow.py` can read it back and time
//! Arrow C++ (pyarrow) writing exactly the same rows with the same writer settings.
//!
//! `cargo build --profile fast -p benches --bin sink_encode` then
//! `target/fast/sink_encode [--rows N] [--rounds R] [--parquet PATH]`
//! (default 100 000 realistic visits, 10 rounds). Prints one JSON object: the best and median
//! seconds of each stage over the rounds, rows per second of the best, and the file's size.

use std::path::PathBuf;
use std::time::Instant;

use sink::storage::columns::{Builder, TableKind};
use sink::storage::store::encode_parquet;

fn main() {
    let mut rows = 100_000u32;
    let mut rounds = 10usize;
    let mut parquet: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next().unwrap_or_else(|| {
                eprintln!("sink_encode: {a} needs a value");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--rows" => rows = value().parse().expect("--rows: a number"),
            "--rounds" => rounds = value().parse().expect("--rounds: a number"),
            "--parquet" => parquet = Some(value().into()),
            other => {
                eprintln!("sink_encode: unknown argument {other}");
                std::process::exit(2)
            }
        }
    }
    let ips = benches::scattered_ipv4(4096);
    let events = benches::visits(rows, &ips);
    let (mut build, mut encode, mut total) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..rounds.max(1) {
        let start = Instant::now();
        let mut builder = Builder::with_capacity(TableKind::Visits, events.len());
        for e in &events {
            builder.append(e);
        }
        let batch = builder.finish().expect("a record batch");
        let built = Instant::now();
        let bytes = encode_parquet(TableKind::Visits, &batch).expect("Parquet");
        let done = Instant::now();
        build.push((built - start).as_secs_f64());
        encode.push((done - built).as_secs_f64());
        total.push((done - start).as_secs_f64());
        last = Some(bytes);
    }
    let bytes = last.expect("one round");
    if let Some(path) = parquet {
        std::fs::write(&path, &bytes).expect("the Parquet file");
    }
    let stat = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2])
    };
    let (b_best, b_med) = stat(&mut build);
    let (e_best, e_med) = stat(&mut encode);
    let (t_best, t_med) = stat(&mut total);
    let rps = |s: f64| f64::from(rows) / s;
    println!(
        "{}",
        serde_json::json!({
            "rows": rows,
            "rounds": rounds,
            "events_to_arrow_s": {"best": b_best, "median": b_med, "rows_per_s": rps(b_best)},
            "arrow_to_parquet_s": {"best": e_best, "median": e_med, "rows_per_s": rps(e_best)},
            "events_to_parquet_s": {"best": t_best, "median": t_med, "rows_per_s": rps(t_best)},
            "parquet_bytes": bytes.len(),
        })
    );
}
