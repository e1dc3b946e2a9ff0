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
    table: Table,
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
            table: Table::compile(&cfg).unwrap(),
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
            table: &self.table,
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

#[test]
fn visit_redirects_with_tokens_and_records_the_event() {
    let mut h = Harness::new("");
    let (st, resp) = h.get(&format!(
        "{CAMP}?utm_source=my%20blog&utm_medium=r%26d&utm_content=kw+1&cost=0.25"
    ));
    assert_eq!(st, Status::Found);
    let loc = header(&resp, "Location").unwrap();
    let e = &h.sink.events[0];
    let cid = e.id.to_string();
    let drip = format!("https://offers.example.com/drip?aff_sub={cid}&src=my%20blog&medium=r%26d");
    let trial = format!(
        "https://trial.example.com/start?subid={cid}&campaign=5aaea5a02d38914cfd2ad8c1&kw=kw%201"
    );
    assert!(loc == drip || loc == trial, "{loc}");
    assert_eq!(e.kind, EventKind::Visit);
    assert_eq!(e.cost_micros, 250_000);
    assert_eq!(e.path_index, Some(0));
    assert_eq!(e.id.node_id(), 7);
    assert_eq!(e.get(Field::CampaignId), b"5aaea5a02d38914cfd2ad8c1");
    assert_eq!(e.get(Field::TrafficSourceId), b"ts-blog");
    assert_eq!(e.get(Field::NetworkId), b"net-impact");
    assert_eq!(e.get(Field::Location), loc.as_bytes());
    assert_eq!(e.get(Field::UserAgent), b"UA");
    assert_eq!(e.get(Field::Method), b"GET");
    assert!(e.get(Field::Target).starts_with(CAMP.as_bytes()));
    let remapped: Vec<(String, String)> = e
        .remapped()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into(),
                String::from_utf8_lossy(v).into(),
            )
        })
        .collect();
    assert_eq!(
        remapped,
        [
            ("source", "my blog"),
            ("target", "kw 1"),
            ("var_2", "r&d"),
            ("var_7", "")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
}

#[test]
fn campaign_cost_applies_without_a_valid_cost_param() {
    let mut h = Harness::new("");
    h.get(&format!("{CAMP}?cost=abc"));
    h.get(CAMP);
    h.get(&format!("{CAMP}?cost=-1"));
    assert!(h.sink.events.iter().all(|e| e.cost_micros == 50_000));
}

#[test]
fn rotation_follows_offer_weights() {
    let mut h = Harness::new("");
    let n = 4000;
    let mut drip = 0;
    for _ in 0..n {
        let (_, resp) = h.get(CAMP);
        if header(&resp, "Location")
            .unwrap()
            .starts_with("https://offers.example.com/")
        {
            drip += 1;
        }
    }
    // Weight 3:1, so 3000 expected; 5 standard deviations is about ±137.
    assert!((2860..=3140).contains(&drip), "{drip}");
}

#[test]
fn click_ids_are_unique_and_increasing() {
    let mut h = Harness::new("");
    for _ in 0..1000 {
        h.get(CAMP);
    }
    let ids: Vec<_> = h.sink.events.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn crlf_and_host_injection_cannot_escape() {
    let mut h = Harness::new("");
    let (_, resp) = h.get(&format!(
        "{CAMP}?utm_source=%0D%0ASet-Cookie:%20x=1&utm_medium=//evil.com/%0a"
    ));
    let loc = header(&resp, "Location").unwrap();
    assert!(!resp.contains("Set-Cookie"), "{resp}");
    assert!(
        loc.starts_with("https://offers.example.com/")
            || loc.starts_with("https://trial.example.com/")
    );
    assert_eq!(resp.matches("\r\n").count(), 7, "{resp:?}");
}

#[test]
fn unknown_campaign_is_404_or_fallback() {
    let mut h = Harness::new("");
    let (st, resp) = h.get("/c/nope?x=1");
    assert_eq!(st, Status::NotFound);
    assert!(resp.ends_with("unknown campaign\n"));
    assert!(h.sink.events.is_empty());
    let mut h = Harness::new("").with_fallback("https://safe.example.com/?from=edge");
    let (st, resp) = h.get("/c/nope");
    assert_eq!(st, Status::Found);
    assert_eq!(
        header(&resp, "Location"),
        Some("https://safe.example.com/?from=edge")
    );
}

impl Harness {
    fn with_fallback(self, url: &str) -> Self {
        self.with_config("", url)
    }

    fn with_config(mut self, extra: &str, fallback: &str) -> Self {
        let mut cfg = ConfigFile::parse(&format!("{DEMO_CONFIG}\n{extra}")).unwrap();
        cfg.server.fallback_url = fallback.into();
        self.table = Table::compile(&cfg).unwrap();
        self
    }
}

/// A campaign whose one path shows a landing page with two offers (the second weighs 0, so
/// only `/click/2` reaches it).
const LP: &str = r#"
[[landing_pages]]
id = "lp-review"
name = "Review page"
url = "https://lp.example.com/review?cid={click_id}&src={source}"

[[campaigns]]
id = "lp-camp"
name = "With a landing page"
traffic_source = "ts-blog"
cost = 0.10
  [[campaigns.paths]]
  weight = 1
  landing_page = "lp-review"
  offers = [ { offer = "offer-drip", weight = 1 }, { offer = "offer-drip-trial", weight = 0 } ]
"#;

/// Visits the landing-page campaign: (click id, the `Set-Cookie` value's `name=value`).
fn lp_visit(h: &mut Harness) -> (String, String) {
    let (st, resp) = h.get("/c/lp-camp?utm_source=news&utm_medium=mail&utm_content=hero%201");
    assert_eq!(st, Status::Found, "{resp}");
    let e = h.sink.events.last().unwrap();
    let cid = e.id.to_string();
    assert_eq!(
        header(&resp, "Location"),
        Some(format!("https://lp.example.com/review?cid={cid}&src=news").as_str())
    );
    assert_eq!(e.get(Field::LandingPageId), b"lp-review");
    assert_eq!(
        e.get(Field::OfferId),
        b"",
        "the offer is chosen at the click-through"
    );
    let cookie = header(&resp, "Set-Cookie").expect("a landing-page visit sets its cookie");
    let (pair, attrs) = cookie.split_once("; ").unwrap();
    assert!(pair.starts_with("ct_lp-camp="), "{cookie}");
    assert_eq!(attrs, "Path=/click; Max-Age=86400; HttpOnly; SameSite=Lax");
    (cid, pair.to_owned())
}

fn click_with_cookie(h: &mut Harness, target: &str, cookie: &str) -> (Status, String) {
    h.send(&format!(
        "GET {target} HTTP/1.1\r\nHost: t\r\nUser-Agent: UA\r\nCookie: a=b; {cookie}\r\n\r\n"
    ))
}

#[test]
fn offer_visits_set_no_cookie() {
    let mut h = Harness::new(LP);
    let (_, resp) = h.get(CAMP);
    assert_eq!(header(&resp, "Set-Cookie"), None);
}

#[test]
fn click_through_on_the_same_node_needs_no_cookie() {
    let mut h = Harness::new(LP);
    let (cid, _) = lp_visit(&mut h);
    let (st, resp) = h.get(&format!("/click?cid={cid}"));
    assert_eq!(st, Status::Found, "{resp}");
    assert_eq!(
        header(&resp, "Location"),
        Some(
            format!("https://offers.example.com/drip?aff_sub={cid}&src=news&medium=mail").as_str()
        )
    );
    let e = h.sink.events.last().unwrap();
    assert_eq!(e.kind, EventKind::Click);
    assert_ne!(e.id.to_string(), cid, "a click has its own id");
    assert_eq!(e.get(Field::ClickId), cid.as_bytes(), "and names its visit");
    assert_eq!(e.get(Field::CampaignId), b"lp-camp");
    assert_eq!(e.get(Field::OfferId), b"offer-drip");
    assert_eq!(e.get(Field::NetworkId), b"net-impact");
    assert_eq!(e.get(Field::LandingPageId), b"lp-review");
    assert_eq!(e.path_index, Some(0));
    assert_eq!(e.cost_micros, 0, "the visit carries the cost");
    let remapped: Vec<_> = e.remapped().collect();
    assert!(
        remapped.contains(&(&b"target"[..], &b"hero 1"[..])),
        "{remapped:?}"
    );
    // The n-th offer of a multi-offer page, with the visit's parameters in its URL.
    let (st, resp) = h.get(&format!("/click/2?cid={cid}"));
    assert_eq!(st, Status::Found);
    assert_eq!(
        header(&resp, "Location"),
        Some(
            format!("https://trial.example.com/start?subid={cid}&campaign=lp-camp&kw=hero%201")
                .as_str()
        )
    );
    // A number past the page's offers still reaches an offer (by weight).
    let (_, resp) = h.get(&format!("/click/9?cid={cid}"));
    assert!(
        header(&resp, "Location")
            .unwrap()
            .starts_with("https://offers.example.com/drip")
    );
}

#[test]
fn click_through_on_another_node_reads_the_signed_cookie() {
    let mut h = Harness::new(LP);
    let (cid, cookie) = lp_visit(&mut h);
    // Another node: its own (empty) click table, the same secret.
    let mut other = Harness::new(LP);
    other.local = Local::new(8, 0, 1);
    let (st, _) = other.get(&format!("/click?cid={cid}"));
    assert_eq!(
        st,
        Status::NotFound,
        "without the cookie the click is unknown there"
    );
    let (st, resp) = click_with_cookie(&mut other, &format!("/click?cid={cid}"), &cookie);
    assert_eq!(st, Status::Found, "{resp}");
    assert_eq!(
        header(&resp, "Location"),
        Some(
            format!("https://offers.example.com/drip?aff_sub={cid}&src=news&medium=mail").as_str()
        )
    );
    let e = other.sink.events.last().unwrap();
    assert_eq!(
        (e.kind, e.get(Field::ClickId)),
        (EventKind::Click, cid.as_bytes())
    );
    // Without a cid, the newest visit of the cookies.
    let (st, resp) = click_with_cookie(&mut other, "/click", &cookie);
    assert_eq!(st, Status::Found);
    assert!(header(&resp, "Location").unwrap().contains(&cid));
    // A cookie for another click id does not stand in for this one.
    let (cid2, _) = lp_visit(&mut h);
    let (st, _) = click_with_cookie(&mut other, &format!("/click?cid={cid2}"), &cookie);
    assert_eq!(st, Status::NotFound);
}

#[test]
fn forged_or_unknown_clicks_get_the_fallback_or_404_and_no_event() {
    let mut h = Harness::new(LP);
    let (cid, cookie) = lp_visit(&mut h);
    let events = h.sink.events.len();
    let mut other = Harness::new(LP);
    other.clicks = Clicks::new(1, b"another secret entirely").unwrap();
    let (st, resp) = click_with_cookie(&mut other, &format!("/click?cid={cid}"), &cookie);
    assert_eq!(
        (st, resp.ends_with("unknown click\n")),
        (Status::NotFound, true)
    );
    let mut forged = cookie.clone().into_bytes();
    let last = forged.len() - 3;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let mut third = Harness::new(LP);
    for target in [
        format!("/click?cid={cid}"),
        "/click?cid=zzz".into(),
        "/click".into(),
        "/click?cid=0167a15c98772c0004000001".into(),
    ] {
        let (st, resp) = click_with_cookie(&mut third, &target, &forged);
        assert_eq!(st, Status::NotFound, "{target}: {resp}");
    }
    for target in ["/click/0", "/click/x", "/click/1/2", "/click/12345"] {
        let (st, _) = h.get(&format!("{target}?cid={cid}"));
        assert_eq!(st, Status::NotFound, "{target}");
    }
    assert_eq!(h.sink.events.len(), events);
    assert!(third.sink.events.is_empty() && other.sink.events.is_empty());
    let mut fb = Harness::new(LP).with_config(LP, "https://safe.example.com/");
    let (st, resp) = fb.get("/click?cid=0167a15c98772c0004000001");
    assert_eq!(st, Status::Found);
    assert_eq!(header(&resp, "Location"), Some("https://safe.example.com/"));
    assert!(fb.sink.events.is_empty());
}

#[test]
fn postback_records_a_conversion() {
    let mut h = Harness::new("");
    let cid = "0167a15c98772c0004000001";
    let (st, resp) = h.get(&format!(
        "/postback?cid={cid}&payout=92.4&txid=T-1&type=cps"
    ));
    assert_eq!(st, Status::Ok);
    assert!(resp.ends_with("\r\n\r\nOK"), "{resp}");
    let e = &h.sink.events[0];
    assert_eq!(e.kind, EventKind::Postback);
    assert_eq!(e.payout_micros, Some(92_400_000));
    assert_eq!(e.get(Field::ClickId), cid.as_bytes());
    assert_eq!(e.get(Field::TxId), b"T-1");
    assert_eq!(e.get(Field::ConversionType), b"cps");
    assert_eq!(e.get(Field::Status), b"approved");
}

#[test]
fn postback_as_a_form_post() {
    let mut h = Harness::new("");
    let body = "cid=0167A15C98772C0004000001&payout=1.5&status=declined";
    let (st, _) = h.send(&format!(
        "POST /postback HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    assert_eq!(st, Status::Ok);
    let e = &h.sink.events[0];
    assert_eq!(e.get(Field::ClickId), b"0167a15c98772c0004000001");
    assert_eq!(e.payout_micros, Some(1_500_000));
    assert_eq!(e.get(Field::Status), b"declined");
    assert_eq!(e.get(Field::Body), body.as_bytes());
}

#[test]
fn postback_errors_name_the_problem() {
    let mut h = Harness::new("");
    for (q, st, msg) in [
        ("", Status::BadRequest, "missing cid"),
        (
            "cid=xyz",
            Status::BadRequest,
            "malformed click id: a click id is 24 hex digits, got 3",
        ),
        (
            "cid=0167a15c98772c0004000001&payout=1e5",
            Status::BadRequest,
            "bad payout",
        ),
        (
            "cid=0167a15c98772c0004000001&payout=0.0000001",
            Status::BadRequest,
            "6 decimal places",
        ),
    ] {
        let (got, resp) = h.get(&format!("/postback?{q}"));
        assert_eq!(got, st, "{q}");
        assert!(resp.contains(msg), "{q}: {resp}");
    }
    let long = "x".repeat(300);
    let (got, resp) = h.get(&format!(
        "/postback?cid=0167a15c98772c0004000001&txid={long}"
    ));
    assert_eq!(got, Status::BadRequest);
    assert!(resp.contains("txid longer"));
    assert!(h.sink.events.is_empty());
}

#[test]
fn postback_tokens_are_enforced() {
    let mut h = Harness::new("");
    let mut cfg = ConfigFile::parse(DEMO_CONFIG).unwrap();
    cfg.affiliate_networks[0].postback_token = "tok".into();
    h.table = Table::compile(&cfg).unwrap();
    let cid = "0167a15c98772c0004000001";
    assert_eq!(h.get(&format!("/postback?cid={cid}")).0, Status::Forbidden);
    assert_eq!(
        h.get(&format!("/postback?cid={cid}&token=bad")).0,
        Status::Forbidden
    );
    assert_eq!(
        h.get(&format!("/postback?cid={cid}&token=tok")).0,
        Status::Ok
    );
    assert_eq!(
        h.get(&format!("/postback?cid={cid}&token=tok&network=net-impact"))
            .0,
        Status::Ok
    );
    assert_eq!(
        h.get(&format!("/postback?cid={cid}&token=tok&network=other"))
            .0,
        Status::Forbidden
    );
}

#[test]
fn a_conversion_that_cannot_be_made_durable_is_503() {
    let mut h = Harness::new("");
    h.sink.durable = false;
    let (st, resp) = h.get("/postback?cid=0167a15c98772c0004000001");
    assert_eq!(st, Status::ServiceUnavailable);
    assert!(resp.contains("could not be made durable"), "{resp}");
    let (st, _) = h.get("/p.gif?cid=0167a15c98772c0004000001");
    assert_eq!(st, Status::ServiceUnavailable);
}

#[test]
fn full_queue_makes_postbacks_503_but_redirects_still_work() {
    let mut h = Harness::new("");
    h.sink.full = true;
    let (st, resp) = h.get("/postback?cid=0167a15c98772c0004000001");
    assert_eq!(st, Status::ServiceUnavailable);
    assert!(resp.contains("retry"));
    assert_eq!(h.get(CAMP).0, Status::Found);
}

#[test]
fn pixels_answer_the_gif() {
    let mut h = Harness::new("");
    let (st, resp) = h.get("/546b17a70bf18e81647d8950/a.gif?c=1&h=0167a15c98772c0004000001&a=92.4");
    assert_eq!(st, Status::Ok);
    assert_eq!(header(&resp, "Content-Type"), Some("image/gif"));
    assert_eq!(header(&resp, "Content-Length"), Some("43"));
    assert!(header(&resp, "Cache-Control").unwrap().contains("no-store"));
    let e = &h.sink.events[0];
    assert_eq!(e.kind, EventKind::Pixel);
    assert_eq!(e.payout_micros, Some(92_400_000));
    assert_eq!(e.get(Field::ConversionType), b"1");
    let (st, _) = h.get("/p.gif?cid=0167a15c98772c0004000001&payout=3&type=lead");
    assert_eq!(st, Status::Ok);
    assert_eq!(h.sink.events[1].get(Field::ConversionType), b"lead");
    assert_eq!(h.get("/p.gif?payout=3").0, Status::BadRequest);
    assert_eq!(
        h.get("/a/b/a.gif?h=0167a15c98772c0004000001").0,
        Status::NotFound
    );
}

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
                table: &h.table,
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
fn postbacks_record_what_their_token_proves() {
    let mut h = Harness::new("");
    let cid = "0167a15c98772c0004000001";
    // The demo's network has no token: nothing can be checked.
    assert_eq!(h.get(&format!("/postback?cid={cid}")).0, Status::Ok);
    assert_eq!(h.sink.events[0].auth, Auth::Open);
    let mut cfg = ConfigFile::parse(DEMO_CONFIG).unwrap();
    cfg.affiliate_networks[0].postback_token = "tok".into();
    let mut free = cfg.affiliate_networks[0].clone();
    free.id = "net-free".into();
    free.postback_token.clear();
    cfg.affiliate_networks.push(free);
    h.table = Table::compile(&cfg).unwrap();
    h.sink.events.clear();
    // Authenticated: the network whose token it carried is stored with it.
    assert_eq!(
        h.get(&format!("/postback?cid={cid}&token=tok")).0,
        Status::Ok
    );
    let e = h.sink.events.pop().unwrap();
    assert_eq!(
        (e.auth, e.get(Field::NetworkId)),
        (Auth::Token, &b"net-impact"[..])
    );
    // Naming a network without a token is accepted and proves nothing: it cannot count for
    // a click of a network that has one (the query decides).
    let forged = format!("/postback?cid={cid}&payout=77777&network=net-free");
    assert_eq!(h.get(&forged).0, Status::Ok);
    let e = h.sink.events.pop().unwrap();
    assert_eq!((e.auth, e.get(Field::NetworkId)), (Auth::NoToken, &b""[..]));
    // A pixel never proves anything once some network has a token.
    assert_eq!(h.get(&format!("/p.gif?cid={cid}&payout=5")).0, Status::Ok);
    assert_eq!(h.sink.events.pop().unwrap().auth, Auth::NoToken);
}

#[test]
fn visits_and_clicks_carry_their_networks_policy() {
    let mut cfg = ConfigFile::parse(DEMO_CONFIG).unwrap();
    cfg.affiliate_networks[0].postback_token = "tok".into();
    let mut h = Harness::new("");
    h.table = Table::compile(&cfg).unwrap();
    assert_eq!(h.get(CAMP).0, Status::Found);
    let e = h.sink.events.pop().unwrap();
    assert_eq!(e.get(Field::NetworkId), b"net-impact");
    assert_eq!(
        e.network_policy,
        Some(sink::event::NetworkPolicy {
            token: true,
            pixels: sink::event::Pixels::Off
        })
    );
}

#[test]
fn tokens_are_redacted_and_only_postbacks_keep_a_body() {
    let mut h = Harness::new("");
    let cid = "0167a15c98772c0004000001";
    h.get(&format!("/postback?cid={cid}&token=s3cret&x=1"));
    let e = h.sink.events.pop().unwrap();
    assert_eq!(
        e.get(Field::Target),
        format!("/postback?cid={cid}&token=REDACTED&x=1").as_bytes()
    );
    let body = format!("cid={cid}&t%6Fken=s3cret");
    h.send(&format!(
        "POST /postback?token=q HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    let e = h.sink.events.pop().unwrap();
    assert_eq!(e.get(Field::Target), b"/postback?token=REDACTED");
    assert_eq!(
        e.get(Field::Body),
        format!("cid={cid}&t%6Fken=REDACTED").as_bytes()
    );
    // A visit's body, or a pixel's, is never kept.
    for target in [CAMP.to_owned(), format!("/p.gif?cid={cid}")] {
        let big = "b".repeat(60_000);
        let raw = format!(
            "GET {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{big}",
            big.len()
        );
        let req = match parse(raw.as_bytes(), &Limits::default()) {
            Parse::Complete(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(req.body.len(), 60_000);
        h.send(&raw);
        let e = h.sink.events.pop().unwrap();
        assert_eq!(e.get(Field::Body), b"", "{target}");
        assert!(e.heap_bytes() < 4_096, "{target}: {} bytes", e.heap_bytes());
    }
}

#[test]
fn costs_and_payouts_are_capped() {
    let mut h = Harness::new("");
    // The demo's traffic source takes the cost from `cost`; the campaign's CPC is 0.05.
    h.get(&format!("{CAMP}?cost=9223372036854"));
    assert_eq!(h.sink.events.pop().unwrap().cost_micros, 50_000);
    h.get(&format!("{CAMP}?cost=999.5"));
    assert_eq!(h.sink.events.pop().unwrap().cost_micros, 999_500_000);
    let cid = "0167a15c98772c0004000001";
    let (st, resp) = h.get(&format!("/postback?cid={cid}&payout=100000.01"));
    assert_eq!(st, Status::BadRequest);
    assert!(resp.contains("above server.max_payout"), "{resp}");
    assert_eq!(
        h.get(&format!("/postback?cid={cid}&payout=-100000.01")).0,
        Status::BadRequest
    );
    assert_eq!(
        h.get(&format!("/postback?cid={cid}&payout=100000")).0,
        Status::Ok
    );
    let (st, _) = h.get(&format!("/p.gif?cid={cid}&payout=200000"));
    assert_eq!(st, Status::BadRequest);
}

#[test]
fn click_state_is_honoured_for_a_day_only() {
    let mut h = Harness::new(LP);
    let (cid, cookie) = lp_visit(&mut h);
    h.later = std::time::Duration::from_secs(86_000);
    assert_eq!(h.get(&format!("/click?cid={cid}")).0, Status::Found);
    h.later = std::time::Duration::from_secs(86_500);
    let (st, resp) = h.get(&format!("/click?cid={cid}"));
    assert_eq!(st, Status::NotFound);
    assert!(resp.ends_with("expired click\n"), "{resp}");
    let mut other = Harness::new(LP);
    other.later = h.later;
    let (st, _) = click_with_cookie(&mut other, &format!("/click?cid={cid}"), &cookie);
    assert_eq!(st, Status::NotFound, "an old cookie is refused on any node");
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
