use super::*;

fn limits() -> Limits {
    Limits {
        max_head: 256,
        max_target: 64,
        max_body: 32,
        ..Limits::default()
    }
}

fn complete(buf: &[u8]) -> Request<'_> {
    match parse(buf, &limits()) {
        Parse::Complete(r) => r,
        other => panic!("not complete: {other:?}"),
    }
}

fn error(buf: &[u8]) -> ParseError {
    match parse(buf, &limits()) {
        Parse::Error(e) => e,
        other => panic!("not an error: {other:?}"),
    }
}

#[test]
fn parses_a_get_with_its_facts() {
    let buf = b"GET /c/x?a=1 HTTP/1.1\r\nHost: t.example\r\nUser-Agent: UA/1\r\nreferer: https://r/\r\nAccept-Language: en-US\r\nX-Forwarded-For: 1.2.3.4\r\n\r\nGET /next";
    let r = complete(buf);
    assert_eq!(r.method, Method::Get);
    assert_eq!(r.target, b"/c/x?a=1");
    assert_eq!(r.path_and_query(), (&b"/c/x"[..], &b"a=1"[..]));
    assert_eq!(r.host, b"t.example");
    assert_eq!(r.user_agent, b"UA/1");
    assert_eq!(r.referer, b"https://r/");
    assert_eq!(r.accept_language, b"en-US");
    assert_eq!(r.forwarded_for, b"1.2.3.4");
    assert!(r.keep_alive);
    assert_eq!(r.raw.len(), buf.len() - b"GET /next".len());
}

#[test]
fn keep_alive_rules() {
    assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
    assert!(complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    assert!(!complete(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
    assert!(!complete(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: TE, close\r\n\r\n").keep_alive);
}

#[test]
fn partial_until_whole() {
    let full = b"POST /postback HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\ncid=1&a=2&b";
    for cut in 0..full.len() {
        match parse(&full[..cut], &limits()) {
            Parse::Partial { .. } => {}
            other => panic!("cut {cut}: {other:?}"),
        }
    }
    let r = complete(full);
    assert_eq!(r.method, Method::Post);
    assert_eq!(r.body, b"cid=1&a=2&b");
    assert_eq!(r.head_len, full.len() - 11);
}

#[test]
fn expect_continue_is_reported_while_the_body_is_missing() {
    let head =
        b"POST /postback HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
    assert!(matches!(
        parse(head, &limits()),
        Parse::Partial {
            expect_continue: true
        }
    ));
}

#[test]
fn limits_map_to_their_status() {
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "x".repeat(100));
    assert_eq!(error(long_target.as_bytes()).status(), 414);
    let partial_long_target = format!("GET /{}", "x".repeat(100));
    assert_eq!(error(partial_long_target.as_bytes()).status(), 414);
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: {}\r\n\r\n",
        "y".repeat(300)
    );
    assert_eq!(error(big_head.as_bytes()).status(), 431);
    let big_partial = format!("GET / HTTP/1.1\r\nX-A: {}", "y".repeat(300));
    assert_eq!(error(big_partial.as_bytes()).status(), 431);
    let many: String = (0..70).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
    let l = Limits {
        max_head: 4096,
        ..limits()
    };
    assert!(matches!(
        parse(many.as_bytes(), &l),
        Parse::Error(ParseError::TooManyHeaders)
    ));
    assert_eq!(
        error(b"POST /postback HTTP/1.1\r\nHost: a\r\nContent-Length: 33\r\n\r\n").status(),
        413
    );
    assert_eq!(
        error(b"POST /postback HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").status(),
        411
    );
}

#[test]
fn malformed_requests_say_why() {
    for (buf, want) in [
        (&b"GET / HTTP/1.1\r\n\r\n"[..], "missing Host header"),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "more than one Host",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
            "invalid Content-Length",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "conflicting",
        ),
        (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", "must be a path"),
        (b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n", "invalid header name"),
        (b"GET / HTTP/2.0\r\n\r\n", "invalid HTTP version"),
        (b"\x16\x03\x01\x02\x00\x01\x00", "invalid method"),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n",
            "unsupported Expect",
        ),
    ] {
        let e = error(buf);
        assert_eq!(e.status(), 400, "{:?}", String::from_utf8_lossy(buf));
        assert!(e.message().contains(want), "{} / {want}", e.message());
    }
}

#[test]
fn absolute_form_targets_route_by_path() {
    let r = complete(b"GET http://t.example/c/x?a=1 HTTP/1.1\r\nHost: t.example\r\n\r\n");
    assert_eq!(r.target, b"/c/x?a=1");
    assert_eq!(r.target_raw, b"http://t.example/c/x?a=1");
}

#[test]
fn other_methods_parse() {
    assert_eq!(
        complete(b"DELETE / HTTP/1.1\r\nHost: a\r\n\r\n").method,
        Method::Other
    );
    assert_eq!(
        complete(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n").method,
        Method::Head
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    prop_compose! {
        /// One valid request: any of the routes' methods, a target, some of the headers the
        /// parser reads, and a body with its Content-Length for POST.
        fn request()(
            method in proptest::sample::select(vec!["GET", "HEAD", "POST"]),
            target in "/[a-zA-Z0-9/_.%=&?+~-]{0,40}",
            minor in 0..2u8,
            headers in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "User-Agent", "Referer", "Accept-Language", "X-Forwarded-For", "Cookie",
                        "Content-Type", "X-Other", "Connection",
                    ]),
                    "[!-~][ -~]{0,20}",
                ),
                0..5,
            ),
            body in proptest::collection::vec(any::<u8>(), 0..40),
        ) -> Vec<u8> {
            let mut r = format!("{method} {target} HTTP/1.{minor}\r\nHost: t\r\n").into_bytes();
            for (name, value) in headers {
                r.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
            }
            if method == "POST" {
                r.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                r.extend_from_slice(&body);
            } else {
                r.extend_from_slice(b"\r\n");
            }
            r
        }
    }

    /// What a request says, owned.
    type Facts = (Vec<u8>, Method, Vec<u8>, Vec<u8>, Vec<u8>, bool);

    fn facts(r: &Request<'_>) -> Facts {
        let own = <[u8]>::to_vec;
        (
            own(r.raw),
            r.method,
            own(r.target),
            own(r.host),
            own(r.body),
            r.keep_alive,
        )
    }

    /// Parses `stream` as a connection receives it, in `chunks` (cut at the given offsets):
    /// every whole request at the front of the buffer, then the next read.
    fn receive(stream: &[u8], cuts: &[usize]) -> Result<Vec<Facts>, ParseError> {
        let mut ends: Vec<usize> = cuts.iter().copied().chain([stream.len()]).collect();
        ends.sort_unstable();
        let (mut buf, mut pos, mut got) = (Vec::new(), 0, Vec::new());
        for end in ends {
            buf.extend_from_slice(&stream[buf.len()..end]);
            loop {
                match parse(&buf[pos..], &Limits::default()) {
                    Parse::Complete(r) => {
                        pos += r.raw.len();
                        got.push(facts(&r));
                    }
                    Parse::Partial { .. } => break,
                    Parse::Error(e) => return Err(e),
                }
            }
        }
        Ok(got)
    }

    proptest! {
        /// A pipelined stream gives the same requests however it is cut into reads.
        #[test]
        fn any_split_of_a_pipelined_stream_gives_the_same_requests(
            requests in proptest::collection::vec(request(), 1..5),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 1..4),
        ) {
            let stream = requests.concat();
            let whole = receive(&stream, &[]).unwrap();
            prop_assert_eq!(whole.len(), requests.len());
            for (got, sent) in whole.iter().zip(&requests) {
                prop_assert_eq!(&got.0, sent);
            }
            let cuts: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            prop_assert_eq!(receive(&stream, &cuts), Ok(whole));
        }
    }
}
