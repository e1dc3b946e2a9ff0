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
use edge::routing::Routing;
use std::sync::Arc;

use edge::visitor::AgentCache;
use sink::Event;
use sink::visitors::Visitors;
use sink::visitors::agent::Agents;
use sink::visitors::geo::{Cidr, GeoDb, Locator, Networks};

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
    let routing = Routing::compile(&ConfigFile::parse(DEMO_CONFIG).unwrap()).unwrap();
    let metrics = Metrics::new(
        1,
        1,
        Box::new(|| (0, 0)),
        Default::default(),
        Default::default(),
    );
    let visitors = Visitors::default();
    let clicks = Clicks::new(1, b"bench secret").unwrap();
    let ctx = Ctx {
        routing: &routing,
        metrics: &metrics,
        draining: false,
        visitors: &visitors,
        clicks: &clicks,
        metrics_allow: &[],
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

/// A plain campaign and one with rules on every visitor fact and a landing page (the side-by-
/// side script's pair, see `benches/compare.py`).
const RULES: &str = r#"
[[traffic_sources]]
id = "ts"
name = "Source"
params = { source = "utm_source", var_2 = "utm_medium", target = "utm_content" }

[[offers]]
id = "o1"
name = "Offer 1"
url = "https://offers.example.com/drip?aff_sub={click_id}&src={source}&medium={var_2}"

[[offers]]
id = "o2"
name = "Offer 2"
url = "https://trial.example.com/start?subid={click_id}&c={country}&d={device}&os={os}&b={browser}"

[[offers]]
id = "o3"
name = "Offer 3"
url = "https://trial.example.com/start?subid={click_id}&src={source}"

[[offers]]
id = "safe"
name = "Safe page"
url = "https://safe.example.com/?id={click_id}"

[[landing_pages]]
id = "lp"
name = "Review"
url = "https://lp.example.com/review?cid={click_id}&c={country}&d={device}&src={source}"

[[campaigns]]
id = "plain"
name = "Plain"
traffic_source = "ts"
  [[campaigns.paths]]
  offers = [ { offer = "o1", weight = 3 }, { offer = "o3", weight = 1 } ]

[[campaigns]]
id = "rules"
name = "Rules and a landing page"
traffic_source = "ts"
  [[campaigns.paths]]
  landing_page = "lp"
  offers = [ { offer = "o1", weight = 3 }, { offer = "o2", weight = 1 } ]
  [[campaigns.rules]]
  bot = true
  paths = [ { offers = [ { offer = "safe" } ] } ]
  [[campaigns.rules]]
  countries = ["US", "CA", "GB"]
  devices = ["mobile"]
  paths = [ { landing_page = "lp", offers = [ { offer = "o2" } ] } ]
  [[campaigns.rules]]
  os = ["Windows"]
  browsers = ["Firefox", "Edge"]
  languages = ["de", "fr"]
  paths = [ { landing_page = "lp", offers = [ { offer = "o1" } ] } ]
"#;

/// Distinct visitors in the bench traffic, as a real campaign brings a few thousand.
const AGENTS: usize = 3000;
const REQUESTS: usize = 4096;

fn visitors_bench(c: &mut Criterion) {
    let data = benches::data_files();
    let proxies = vec![Cidr::parse("127.0.0.1").unwrap()];
    let visitors = Visitors {
        geo: Some(Arc::new(Locator {
            db: GeoDb::open(&data.join("GeoLite2-City.mmdb")).unwrap(),
            proxies: proxies.clone(),
        })),
        agents: Some(Arc::new(Agents::load(&data.join("regexes.yaml")).unwrap())),
        datacenters: Some(Arc::new(Networks::new(&[
            Cidr::parse("3.0.0.0/9").unwrap(),
            Cidr::parse("34.64.0.0/10").unwrap(),
            Cidr::parse("52.0.0.0/10").unwrap(),
        ]))),
        proxies,
    };
    let routing = Routing::compile(&ConfigFile::parse(RULES).unwrap()).unwrap();
    let metrics = Metrics::new(
        1,
        1,
        Box::new(|| (0, 0)),
        Default::default(),
        Default::default(),
    );
    let clicks = Clicks::new(1, b"bench secret, long enough").unwrap();
    let ctx = Ctx {
        routing: &routing,
        metrics: &metrics,
        draining: false,
        visitors: &visitors,
        clicks: &clicks,
        metrics_allow: &[],
    };
    let agents = loadtest::funnel::user_agents(AGENTS);
    let requests = |campaign: &str| -> Vec<Vec<u8>> {
        (0..REQUESTS)
            .map(|i| {
                let [a, b, c, d] = loadtest::funnel::public_ipv4(i as u64);
                format!(
                    "GET /c/{campaign}?utm_source=s&utm_medium=m&utm_content=c{} HTTP/1.1\r\nHost: t\r\n\
                     User-Agent: {}\r\nX-Forwarded-For: {a}.{b}.{c}.{d}\r\n\
                     Accept-Language: en-US,en;q=0.9\r\n\r\n",
                    i % 100,
                    agents[i % AGENTS]
                )
                .into_bytes()
            })
            .collect()
    };
    let limits = Limits::default();
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut local = Local::new(1, 0, 7);
    let mut out = Vec::with_capacity(4096);
    let serve = |local: &mut Local, out: &mut Vec<u8>, raw: &[u8]| {
        out.clear();
        let Parse::Complete(req) = parse(black_box(raw), &limits) else {
            unreachable!()
        };
        handle(
            &ctx,
            local,
            &req,
            peer,
            SystemTime::now(),
            &mut Discard,
            out,
        );
        out.len()
    };

    let mut g = c.benchmark_group("visitors");
    g.throughput(Throughput::Elements(1));
    for campaign in ["plain", "rules"] {
        let reqs = requests(campaign);
        // The agent cache fills as real traffic fills it; the bench measures it warm.
        for r in &reqs {
            serve(&mut local, &mut out, r);
        }
        let mut i = 0;
        g.bench_function(format!("redirect_{campaign}"), |b| {
            b.iter(|| {
                i = (i + 1) % REQUESTS;
                serve(&mut local, &mut out, &reqs[i])
            })
        });
    }
    // Click-throughs by cookie (any node): the landing-page visits' cookies, sent back.
    let mut clicks_by_cookie = Vec::new();
    for r in requests("rules").iter().take(512) {
        serve(&mut local, &mut out, r);
        let text = String::from_utf8_lossy(&out).into_owned();
        let Some(cookie) = text
            .split("\r\n")
            .find_map(|l| l.strip_prefix("Set-Cookie: "))
            .and_then(|c| c.split(';').next())
        else {
            continue;
        };
        let loc = text
            .split("\r\n")
            .find_map(|l| l.strip_prefix("Location: "))
            .unwrap();
        let cid = &loc[loc.find("cid=").unwrap() + 4..][..24];
        clicks_by_cookie.push(
            format!(
                "GET /click?cid={cid} HTTP/1.1\r\nHost: t\r\nUser-Agent: {}\r\nCookie: {cookie}\r\n\r\n",
                agents[0]
            )
            .into_bytes(),
        );
    }
    let mut i = 0;
    g.bench_function("click_through_by_cookie", |b| {
        b.iter(|| {
            i = (i + 1) % clicks_by_cookie.len();
            serve(&mut local, &mut out, &clicks_by_cookie[i])
        })
    });
    // The parts: a warm agent-cache lookup, and matching the rules for a located visitor.
    let mut cache = AgentCache::default();
    let agents_bytes: Vec<&[u8]> = agents.iter().map(|a| a.as_bytes()).collect();
    let parser = visitors.agents.as_deref().unwrap();
    for a in &agents_bytes {
        cache.get(parser, a);
    }
    let mut i = 0;
    g.bench_function("agent_cache_lookup", |b| {
        b.iter(|| {
            i = (i + 1) % AGENTS;
            cache.get(parser, black_box(agents_bytes[i])).bot
        })
    });
    let campaign = routing.campaign(b"rules").unwrap();
    let visitor = catalog::model::Visitor {
        country: Some(*b"DE"),
        device: Some(catalog::model::Device::Desktop),
        os: Some("Windows"),
        browser: Some("Chrome"),
        accept_language: b"de-DE,de;q=0.9,en;q=0.5",
        bot: Some(false),
    };
    g.bench_function("rule_match", |b| {
        b.iter(|| campaign.paths_for(black_box(&visitor)).items().len())
    });
    g.finish();
}

criterion_group!(benches, bench, visitors_bench);
criterion_main!(benches);
