//! Outgoing postbacks end to end (docs/postbacks.md): visits and conversion postbacks through
//! the real edge, `query postbacks run` following the store, and a loopback receiver that
//! fails, goes down, and counts what it gets. Checks what fires (statuses, shares, upsells,
//! first-only, types, refused reports), that each postback arrives as configured with its
//! idempotency key, at least once, across retries, an outage and a kill -9 of the
//! dispatcher, and what `query postbacks list` and `/metrics` say.

use systest as common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Edge, TempDir};

/// What the receiver got: each request's target, its `Idempotency-Key` and the code it was
/// answered with.
#[derive(Debug, Clone)]
struct Got {
    target: String,
    key: String,
    code: u16,
}

/// A loopback HTTP receiver answering 503 to the first `fail_first` requests of each key, then
/// 200; `stop` closes its port (connections are refused) until it is started again.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Got>>>,
    fail_first: usize,
    up: Arc<AtomicBool>,
}

impl Receiver {
    fn new(fail_first: usize) -> Receiver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Receiver {
            port,
            got: Arc::default(),
            fail_first,
            up: Arc::new(AtomicBool::new(false)),
        }
    }

    fn start(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        self.up.store(true, Ordering::SeqCst);
        let (got, up, fail_first) = (self.got.clone(), self.up.clone(), self.fail_first);
        std::thread::spawn(move || {
            while up.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let got = got.clone();
                        std::thread::spawn(move || serve(s, &got, fail_first));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
    }

    fn stop(&self) {
        self.up.store(false, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// The delivered (200) requests' targets by key.
    fn delivered(&self) -> BTreeMap<String, String> {
        self.got()
            .into_iter()
            .filter(|g| g.code == 200)
            .map(|g| (g.key, g.target))
            .collect()
    }
}

fn serve(s: TcpStream, got: &Mutex<Vec<Got>>, fail_first: usize) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let target = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let mut key = String::new();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (name, value) = h.split_once(':').unwrap_or((h, ""));
            if name.eq_ignore_ascii_case("idempotency-key") {
                key = value.trim().to_owned();
            }
            if name.eq_ignore_ascii_case("content-length") {
                len = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        let _ = r.read_exact(&mut body);
        let code = {
            let mut g = got.lock().unwrap();
            let before = g.iter().filter(|x| x.key == key).count();
            let code = if before < fail_first { 503 } else { 200 };
            g.push(Got { target, key, code });
            code
        };
        let reason = if code == 200 {
            "OK"
        } else {
            "Service Unavailable"
        };
        let _ = write!(w, "HTTP/1.1 {code} {reason}\r\nContent-Length: 2\r\n\r\nok");
    }
}

fn config(port: u16) -> String {
    format!(
        r#"
[server]
node_id = 4
flush_interval_ms = 300

# A Zeropark preset: its parameters, cost and click id (`cid`); our own postback URL.
[[traffic_sources]]
id = "zp"
template = "zeropark"
postback_url = "http://127.0.0.1:{port}/zppostback/acct?cid={{external_id}}&payout={{payout}}&status={{status}}&tx={{txid}}&zone={{target}}&key={{idempotency_key}}"
postback_statuses = ["lead", "sale", "rebill"]
postback_payout_share = 0.8

# Told of sales of type `sale` only, and of a click's first conversion only.
[[traffic_sources]]
id = "picky"
external_id_param = "clickid"
postback_url = "http://127.0.0.1:{port}/picky?c={{external_id}}&p={{payout}}&t={{type}}"
postback_statuses = ["sale"]
postback_types = ["sale"]
postback_first_only = true

[[traffic_sources]]
id = "silent"

[[affiliate_networks]]
id = "net"
postback_token = "tok-0123456789abcdef"
status_map = {{ "1" = "lead", "2" = "sale", "3" = "chargeback", "9" = "rebill" }}

[[offers]]
id = "o"
network = "net"
url = "https://offer.example/?s={{click_id}}"
payout = 2.0

[[campaigns]]
id = "zp-camp"
traffic_source = "zp"
  [[campaigns.paths]]
  offers = [ {{ offer = "o" }} ]

[[campaigns]]
id = "picky-camp"
traffic_source = "picky"
  [[campaigns.paths]]
  offers = [ {{ offer = "o" }} ]

[[campaigns]]
id = "silent-camp"
traffic_source = "silent"
  [[campaigns.paths]]
  offers = [ {{ offer = "o" }} ]
"#
    )
}

/// A visit to `campaign` with `query`; the click id.
fn visit(e: &Edge, campaign: &str, query: &str) -> String {
    let r = e.get(&format!("/c/{campaign}?{query}"));
    assert_eq!(r.status, 302, "{}", e.log());
    let loc = r.header("Location").unwrap();
    loc[loc.len() - 24..].to_owned()
}

/// A postback on `c`: one connection is served by one worker, so its reports' ids follow the
/// order they were sent in (ids from two workers within a millisecond do not).
fn postback(c: &mut common::Conn, q: &str) {
    c.send(&format!(
        "GET /postback?{q}&network=net&token=tok-0123456789abcdef HTTP/1.1\r\nHost: t\r\n\r\n"
    ));
    assert_eq!(c.response().status, 200, "{q}");
}

struct Dispatcher {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Dispatcher {
    /// Runs `query postbacks run` over `store` with the catalog of the config file `config`.
    fn start(store: &str, config: &Path, outbox: &Path, extra: &[&str]) -> Dispatcher {
        let mut child = Command::new(common::query_bin())
            .args(["postbacks", "run", "--store", store, "--outbox"])
            .arg(outbox)
            .arg("--config")
            .arg(config)
            .args([
                "--since",
                "all",
                "--poll-ms",
                "200",
                "--retry-base-ms",
                "100",
                "--retry-max-ms",
                "400",
                "--timeout-ms",
                "2000",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut g = l.lock().unwrap();
                g.push_str(&line);
                g.push('\n');
            }
        });
        Dispatcher { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The address its `/metrics` is served at, once it says.
    fn metrics_addr(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let needle = "serving /metrics on http://";
            if let Some(l) = self.log().lines().find(|l| l.contains(needle)) {
                let i = l.find(needle).unwrap() + needle.len();
                return l[i..].split_whitespace().next().unwrap().to_owned();
            }
            assert!(Instant::now() < deadline, "{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `query postbacks list --format json` (a JSON object a line) for `outbox`.
fn listed(outbox: &Path, pending: bool) -> Vec<serde_json::Value> {
    let mut cmd = Command::new(common::query_bin());
    cmd.args(["postbacks", "list", "--format", "json", "--outbox"])
        .arg(outbox);
    if pending {
        cmd.arg("--pending");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// What fires, and that each postback arrives as configured, once delivered, through
/// receiver errors: every attempt recorded and counted.
#[test]
fn conversions_fire_as_configured_through_failing_attempts() {
    let rx = Receiver::new(2);
    rx.start();
    let e = Edge::with_config("legacy", &config(rx.port));
    let mut pc = e.connect();
    let store = format!("file://{}", e.data.join("lake").display());
    let outbox = TempDir::new("outbox");
    let cfg = outbox.write("edge.toml", &config(rx.port));

    // Zeropark: lead → sale → chargeback, a repeated sale, an upsell, a rebill.
    let a = visit(&e, "zp-camp", "cid=ZP-A&target=zone%201&cost=0.01");
    postback(&mut pc, &format!("cid={a}&txid=T1&status=1&payout=5"));
    postback(&mut pc, &format!("cid={a}&txid=T1&status=2&payout=10"));
    postback(&mut pc, &format!("cid={a}&txid=T1&status=2&payout=10"));
    postback(&mut pc, &format!("cid={a}&txid=T1&status=3"));
    postback(&mut pc, &format!("cid={a}&txid=T2&status=2&payout=20"));
    postback(&mut pc, &format!("cid={a}&txid=T2&status=9&payout=7.5"));
    // A visit without the source's click id: decided, not sendable.
    let b = visit(&e, "zp-camp", "target=z2");
    postback(&mut pc, &format!("cid={b}&txid=B1&status=2&payout=1"));
    // Picky: a lead (not its status), a sale of type install (not its type), a sale, and an
    // upsell (not the click's first conversion).
    let c = visit(&e, "picky-camp", "clickid=PK-C");
    postback(
        &mut pc,
        &format!("cid={c}&txid=C0&status=1&payout=1&type=sale"),
    );
    let d = visit(&e, "picky-camp", "clickid=PK-D");
    postback(
        &mut pc,
        &format!("cid={d}&txid=D1&status=2&payout=3&type=install"),
    );
    let f = visit(&e, "picky-camp", "clickid=PK-F");
    postback(
        &mut pc,
        &format!("cid={f}&txid=F1&status=2&payout=4&type=sale"),
    );
    postback(
        &mut pc,
        &format!("cid={f}&txid=F2&status=2&payout=6&type=sale"),
    );
    // A source without a postback; a pixel for a Zeropark click, which the network (it has a
    // token) does not take: stored, refused, never told.
    let g = visit(&e, "silent-camp", "");
    postback(&mut pc, &format!("cid={g}&txid=G1&status=2&payout=1"));
    let r = e.get(&format!("/p.gif?cid={a}&payout=999"));
    assert_eq!(r.status, 200);

    let disp = Dispatcher::start(&store, &cfg, outbox.path(), &["--listen", "127.0.0.1:0"]);
    let metrics = disp.metrics_addr();
    // Zeropark: T1's lead and sale (the repeat and the chargeback do not fire), T2's sale
    // and its rebill, each told 80 % of the payout. Picky: F1's sale only.
    let want: BTreeSet<String> = [
        "/zppostback/acct?cid=ZP-A&payout=4&status=lead&tx=T1&zone=zone%201".to_owned(),
        "/zppostback/acct?cid=ZP-A&payout=8&status=sale&tx=T1&zone=zone%201".to_owned(),
        "/zppostback/acct?cid=ZP-A&payout=16&status=sale&tx=T2&zone=zone%201".to_owned(),
        "/zppostback/acct?cid=ZP-A&payout=6&status=rebill&tx=T2&zone=zone%201".to_owned(),
        "/picky?c=PK-F&p=4&t=sale".to_owned(),
    ]
    .into();
    let strip = |t: &str| match t.find("&key=") {
        Some(i) => t[..i].to_owned(),
        None => t.to_owned(),
    };
    wait_until(
        "every postback delivered",
        Duration::from_secs(60),
        || rx.delivered().len() >= want.len(),
        || format!("{}\n{:?}", disp.log(), rx.got()),
    );
    // Nothing else comes, even after more passes.
    std::thread::sleep(Duration::from_secs(2));
    let delivered = rx.delivered();
    let got: BTreeSet<String> = delivered.values().map(|t| strip(t)).collect();
    assert_eq!(got, want, "{:?}", rx.got());
    for (key, target) in &delivered {
        // The key is in the header and in the URL where the template asks for it, and each
        // one took the two failures and a success.
        if target.starts_with("/zppostback") {
            assert!(target.ends_with(&format!("&key={key}")), "{target}");
        }
        let tries = rx.got().iter().filter(|g| &g.key == key).count();
        assert_eq!(tries, 3, "{key}");
    }

    let rows = listed(outbox.path(), false);
    let sent: Vec<&serde_json::Value> = rows.iter().filter(|r| r["state"] == "delivered").collect();
    assert_eq!(sent.len(), want.len(), "{rows:?}");
    for r in &sent {
        assert_eq!(r["attempts"], 3, "{r}");
        assert_eq!(r["last_code"], 200, "{r}");
        assert!(r["latency_ms"].as_f64().is_some(), "{r}");
    }
    let skipped: Vec<&serde_json::Value> =
        rows.iter().filter(|r| r["state"] == "skipped").collect();
    assert_eq!(skipped.len(), 1, "{rows:?}");
    assert!(
        skipped[0]["last_error"].as_str().unwrap().contains("cid"),
        "{rows:?}"
    );
    assert!(listed(outbox.path(), true).is_empty());

    // A later report (a rebill on T2) fires once, and nothing decided before fires again
    // (the feed gives every report of the conversion; only the new one is news).
    postback(&mut pc, &format!("cid={a}&txid=T2&status=9&payout=5"));
    wait_until(
        "the late rebill",
        Duration::from_secs(60),
        || rx.delivered().len() > want.len(),
        || format!("{}\n{:?}", disp.log(), rx.got()),
    );
    std::thread::sleep(Duration::from_secs(2));
    let late: Vec<String> = rx
        .delivered()
        .values()
        .map(|t| strip(t))
        .filter(|t| !want.contains(t))
        .collect();
    assert_eq!(
        late,
        ["/zppostback/acct?cid=ZP-A&payout=4&status=rebill&tx=T2&zone=zone%201"],
        "{:?}",
        rx.got()
    );
    let want_n = want.len() as u64 + 1;

    let m = http_get(&metrics, "/metrics");
    assert_eq!(metric(&m, "postbacks_delivered_total"), want_n, "{m}");
    assert_eq!(metric(&m, "postbacks_attempts_total"), 3 * want_n, "{m}");
    assert_eq!(
        metric(&m, "postbacks_failed_attempts_total"),
        2 * want_n,
        "{m}"
    );
    assert_eq!(metric(&m, "postbacks_skipped_total"), 1, "{m}");
    assert_eq!(metric(&m, "postbacks_pending"), 0, "{m}");
}

/// A receiver down for a while, and the dispatcher killed with postbacks pending: every
/// postback arrives once the receiver is back, none lost, repeats only with the same key.
#[test]
fn nothing_is_lost_across_an_outage_and_a_kill_9() {
    let rx = Receiver::new(0);
    let e = Edge::with_config("legacy", &config(rx.port));
    let mut pc = e.connect();
    let store = format!("file://{}", e.data.join("lake").display());
    let outbox = TempDir::new("outbox");
    let cfg = outbox.write("edge.toml", &config(rx.port));
    let mut want = BTreeSet::new();
    for i in 0..20 {
        let click = visit(&e, "zp-camp", &format!("cid=EXT-{i}&target=t"));
        postback(&mut pc, &format!("cid={click}&txid=X{i}&status=2&payout=1"));
        want.insert(format!("EXT-{i}"));
    }
    // The receiver is down: attempts fail, postbacks stay pending.
    let mut disp = Dispatcher::start(&store, &cfg, outbox.path(), &[]);
    wait_until(
        "failed attempts",
        Duration::from_secs(60),
        || {
            let rows = listed(outbox.path(), true);
            rows.len() == 20 && rows.iter().all(|r| r["attempts"].as_u64() >= Some(1))
        },
        || format!("{}\n{:?}", disp.log(), listed(outbox.path(), false)),
    );
    // kill -9 in the middle of retrying.
    disp.child.kill().unwrap();
    disp.child.wait().unwrap();
    rx.start();
    let disp = Dispatcher::start(&store, &cfg, outbox.path(), &[]);
    wait_until(
        "every postback delivered after the restart",
        Duration::from_secs(60),
        || rx.delivered().len() == 20,
        || format!("{}\n{:?}", disp.log(), rx.got()),
    );
    let got: BTreeSet<String> = rx
        .delivered()
        .values()
        .map(|t| {
            let cid = t.split("cid=").nth(1).unwrap();
            cid[..cid.find('&').unwrap()].to_owned()
        })
        .collect();
    assert_eq!(got, want);
    // A repeat would carry a key already seen: the receiver can drop it.
    let keys: BTreeSet<String> = rx.got().iter().map(|g| g.key.clone()).collect();
    assert_eq!(keys.len(), 20, "{:?}", rx.got());
    assert!(listed(outbox.path(), true).is_empty());

    // A new outbox begins now: the store's past conversions are not sent again (unless
    // `--since` says from when).
    let fresh = TempDir::new("outbox2");
    let out = Command::new(common::query_bin())
        .args(["postbacks", "run", "--once", "--store", &store, "--config"])
        .arg(&cfg)
        .arg("--outbox")
        .arg(fresh.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(listed(fresh.path(), false).is_empty());
    assert_eq!(rx.got().iter().filter(|g| g.code == 200).count(), 20);
    rx.stop();
}

/// A source whose postback URL carries every token, the network `net` as in [`config`], and
/// a network that counts each repeated report (`duplicates = "every"`). Visitors are located
/// by GeoIP behind the loopback proxy.
fn tokens_config(port: u16) -> String {
    let data = common::data_files();
    format!(
        r#"
[server]
node_id = 6
flush_interval_ms = 300
geoip_db = {geo:?}
trusted_proxies = ["127.0.0.1"]

[[traffic_sources]]
id = "all"
external_id_param = "ext"
postback_url = "http://127.0.0.1:{port}/all?e={{external_id}}&camp={{campaign_id}}&offer={{offer_id}}&net={{network_id}}&cc={{country}}&click={{click_id}}&raw={{raw_status}}&st={{status}}&conv={{conversion_id}}&tx={{txid}}&p={{payout}}"
postback_statuses = ["sale"]

[[affiliate_networks]]
id = "net"
postback_token = "tok-0123456789abcdef"
status_map = {{ "2" = "sale" }}

[[affiliate_networks]]
id = "every"
duplicates = "every"

[[offers]]
id = "o"
network = "net"
url = "https://offer.example/?s={{click_id}}"
payout = 2.0

[[offers]]
id = "o-every"
network = "every"
url = "https://offer.example/?s={{click_id}}"
payout = 2.0

[[campaigns]]
id = "tokens-camp"
traffic_source = "all"
  [[campaigns.paths]]
  offers = [ {{ offer = "o" }} ]

[[campaigns]]
id = "every-camp"
traffic_source = "all"
  [[campaigns.paths]]
  offers = [ {{ offer = "o-every" }} ]
"#,
        geo = data.join("GeoLite2-City.mmdb").display(),
    )
}

/// A visit to `campaign` with `query` from `client` (the loopback proxy's `X-Forwarded-For`);
/// the click id.
fn visit_from(e: &Edge, campaign: &str, query: &str, client: &str) -> String {
    let mut c = e.connect();
    c.send(&format!(
        "GET /c/{campaign}?{query} HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: {client}\r\nConnection: close\r\n\r\n"
    ));
    let r = c.response();
    assert_eq!(r.status, 302, "{}", e.log());
    let loc = r.header("Location").unwrap();
    loc[loc.len() - 24..].to_owned()
}

/// A postback on `c` to a network without a token, which takes reports as they come.
fn open_postback(c: &mut common::Conn, q: &str) {
    c.send(&format!("GET /postback?{q} HTTP/1.1\r\nHost: t\r\n\r\n"));
    assert_eq!(c.response().status, 200, "{q}");
}

/// Each token of docs/postbacks.md "Tokens" filled with the visit's and the report's values.
#[test]
fn every_token_of_a_postback_url_is_filled() {
    let rx = Receiver::new(0);
    rx.start();
    let text = tokens_config(rx.port);
    let e = Edge::with_config("legacy", &text);
    let mut pc = e.connect();
    let store = format!("file://{}", e.data.join("lake").display());
    let outbox = TempDir::new("outbox");
    let cfg = outbox.write("edge.toml", &text);

    // A visitor in Great Britain; `2` is a sale in the network's status map.
    let click = visit_from(&e, "tokens-camp", "ext=EXT-1", "81.2.69.142");
    postback(&mut pc, &format!("cid={click}&txid=T1&status=2&payout=5"));

    let disp = Dispatcher::start(&store, &cfg, outbox.path(), &[]);
    wait_until(
        "the postback delivered",
        Duration::from_secs(60),
        || !rx.delivered().is_empty(),
        || format!("{}\n{:?}", disp.log(), rx.got()),
    );
    // `{conversion_id}` is the report's event id, as the conversion log gives it.
    let log = common::query(&[
        "log",
        "conversions",
        "--store",
        &store,
        "--quiet",
        "--format",
        "csv",
    ]);
    let rows: Vec<&str> = log.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{log}");
    let report = rows[0].split(',').nth(1).unwrap_or_default().to_owned();
    assert!(!report.is_empty() && report != click, "{log}");
    let delivered: Vec<String> = rx.delivered().into_values().collect();
    assert_eq!(
        delivered,
        [format!(
            "/all?e=EXT-1&camp=tokens-camp&offer=o&net=net&cc=GB&click={click}&raw=2&st=sale\
             &conv={report}&tx=T1&p=5"
        )],
        "{:?}",
        rx.got()
    );
}

/// A repeated sale fires again under the network's `every` policy (each report is a
/// conversion), and not under the default `replace` (the same news).
#[test]
fn a_repeated_sale_fires_again_where_the_network_counts_every_report() {
    let rx = Receiver::new(0);
    rx.start();
    let text = tokens_config(rx.port);
    let e = Edge::with_config("legacy", &text);
    let mut pc = e.connect();
    let store = format!("file://{}", e.data.join("lake").display());
    let outbox = TempDir::new("outbox");
    let cfg = outbox.write("edge.toml", &text);

    let a = visit_from(&e, "every-camp", "ext=EV-A", "81.2.69.142");
    open_postback(&mut pc, &format!("cid={a}&txid=T1&status=sale&payout=3"));
    open_postback(&mut pc, &format!("cid={a}&txid=T1&status=sale&payout=4"));
    let b = visit_from(&e, "tokens-camp", "ext=RP-B", "81.2.69.142");
    postback(&mut pc, &format!("cid={b}&txid=T1&status=2&payout=3"));
    postback(&mut pc, &format!("cid={b}&txid=T1&status=2&payout=4"));

    let disp = Dispatcher::start(&store, &cfg, outbox.path(), &[]);
    wait_until(
        "three postbacks delivered",
        Duration::from_secs(60),
        || rx.delivered().len() >= 3,
        || format!("{}\n{:?}", disp.log(), rx.got()),
    );
    // Nothing else comes, even after more passes.
    std::thread::sleep(Duration::from_secs(2));
    let delivered = rx.delivered();
    assert_eq!(delivered.len(), 3, "{:?}", rx.got());
    // The payouts each source click was told, by its `p=`.
    let told = |ext: &str| -> Vec<String> {
        let mut v: Vec<String> = delivered
            .values()
            .filter(|t| t.starts_with(&format!("/all?e={ext}&")))
            .filter_map(|t| {
                t.split('&')
                    .find_map(|kv| kv.strip_prefix("p="))
                    .map(str::to_owned)
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(told("EV-A"), ["3", "4"], "{:?}", rx.got());
    assert_eq!(told("RP-B"), ["3"], "{:?}", rx.got());
    // Each of `every`'s with its own report's id, in the URL as in the key.
    let conv: BTreeSet<&str> = delivered
        .values()
        .filter(|t| t.starts_with("/all?e=EV-A&"))
        .filter_map(|t| t.split('&').find_map(|kv| kv.strip_prefix("conv=")))
        .collect();
    assert_eq!(conv.len(), 2, "{delivered:?}");
}
