//! The store is open Parquet in Delta Lake tables: readers that are not ours (pyarrow,
//! DuckDB, the `deltalake` package) must see exactly what the edge acknowledged. The readers
//! come from PyPI; `.ci/run` installs them, and this test installs them itself when they are
//! missing.

use systest as common;

use std::time::Duration;

use common::{CAMP, Edge, ensure_python_readers, python};

const PYARROW: &str = r#"
import json, os, sys
import pyarrow.dataset as ds
lake = sys.argv[1]
v = ds.dataset(lake + "/visits", format="parquet", partitioning="hive").to_table()
c = ds.dataset(lake + "/conversions", format="parquet", partitioning="hive").to_table()
print(json.dumps({
    "visits": v.num_rows,
    "visit_ids": sorted(v.column("event_id").to_pylist()),
    "sources": sorted(dict(m)["source"] for m in v.column("remapped").to_pylist()),
    "cost": sum(v.column("cost_micros").to_pylist()),
    "conversions": c.num_rows,
    "payout": sum(p for p in c.column("payout_micros").to_pylist() if p is not None),
    "txids": sorted(t for t in c.column("txid").to_pylist() if t is not None),
    "methods": sorted(set(c.column("method").to_pylist())),
    "partitions": sorted(set(str(d) for d in v.column("dt").to_pylist())),
}))
# pyarrow's threads can abort the interpreter on its way out; the answer is out already.
sys.stdout.flush()
os._exit(0)
"#;

const DUCKDB: &str = r#"
import json, os, sys
import duckdb
lake = sys.argv[1]
con = duckdb.connect()
visits, cost = con.execute(
    f"select count(*), sum(cost_micros) from read_parquet('{lake}/visits/*/*/*.parquet', hive_partitioning=true)"
).fetchone()
conv, payout = con.execute(
    f"select count(*), sum(payout_micros) from read_parquet('{lake}/conversions/*/*/*.parquet', hive_partitioning=true)"
).fetchone()
blog = con.execute(
    f"select count(*) from read_parquet('{lake}/visits/*/*/*.parquet') where remapped['source'] = 'blog-1'"
).fetchone()[0]
hours = con.execute(
    f"select count(distinct hour) from read_parquet('{lake}/visits/*/*/*.parquet', hive_partitioning=true)"
).fetchone()[0]
print(json.dumps({"visits": visits, "cost": int(cost), "conversions": conv, "payout": int(payout),
                  "blog1": blog, "hours": hours}))
# pyarrow's threads can abort the interpreter on its way out; the answer is out already.
sys.stdout.flush()
os._exit(0)
"#;

/// Through the tables' Delta logs: delta-rs' own reader, and DuckDB over the files the log
/// lists (DuckDB's `delta` extension is a download this machine cannot reach).
const DELTA: &str = r#"
import json, os, sys
import duckdb
from deltalake import DeltaTable
lake = sys.argv[1]
out = {}
con = duckdb.connect()
for name in ("visits", "conversions"):
    t = DeltaTable(f"{lake}/{name}")
    files = t.file_uris()
    rows = t.to_pyarrow_table().num_rows
    listed = con.execute(f"select count(*) from read_parquet({files!r})").fetchone()[0]
    out[name] = {"rows": rows, "duckdb": listed, "files": len(files),
                 "partitions": list(t.metadata().partition_columns),
                 "committed_by": [a.get("operation") for a in t.history()]}
print(json.dumps(out))
sys.stdout.flush()
os._exit(0)
"#;

#[test]
fn pyarrow_duckdb_and_delta_read_exactly_what_was_acknowledged() {
    ensure_python_readers();
    let mut e = Edge::demo("io_uring");
    let mut c = e.connect();
    let mut click_ids = Vec::new();
    for i in 0..20 {
        c.send(&format!(
            "GET {CAMP}?utm_source=blog-{}&utm_medium=m&cost=0.{i:02} HTTP/1.1\r\nHost: t\r\n\r\n",
            i % 3
        ));
        let loc = c.response().header("Location").unwrap().to_owned();
        click_ids.push(loc.split('=').nth(1).unwrap()[..24].to_owned());
    }
    let mut payout = 0i64;
    let mut txids = Vec::new();
    for (i, cid) in click_ids.iter().take(5).enumerate() {
        let micros = 1_100_000 * (i as i64 + 1);
        payout += micros;
        txids.push(format!("T{i}"));
        c.send(&format!(
            "GET /postback?cid={cid}&payout={}.{:06}&txid=T{i} HTTP/1.1\r\nHost: t\r\n\r\n",
            micros / 1_000_000,
            micros % 1_000_000
        ));
        assert_eq!(c.response().status, 200);
    }
    for cid in &click_ids[5..8] {
        c.send(&format!(
            "GET /p.gif?cid={cid}&payout=0.5 HTTP/1.1\r\nHost: t\r\n\r\n"
        ));
        assert_eq!(c.response().status, 200);
        payout += 500_000;
    }
    e.signal("TERM");
    assert!(e.wait(Duration::from_secs(30)).success(), "{}", e.log());
    let lake = e.data.join("lake");
    // Visit costs are 0.00 .. 0.19, from the traffic source's cost parameter.
    let cost: i64 = (0..20).map(|i| i * 10_000).sum();

    let pa = python(PYARROW, &lake);
    click_ids.sort();
    assert_eq!(pa["visits"], 20);
    assert_eq!(pa["visit_ids"], serde_json::json!(click_ids));
    assert_eq!(pa["cost"], cost);
    assert_eq!(pa["conversions"], 8);
    assert_eq!(pa["payout"], payout);
    assert_eq!(pa["txids"], serde_json::json!(txids));
    assert_eq!(pa["methods"], serde_json::json!(["pixel", "postback"]));
    let sources = pa["sources"].as_array().unwrap();
    assert_eq!(sources.iter().filter(|s| *s == "blog-1").count(), 7);

    let db = python(DUCKDB, &lake);
    assert_eq!(db["visits"], 20);
    assert_eq!(db["cost"], cost);
    assert_eq!(db["conversions"], 8);
    assert_eq!(db["payout"], payout);
    assert_eq!(db["blog1"], 7);
    assert!(db["hours"].as_i64().unwrap() >= 1);

    // Both tables are Delta tables whose logs name every file the edge wrote.
    let delta = python(DELTA, &lake);
    for (table, rows) in [("visits", 20), ("conversions", 8)] {
        let t = &delta[table];
        assert_eq!(t["rows"], rows, "{table}: {delta}");
        assert_eq!(t["duckdb"], rows, "{table}: {delta}");
        assert_eq!(t["partitions"], serde_json::json!(["dt", "hour"]));
        let stored = common::read_parquet_tree(&lake.join(table)).len();
        assert!(t["files"].as_u64().unwrap() >= 1 && stored >= 1);
    }
}
