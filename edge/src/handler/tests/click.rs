//! Landing pages and click-throughs: the node's click cache, the signed cookie, forgeries.
use super::*;

impl Harness {
    pub(super) fn with_fallback(self, url: &str) -> Self {
        self.with_config("", url)
    }

    fn with_config(mut self, extra: &str, fallback: &str) -> Self {
        let mut cfg = ConfigFile::parse(&format!("{DEMO_CONFIG}\n{extra}")).unwrap();
        cfg.server.fallback_url = fallback.into();
        self.routing = Routing::compile(&cfg).unwrap();
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
    // Another node: its own (empty) click cache, the same secret.
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
