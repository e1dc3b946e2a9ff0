//! Per-request work of the edge without the network: parse → route → pick → fill the
//! template → response bytes → event built (and dropped, as the interim sink does).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::SystemTime;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use edge::clicks::Clicks;
use edge::config::{ConfigFile, DEMO_CONFIG};
use edge::handler::{Ctx, Emit, Local, handle};
use edge::http::{Limits, Parse, parse};
use edge::metrics::Metrics;
use edge::table::Table;
use sink::Event;
use sink::columns::Visitors;

const VISIT: &[u8] = b"GET /c/5aaea5a02d38914cfd2ad8c1?utm_source=blog&utm_medium=review&utm_content=hero%20banner&url=https%3A%2F%2Fblog.example.com%2Fpost HTTP/1.1\r\nHost: track.example.com\r\nUser-Agent: Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.110 Safari/537.36\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,image/webp,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\nReferer: https://blog.example.com/post/how-to-automate\r\nConnection: keep-alive\r\n\r\n";
const PIXEL: &[u8] = b"GET /p.gif?cid=0167a15c98772c0004000001&payout=92.4&type=cps HTTP/1.1\r\nHost: track.example.com\r\nUser-Agent: Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.110 Safari/537.36\r\nAccept-Language: en-US,en;q=0.9\r\nReferer: https://offers.example.com/thanks\r\n\r\n";

/// Drops every event, as the interim consumer does (after counting).
struct Discard;

impl Emit for Discard {
    fn emit(&mut self, event: Event) -> bool {
        black_box(event);
        true
    }
}

fn bench(c: &mut Criterion) {
    let table = Table::compile(&ConfigFile::parse(DEMO_CONFIG).unwrap()).unwrap();
    let metrics = Metrics::new(1, 1, Box::new(|| 0), Default::default(), Default::default());
    let visitors = Visitors::default();
    let clicks = Clicks::new(1, b"bench secret");
    let ctx = Ctx {
        table: &table,
        metrics: &metrics,
        draining: false,
        visitors: &visitors,
        clicks: &clicks,
    };
    let limits = Limits::default();
    let mut local = Local::new(1, 0, 7);
    let mut out = Vec::with_capacity(4096);
    let peer = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));

    let mut g = c.benchmark_group("request");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_only", |b| {
        b.iter(|| match parse(black_box(VISIT), &limits) {
            Parse::Complete(r) => r.head_len,
            _ => unreachable!(),
        })
    });
    for (name, raw) in [("redirect", VISIT), ("pixel", PIXEL)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                let Parse::Complete(req) = parse(black_box(raw), &limits) else {
                    unreachable!()
                };
                let now = SystemTime::now();
                handle(&ctx, &mut local, &req, peer, now, &mut Discard, &mut out);
                out.len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
