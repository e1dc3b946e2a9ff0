//! Campaign visits: redirects, tokens, rotation, costs, the fallback.
use super::*;

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

#[test]
fn visits_and_clicks_carry_their_networks_policy() {
    let mut cfg = ConfigFile::parse(DEMO_CONFIG).unwrap();
    cfg.affiliate_networks[0].postback_token = "tok".into();
    let mut h = Harness::new("");
    h.routing = Routing::compile(&cfg).unwrap();
    assert_eq!(h.get(CAMP).0, Status::Found);
    let e = h.sink.events.pop().unwrap();
    assert_eq!(e.get(Field::NetworkId), b"net-impact");
    assert_eq!(
        e.network_policy,
        Some(sink::model::event::NetworkPolicy {
            token: true,
            pixels: sink::model::event::Pixels::Off
        })
    );
}

/// An offer with two links weighing 3:1, straight from a campaign and through a landing page.
const LINKED: &str = r#"
[[offers]]
id = "offer-linked"
network = "net-impact"
links = [
  { id = "blog", name = "Get Drip - blog", url = "https://drip.example.com/blog?s={click_id}&o={offer_id}", weight = 3 },
  { id = "home", url = "https://drip.example.com/?s={click_id}&c={country}" },
]

[[landing_pages]]
id = "lp-linked"
url = "https://lp.example.com/?cid={click_id}"

[[campaigns]]
id = "linked"
traffic_source = "ts-blog"
  [[campaigns.paths]]
  offers = [ { offer = "offer-linked" } ]

[[campaigns]]
id = "linked-lp"
traffic_source = "ts-blog"
  [[campaigns.paths]]
  landing_page = "lp-linked"
  offers = [ { offer = "offer-linked" } ]
"#;

#[test]
fn an_offer_with_links_sends_each_visitor_to_one_by_weight_and_records_it() {
    let mut h = Harness::new(LINKED);
    let n = 4000;
    let mut blog = 0;
    for _ in 0..n {
        let (st, resp) = h.get("/c/linked");
        assert_eq!(st, Status::Found);
        let loc = header(&resp, "Location").unwrap();
        let e = h.sink.events.last().unwrap();
        let cid = e.id.to_string();
        assert_eq!(e.get(Field::OfferId), b"offer-linked");
        match e.get(Field::OfferLinkId) {
            b"blog" => {
                blog += 1;
                assert_eq!(
                    loc,
                    format!("https://drip.example.com/blog?s={cid}&o=offer-linked")
                );
            }
            b"home" => assert_eq!(loc, format!("https://drip.example.com/?s={cid}&c=")),
            other => panic!("link {:?}", String::from_utf8_lossy(other)),
        }
    }
    // Weight 3:1, so 3000 expected; 5 standard deviations is about ±137.
    assert!((2860..=3140).contains(&blog), "{blog}");

    // Through a landing page the link is chosen at the click-through, and recorded with it.
    let (_, resp) = h.get("/c/linked-lp");
    let visit = h.sink.events.last().unwrap();
    assert_eq!(visit.get(Field::OfferLinkId), b"");
    let cid = visit.id.to_string();
    assert!(header(&resp, "Location").unwrap().ends_with(&cid));
    let (st, resp) = h.get(&format!("/click?cid={cid}"));
    assert_eq!(st, Status::Found);
    let click = h.sink.events.last().unwrap();
    assert_eq!(click.kind, EventKind::Click);
    let link = String::from_utf8_lossy(click.get(Field::OfferLinkId)).into_owned();
    assert!(link == "blog" || link == "home", "{link:?}");
    assert!(
        header(&resp, "Location")
            .unwrap()
            .starts_with("https://drip.example.com/"),
        "{resp}"
    );
}

#[test]
fn an_offer_with_one_url_records_no_link() {
    let mut h = Harness::new("");
    h.get(CAMP);
    assert_eq!(h.sink.events[0].get(Field::OfferLinkId), b"");
}
