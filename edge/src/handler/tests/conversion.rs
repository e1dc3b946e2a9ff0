//! Postbacks and pixels: durability, tokens and what they prove, limits, redaction.
use super::*;

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
    h.routing = Routing::compile(&cfg).unwrap();
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
    h.routing = Routing::compile(&cfg).unwrap();
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
