//! Hostile clients against the real binary: clients that send and never read, request bodies
//! on routes that take none, floods of accepts past the descriptor limit, and `/metrics`
//! asked for from an address that may not read it.

use systest as common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{CAMP, Edge, TempDir};
use sink::{EventKind, Field};

/// The edge's resident memory, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .map(|v| v.trim().parse::<u64>().unwrap() * 1024)
        .unwrap()
}

/// Writes as much of `data[*sent..]` as the socket takes without blocking.
fn push(s: &mut TcpStream, data: &[u8], sent: &mut usize) {
    while *sent < data.len() {
        match s.write(&data[*sent..]) {
            Ok(0) => return,
            Ok(n) => *sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(_) => {
                *sent = data.len();
                return;
            }
        }
    }
}

#[test]
fn clients_that_never_read_pin_bounded_memory_and_are_closed() {
    // The reproduction: each client sends a 64 KiB body, then ~120 KB of pipelined requests
    // (`/metrics`, whose answers are large; or campaign visits), and never reads a byte.
    let dir = TempDir::new("abuse-cfg");
    let cfg = dir.write(
        "edge.toml",
        &format!(
            "{}\n",
            edge::config::DEMO_CONFIG.replacen(
                "[server]",
                "[server]\nsend_timeout_ms = 3000\nidle_timeout_ms = 4000",
                1
            )
        ),
    );
    let e = Edge::start(
        &["--workers", "2", "--config", cfg.to_str().unwrap()],
        Some(dir),
    );
    let pid = e.pid();
    // Warm up: the workers' buffers and caches are in place.
    for _ in 0..200 {
        assert_eq!(e.get(CAMP).status, 302);
    }
    assert_eq!(e.get("/metrics").status, 200);
    let before = rss(pid);

    let body = vec![b'x'; 64 * 1024];
    let mut first = format!(
        "POST /nothing HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    first.extend_from_slice(&body);
    let mut metrics = first.clone();
    let mut visits = first;
    while metrics.len() < 64 * 1024 + 120_000 {
        metrics.extend_from_slice(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
        visits.extend_from_slice(
            format!("GET {CAMP}?utm_source=abuse HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        );
    }
    let clients = 150;
    let mut socks: Vec<(TcpStream, usize)> = (0..clients)
        .map(|_| {
            let s = TcpStream::connect(e.addr).unwrap();
            s.set_nonblocking(true).unwrap();
            (s, 0)
        })
        .collect();
    let mut peak = before;
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(2500) {
        for (i, (s, sent)) in socks.iter_mut().enumerate() {
            let data = if i % 3 == 0 { &visits } else { &metrics };
            push(s, data, sent);
        }
        peak = peak.max(rss(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    let grown = peak.saturating_sub(before);
    // Unbounded, the answers alone would take gigabytes (each `/metrics` client asks for
    // ~3 400 answers of kilobytes each). Bounded, the edge grows by about 60 MiB here: each
    // connection's capped output, the log's buffers and the uploader's batches, which on a
    // busy machine take a few MiB more.
    assert!(
        grown <= 96 << 20,
        "150 clients that never read grew the edge by {} MiB (from {} MiB)",
        grown >> 20,
        before >> 20
    );
    // Nobody reads: past the send timeout (or, for those whose answers all fitted in the
    // kernel's socket buffers, the idle timeout), every one of them is closed.
    let t = Instant::now();
    loop {
        let open = e.metric("edge_connections_open");
        if open <= 1 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{open} connections still open past the send timeout"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The clients asking for /metrics (two in three) cannot all have had their answers
    // absorbed by the kernel: at least those timed out writing.
    assert!(e.metric("edge_send_timeouts_total") >= clients as u64 / 2);
    for (s, _) in &mut socks {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut sink = Vec::new();
        // Whatever was sent before the close, then the end (or a reset).
        let _ = s.read_to_end(&mut sink);
    }
    // The edge still answers.
    assert_eq!(e.get(CAMP).status, 302);
}

#[test]
fn a_slow_reader_still_gets_every_pipelined_answer_in_order() {
    let e = Edge::demo("legacy");
    let mut c = e.connect();
    let n = 3000;
    let reqs: String = (0..n)
        .map(|i| format!("GET /healthz?i={i} HTTP/1.1\r\nHost: t\r\n\r\nGET {CAMP}?utm_source=s{i}&utm_content=s{i} HTTP/1.1\r\nHost: t\r\n\r\n"))
        .collect();
    let writer = {
        let mut s = c.s.try_clone().unwrap();
        std::thread::spawn(move || s.write_all(reqs.as_bytes()).unwrap())
    };
    // Reads slowly at first, so the edge stops answering for a while, then catches up.
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..n {
        assert_eq!(c.response().status, 200, "health {i}");
        let r = c.response();
        assert_eq!(r.status, 302);
        // Either offer of the demo's rotation carries the visit's parameter.
        let loc = r.header("Location").unwrap();
        assert!(
            loc.contains(&format!("src=s{i}&")) || loc.ends_with(&format!("kw=s{i}")),
            "answer {i} out of order: {loc}"
        );
    }
    writer.join().unwrap();
}

#[test]
fn visits_and_pixels_never_carry_their_body_into_the_log() {
    let e = Edge::demo("io_uring");
    let mut c = e.connect();
    let body = "b".repeat(60_000);
    for target in [
        CAMP.to_owned(),
        "/p.gif?cid=0167a15c98772c0004000001".into(),
    ] {
        c.send(&format!(
            "GET {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        assert!(matches!(c.response().status, 200 | 302));
    }
    let form = "cid=0167a15c98772c0004000001&payout=2&token=s3cret";
    c.send(&format!(
        "POST /postback HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    ));
    assert_eq!(c.response().status, 200);
    std::thread::sleep(Duration::from_millis(100));
    let logged = e.logged_events();
    assert_eq!(logged.len(), 3);
    for ev in &logged {
        match ev.kind {
            EventKind::Postback => assert_eq!(
                ev.get(Field::Body),
                b"cid=0167a15c98772c0004000001&payout=2&token=REDACTED"
            ),
            _ => assert_eq!(ev.get(Field::Body), b"", "{:?}", ev.kind),
        }
        assert!(
            ev.heap_bytes() < 8_192,
            "{:?}: {} bytes",
            ev.kind,
            ev.heap_bytes()
        );
    }
    assert!(e.log().contains("listening"));
    assert!(
        e.get("/metrics")
            .body_str()
            .contains("edge_event_queue_bytes ")
    );
}

#[test]
fn metrics_answer_only_the_allowed_addresses() {
    let dir = TempDir::new("metrics-cfg");
    let cfg = dir.write(
        "edge.toml",
        &edge::config::DEMO_CONFIG.replacen(
            "[server]",
            "[server]\nmetrics_allow = [\"10.0.0.0/8\"]",
            1,
        ),
    );
    let e = Edge::start(&["--config", cfg.to_str().unwrap()], Some(dir));
    let r = e.get("/metrics");
    assert_eq!(r.status, 403);
    assert!(r.body_str().contains("server.metrics_allow"));
    assert!(!r.body_str().contains("edge_requests_total"));
    assert_eq!(e.get("/healthz").status, 200);
}

#[test]
fn running_out_of_descriptors_is_logged_a_few_times_not_per_accept() {
    // Few descriptors: the edge starts, then the flood below exhausts them.
    let data = TempDir::new("nofile");
    let mut cmd = std::process::Command::new("prlimit");
    cmd.args(["--nofile=96:96", common::bin()]);
    let e = Edge::start_cmd(cmd, &["--workers", "1"], data.path());
    let mut held = Vec::new();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        match TcpStream::connect(e.addr) {
            Ok(s) => held.push(s),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
        if held.len() > 400 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let log = e.log();
    let lines = log.lines().filter(|l| l.contains("accept failed")).count();
    assert!(
        (1..=3).contains(&lines),
        "{lines} accept failures logged in 3 s:\n{log}"
    );
    assert!(
        log.contains("further failures are logged every 5 s"),
        "{log}"
    );
    drop(held);
    // Once descriptors are free again, it serves.
    let t = Instant::now();
    loop {
        if let Ok(mut s) = TcpStream::connect(e.addr) {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
            let mut buf = [0u8; 64];
            if matches!(s.read(&mut buf), Ok(n) if n > 12 && buf.starts_with(b"HTTP/1.1 200")) {
                break;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the edge did not recover"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
