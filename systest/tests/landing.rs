//! Landing pages and rules through the real edge: visitors are routed by device, OS, browser
//! and bot (user agent and data-centre ranges), a landing-page visit's click-through reaches
//! its offer on the same process without a cookie and on a restarted one with it, unknown
//! clicks get the fallback, and the query tool counts the visit → click → conversion chains.

use systest as common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{Edge, TempDir, block_on, data_files, strings};
use query::dims;
use query::names::Names;
use query::report::{Figures, ReportRequest};
use query::{DateRange, Session, SessionOptions};

fn config() -> String {
    let data = data_files();
    format!(
        r#"
[server]
geoip_db = {geo:?}
ua_regexes = {ua:?}
trusted_proxies = ["127.0.0.1"]
bot_networks = ["198.51.100.0/24"]
fallback_url = "https://safe.example.com/?from=edge"

[[traffic_sources]]
id = "ts"
name = "Source"
params = {{ source = "utm_source" }}

[[offers]]
id = "offer-a"
name = "A"
url = "https://a.example.com/?sub={{click_id}}&d={{device}}&os={{os}}&b={{browser}}&c={{country}}&s={{source}}"
payout = 10

[[offers]]
id = "offer-b"
name = "B"
url = "https://b.example.com/?sub={{click_id}}"
payout = 20

[[offers]]
id = "offer-safe"
name = "Safe page"
url = "https://safe.example.com/?sub={{click_id}}"

[[landing_pages]]
id = "lp"
name = "Review"
url = "https://lp.example.com/?cid={{click_id}}"

[[campaigns]]
id = "lp-camp"
name = "With a landing page"
traffic_source = "ts"
cost = 0.5
  [[campaigns.paths]]
  landing_page = "lp"
  offers = [ {{ offer = "offer-a", weight = 1 }}, {{ offer = "offer-b", weight = 0 }} ]
  [[campaigns.rules]]
  bot = true
  paths = [ {{ offers = [ {{ offer = "offer-safe" }} ] }} ]
  [[campaigns.rules]]
  devices = ["mobile"]
  os = ["iOS"]
  paths = [ {{ landing_page = "lp", offers = [ {{ offer = "offer-b" }} ] }} ]
"#,
        geo = data.join("GeoLite2-City.mmdb").display(),
        ua = data.join("regexes.yaml").display(),
    )
}

const CHROME: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.110 Safari/537.36";
const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

struct Answer {
    status: u16,
    location: String,
    cookie: Option<String>,
}

/// One GET from `client` (the proxy's `X-Forwarded-For`) with `ua` and maybe a cookie.
fn get(e: &Edge, target: &str, client: &str, ua: &str, cookie: Option<&str>) -> Answer {
    let mut c = e.connect();
    let cookie = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
    c.send(&format!(
        "GET {target} HTTP/1.1\r\nHost: t\r\nUser-Agent: {ua}\r\nX-Forwarded-For: {client}\r\n{cookie}Connection: close\r\n\r\n"
    ));
    let r = c.response();
    Answer {
        status: r.status,
        location: r.header("location").unwrap_or_default().to_owned(),
        cookie: r
            .header("set-cookie")
            .map(|v| v.split(';').next().unwrap().to_owned()),
    }
}

fn start(cfg: &Path, data: &Path) -> Edge {
    let e = Edge::start_in(
        &[
            "--driver",
            "legacy",
            "--workers",
            "2",
            "--config",
            cfg.to_str().unwrap(),
        ],
        data,
    );
    e.wait_for_log("user agents are parsed", Duration::from_secs(20));
    e
}

/// The click id a landing-page URL carries.
fn cid_of(location: &str) -> String {
    let cid = location
        .strip_prefix("https://lp.example.com/?cid=")
        .unwrap_or_else(|| panic!("not the landing page: {location}"));
    assert_eq!(cid.len(), 24);
    cid.to_owned()
}

#[test]
fn rules_route_visitors_and_landing_page_chains_are_counted() {
    let dir = TempDir::new("landing");
    let cfg = dir.write("edge.toml", &config());
    let data = dir.path().join("data");
    let mut e = start(&cfg, &data);
    e.wait_for_log("data-centre ranges count as bots", Duration::from_secs(5));

    // A desktop visitor in Great Britain: the landing page, with its cookie.
    let v1 = get(
        &e,
        "/c/lp-camp?utm_source=news",
        "81.2.69.142",
        CHROME,
        None,
    );
    assert_eq!(v1.status, 302);
    let cid1 = cid_of(&v1.location);
    assert!(v1.cookie.as_deref().unwrap().starts_with("ct_lp-camp="));
    // Its click-through on the same process needs no cookie; the offer URL is filled with
    // the visit's source and the click's visitor facts.
    let c1 = get(
        &e,
        &format!("/click?cid={cid1}"),
        "81.2.69.142",
        CHROME,
        None,
    );
    assert_eq!(c1.status, 302);
    assert_eq!(
        c1.location,
        format!("https://a.example.com/?sub={cid1}&d=desktop&os=Mac%20OS%20X&b=Chrome&c=GB&s=news")
    );
    // An iPhone: the mobile/iOS rule's path, whose page offers B.
    let v2 = get(&e, "/c/lp-camp?utm_source=push", "8.8.8.8", IPHONE, None);
    let cid2 = cid_of(&v2.location);
    let c2 = get(
        &e,
        &format!("/click/1?cid={cid2}"),
        "8.8.8.8",
        IPHONE,
        v2.cookie.as_deref(),
    );
    assert_eq!(c2.location, format!("https://b.example.com/?sub={cid2}"));
    // Both found in this node's click cache.
    assert_eq!(e.metric("edge_clicks_found_in_table_total "), 2);
    assert_eq!(e.metric("edge_clicks_found_in_cookie_total "), 0);
    // Bots, by agent and by data-centre address, go straight to the safe page.
    let b1 = get(&e, "/c/lp-camp", "8.8.8.8", GOOGLEBOT, None);
    assert!(
        b1.location.starts_with("https://safe.example.com/?sub="),
        "{}",
        b1.location
    );
    assert_eq!(b1.cookie, None, "no landing page, no cookie");
    let b2 = get(&e, "/c/lp-camp", "198.51.100.9", CHROME, None);
    assert!(
        b2.location.starts_with("https://safe.example.com/?sub="),
        "{}",
        b2.location
    );
    // A forged X-Forwarded-For entry on the left does not make a visitor a bot.
    let v3 = get(&e, "/c/lp-camp", "198.51.100.9, 81.2.69.142", CHROME, None);
    let cid3 = cid_of(&v3.location);
    let cookie3 = v3.cookie.unwrap();

    // Agents are parsed once per worker, then answered from its cache (the counters lag a
    // lookup behind: they are copied before each).
    for _ in 0..4 {
        get(
            &e,
            "/c/lp-camp?utm_source=news",
            "81.2.69.142",
            CHROME,
            None,
        );
    }
    assert!(e.metric("edge_agent_cache_hits_total ") >= 1);
    assert!(e.metric("edge_agents_parsed_total ") >= 2);

    // Conversions: v1 without a payout (offer A's 10.00), v2 with 5.00.
    for q in [
        format!("cid={cid1}&txid=t1"),
        format!("cid={cid2}&txid=t2&payout=5"),
    ] {
        let r = e.get(&format!("/postback?{q}"));
        assert_eq!(r.status, 200, "{q}");
    }
    e.stop();

    // A restarted edge has an empty click cache but the same secret (kept in data_dir):
    // v3's click-through works with its cookie, and only with it.
    let mut e = start(&cfg, &data);
    let without = get(
        &e,
        &format!("/click?cid={cid3}"),
        "81.2.69.142",
        CHROME,
        None,
    );
    assert_eq!(without.status, 302);
    assert_eq!(without.location, "https://safe.example.com/?from=edge");
    assert_eq!(e.metric("edge_fallback_redirects_total "), 1);
    let c3 = get(
        &e,
        &format!("/click?cid={cid3}"),
        "81.2.69.142",
        CHROME,
        Some(&format!("other=1; {cookie3}")),
    );
    assert!(
        c3.location
            .starts_with(&format!("https://a.example.com/?sub={cid3}&")),
        "{}",
        c3.location
    );
    assert_eq!(e.metric("edge_clicks_found_in_cookie_total "), 1);
    // A cookie altered by the visitor is refused.
    let (name, value) = cookie3.split_once('=').unwrap();
    let forged = format!("{name}={}", value.replace(&value[..4], "AAAA"));
    let f = get(
        &e,
        &format!("/click?cid={cid3}"),
        "81.2.69.142",
        CHROME,
        Some(&forged),
    );
    assert_eq!(f.location, "https://safe.example.com/?from=edge");
    e.stop();

    // What was stored: bots flagged, clicks naming their visits.
    let visits = common::read_parquet_tree(&data.join("lake").join("visits"));
    let kinds = strings(&visits, "kind");
    let clicks_of = strings(&visits, "click_id");
    let ids = strings(&visits, "event_id");
    let mut clicked: Vec<&str> = kinds
        .iter()
        .zip(&clicks_of)
        .filter(|(k, _)| *k == "click")
        .map(|(_, c)| c.as_str())
        .collect();
    clicked.sort();
    let mut want = vec![cid1.as_str(), cid2.as_str(), cid3.as_str()];
    want.sort();
    assert_eq!(clicked, want);
    for cid in [&cid1, &cid2, &cid3] {
        assert!(ids.contains(cid), "the visit {cid} is stored");
    }

    // The report: bots left out; conversions and visits go to the offer of their click.
    let names = Names::parse(&config()).unwrap();
    let store = format!("file://{}", data.join("lake").display());
    let session = block_on(Session::open(&store, &SessionOptions::default())).unwrap();
    let report = |by: &str| {
        let req = ReportRequest {
            range: DateRange::default(),
            dims: dims::parse(by).unwrap(),
            include_bots: false,
            ..Default::default()
        };
        let r = block_on(query::report::run(&session, &req, Some(&names))).unwrap();
        r.rows
            .into_iter()
            .map(|r| (r.dims[0].clone().unwrap_or_default(), r.figures))
            .collect::<BTreeMap<String, Figures>>()
    };
    let m = |visits, clicks, conversions, revenue: i64, cost: i64| Figures {
        visits,
        clicks,
        conversions,
        revenue_micros: revenue * 1_000_000,
        cost_micros: cost * 500_000,
    };
    assert_eq!(
        report("campaign"),
        BTreeMap::from([("lp-camp".to_owned(), m(7, 3, 2, 15, 7))])
    );
    assert_eq!(
        report("offer"),
        BTreeMap::from([
            // The four visits that never clicked through have no offer yet.
            (String::new(), m(4, 0, 0, 0, 4)),
            ("offer-a".to_owned(), m(2, 2, 1, 10, 2)),
            ("offer-b".to_owned(), m(1, 1, 1, 5, 1)),
        ])
    );
    let with_bots = ReportRequest {
        range: DateRange::default(),
        dims: dims::parse("offer").unwrap(),
        include_bots: true,
        ..Default::default()
    };
    let r = block_on(query::report::run(&session, &with_bots, Some(&names))).unwrap();
    assert_eq!(r.totals.visits, 9, "the two bot visits, when asked for");

    // The conversion feed names the offer of the click.
    let mut out = Vec::new();
    let feed = query::feed::FeedRequest {
        range: DateRange::default(),
        campaign: None,
        clicks: None,
    };
    block_on(query::feed::run(&session, &feed, Some(&names), &mut out)).unwrap();
    let text = String::from_utf8(out).unwrap();
    let mut offers: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["destination"]["offer"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    offers.sort();
    assert_eq!(offers, ["offer-a", "offer-b"], "{text}");
}

/// An offer with two links, reached straight from one campaign and through a landing page
/// from another.
const LINKS: &str = r#"
[server]
node_id = 4

[[traffic_sources]]
id = "ts"

[[affiliate_networks]]
id = "net"

[[offers]]
id = "drip"
name = "Drip Automation"
network = "net"
payout = 2
links = [
  { id = "blog", name = "GEt Drip -blog Automation", url = "https://drip.example.com/blog?sub={click_id}" },
  { id = "home", url = "https://drip.example.com/?sub={click_id}", weight = 2 },
]

[[landing_pages]]
id = "lp"
url = "https://lp.example.com/?cid={click_id}"

[[campaigns]]
id = "direct"
traffic_source = "ts"
  [[campaigns.paths]]
  offers = [ { offer = "drip" } ]

[[campaigns]]
id = "via-lp"
traffic_source = "ts"
  [[campaigns.paths]]
  landing_page = "lp"
  offers = [ { offer = "drip" } ]
"#;

/// The link a `Location` of [`LINKS`] goes to, and its click id.
fn link_of(location: &str) -> (&'static str, String) {
    let link = if location.starts_with("https://drip.example.com/blog?") {
        "blog"
    } else {
        assert!(
            location.starts_with("https://drip.example.com/?"),
            "{location}"
        );
        "home"
    };
    (link, location[location.len() - 24..].to_owned())
}

#[test]
fn offer_links_are_chosen_per_visitor_and_named_in_reports_feed_and_log() {
    let mut e = Edge::with_config("legacy", LINKS);
    let mut c = e.connect();
    let mut get = |target: &str| {
        c.send(&format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n"));
        let r = c.response();
        assert!(matches!(r.status, 200 | 302), "{target}: {}", r.status);
        r.header("Location").unwrap_or_default().to_owned()
    };
    // link → (visits, conversions); and each converting click's link.
    let mut want: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut converted: BTreeMap<String, &str> = BTreeMap::new();
    for i in 0..30 {
        let (link, click) = link_of(&get("/c/direct"));
        want.entry(format!("drip/{link}")).or_default().0 += 1;
        if i % 5 == 0 {
            get(&format!("/postback?cid={click}&txid=d{i}"));
            want.entry(format!("drip/{link}")).or_default().1 += 1;
            converted.insert(click, link);
        }
    }
    for i in 0..10 {
        let lp = get("/c/via-lp");
        let visit = lp[lp.len() - 24..].to_owned();
        let (link, click) = link_of(&get(&format!("/click?cid={visit}")));
        assert_eq!(click, visit, "the offer gets the visit's click id");
        want.entry(format!("drip/{link}")).or_default().0 += 1;
        if i % 4 == 0 {
            get(&format!("/postback?cid={click}&txid=l{i}"));
            want.entry(format!("drip/{link}")).or_default().1 += 1;
            converted.insert(click, link);
        }
    }
    assert_eq!(want.len(), 2, "both links were taken: {want:?}");
    e.stop();
    let store = e.store_url();
    let dir = TempDir::new("links");
    let cfg = dir.write("edge.toml", LINKS);

    // By link (`offer/link`): a landing-page visit counts under the link its click-through
    // took.
    let json = common::query_report(
        &store,
        &["--by", "offer_link", "--config", cfg.to_str().unwrap()],
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let got: BTreeMap<String, (u64, u64)> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["offer_link"].as_str().unwrap().to_owned(),
                (
                    r["visits"].as_u64().unwrap(),
                    r["conversions"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(got, want, "{json}");
    let blog = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["offer_link"] == "drip/blog")
        .unwrap();
    assert_eq!(
        blog["offer_link_name"], "GEt Drip -blog Automation",
        "{json}"
    );

    // A drill-down into one link.
    let json = common::query_report(
        &store,
        &["--by", "campaign", "--filter", "offer_link=drip/blog"],
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (
            v["totals"]["visits"].as_u64().unwrap(),
            v["totals"]["conversions"].as_u64().unwrap()
        ),
        want["drip/blog"],
        "{json}"
    );

    // The feed names each conversion's offer and link, as the seed's payload does.
    let names = Names::parse(LINKS).unwrap();
    let session = block_on(Session::open(&store, &SessionOptions::default())).unwrap();
    let mut feed = Vec::new();
    let all = query::feed::FeedRequest::default();
    block_on(query::feed::run(&session, &all, Some(&names), &mut feed)).unwrap();
    let mut seen = BTreeMap::new();
    for line in feed.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let conv: serde_json::Value = serde_json::from_slice(line).unwrap();
        let d = &conv["destination"];
        assert_eq!(
            d["offer"],
            serde_json::json!({"id": "drip", "name": "Drip Automation"}),
            "{conv}"
        );
        let link = d["offerLink"]["id"].as_str().unwrap().to_owned();
        let name = match link.as_str() {
            "blog" => serde_json::json!("GEt Drip -blog Automation"),
            _ => serde_json::Value::Null,
        };
        assert_eq!(d["offerLink"]["name"], name, "{conv}");
        seen.insert(conv["visitEvent"]["id"].as_str().unwrap().to_owned(), link);
    }
    let expected: BTreeMap<String, String> = converted
        .iter()
        .map(|(click, link)| (click.clone(), (*link).to_owned()))
        .collect();
    assert_eq!(seen, expected);

    // The click log has each visit's or click-through's link.
    let log = common::query(&[
        "log", "clicks", "--quiet", "--format", "json", "--limit", "1000", "--store", &store,
    ]);
    let rows: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let linked = |kind: &str| {
        rows.iter()
            .filter(|r| r["kind"] == kind && r["offer_link_id"].is_string())
            .count()
    };
    assert_eq!((linked("visit"), linked("click")), (30, 10));
}
