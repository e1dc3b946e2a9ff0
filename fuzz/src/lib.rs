//! What the fuzz targets share: the edge's handler set up as the benches and handler tests
//! set it up (the demo config, no visitor data), and the checks every answer must pass.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, SystemTime};

use edge::clicks::Clicks;
use edge::config::{ConfigFile, DEMO_CONFIG};
use edge::handler::{Answer, Ctx, Emit, Local, handle};
use edge::http::{Limits, Method, Parse, parse};
use edge::metrics::Metrics;
use edge::routing::Routing;
use sink::visitors::Visitors;
use sink::storage::wal::Segment;
use sink::{Event, EventId, EventKind, Field};

/// The postback token the `postback` target's config gives the demo's network.
pub const POSTBACK_TOKEN: &str = "fuzz-token";

const CLICK_SECRET: &[u8] = b"fuzz secret";

/// Keeps the events of one request; completes every conversion's ack as the WAL would.
#[derive(Default)]
pub struct Collect {
    pub events: Vec<Event>,
}

impl Emit for Collect {
    fn emit(&mut self, mut event: Event) -> bool {
        if let Some(ack) = event.ack.take() {
            ack.complete(true);
        }
        self.events.push(event);
        true
    }
}

/// One worker's handler state and the node's tables, built once per process.
pub struct Edge {
    routing: Routing,
    metrics: Metrics,
    visitors: Visitors,
    clicks: Clicks,
    local: Local,
    limits: Limits,
    pub sink: Collect,
    pub out: Vec<u8>,
}

impl Edge {
    /// The demo config, with `extra` TOML appended.
    pub fn demo(extra: &str) -> Edge {
        let cfg = ConfigFile::parse(&format!("{DEMO_CONFIG}\n{extra}")).expect("demo config");
        Edge::with_config(&cfg)
    }

    pub fn with_config(cfg: &ConfigFile) -> Edge {
        Edge {
            routing: Routing::compile(cfg).expect("config compiles"),
            metrics: Metrics::new(
                1,
                1,
                Box::new(|| (0, 0)),
                Default::default(),
                Default::default(),
            ),
            visitors: Visitors::default(),
            clicks: Clicks::new(1, CLICK_SECRET).expect("click cache"),
            local: Local::new(1, 0, 7),
            limits: Limits::default(),
            sink: Collect::default(),
            out: Vec::with_capacity(4096),
        }
    }

    /// Parses `raw` and, when it is a whole request, answers it into [`Edge::out`] and
    /// checks the answer ([`check_response`]). Answers whether it was a whole request.
    pub fn serve(&mut self, raw: &[u8]) -> bool {
        self.out.clear();
        self.sink.events.clear();
        // Each input starts from the same state, so what it does replays alone.
        self.local = Local::new(1, 0, 7);
        self.clicks = Clicks::new(1, CLICK_SECRET).expect("click cache");
        let Parse::Complete(req) = parse(raw, &self.limits) else {
            return false;
        };
        let ctx = Ctx {
            routing: &self.routing,
            metrics: &self.metrics,
            draining: false,
            visitors: &self.visitors,
            clicks: &self.clicks,
            metrics_allow: &[],
        };
        // A fixed clock: an input's ids, cookies and answers are the same every run.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        let peer = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
        let answer = handle(
            &ctx,
            &mut self.local,
            &req,
            peer,
            now,
            &mut self.sink,
            &mut self.out,
        );
        if let Answer::Pending(p) = answer {
            let durable = p.ack.outcome().expect("the collector completes every ack");
            p.answer(durable, &self.local.date, &mut self.out);
        }
        check_response(&self.out, req.method == Method::Head);
        true
    }
}

/// Panics unless `out` is one well-formed HTTP/1.1 response: a status line
/// `HTTP/1.1 NNN reason`, `Name: value` header lines whose values hold no CR, LF or other
/// control byte, the blank line, and a body of the `Content-Length` (none for `HEAD`).
pub fn check_response(out: &[u8], head_request: bool) {
    let show = || String::from_utf8_lossy(out).into_owned();
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no blank line ends the head: {:?}", show()));
    let head = &out[..end];
    for (i, &c) in head.iter().enumerate() {
        let crlf = match c {
            b'\r' => head.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && head[i - 1] == b'\r',
            _ => true,
        };
        assert!(crlf, "a bare CR or LF in the head: {:?}", show());
    }
    let mut lines = head
        .split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status = lines.next().expect("split yields a first line");
    let code = status
        .strip_prefix(b"HTTP/1.1 ")
        .unwrap_or_else(|| panic!("bad status line: {:?}", show()));
    assert!(
        code.len() > 4 && code[..3].iter().all(u8::is_ascii_digit) && code[3] == b' ',
        "bad status line: {:?}",
        show()
    );
    let mut content_length = None;
    for line in lines {
        let colon = line
            .iter()
            .position(|&c| c == b':')
            .unwrap_or_else(|| panic!("a header line without a colon: {:?}", show()));
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        assert!(
            !name.is_empty() && name.iter().all(u8::is_ascii_graphic),
            "bad header name: {:?}",
            show()
        );
        assert!(
            value.iter().all(|&c| c == b'\t' || !c.is_ascii_control()),
            "a control byte in a header value: {:?}",
            show()
        );
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok());
            content_length = Some(n.unwrap_or_else(|| panic!("bad Content-Length: {:?}", show())));
        }
    }
    let body = out.len() - (end + 4);
    let want = if head_request {
        0
    } else {
        content_length.unwrap_or(0)
    };
    assert_eq!(body, want, "body length: {:?}", show());
}

/// Records for WAL segments: one encoded event of each kind, then payloads from empty to
/// longer than a block.
pub fn wal_records() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, kind) in EventKind::ALL.into_iter().enumerate() {
        let id = EventId::new(1_764_000_000_000 + i as u64, 1, 0, i as u32);
        let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut e = Event::new(kind, id, peer, b"GET /c/x HTTP/1.1\r\n", 64);
        e.set_raw(Field::Method, 0, 3);
        e.push(Field::CampaignId, b"5aaea5a02d38914cfd2ad8c1");
        e.push_remapped([(&b"source"[..], &b"blog"[..])]);
        if kind.is_conversion() {
            e.payout_micros = Some(92_400_000);
            e.push(Field::ClickId, b"0167a15c98772c0004000001");
        }
        let mut buf = Vec::new();
        e.encode(&mut buf);
        out.push(buf);
    }
    for (i, n) in [0, 7, 300, 40_000, 12].into_iter().enumerate() {
        out.push(vec![b'a' + i as u8; n]);
    }
    out
}

/// Writes `records` as segment 1 in `dir` (created, and emptied first) with one commit, and
/// answers the segment's bytes.
pub fn segment(dir: &Path, records: &[Vec<u8>]) -> Vec<u8> {
    let _ = std::fs::remove_dir_all(dir);
    let mut seg = Segment::create(dir, 1, None).expect("create a segment");
    let mut buf = Vec::new();
    for r in records {
        seg.frame(&mut buf, r).expect("frame a record");
    }
    seg.commit(&buf, records.len() as u64).expect("commit");
    std::fs::read(&seg.path).expect("read the segment back")
}
