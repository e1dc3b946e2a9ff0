//! The store on a real S3-compatible server (moto's, from PyPI), including a stretch where it
//! is down: acknowledged events wait in the WAL and land once it is back.

use systest as common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{CAMP, Edge, TempDir};

fn ensure_moto() {
    let have = || {
        Command::new("python3")
            .args(["-c", "import moto.server, boto3, pyarrow, deltalake"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !have() {
        let st = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "moto[server]",
                "pyarrow",
                "deltalake",
            ])
            .status()
            .expect("python3 runs");
        assert!(
            st.success() && have(),
            "this test needs moto: python3 -m pip install 'moto[server]' pyarrow deltalake"
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Moto(Child);

impl Moto {
    fn start(port: u16) -> Moto {
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto starts");
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(30), "moto did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let req = format!(
            "PUT /lake HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
        let mut resp = String::new();
        std::io::Read::read_to_string(&mut s, &mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "create bucket: {resp}");
        Moto(child)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const READ: &str = r#"
import json, os, sys
import boto3, pyarrow.parquet as pq, io
port = sys.argv[1]
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")
keys = [o["Key"] for o in s3.list_objects_v2(Bucket="lake").get("Contents", [])]
logs = sorted(k for k in keys if "/_delta_log/" in k)
pending = sorted(k for k in keys if "/_commit/pending/" in k)
leases = sorted(k for k in keys if "/_commit/lease/" in k)
keys = sorted(k for k in keys if "/_delta_log/" not in k and "/_commit/" not in k)
out = {"keys": keys, "logs": logs, "pending": pending, "leases": leases, "visits": 0,
       "conversions": 0, "payout": 0}
for k in keys:
    t = pq.read_table(io.BytesIO(s3.get_object(Bucket="lake", Key=k)["Body"].read()))
    if "/visits/" in k:
        out["visits"] += t.num_rows
    else:
        out["conversions"] += t.num_rows
        out["payout"] += sum(p for p in t.column("payout_micros").to_pylist() if p is not None)
# The tables through their Delta logs, with delta-rs' own S3 client.
from deltalake import DeltaTable
opts = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}
for name in ("visits", "conversions"):
    out["delta_" + name] = DeltaTable(f"s3://lake/tracker/{name}", storage_options=opts).to_pyarrow_table().num_rows
print(json.dumps(out))
# pyarrow's threads can abort the interpreter on its way out; the answer is out already.
sys.stdout.flush()
os._exit(0)
"#;

#[test]
fn events_reach_s3_even_across_an_outage() {
    ensure_moto();
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let env = [
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    let dir = TempDir::new("s3");
    let cfg = dir.write(
        "edge.toml",
        &edge::config::DEMO_CONFIG.replace("flush_interval_ms = 1000", "flush_interval_ms = 300"),
    );
    let args = ["--workers", "2", "--config", cfg.to_str().unwrap()];
    // The store is down from the start.
    let mut e = Edge::start_with(&args, &dir.path().join("data"), "s3://lake/tracker", &env);
    let mut c = e.connect();
    let send = |c: &mut common::Conn, n: usize, tag: &str| {
        for i in 0..n {
            c.send(&format!(
                "GET {CAMP}?utm_source={tag} HTTP/1.1\r\nHost: t\r\n\r\n"
            ));
            assert_eq!(c.response().status, 302);
            c.send(&format!(
                "GET /postback?cid=0167a15c98772c0004000001&payout=1.5&txid={tag}-{i} HTTP/1.1\r\nHost: t\r\n\r\n"
            ));
            assert_eq!(
                c.response().status,
                200,
                "acknowledged while the store is down"
            );
        }
    };
    send(&mut c, 10, "down");
    let t = Instant::now();
    while e.metric("edge_store_upload_failures_total") == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no upload attempt failed:\n{}",
            e.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(e.metric("edge_store_segments_pending") >= 1);
    // The store comes back.
    let _moto = Moto::start(port);
    send(&mut c, 10, "up");
    e.signal("TERM");
    assert!(e.wait(Duration::from_secs(60)).success(), "{}", e.log());
    let out = Command::new("python3")
        .args(["-c", READ, &port.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["visits"], 20, "{v}");
    assert_eq!(v["conversions"], 20, "{v}");
    // Every marked file was committed before the stop, and the commit lease lives beside the
    // tables.
    assert_eq!(v["pending"].as_array().unwrap().len(), 0, "{v}");
    assert!(!v["leases"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(v["payout"], 30_000_000);
    assert_eq!(v["delta_visits"], 20, "{v}");
    assert_eq!(v["delta_conversions"], 20, "{v}");
    for table in ["visits", "conversions"] {
        let first = format!("tracker/{table}/_delta_log/00000000000000000000.json");
        assert!(
            v["logs"].as_array().unwrap().iter().any(|k| *k == first),
            "{v}"
        );
    }
    for k in v["keys"].as_array().unwrap() {
        let k = k.as_str().unwrap();
        assert!(
            k.starts_with("tracker/visits/dt=") || k.starts_with("tracker/conversions/dt="),
            "{k}"
        );
        assert!(k.contains("/hour=") && k.ends_with(".parquet"), "{k}");
    }
    assert!(
        e.logged_events().is_empty(),
        "the WAL is empty once everything is in S3"
    );
    // The query tool reports straight from S3. The postbacks named the seed's click id, which
    // no visit here has: they form the unknown-click row, all twenty, counted once each.
    for (k, v) in env {
        // SAFETY: this test binary runs this one test; no other thread reads the environment.
        unsafe { std::env::set_var(k, v) };
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt.block_on(async {
        let s =
            query::Session::open("s3://lake/tracker", &query::SessionOptions::default()).await?;
        let req = query::report::ReportRequest {
            dims: query::dims::parse("campaign")?,
            ..Default::default()
        };
        query::report::run(&s, &req, None).await
    });
    let report = report.unwrap();
    assert_eq!(report.rows.len(), 2, "{:?}", report.rows);
    assert_eq!(report.rows[0].dims[0].as_deref(), Some(&CAMP[3..]));
    assert_eq!(report.rows[0].figures.visits, 20);
    assert!(report.rows[1].unknown_click);
    assert_eq!(report.rows[1].figures.conversions, 20);
    assert_eq!(report.totals.revenue_micros, 30_000_000);
}
