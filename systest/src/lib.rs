//! The system tests' harness: runs the real `edge` binary on a free loopback port, talks
//! raw HTTP to it, and reads what it stored (Parquet, and through Python's readers).
//!
//! The edge's own integration tests use it, and so do the end-to-end tests in this crate's
//! `tests/`, which read the store with the query tool and drive the load generator — the
//! dependencies (DataFusion) the edge itself does not have. The binary is the one cargo built
//! next to the test ([`bin`]): run these tests with the edge's, `cargo test --workspace` or
//! `cargo test -p edge -p systest`, so it is built from the current sources.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod console;
mod readers;

pub use console::{Console, ensure_browser};

pub use readers::{
    ensure_python_readers, ints, python, read_parquet_file, read_parquet_tree, strings,
};

pub const DRIVERS: [&str; 2] = ["io_uring", "legacy"];
pub const CAMP: &str = "/c/5aaea5a02d38914cfd2ad8c1";

pub struct Edge {
    child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<String>>,
    /// The edge's data_dir (its write-ahead log is in `wal/`).
    pub data: PathBuf,
    _dir: Option<TempDir>,
    _data: Option<TempDir>,
}

/// A temporary directory for one test, removed on drop.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let t = tempfile::Builder::new()
            .prefix(&format!("edge-test-{tag}-"))
            .tempdir()
            .unwrap();
        TempDir(t)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// The `edge` binary: `EDGE_BIN` when set, else the one cargo built next to the running test
/// (`target/<profile>/edge`; tests run from `target/<profile>/deps/`). Only a run that also
/// tests the edge (`cargo test --workspace`, or `cargo test -p edge -p systest`) is sure to
/// have built it from the current sources.
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| built("edge", "EDGE_BIN"))
}

/// The `query` binary, found the same way (`QUERY_BIN`; built by a run that tests the query
/// tool too: `cargo test --workspace`, or `-p query -p systest`).
pub fn query_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| built("query", "QUERY_BIN"))
}

/// `query report --store STORE --format json --quiet ARGS…`: what it prints; a failure
/// fails the test with its message.
pub fn query_report(store: &str, args: &[&str]) -> String {
    let mut all = vec!["report", "--store", store, "--format", "json", "--quiet"];
    all.extend_from_slice(args);
    query(&all)
}

/// What `query ARGS…` prints; it must succeed.
pub fn query(args: &[&str]) -> String {
    let out = Command::new(query_bin())
        .args(args)
        .output()
        .expect("query runs");
    assert!(
        out.status.success(),
        "query {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn built(name: &str, var: &str) -> String {
    if let Some(bin) = std::env::var_os(var) {
        return bin.to_string_lossy().into_owned();
    }
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a test runs from target/<profile>/deps");
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} is not built: `cargo test --workspace` builds it (with the same --release or \
         --profile); or set {var}",
        bin.display()
    );
    bin.to_string_lossy().into_owned()
}

impl Edge {
    /// Starts the demo config.
    pub fn demo(driver: &str) -> Edge {
        Edge::start(&["--driver", driver, "--workers", "2"], None)
    }

    /// Starts with a config file written from `text`.
    pub fn with_config(driver: &str, text: &str) -> Edge {
        let dir = TempDir::new("cfg");
        let path = dir.write("edge.toml", text);
        let mut e = Edge::start(
            &[
                "--driver",
                driver,
                "--workers",
                "2",
                "--config",
                path.to_str().unwrap(),
            ],
            None,
        );
        e._dir = Some(dir);
        e
    }

    pub fn start(args: &[&str], dir: Option<TempDir>) -> Edge {
        let data = TempDir::new("data");
        let mut e = Edge::start_in(args, data.path());
        e._dir = dir;
        e._data = Some(data);
        e
    }

    /// Starts with `data_dir` = `data` (which outlives this edge, e.g. to restart on it).
    pub fn start_in(args: &[&str], data: &Path) -> Edge {
        let store = format!("file://{}", data.join("lake").display());
        Edge::start_with(args, data, &store, &[])
    }

    /// Starts with `data_dir` = `data`, the store at `store` and extra environment variables.
    pub fn start_with(args: &[&str], data: &Path, store: &str, env: &[(&str, &str)]) -> Edge {
        Edge::start_at("127.0.0.1:0", args, data, store, env)
    }

    /// Starts listening on `listen` (e.g. the address of an edge that was killed, to restart it
    /// where its clients are).
    pub fn start_at(
        listen: &str,
        args: &[&str],
        data: &Path,
        store: &str,
        env: &[(&str, &str)],
    ) -> Edge {
        Edge::launch(Command::new(bin()), listen, args, data, store, env)
    }

    /// Starts through `cmd`, a command that runs the edge binary (with `prlimit`, `strace`,
    /// …), with `data_dir` = `data` and its store in `data/lake`.
    pub fn start_cmd(cmd: Command, args: &[&str], data: &Path) -> Edge {
        let store = format!("file://{}", data.join("lake").display());
        Edge::launch(cmd, "127.0.0.1:0", args, data, &store, &[])
    }

    fn launch(
        mut cmd: Command,
        listen: &str,
        args: &[&str],
        data: &Path,
        store: &str,
        env: &[(&str, &str)],
    ) -> Edge {
        let mut child = cmd
            .args(args)
            .args(["--listen", listen, "--data-dir"])
            .arg(data)
            .args(["--store", store])
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start edge");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let l = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find("listening on http://") {
                    let rest = &line[i + "listening on http://".len()..];
                    let addr = rest.split_whitespace().next().unwrap().to_owned();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                let mut g = l.lock().unwrap();
                g.push_str(&line);
                g.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!("edge did not start:\n{}", log.lock().unwrap());
            }
        };
        Edge {
            child,
            addr,
            log,
            data: data.to_owned(),
            _dir: None,
            _data: None,
        }
    }

    /// The process id (of the edge, or of the command that runs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn connect(&self) -> Conn {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Conn { s, buf: Vec::new() }
    }

    /// One request on a fresh connection.
    pub fn get(&self, target: &str) -> Response {
        let mut c = self.connect();
        c.send(&format!(
            "GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        ));
        c.response()
    }

    pub fn metric(&self, line_prefix: &str) -> u64 {
        let m = self.get("/metrics");
        m.body_str()
            .lines()
            .find_map(|l| {
                l.strip_prefix(line_prefix)
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0)
    }

    /// Stops the edge with SIGTERM (drain, flush, upload); it must exit 0 within 30 s.
    pub fn stop(&mut self) {
        self.signal("TERM");
        assert!(
            self.wait(Duration::from_secs(30)).success(),
            "{}",
            self.log()
        );
    }

    /// The URL of the edge's Parquet store.
    pub fn store_url(&self) -> String {
        format!("file://{}", self.data.join("lake").display())
    }

    /// Kills the process with SIGKILL: no drain, no flush.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Every event in the write-ahead log, decoded.
    pub fn logged_events(&self) -> Vec<sink::Event> {
        let dir = self.data.join("wal");
        sink::storage::wal::list_segments(&dir)
            .unwrap()
            .into_iter()
            .flat_map(|(_, p)| sink::storage::wal::read_segment(&p).unwrap().to_vec())
            .map(|r| sink::Event::decode(&r).unwrap())
            .collect()
    }

    /// Every row of `table` ("visits" or "conversions") in the Parquet store.
    pub fn stored(&self, table: &str) -> Vec<arrow::record_batch::RecordBatch> {
        read_parquet_tree(&self.data.join("lake").join(table))
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Waits for the process to exit (at most `limit`).
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(t.elapsed() < limit, "edge did not exit:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn wait_for_log(&self, needle: &str, limit: Duration) {
        let t = Instant::now();
        while !self.log().contains(needle) {
            assert!(t.elapsed() < limit, "no {needle:?} in log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Conn {
    pub s: TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Conn {
    pub fn send(&mut self, raw: &str) {
        self.send_bytes(raw.as_bytes());
    }

    pub fn send_bytes(&mut self, raw: &[u8]) {
        self.s.write_all(raw).unwrap();
    }

    /// Reads one response; `head_only` for answers to HEAD.
    pub fn response_to(&mut self, head_only: bool) -> Response {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(self.buf[..end].to_vec()).unwrap();
                let mut lines = head.split("\r\n");
                let status_line = lines.next().unwrap();
                assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
                let status = status_line[9..12].parse().unwrap();
                let headers: Vec<(String, String)> = lines
                    .map(|l| {
                        let (k, v) = l
                            .split_once(": ")
                            .unwrap_or_else(|| panic!("bad header {l:?}"));
                        (k.to_owned(), v.to_owned())
                    })
                    .collect();
                let len: usize = if head_only || status == 100 {
                    0
                } else {
                    headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .map_or(0, |(_, v)| v.parse().unwrap())
                };
                while self.buf.len() < end + 4 + len {
                    self.fill();
                }
                let body = self.buf[end + 4..end + 4 + len].to_vec();
                self.buf.drain(..end + 4 + len);
                return Response {
                    status,
                    headers,
                    body,
                };
            }
            self.fill();
        }
    }

    pub fn response(&mut self) -> Response {
        self.response_to(false)
    }

    fn fill(&mut self) {
        let mut tmp = [0u8; 8192];
        let n = self.s.read(&mut tmp).expect("read");
        assert!(
            n > 0,
            "connection closed; buffered: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.buf.extend_from_slice(&tmp[..n]);
    }

    /// True when the server closed the connection (after any buffered bytes).
    pub fn closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut tmp = [0u8; 64];
        matches!(self.s.read(&mut tmp), Ok(0) | Err(_))
    }
}

pub fn write_temp(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs a future (the query crate's) on a small tokio runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The data files `scripts/fetch-data.sh` fetches (GeoLite2 City, uap-core's regexes), in a
/// directory shared by test runs; fetched once when missing.
pub fn data_files() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("clicktracker-data");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-data.sh");
        let st = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .status()
            .unwrap();
        assert!(st.success(), "scripts/fetch-data.sh failed");
        dir
    })
    .clone()
}
