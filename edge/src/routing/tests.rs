use catalog::model::Network;
use sink::model::event::{NetworkPolicy, Pixels};

use super::*;
use crate::config::DEMO_CONFIG;

fn compile(text: &str) -> Result<Routing, String> {
    let cfg = ConfigFile::parse(text).map_err(|e| e.to_string())?;
    Routing::compile(&cfg).map_err(|e| e.to_string())
}

/// The catalog crate's fixture: a network with a postback token, two offers, one campaign.
const BASE: &str = include_str!("../../../catalog/src/compile/base.toml");

#[test]
fn demo_compiles_without_warnings() {
    let t = compile(DEMO_CONFIG).unwrap();
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    let c = t.campaign(b"5aaea5a02d38914cfd2ad8c1").unwrap();
    assert_eq!(c.cost_micros, 50_000);
    assert_eq!(c.paths.items()[0].offers.items().len(), 2);
    assert!(t.campaign(b"nope").is_none());
}
#[test]
fn postback_tokens() {
    let t = compile(BASE).unwrap();
    let who = |r: Result<(Auth, Option<&Network>), TokenError>| {
        r.map(|(auth, n)| (auth, n.map(|n| n.id.to_string())))
    };
    let net = || Some("net".to_owned());
    assert_eq!(
        who(t.check_postback_token(None, Some(b"s3cret"))),
        Ok((Auth::Token, net()))
    );
    assert_eq!(
        who(t.check_postback_token(None, Some(b"nope"))),
        Err(TokenError::BadToken)
    );
    // Every network requires a token: one without cannot count anywhere.
    assert_eq!(
        who(t.check_postback_token(None, None)),
        Err(TokenError::BadToken)
    );
    assert_eq!(
        who(t.check_postback_token(Some(b"net"), Some(b"s3cret"))),
        Ok((Auth::Token, net()))
    );
    assert_eq!(
        who(t.check_postback_token(Some(b"net"), Some(b"s3cre"))),
        Err(TokenError::BadToken)
    );
    assert_eq!(
        who(t.check_postback_token(Some(b"zz"), Some(b"s3cret"))),
        Err(TokenError::UnknownNetwork)
    );
    let open = compile(&BASE.replace("postback_token = \"s3cret\"", "")).unwrap();
    assert_eq!(
        who(open.check_postback_token(None, None)),
        Ok((Auth::Open, None))
    );
    assert_eq!(
        who(open.check_postback_token(Some(b"net"), Some(b"anything"))),
        Ok((Auth::Open, None))
    );
    assert_eq!(
        who(open.check_postback_token(Some(b"zz"), None)),
        Err(TokenError::UnknownNetwork)
    );
    // A second network without a token: postbacks naming it, or none, are accepted but
    // prove nothing (they count only for clicks of networks without a token).
    let mixed = compile(&BASE.replacen(
        "[[offers]]",
        "[[affiliate_networks]]\nid = \"free\"\n\n[[offers]]",
        1,
    ))
    .unwrap();
    assert_eq!(
        who(mixed.check_postback_token(Some(b"free"), None)),
        Ok((Auth::NoToken, None))
    );
    assert_eq!(
        who(mixed.check_postback_token(None, None)),
        Ok((Auth::NoToken, None))
    );
    assert_eq!(
        who(mixed.check_postback_token(Some(b"free"), Some(b"s3cret"))),
        Ok((Auth::NoToken, None))
    );
}

#[test]
fn network_policies_tokens_and_money_caps() {
    let t = compile(BASE).unwrap();
    assert_eq!(
        t.networks[0].policy,
        NetworkPolicy {
            token: true,
            pixels: Pixels::Off
        }
    );
    let open = compile(&BASE.replace("postback_token = \"s3cret\"", "")).unwrap();
    assert_eq!(open.networks[0].policy.pixels, Pixels::Payout);
    let allowed = compile(&BASE.replace(
        "postback_token = \"s3cret\"",
        "postback_token = \"s3cret\"\npixels = \"default_payout\"",
    ))
    .unwrap();
    assert_eq!(allowed.networks[0].policy.pixels, Pixels::DefaultPayout);
    let err = |text: &str| compile(text).unwrap_err().to_string();
    assert!(
        err(&BASE.replace("postback_token = \"s3cret\"", "pixels = \"maybe\""))
            .starts_with("affiliate_networks[0].pixels:")
    );
    let twice = BASE.replacen(
        "[[offers]]",
        "[[affiliate_networks]]\nid = \"net2\"\npostback_token = \"s3cret\"\n\n[[offers]]",
        1,
    );
    assert!(err(&twice).starts_with("affiliate_networks[1].postback_token:"));
    assert_eq!(t.max_cost_micros, 1_000_000_000);
    assert_eq!(t.max_payout_micros, 100_000_000_000);
    let priced = BASE.replace("network = \"net\"", "network = \"net\"\npayout = 2.0");
    assert!(compile(&priced).is_ok());
    assert!(err(&format!("[server]\nmax_payout = 1.5\n{priced}")).starts_with("offers[0].payout:"));
    let costly = BASE.replace(
        "traffic_source = \"ts\"",
        "traffic_source = \"ts\"\ncost = 5.0",
    );
    assert!(compile(&costly).is_ok());
    assert!(err(&format!("[server]\nmax_cost = 4\n{costly}")).starts_with("campaigns[0].cost:"));
}

/// A commit of the store's catalog, from TOML sections.
fn commit(version: u64, put: &str, delete: &[(&str, &str)]) -> catalog::store::Commit {
    let mut d = catalog::store::Deleted::default();
    for (kind, id) in delete {
        d.of_mut(catalog::store::Kind::parse(kind).unwrap())
            .push((*id).to_owned());
    }
    catalog::store::Commit {
        version,
        ts_ms: 0,
        by: "test".into(),
        replace: false,
        put: catalog::file::Sections::parse(put).unwrap(),
        delete: d,
    }
}

#[test]
fn a_commit_compiles_only_what_it_names_and_shares_the_rest() {
    let t = compile(BASE).unwrap();
    let next = t
        .apply(commit(
            2,
            "[[campaigns]]\nid = \"new\"\ntraffic_source = \"ts\"\n[[campaigns.paths]]\noffers = [ { offer = \"o2\" } ]\n",
            &[],
        ))
        .unwrap();
    assert_eq!((next.version, next.campaigns.len()), (2, 2));
    assert!(next.campaign(b"new").is_some() && next.campaign(b"camp").is_some());
    assert!(
        t.campaign(b"new").is_none(),
        "the running routing is untouched"
    );
    // Shards the commit did not touch, and the other kinds, are the same memory.
    let shared = t
        .campaigns
        .shards
        .iter()
        .zip(next.campaigns.shards.iter())
        .filter(|(a, b)| Arc::ptr_eq(a, b))
        .count();
    assert_eq!(shared, SHARDS - 1);
    assert!(Arc::ptr_eq(&t.offers.items, &next.offers.items));
    assert!(Arc::ptr_eq(&t.params, &next.params));

    // Replaced in place: the offer keeps its index, so the campaign sees the new URL.
    let o1 = t.offers.index_of("o1").unwrap();
    let next = next
        .apply(commit(
            3,
            "[[offers]]\nid = \"o1\"\nnetwork = \"net\"\nurl = \"https://new.example.com/?s={click_id}\"\n",
            &[("campaigns", "new")],
        ))
        .unwrap();
    assert_eq!(next.offers.index_of("o1"), Some(o1));
    assert_eq!(
        next.offers[o1 as usize].links.items()[0].url.as_str(),
        "https://new.example.com/?s={click_id}"
    );
    assert!(next.campaign(b"new").is_none());
    assert_eq!(next.campaigns.len(), 1);
}

#[test]
fn a_commit_is_refused_naming_the_object_and_this_edges_limits_only_warn() {
    let t = compile(&format!("[server]\nmax_payout = 10\nmax_cost = 1\n{BASE}")).unwrap();
    // Limits the writer cannot know: the edge follows the catalog anyway, and says so.
    let next = t
        .apply(commit(
            2,
            "[[offers]]\nid = \"o9\"\nurl = \"https://x.example/\"\npayout = 11\n[[campaigns]]\nid = \"c8\"\ntraffic_source = \"ts\"\ncost = 2\n[[campaigns.paths]]\noffers = [ { offer = \"o9\" } ]\n",
            &[],
        ))
        .unwrap();
    assert!(next.campaign(b"c8").is_some());
    let w = next.warnings.join("\n");
    assert!(
        w.contains("offer \"o9\"") && w.contains("server.max_payout"),
        "{w}"
    );
    assert!(
        w.contains("campaign \"c8\"") && w.contains("server.max_cost"),
        "{w}"
    );
    // A config file is still refused for them (tested with the file's own checks above).
    let e = t
        .apply(commit(
            2,
            "[[campaigns]]\nid = \"c9\"\ntraffic_source = \"nope\"\n[[campaigns.paths]]\noffers = [ { offer = \"o1\" } ]\n",
            &[],
        ))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("campaigns/c9.traffic_source:"), "{e}");
    // A token another network holds.
    let e = t
        .apply(commit(
            2,
            "[[affiliate_networks]]\nid = \"n2\"\npostback_token = \"s3cret\"\n",
            &[],
        ))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("affiliate_networks/n2.postback_token:"),
        "{e}"
    );
    // Two networks swapping tokens in one commit is fine.
    let two = t
        .apply(commit(
            2,
            "[[affiliate_networks]]\nid = \"n2\"\npostback_token = \"other\"\n",
            &[],
        ))
        .unwrap();
    let swapped = two
        .apply(commit(
            3,
            "[[affiliate_networks]]\nid = \"net\"\npostback_token = \"other\"\n[[affiliate_networks]]\nid = \"n2\"\npostback_token = \"s3cret\"\n",
            &[],
        ))
        .unwrap();
    assert_eq!(
        swapped
            .check_postback_token(None, Some(b"s3cret"))
            .map(|(_, n)| n.map(|n| n.id.to_string())),
        Ok(Some("n2".to_owned()))
    );
}

#[test]
fn networks_and_tokens_follow_commits() {
    let t = compile(BASE).unwrap();
    assert!(t.any_postback_token());
    // The network's token removed: postbacks are open; the network deleted: unknown.
    let open = t
        .apply(commit(2, "[[affiliate_networks]]\nid = \"net\"\n", &[]))
        .unwrap();
    assert!(!open.any_postback_token());
    assert_eq!(
        open.check_postback_token(None, Some(b"s3cret"))
            .map(|(a, _)| a),
        Ok(Auth::Open)
    );
    let gone = open
        .apply(commit(
            3,
            "[[offers]]\nid = \"o1\"\nurl = \"https://a.example.com/?s={click_id}\"\n",
            &[("affiliate_networks", "net")],
        ))
        .unwrap();
    assert_eq!(
        gone.check_postback_token(Some(b"net"), None)
            .map(|(a, _)| a),
        Err(TokenError::UnknownNetwork)
    );
}

#[test]
fn an_offer_that_asks_more_of_the_visitor_updates_its_campaigns_needs() {
    let t = compile(BASE).unwrap();
    assert!(!t.campaign(b"camp").unwrap().needs.country);
    let next = t
        .apply(commit(
            2,
            "[[offers]]\nid = \"o2\"\nurl = \"https://b.example.com/?s={click_id}&c={country}\"\n",
            &[],
        ))
        .unwrap();
    assert!(next.campaign(b"camp").unwrap().needs.country);
    assert!(!t.campaign(b"camp").unwrap().needs.country);
}

#[test]
fn a_replacing_commit_rebuilds_everything_and_keeps_the_fallback() {
    let t = compile(&format!(
        "[server]\nfallback_url = \"https://home.example/?z={{source}}\"\n{BASE}"
    ))
    .unwrap();
    let mut c = commit(
        2,
        "[[traffic_sources]]\nid = \"t2\"\nparams = { other = \"o\", source = \"s\" }\n[[offers]]\nid = \"x\"\nurl = \"https://x.example/?o={other}\"\n[[campaigns]]\nid = \"only\"\ntraffic_source = \"t2\"\n[[campaigns.paths]]\noffers = [ { offer = \"x\" } ]\n",
        &[],
    );
    c.replace = true;
    let next = t.apply(c).unwrap();
    assert_eq!((next.campaigns.len(), next.offers.len()), (1, 1));
    assert!(next.campaign(b"camp").is_none());
    let fallback = next.fallback.as_ref().unwrap();
    assert_eq!(fallback.as_str(), "https://home.example/?z={source}");
    // Its token names the new parameter table's `source`.
    let source = fallback
        .tokens()
        .find_map(|t| match t {
            catalog::template::Token::Param(p) => Some(p),
            _ => None,
        })
        .unwrap();
    assert_eq!(next.params.name(source), "source");
}

/// What a routing serves, as text: every campaign with its source, paths' offers and needs,
/// every network's token, every offer's URL and network — by id, whatever the indexes.
fn served(r: &Routing) -> Vec<String> {
    let mut out = Vec::new();
    for c in r.campaigns.iter() {
        let paths: Vec<String> = std::iter::once(&c.paths)
            .chain(c.rules.iter().map(|r| &r.paths))
            .flat_map(|w| w.items())
            .map(|p| {
                let offers: Vec<&str> = p
                    .offers
                    .items()
                    .iter()
                    .map(|&o| &*r.offers[o as usize].id)
                    .collect();
                let lp = p.landing_page.map(|l| &*r.landing_pages[l as usize].id);
                format!("{}:{lp:?}:{offers:?}", p.index)
            })
            .collect();
        out.push(format!(
            "campaign {} {} {} {:?} {:?}",
            c.id, r.sources[c.source as usize].id, c.cost_micros, paths, c.needs
        ));
    }
    for n in r.networks.iter() {
        out.push(format!(
            "network {} {:?} {:?}",
            n.id, n.postback_token, n.policy
        ));
    }
    for o in r.offers.iter() {
        let net = o.network.map(|n| &*r.networks[n as usize].id);
        out.push(format!(
            "offer {} {:?} {net:?} {}",
            o.id,
            o.links
                .items()
                .iter()
                .map(|l| format!("{}={}", l.id, l.url.as_str()))
                .collect::<Vec<_>>(),
            o.payout_micros
        ));
    }
    for s in r.sources.iter() {
        let params: Vec<&str> = s.params.iter().map(|&(n, _)| r.params.name(n)).collect();
        out.push(format!("source {} {params:?}", s.id));
    }
    for l in r.landing_pages.iter() {
        out.push(format!("landing page {} {}", l.id, l.url.as_str()));
    }
    out.sort();
    out
}

/// A series of commits applied one by one serves what a whole compile of each version does.
#[test]
fn commits_applied_one_by_one_serve_what_a_whole_compile_does() {
    let mut state = catalog::store::State::default();
    let mut first = commit(1, BASE, &[]);
    first.replace = true;
    state.apply(&first);
    let mut running = compile(BASE).unwrap();
    let steps: Vec<(&str, Vec<(&str, &str)>)> = vec![
        // A new source with a new remapped name, and an offer using it.
        (
            "[[traffic_sources]]\nid = \"t2\"\nparams = { zone = \"z\" }\n[[offers]]\nid = \"o3\"\nurl = \"https://c.example/?z={zone}&c={country}\"\n",
            vec![],
        ),
        // A campaign on them, with a rule and a landing page.
        (
            "[[landing_pages]]\nid = \"lp\"\nurl = \"https://lp.example/\"\n[[campaigns]]\nid = \"k2\"\ntraffic_source = \"t2\"\n[[campaigns.paths]]\nlanding_page = \"lp\"\noffers = [ { offer = \"o3\" }, { offer = \"o1\" } ]\n[[campaigns.rules]]\ndevices = [\"mobile\"]\npaths = [ { offers = [ { offer = \"o2\" } ] } ]\n",
            vec![],
        ),
        // An offer's URL asks for the device now: the campaigns using it need it.
        (
            "[[offers]]\nid = \"o1\"\nnetwork = \"net\"\nurl = \"https://a.example.com/?s={click_id}&d={device}\"\n",
            vec![],
        ),
        // The first campaign goes, an unused offer goes with... o2 is still used by k2's rule.
        ("", vec![("campaigns", "camp")]),
        // k2 moves off o1; o1 and then its network can go.
        (
            "[[campaigns]]\nid = \"k2\"\ntraffic_source = \"t2\"\n[[campaigns.paths]]\noffers = [ { offer = \"o3\" } ]\n",
            vec![("offers", "o1")],
        ),
        ("", vec![("affiliate_networks", "net")]),
        // o1 comes back, different, and a campaign uses it.
        (
            "[[offers]]\nid = \"o1\"\nurl = \"https://again.example/?s={click_id}\"\n[[campaigns]]\nid = \"camp\"\ntraffic_source = \"ts\"\n[[campaigns.paths]]\noffers = [ { offer = \"o1\" } ]\n",
            vec![],
        ),
    ];
    for (i, (put, delete)) in steps.into_iter().enumerate() {
        let c = commit(i as u64 + 2, put, &delete);
        state.apply(&c);
        running = running
            .apply(c.clone())
            .unwrap_or_else(|e| panic!("step {i}: {e}"));
        let s = state.sections();
        let whole = Routing::compile(&ConfigFile {
            server: Default::default(),
            traffic_sources: s.traffic_sources,
            affiliate_networks: s.affiliate_networks,
            offers: s.offers,
            landing_pages: s.landing_pages,
            campaigns: s.campaigns,
        })
        .unwrap_or_else(|e| panic!("step {i}: {e}"));
        assert_eq!(served(&running), served(&whole), "step {i}");
    }
}

#[test]
fn a_churning_catalog_reuses_the_slots_of_deleted_objects() {
    let mut r = compile(BASE).unwrap();
    let held = r.offers.slots();
    for v in 2..50u64 {
        // Each version: a new offer, and the one before deleted.
        let put = format!("[[offers]]\nid = \"x{v}\"\nurl = \"https://x.example/{v}\"\n");
        let old = format!("x{}", v - 1);
        let delete: Vec<(&str, &str)> = if v > 2 {
            vec![("offers", &old)]
        } else {
            vec![]
        };
        r = r.apply(commit(v, &put, &delete)).unwrap();
        assert_eq!(
            r.offers.by_id(&format!("x{v}")).unwrap().links.items()[0]
                .url
                .as_str(),
            format!("https://x.example/{v}")
        );
    }
    assert_eq!(r.offers.len(), 3);
    assert!(r.offers.slots() <= held + 2, "{} slots", r.offers.slots());
}
