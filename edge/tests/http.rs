//! End-to-end HTTP behaviour of the real binary, on both I/O drivers.

use systest as common;

use std::time::Duration;

use common::{CAMP, DRIVERS, Edge};

const GIF_LEN: usize = 43;

#[test]
fn redirect_fills_tokens_and_remapped_params() {
    for d in DRIVERS {
        let e = Edge::demo(d);
        let r = e.get(&format!(
            "{CAMP}?utm_source=my+blog&utm_medium=r%26d&utm_content=kw"
        ));
        assert_eq!(r.status, 302, "{d}");
        assert_eq!(r.header("Cache-Control"), Some("no-store"));
        let loc = r.header("Location").unwrap();
        let ok_drip = loc.starts_with("https://offers.example.com/drip?aff_sub=")
            && loc.ends_with("&src=my%20blog&medium=r%26d");
        let ok_trial = loc.starts_with("https://trial.example.com/start?subid=")
            && loc.ends_with("&campaign=5aaea5a02d38914cfd2ad8c1&kw=kw");
        assert!(ok_drip || ok_trial, "{d}: {loc}");
        let cid = loc.split('=').nth(1).unwrap().split('&').next().unwrap();
        assert_eq!(cid.len(), 24);
        assert!(
            cid.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
    }
}

#[test]
fn weighted_rotation_over_keep_alive() {
    for d in DRIVERS {
        let e = Edge::demo(d);
        let mut c = e.connect();
        let n = 3000;
        let mut drip = 0;
        let mut ids = std::collections::HashSet::new();
        for _ in 0..n {
            c.send(&format!("GET {CAMP} HTTP/1.1\r\nHost: t\r\n\r\n"));
            let r = c.response();
            let loc = r.header("Location").unwrap().to_owned();
            if loc.starts_with("https://offers.example.com/") {
                drip += 1;
            }
            ids.insert(loc.split('=').nth(1).unwrap()[..24].to_owned());
        }
        assert_eq!(ids.len(), n, "click ids must be unique");
        // 3:1 weights → 2250 expected, σ ≈ 23.7; allow 5σ.
        assert!((2131..=2369).contains(&drip), "{d}: {drip} of {n}");
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    for d in DRIVERS {
        let e = Edge::demo(d);
        let mut c = e.connect();
        c.send(&format!(
            "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET {CAMP} HTTP/1.1\r\nHost: t\r\n\r\nGET /p.gif?cid=0167a15c98772c0004000001 HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\nHEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
        ));
        assert_eq!(c.response().status, 200);
        assert_eq!(c.response().status, 302);
        let gif = c.response();
        assert_eq!((gif.status, gif.body.len()), (200, GIF_LEN));
        assert_eq!(c.response().status, 404);
        let head = c.response_to(true);
        assert_eq!(head.status, 200);
        assert_eq!(head.header("Content-Length"), Some("3"));
        let last = c.response();
        assert_eq!(last.body_str(), "ok\n", "{d}");
    }
}

#[test]
fn partial_reads_byte_by_byte() {
    for d in DRIVERS {
        let e = Edge::demo(d);
        let mut c = e.connect();
        let body = "cid=0167a15c98772c0004000001&payout=2.5";
        let req = format!(
            "POST /postback HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        for b in req.as_bytes() {
            c.send_bytes(&[*b]);
            std::thread::sleep(Duration::from_micros(200));
        }
        let r = c.response();
        assert_eq!((r.status, r.body_str().as_str()), (200, "OK"), "{d}");
    }
}

#[test]
fn http10_and_connection_close() {
    for d in DRIVERS {
        let e = Edge::demo(d);
        let mut c = e.connect();
        c.send("GET /healthz HTTP/1.0\r\n\r\n");
        let r = c.response();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Connection"), Some("close"));
        assert!(c.closed(), "{d}: HTTP/1.0 without keep-alive closes");

        let mut c = e.connect();
        c.send("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(c.response().header("Connection"), Some("keep-alive"));
        c.send("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(c.response().status, 200);

        let mut c = e.connect();
        c.send("GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert_eq!(c.response().header("Connection"), Some("close"));
        assert!(c.closed());
    }
}

#[test]
fn pixels_and_postbacks() {
    for d in DRIVERS {
        let e = Edge::demo(d);
        let r = e.get("/546b17a70bf18e81647d8950/a.gif?c=1&h=0167a15c98772c0004000001&a=92.4");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Type"), Some("image/gif"));
        assert!(r.header("Cache-Control").unwrap().contains("no-store"));
        assert_eq!(r.body.len(), GIF_LEN);
        assert_eq!(&r.body[..6], b"GIF89a");
        let r = e.get("/p.gif?cid=0167a15c98772c0004000001&payout=1&type=lead");
        assert_eq!((r.status, r.body.len()), (200, GIF_LEN));
        let r = e.get("/postback?cid=0167a15c98772c0004000001&payout=92.4&txid=t1");
        assert_eq!((r.status, r.body_str().as_str()), (200, "OK"));
        let r = e.get("/postback?cid=bad");
        assert_eq!(r.status, 400);
        assert!(r.body_str().contains("click id"), "{}", r.body_str());
        let r = e.get("/postback?payout=1");
        assert_eq!(r.status, 400);
        assert!(r.body_str().contains("missing cid"));
        assert_eq!(
            e.metric("edge_events_emitted_total{kind=\"postback\"}"),
            1,
            "{d}"
        );
        assert_eq!(e.metric("edge_events_emitted_total{kind=\"pixel\"}"), 2);
    }
}

#[test]
fn limits_and_malformed_input() {
    for d in DRIVERS {
        let e = Edge::demo(d);
        let cases: Vec<(String, u16, &str)> = vec![
            (
                format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(9000)),
                414,
                "target",
            ),
            (
                format!(
                    "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
                    "b".repeat(17000)
                ),
                431,
                "head",
            ),
            (
                "POST /postback HTTP/1.1\r\nHost: t\r\nContent-Length: 70000\r\n\r\n".into(),
                413,
                "body",
            ),
            (
                "GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".into(),
                411,
                "Content-Length",
            ),
            ("GARBAGE\r\n\r\n".into(), 400, "malformed"),
            ("GET / HTTP/1.1\r\n\r\n".into(), 400, "Host"),
            (
                "GET /c/nope HTTP/1.1\r\nHost: t\r\n\r\n".into(),
                404,
                "unknown campaign",
            ),
            (
                "PUT /c/5aaea5a02d38914cfd2ad8c1 HTTP/1.1\r\nHost: t\r\n\r\n".into(),
                405,
                "method",
            ),
            (
                "GET /other HTTP/1.1\r\nHost: t\r\n\r\n".into(),
                404,
                "not found",
            ),
        ];
        for (req, status, word) in cases {
            let mut c = e.connect();
            c.send(&req);
            let r = c.response();
            assert_eq!(r.status, status, "{d}: {}", &req[..req.len().min(60)]);
            assert!(
                r.body_str().contains(word),
                "{d}: {status}: {}",
                r.body_str()
            );
        }
        // Still serving.
        assert_eq!(e.get("/healthz").status, 200);
    }
}

#[test]
fn crlf_injection_never_reaches_a_header() {
    for d in DRIVERS {
        let e = Edge::demo(d);
        for q in [
            "utm_source=%0D%0ASet-Cookie:%20a=1",
            "utm_source=x%0d%0aLocation:%20https://evil.example/",
            "utm_medium=%E5%0A%0D&utm_content=%0a%0a%0a",
        ] {
            let mut c = e.connect();
            c.send(&format!("GET {CAMP}?{q} HTTP/1.1\r\nHost: t\r\n\r\n"));
            let r = c.response();
            assert_eq!(r.status, 302);
            assert!(r.header("Set-Cookie").is_none());
            assert_eq!(r.headers.iter().filter(|(k, _)| k == "Location").count(), 1);
            let loc = r.header("Location").unwrap();
            assert!(
                loc.starts_with("https://offers.example.com/")
                    || loc.starts_with("https://trial.example.com/"),
                "{d}: {loc}"
            );
        }
    }
}

#[test]
fn slow_head_gets_408() {
    let cfg = format!(
        "{}\n",
        edge::config::DEMO_CONFIG.replace(
            "flush_interval_ms = 1000",
            "flush_interval_ms = 60000\nhead_timeout_ms = 300"
        )
    );
    for d in DRIVERS {
        let e = Edge::with_config(d, &cfg);
        let mut c = e.connect();
        c.send("GET /healthz HTTP/1.1\r\nHost: t\r\n");
        let r = c.response();
        assert_eq!(r.status, 408, "{d}");
        assert!(c.closed());
        // Keep-alive connections that are idle between requests are not 408'd by the head timeout.
        let mut c = e.connect();
        c.send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(c.response().status, 200);
        std::thread::sleep(Duration::from_millis(500));
        c.send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(c.response().status, 200);
    }
}

#[test]
fn expect_100_continue() {
    for d in DRIVERS {
        let e = Edge::demo(d);
        let mut c = e.connect();
        let body = "cid=0167a15c98772c0004000001";
        c.send(&format!(
            "POST /postback HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ));
        assert_eq!(c.response().status, 100, "{d}");
        c.send(body);
        assert_eq!(c.response().status, 200);
    }
}

#[test]
fn metrics_count_requests_and_name_the_driver() {
    for d in DRIVERS {
        let e = Edge::demo(d);
        for _ in 0..5 {
            assert_eq!(e.get(CAMP).status, 302);
        }
        assert_eq!(
            e.metric("edge_requests_total{route=\"campaign\",status=\"302\"}"),
            5
        );
        assert_eq!(e.metric("edge_events_emitted_total{kind=\"visit\"}"), 5);
        assert_eq!(e.metric(&format!("edge_driver_info{{driver=\"{d}\"}}")), 1);
        assert!(e.log().contains(&format!("driver=\"{d}\"")), "{}", e.log());
    }
}

#[test]
fn refused_requests_get_their_answer_even_while_the_body_keeps_coming() {
    for d in DRIVERS {
        let e = Edge::demo(d);
        for _ in 0..5 {
            let mut c = e.connect();
            let body = vec![b'x'; 200_000];
            let head = format!(
                "POST /postback HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            c.send(&head);
            // The server answers 413 right after the head; the rest of the body still arrives.
            let _ = std::io::Write::write_all(&mut c.s, &body);
            let r = c.response();
            assert_eq!(r.status, 413, "{d}");
            assert!(r.body_str().contains("too large"));
        }
    }
}
