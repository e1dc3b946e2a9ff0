use super::*;
use crate::config::{ConfigFile, DEMO_CONFIG};
use crate::http::{Limits, Parse, parse};
use sink::visitors::Visitors;
use std::net::Ipv4Addr;

/// Collects events; acknowledges conversions as the WAL writer would (`durable`).
struct Collect {
    events: Vec<Event>,
    full: bool,
    durable: bool,
}

impl Default for Collect {
    fn default() -> Self {
        Collect {
            events: Vec::new(),
            full: false,
            durable: true,
        }
    }
}

impl Emit for Collect {
    fn emit(&mut self, event: Event) -> bool {
        if self.full {
            return false;
        }
        self.events.push(event);
        true
    }
}

struct Harness {
    routing: Routing,
    metrics: Metrics,
    local: Local,
    sink: Collect,
    visitors: Visitors,
    clicks: Clicks,
    /// Added to the wall clock the requests are answered at.
    later: std::time::Duration,
    /// The peer every request comes from.
    peer: IpAddr,
    metrics_allow: Vec<Cidr>,
}

const SECRET: &[u8] = b"handler test secret";

impl Harness {
    fn new(extra: &str) -> Self {
        let cfg = ConfigFile::parse(&format!("{DEMO_CONFIG}\n{extra}")).unwrap();
        Harness {
            routing: Routing::compile(&cfg).unwrap(),
            metrics: Metrics::new(
                1,
                1,
                Box::new(|| (0, 0)),
                Default::default(),
                Default::default(),
            ),
            local: Local::new(7, 0, 42),
            sink: Collect::default(),
            visitors: Visitors::default(),
            clicks: Clicks::new(1, SECRET).unwrap(),
            later: std::time::Duration::ZERO,
            peer: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
            metrics_allow: vec![Cidr::parse("10.0.0.0/8").unwrap()],
        }
    }

    fn send(&mut self, raw: &str) -> (Status, String) {
        let req = match parse(raw.as_bytes(), &Limits::default()) {
            Parse::Complete(r) => r,
            other => panic!("{other:?}"),
        };
        let ctx = Ctx {
            routing: &self.routing,
            metrics: &self.metrics,
            draining: false,
            visitors: &self.visitors,
            clicks: &self.clicks,
            metrics_allow: &self.metrics_allow,
        };
        let mut out = Vec::new();
        let answer = handle(
            &ctx,
            &mut self.local,
            &req,
            self.peer,
            SystemTime::now() + self.later,
            &mut self.sink,
            &mut out,
        );
        let st = match answer {
            Answer::Done(_, st) => st,
            Answer::Pending(p) => {
                assert!(
                    out.is_empty(),
                    "nothing is answered before the event is durable"
                );
                assert_eq!(p.ack.outcome(), None);
                let ack = self.sink.events.last_mut().and_then(|e| e.ack.take());
                ack.expect("the conversion's event carries its ack")
                    .complete(self.sink.durable);
                p.answer(p.ack.outcome().unwrap(), &self.local.date, &mut out)
            }
        };
        (st, String::from_utf8_lossy(&out).into_owned())
    }

    fn get(&mut self, target: &str) -> (Status, String) {
        self.send(&format!(
            "GET {target} HTTP/1.1\r\nHost: t\r\nUser-Agent: UA\r\n\r\n"
        ))
    }
}

fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    resp.split("\r\n")
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(": ")))
}

const CAMP: &str = "/c/5aaea5a02d38914cfd2ad8c1";

mod click;
mod conversion;
mod visit;

#[test]
fn methods_and_paths() {
    let mut h = Harness::new("");
    let (st, resp) = h.send(&format!(
        "POST {CAMP} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
    ));
    assert_eq!(st, Status::MethodNotAllowed);
    assert_eq!(header(&resp, "Allow"), Some("GET, HEAD"));
    let (st, resp) = h.send("DELETE /postback HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(st, Status::MethodNotAllowed);
    assert_eq!(header(&resp, "Allow"), Some("GET, POST"));
    assert_eq!(h.get("/nothing").0, Status::NotFound);
    assert_eq!(h.get("/healthz").0, Status::Ok);
    let (st, resp) = h.get("/metrics");
    assert_eq!(st, Status::Ok);
    assert!(resp.contains("edge_requests_total"));
    let (st, resp) = h.send(&format!("HEAD {CAMP} HTTP/1.1\r\nHost: t\r\n\r\n"));
    assert_eq!(st, Status::Found);
    assert!(resp.ends_with("\r\n\r\n"));
    assert_eq!(
        h.get("/click?cid=0167a15c98772c0004000001").0,
        Status::NotFound
    );
}

/// Mutates valid requests at random (fixed seed) and runs them through the parser and the
/// handler: whatever comes in, nothing may panic and every answer must be a whole response
/// without a bare CR or LF smuggled into a header.
#[test]
fn garbage_never_panics() {
    let seeds: [&[u8]; 4] = [
        b"GET /c/5aaea5a02d38914cfd2ad8c1?utm_source=a%20b&utm_medium=x&cost=1.5 HTTP/1.1\r\nHost: t\r\nAccept-Language: en\r\n\r\n",
        b"POST /postback HTTP/1.1\r\nHost: t\r\nContent-Length: 40\r\n\r\ncid=0167a15c98772c0004000001&payout=92.4",
        b"GET /546b17a70bf18e81647d8950/a.gif?c=1&h=0167a15c98772c0004000001&a=92.4 HTTP/1.0\r\n\r\n",
        b"GET /p.gif?cid=0167a15c98772c0004000001&payout=%2D1&txid=%0D%0A HTTP/1.1\r\nHost: t\r\n\r\n",
    ];
    let mut h = Harness::new("");
    let mut rng = Local::new(0, 0, 99);
    let alphabet = b"%\r\n &=?/{}+-.0123456789abcdefGHIJ\x00\xff:";
    let mut handled = 0;
    for i in 0..40_000 {
        let mut buf = seeds[i % seeds.len()].to_vec();
        for _ in 0..(rng.next_u64() % 4 + 1) {
            let r = rng.next_u64() as usize;
            let pos = r % (buf.len() + 1);
            match (r >> 32) % 3 {
                0 if pos < buf.len() => buf[pos] = alphabet[(r >> 40) % alphabet.len()],
                1 => buf.insert(pos, alphabet[(r >> 40) % alphabet.len()]),
                _ => buf.truncate(pos.max(1)),
            }
        }
        if let Parse::Complete(req) = parse(&buf, &Limits::default()) {
            let ctx = Ctx {
                routing: &h.routing,
                metrics: &h.metrics,
                draining: false,
                visitors: &h.visitors,
                clicks: &h.clicks,
                metrics_allow: &h.metrics_allow,
            };
            let mut out = Vec::new();
            let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
            let answer = handle(
                &ctx,
                &mut h.local,
                &req,
                peer,
                SystemTime::now(),
                &mut h.sink,
                &mut out,
            );
            if let Answer::Pending(p) = answer {
                p.answer(true, &h.local.date, &mut out);
            }
            let end = out
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("a whole head");
            for line in out[..end].split(|&c| c == b'\n') {
                assert!(
                    !line[..line.len().saturating_sub(1)].contains(&b'\r'),
                    "{:?}",
                    String::from_utf8_lossy(&out)
                );
            }
            h.sink.events.clear();
            handled += 1;
        }
    }
    assert!(
        handled > 5_000,
        "only {handled} mutated requests reached the handler"
    );
}

#[test]
fn forwarded_for_lines_are_one_list() {
    let mut h = Harness::new("");
    h.send(&format!(
        "GET {CAMP} HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 1.2.3.4\r\nUser-Agent: UA\r\nX-Forwarded-For: 5.6.7.8, 9.9.9.9\r\n\r\n"
    ));
    let e = h.sink.events.pop().unwrap();
    assert_eq!(e.get(Field::ForwardedFor), b"1.2.3.4, 5.6.7.8, 9.9.9.9");
    h.send(&format!(
        "GET {CAMP} HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n"
    ));
    assert_eq!(
        h.sink.events.pop().unwrap().get(Field::ForwardedFor),
        b"1.2.3.4"
    );
}

#[test]
fn metrics_are_served_to_allowed_peers_only() {
    let mut h = Harness::new("");
    assert_eq!(h.get("/metrics").0, Status::Ok);
    h.peer = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
    let (st, resp) = h.get("/metrics");
    assert_eq!(st, Status::Forbidden);
    assert!(resp.contains("server.metrics_allow"), "{resp}");
    assert!(!resp.contains("edge_requests_total"));
    // Behind a trusted proxy on an allowed address, a forwarded request is someone else's.
    h.peer = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
    h.visitors.proxies = vec![Cidr::parse("10.0.0.0/8").unwrap()];
    let forwarded = "GET /metrics HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n";
    assert_eq!(h.send(forwarded).0, Status::Forbidden);
    assert_eq!(
        h.get("/metrics").0,
        Status::Ok,
        "the proxy's host itself may read them"
    );
}
