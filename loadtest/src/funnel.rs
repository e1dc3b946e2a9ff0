//! The funnel's HTTP: the requests a visitor and an affiliate network send, written into a
//! connection's output buffer, and the responses parsed back out of its input buffer.

use sink::EventId;
use sink::model::money;

/// The steps of the funnel, each with its own latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `GET /c/{campaign}`: answered `302` with a fresh click id in `Location`.
    Visit,
    /// `GET /click?cid=`: a landing page's call-to-action, answered `302` to the offer.
    Click,
    /// `GET /postback?cid=&payout=&txid=&type=`: answered `200` once durable.
    Postback,
    /// `GET /p.gif?cid=&payout=&type=`: answered `200` with the GIF once durable.
    Pixel,
}

impl Step {
    pub const ALL: [Step; 4] = [Step::Visit, Step::Click, Step::Postback, Step::Pixel];

    pub fn name(self) -> &'static str {
        match self {
            Step::Visit => "visit",
            Step::Click => "click",
            Step::Postback => "postback",
            Step::Pixel => "pixel",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The status that means the step succeeded.
    pub fn expected(self) -> u16 {
        match self {
            Step::Visit | Step::Click => 302,
            Step::Postback | Step::Pixel => 200,
        }
    }
}

/// A conversion the network reports for a click.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    pub click: EventId,
    /// Postbacks carry a transaction id; pixels, as in the seed, do not.
    pub txid: Option<String>,
    pub payout_micros: i64,
    /// `sale`, or `upsell` for a further sale on the same click.
    pub kind: &'static str,
    pub pixel: bool,
}

impl Conversion {
    pub fn step(&self) -> Step {
        if self.pixel {
            Step::Pixel
        } else {
            Step::Postback
        }
    }
}

/// Browsers a visit claims to be, in rotation (no bots: bots do not count as visits).
pub const USER_AGENTS: [&str; 4] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
];

/// `n` distinct browser user agents: the four above, then as many more as asked, made from
/// the templates of today's common browsers (Chrome, Edge, Firefox, Safari; desktop, phone,
/// tablet) with distinct versions, as real traffic brings a few thousand.
pub fn user_agents(n: usize) -> Vec<String> {
    let mut out: Vec<String> = USER_AGENTS
        .iter()
        .take(n)
        .map(|s| (*s).to_owned())
        .collect();
    const MODELS: [&str; 5] = [
        "Pixel 8",
        "SM-S918B",
        "SM-A546B",
        "Redmi Note 12",
        "moto g(60)",
    ];
    let mut k = 0usize;
    while out.len() < n {
        let q = k / 7;
        let (major, build) = (100 + q % 32, 4000 + q / 32);
        let ua = match k % 7 {
            0 => format!(
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.{build}.{} Safari/537.36",
                q % 90
            ),
            1 => format!(
                "Mozilla/5.0 (Linux; Android {}; {}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.{build}.{} Mobile Safari/537.36",
                10 + q % 5,
                MODELS[q % MODELS.len()],
                q % 90
            ),
            2 => format!(
                "Mozilla/5.0 (iPhone; CPU iPhone OS {}_{} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{}.{} Mobile/15E{q} Safari/604.1",
                14 + q % 4,
                q % 8,
                14 + q % 4,
                q % 8
            ),
            3 => format!(
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_{}) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{}.{} Safari/605.{q}",
                q % 8,
                14 + q % 4,
                q % 8
            ),
            4 => format!(
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{major}.{q}) Gecko/20100101 Firefox/{major}.{q}"
            ),
            5 => format!(
                "Mozilla/5.0 (iPad; CPU OS {}_{} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{}.{} Mobile/15E{q} Safari/604.1",
                14 + q % 4,
                q % 8,
                14 + q % 4,
                q % 8
            ),
            _ => format!(
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.{build}.0 Safari/537.36 Edg/{major}.0.{build}.{}",
                q % 90
            ),
        };
        out.push(ua);
        k += 1;
    }
    out
}

/// A public IPv4 address for visitor `n`, spread over the whole space (so over many
/// countries), never private, loopback, shared or multicast.
pub fn public_ipv4(n: u64) -> [u8; 4] {
    let mut rng = fastrand::Rng::with_seed(n);
    loop {
        let [a, b, c, d] = rng.u32(..).to_be_bytes();
        let reserved = matches!(a, 0 | 10 | 127 | 224..=255)
            || (a == 100 && (64..128).contains(&b))
            || (a == 169 && b == 254)
            || (a == 172 && (16..32).contains(&b))
            || (a == 192 && b == 168)
            || (a == 198 && (18..20).contains(&b));
        if !reserved {
            return [a, b, c, d];
        }
    }
}

/// Who the visits claim to be.
#[derive(Debug, Clone)]
pub struct Visitors {
    pub agents: Vec<String>,
    /// Send each visitor's (public) address in `X-Forwarded-For`, as a load balancer would.
    pub forwarded_for: bool,
}

impl Visitors {
    pub fn new(agents: usize, forwarded_for: bool) -> Self {
        Visitors {
            agents: user_agents(agents.max(1)),
            forwarded_for,
        }
    }

    /// The user agent and, when asked for, `X-Forwarded-For` of visitor `n`.
    fn write_headers(&self, out: &mut Vec<u8>, n: u64) {
        out.extend_from_slice(b"User-Agent: ");
        out.extend_from_slice(self.agents[(n % self.agents.len() as u64) as usize].as_bytes());
        out.extend_from_slice(b"\r\n");
        if self.forwarded_for {
            out.extend_from_slice(b"X-Forwarded-For: ");
            for (i, part) in public_ipv4(n).iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                money::write_digits(u64::from(*part), 1, out);
            }
            out.extend_from_slice(b"\r\n");
        }
    }
}

impl Default for Visitors {
    fn default() -> Self {
        Visitors::new(USER_AGENTS.len(), false)
    }
}

fn head_end(out: &mut Vec<u8>, host: &str) {
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A visit to `campaign` (URL-safe id) by visitor `n` of `who`; `n` also varies the
/// parameters.
pub fn write_visit(out: &mut Vec<u8>, host: &str, campaign: &str, n: u64, who: &Visitors) {
    out.extend_from_slice(b"GET /c/");
    out.extend_from_slice(campaign.as_bytes());
    out.extend_from_slice(b"?utm_source=loadtest&utm_medium=funnel&utm_content=c");
    money::write_digits(n % 100, 1, out);
    head_end(out, host);
    who.write_headers(out, n);
    out.extend_from_slice(b"Accept-Language: en-US,en;q=0.9\r\n\r\n");
}

/// A landing page's call-to-action for `click`, from a visitor of `who`.
pub fn write_click(out: &mut Vec<u8>, host: &str, click: &EventId, who: &Visitors) {
    out.extend_from_slice(b"GET /click?cid=");
    out.extend_from_slice(&click.to_hex());
    head_end(out, host);
    who.write_headers(out, u64::from(click.counter()));
    out.extend_from_slice(b"\r\n");
}

/// A postback or a pixel reporting `c`; `token` is the network's postback token, if any.
pub fn write_conversion(out: &mut Vec<u8>, host: &str, c: &Conversion, token: Option<&str>) {
    out.extend_from_slice(if c.pixel {
        &b"GET /p.gif?cid="[..]
    } else {
        &b"GET /postback?cid="[..]
    });
    out.extend_from_slice(&c.click.to_hex());
    out.extend_from_slice(b"&payout=");
    money::write_decimal(c.payout_micros, out);
    out.extend_from_slice(b"&type=");
    out.extend_from_slice(c.kind.as_bytes());
    if let Some(t) = &c.txid {
        out.extend_from_slice(b"&txid=");
        out.extend_from_slice(t.as_bytes());
    }
    if let Some(t) = token {
        out.extend_from_slice(b"&token=");
        out.extend_from_slice(t.as_bytes());
    }
    head_end(out, host);
    out.extend_from_slice(b"\r\n");
}

/// One response's head, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Bytes of head and body: where the next response starts.
    pub len: usize,
    /// Where the `Location` value sits in the buffer.
    pub location: Option<(usize, usize)>,
    /// The server will close the connection after this response.
    pub close: bool,
}

/// Why a response could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadResponse {
    #[error("malformed response head")]
    Malformed,
    #[error(
        "response without Content-Length (chunked or close-delimited bodies are not supported)"
    )]
    NoLength,
    #[error("response head over 64 KiB")]
    TooLarge,
}

/// Largest response head accepted.
pub const MAX_HEAD: usize = 64 << 10;

/// Parses the response at the start of `buf`: `Ok(None)` until all of it has arrived.
pub fn parse_response(buf: &[u8]) -> Result<Option<Response>, BadResponse> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let head = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(BadResponse::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(BadResponse::Malformed),
    };
    let status = r.code.ok_or(BadResponse::Malformed)?;
    let mut length = None;
    let mut location = None;
    let mut close = r.version == Some(0);
    let base = buf.as_ptr() as usize;
    for h in r.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| BadResponse::Malformed)?;
            length = Some(
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| BadResponse::Malformed)?,
            );
        } else if h.name.eq_ignore_ascii_case("location") {
            location = Some((h.value.as_ptr() as usize - base, h.value.len()));
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(BadResponse::NoLength);
        }
    }
    let body = match length {
        Some(n) => n,
        None if status == 204 || status == 304 || status < 200 => 0,
        None => return Err(BadResponse::NoLength),
    };
    if buf.len() < head + body {
        return Ok(None);
    }
    Ok(Some(Response {
        status,
        len: head + body,
        location,
        close,
    }))
}

/// Clock difference allowed between this machine and the edge's when telling a click id
/// (whose first 12 hex digits are its time) from other 24-hex-digit values in a URL.
const CLOCK_SLACK_MS: u64 = 24 * 3600 * 1000;

/// The click id in a redirect's `Location`: the first run of exactly 24 hex digits whose
/// time is within a day of `now_ms`. Ids of other things (campaign ids are often 24 hex
/// digits too) decode to times years away.
pub fn find_click_id(location: &[u8], now_ms: u64) -> Option<EventId> {
    let mut i = 0;
    while i < location.len() {
        if !location[i].is_ascii_hexdigit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < location.len() && location[i].is_ascii_hexdigit() {
            i += 1;
        }
        if i - start == 24
            && let Ok(id) = EventId::parse(&location[start..i])
            && id.ts_ms().abs_diff(now_ms) <= CLOCK_SLACK_MS
        {
            return Some(id);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_800_000_000;

    #[test]
    fn requests_are_complete_http_heads() {
        let mut out = Vec::new();
        let who = Visitors::new(3000, true);
        write_visit(
            &mut out,
            "127.0.0.1:8080",
            "5aaea5a02d38914cfd2ad8c1",
            7,
            &who,
        );
        let click = EventId::new(NOW, 1, 0, 5);
        write_conversion(
            &mut out,
            "h",
            &Conversion {
                click,
                txid: Some("lt-1-2".into()),
                payout_micros: 12_340_000,
                kind: "sale",
                pixel: false,
            },
            Some("s3cret"),
        );
        write_click(&mut out, "h", &click, &who);
        let mut heads = Vec::new();
        let mut at = 0;
        while at < out.len() {
            let mut h = [httparse::EMPTY_HEADER; 8];
            let mut r = httparse::Request::new(&mut h);
            let httparse::Status::Complete(n) = r.parse(&out[at..]).unwrap() else {
                panic!("incomplete request");
            };
            heads.push(r.path.unwrap().to_owned());
            at += n;
        }
        let hex = String::from_utf8(click.to_hex().to_vec()).unwrap();
        assert_eq!(
            heads,
            [
                "/c/5aaea5a02d38914cfd2ad8c1?utm_source=loadtest&utm_medium=funnel&utm_content=c7"
                    .to_owned(),
                format!("/postback?cid={hex}&payout=12.34&type=sale&txid=lt-1-2&token=s3cret"),
                format!("/click?cid={hex}"),
            ]
        );
    }

    #[test]
    fn synthetic_visitors_are_distinct_browsers_from_public_addresses() {
        let agents = user_agents(3000);
        assert_eq!(agents[..4], USER_AGENTS.map(str::to_owned));
        let distinct: std::collections::HashSet<_> = agents.iter().collect();
        assert_eq!(distinct.len(), 3000);
        assert!(
            agents
                .iter()
                .all(|a| a.starts_with("Mozilla/5.0 (") && a.is_ascii())
        );
        assert_eq!(user_agents(2).len(), 2);
        let mut firsts = std::collections::HashSet::new();
        for n in 0..10_000 {
            let ip = std::net::Ipv4Addr::from(public_ipv4(n));
            assert!(
                !(ip.is_private() || ip.is_loopback() || ip.is_multicast() || ip.is_link_local()),
                "{ip}"
            );
            firsts.insert(ip.octets()[0]);
        }
        assert!(
            firsts.len() > 200,
            "spread over the space: {}",
            firsts.len()
        );
        let mut out = Vec::new();
        Visitors::new(10, true).write_headers(&mut out, 4);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit"),
            "{text}"
        );
        assert!(
            text.contains("\r\nX-Forwarded-For: ") && text.ends_with("\r\n"),
            "{text}"
        );
    }

    #[test]
    fn responses_are_framed_by_content_length_and_may_arrive_in_pieces() {
        let two = b"HTTP/1.1 302 Found\r\nLocation: https://o.example/x?s=1\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK";
        let first = parse_response(two).unwrap().unwrap();
        assert_eq!(first.status, 302);
        let (at, len) = first.location.unwrap();
        assert_eq!(&two[at..at + len], b"https://o.example/x?s=1");
        assert!(!first.close);
        let rest = &two[first.len..];
        let second = parse_response(rest).unwrap().unwrap();
        assert_eq!(
            (second.status, second.len, second.close),
            (200, rest.len(), true)
        );
        for cut in 0..rest.len() {
            assert_eq!(parse_response(&rest[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(BadResponse::NoLength)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n\r\n"),
            Err(BadResponse::NoLength)
        );
        assert_eq!(
            parse_response(b"SSH-2.0-x\r\n\r\n"),
            Err(BadResponse::Malformed)
        );
        assert!(
            parse_response(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
                .unwrap()
                .close
        );
    }

    #[test]
    fn the_click_id_is_the_hex_run_with_a_current_time() {
        let id = EventId::new(NOW - 5, 1, 2, 3);
        let hex = String::from_utf8(id.to_hex().to_vec()).unwrap();
        // The campaign id is 24 hex digits too, but its "time" is years off.
        let loc = format!(
            "https://trial.example.com/start?campaign=5aaea5a02d38914cfd2ad8c1&subid={hex}&kw=x"
        );
        assert_eq!(find_click_id(loc.as_bytes(), NOW), Some(id));
        let longer = format!("https://x.example/?a={hex}ff");
        assert_eq!(find_click_id(longer.as_bytes(), NOW), None);
        assert_eq!(find_click_id(b"https://x.example/?a=1", NOW), None);
        assert_eq!(
            find_click_id(b"https://x.example/?aff_sub=0167a15c98772c0004000001", NOW),
            None,
            "a fixed id from 2018 is not a fresh click id"
        );
    }
}
