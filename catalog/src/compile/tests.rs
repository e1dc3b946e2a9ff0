use serde::de::IgnoredAny;

use ahash::AHashMap;

use super::whole::FileIds;
use super::*;
use crate::file::OfferRefConfig;
use crate::model::{Visitor, accepts_language};
use crate::{Catalog, File};

fn compile(text: &str) -> Result<Catalog, String> {
    let cfg = File::<IgnoredAny>::parse(text).map_err(|e| e.to_string())?;
    Catalog::compile(&cfg).map_err(|e| e.to_string())
}

/// A small catalog (also the edge table's tests' fixture): a source with a remapped
/// parameter, a network with a postback token, two offers, one campaign.
const BASE: &str = include_str!("base.toml");
#[test]
fn weighted_pick_follows_weights() {
    let t = compile(BASE).unwrap();
    let offers = &t.campaigns[0].paths.items()[0].offers;
    let mut counts = [0u32; 2];
    for r in 0..4000u64 {
        counts[*offers.pick(r) as usize] += 1;
    }
    assert_eq!(counts, [3000, 1000]);
    let shares: Vec<f64> = offers.shares().map(|(_, s)| s).collect();
    assert_eq!(shares, vec![0.75, 0.25]);
}

#[test]
fn zero_weight_items_are_never_picked() {
    let w = Weighted::new(vec![('a', 0), ('b', 2), ('c', 0)], "k").unwrap();
    for r in 0..100 {
        assert_eq!(*w.pick(r), 'b');
    }
    assert!(Weighted::new(vec![('a', 0)], "k").is_err());
    assert!(Weighted::<char>::new(vec![], "k").is_err());
}

#[test]
fn dangling_references_name_the_key() {
    for (from, to, want) in [
        (
            r#"traffic_source = "ts""#,
            r#"traffic_source = "tx""#,
            "campaigns[0].traffic_source: no traffic source with id \"tx\"",
        ),
        (
            r#"offer = "o2""#,
            r#"offer = "o3""#,
            "campaigns[0].paths[0].offers[1].offer: no offer with id \"o3\"",
        ),
        (
            r#"network = "net""#,
            r#"network = "nt""#,
            "offers[0].network: no affiliate network with id \"nt\"",
        ),
        (
            r#"id = "o2""#,
            r#"id = "o1""#,
            "offers[1].id: duplicate id \"o1\"",
        ),
        (
            r#"id = "camp""#,
            r#"id = "c/1""#,
            "campaigns[0].id: \"c/1\" is not an id",
        ),
        (
            r#"id = "camp""#,
            &*Box::leak(format!("id = \"{}\"", "c".repeat(129)).into_boxed_str()),
            "campaigns[0].id: an id is at most 128 characters",
        ),
        (
            "  [[campaigns.paths]]\n",
            "  [[campaigns.paths]]\n  landing_page = \"lp\"\n",
            "campaigns[0].paths[0].landing_page: no landing page with id \"lp\"",
        ),
        (
            "weight = 3 }, { offer = \"o2\", weight = 1",
            "weight = 0 }, { offer = \"o2\", weight = 0",
            "campaigns[0].paths[0].offers: the weights add up to 0",
        ),
        ("{click_id}&x", "{click_id&x", "offers[1].url:"),
    ] {
        assert!(BASE.contains(from), "{from}");
        let e = compile(&BASE.replacen(from, to, 1)).unwrap_err();
        assert!(e.starts_with(want), "want {want:?}, got {e:?}");
    }
}

#[test]
fn a_campaign_needs_paths() {
    let text = BASE.replace("  [[campaigns.paths]]\n  offers = [ { offer = \"o1\", weight = 3 }, { offer = \"o2\", weight = 1 } ]\n", "");
    let e = compile(&text).unwrap_err();
    assert!(
        e.starts_with("campaigns[0].paths: needs at least one entry"),
        "{e}"
    );
}

#[test]
fn money_must_be_a_sane_amount() {
    let e = compile(&BASE.replace(
        "traffic_source = \"ts\"",
        "traffic_source = \"ts\"\ncost = -1.0",
    ))
    .unwrap_err();
    assert!(e.starts_with("campaigns[0].cost:"), "{e}");
    let e =
        compile(&BASE.replace("network = \"net\"", "network = \"net\"\npayout = nan")).unwrap_err();
    assert!(e.starts_with("offers[0].payout:"), "{e}");
}

#[test]
fn remapped_params_resolve_per_source() {
    let t = compile(BASE).unwrap();
    let src = &t.sources[0];
    let name = t.params.lookup("source").unwrap();
    assert_eq!(src.params, vec![(name, b"utm_source"[..].into())]);
    assert!(
        t.params.lookup("var_3").is_some(),
        "var_N names always exist"
    );
}

#[test]
fn builtin_names_cannot_be_remapped() {
    let e = compile(&BASE.replace("source = \"utm_source\"", "click_id = \"x\"")).unwrap_err();
    assert!(e.starts_with("traffic_sources[0].params.click_id:"), "{e}");
}

#[test]
fn unknown_tokens_warn() {
    let text = BASE.replace("x={source}", "x={keyword}")
        + "  [[campaigns.rules]]\n  devices = [\"mobile\"]\n  paths = [ { offers = [ { offer = \"o1\" } ] } ]\n";
    let t = compile(&text).unwrap();
    assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
    assert!(t.warnings[0].contains("{keyword}"));
}

#[test]
fn campaigns_look_up_only_what_their_rules_and_urls_use() {
    let t = compile(BASE).unwrap();
    assert_eq!(
        t.campaigns[0].needs,
        Needs::default(),
        "no rule or URL uses anything"
    );
    let rule = BASE.to_owned()
        + "  [[campaigns.rules]]\n  countries = [\"US\"]\n  paths = [ { offers = [ { offer = \"o1\" } ] } ]\n";
    let t = compile(&rule).unwrap();
    let c = &t.campaigns[0];
    assert!(c.needs.country && !c.needs.agent && !c.needs.bot && c.has_country_rules());
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    let token = compile(&BASE.replace("x={source}", "x={source}&geo={country}")).unwrap();
    let c = &token.campaigns[0];
    assert!(c.needs.country && !c.has_country_rules());
    let agent = compile(&BASE.replace("x={source}", "x={os}")).unwrap();
    let n = agent.campaigns[0].needs;
    assert!(n.agent && !n.country && !n.bot && !agent.campaigns[0].has_agent_rules());
    let bot = BASE.to_owned()
        + "  [[campaigns.rules]]\n  bot = true\n  paths = [ { offers = [ { offer = \"o1\" } ] } ]\n";
    let t = compile(&bot).unwrap();
    let n = t.campaigns[0].needs;
    assert!(n.agent && n.bot && !n.country && t.campaigns[0].has_agent_rules());
    let browsers = BASE.to_owned()
        + "  [[campaigns.rules]]\n  browsers = [\"Chrome\"]\n  paths = [ { offers = [ { offer = \"o1\" } ] } ]\n";
    let n = compile(&browsers).unwrap().campaigns[0].needs;
    assert!(n.agent && !n.bot);
}

#[test]
fn paths_are_found_by_index() {
    let rule = BASE.to_owned()
        + "  [[campaigns.rules]]\n  countries = [\"US\"]\n  paths = [ { offers = [ { offer = \"o1\" } ] } ]\n";
    let t = compile(&rule).unwrap();
    let c = &t.campaigns[0];
    let n = c.paths.items().len() as u16;
    assert_eq!(c.path(0).map(|p| p.index), Some(0));
    assert_eq!(
        c.path(n).map(|p| p.index),
        Some(n),
        "the rule's path follows the defaults"
    );
    assert!(c.path(n + 1).is_none());
}

#[test]
fn rule_values_are_validated() {
    for (cond, want) in [
        (
            "countries = [\"USA\"]",
            "campaigns[0].rules[0].countries[0]:",
        ),
        ("devices = [\"phone\"]", "campaigns[0].rules[0].devices[0]:"),
        (
            "languages = [\"en_US\"]",
            "campaigns[0].rules[0].languages[0]:",
        ),
        ("colour = \"red\"", "unknown field"),
    ] {
        let text = format!(
            "{BASE}  [[campaigns.rules]]\n  {cond}\n  paths = [ {{ offers = [ {{ offer = \"o1\" }} ] }} ]\n"
        );
        let e = compile(&text).unwrap_err();
        assert!(e.contains(want), "{cond}: {e}");
    }
}

fn rule(cfg: RuleConfig) -> Rule {
    let ids = FileIds {
        sources: AHashMap::new(),
        networks: AHashMap::new(),
        offers: [("o", 0)].into_iter().collect(),
        landing_pages: AHashMap::new(),
        offer_needs: vec![Needs::default()],
        landing_page_needs: Vec::new(),
    };
    let cfg = RuleConfig {
        paths: vec![PathConfig {
            weight: 1,
            landing_page: None,
            offers: vec![OfferRefConfig {
                offer: "o".into(),
                weight: 1,
            }],
        }],
        ..cfg
    };
    compile_rule(&cfg, &crate::key::Key::Root("r"), &ids, &mut 0).unwrap()
}

#[test]
fn rules_and_within_or_across_conditions() {
    let r = rule(RuleConfig {
        countries: vec!["us".into(), "CA".into()],
        devices: vec!["mobile".into()],
        ..Default::default()
    });
    let mut v = Visitor {
        country: Some(*b"CA"),
        device: Some(Device::Mobile),
        ..Default::default()
    };
    assert!(r.matches(&v));
    v.device = Some(Device::Desktop);
    assert!(!r.matches(&v));
    v.device = Some(Device::Mobile);
    v.country = None;
    assert!(
        !r.matches(&v),
        "an unknown country never matches a country condition"
    );
    assert!(rule(RuleConfig::default()).matches(&Visitor::default()));
    let bots = rule(RuleConfig {
        bot: Some(true),
        ..Default::default()
    });
    assert!(!bots.matches(&Visitor::default()));
    assert!(bots.matches(&Visitor {
        bot: Some(true),
        ..Default::default()
    }));
}

#[test]
fn accept_language_matching() {
    let want: Vec<Box<str>> = vec!["en".into(), "pt-br".into()];
    assert!(accepts_language(b"en-US,en;q=0.9", &want));
    assert!(accepts_language(b"fr, PT-BR;q=0.5", &want));
    assert!(!accepts_language(b"pt-PT,fr", &want));
    assert!(!accepts_language(b"eng", &want));
    assert!(!accepts_language(b"fr, en;q=0", &want));
    assert!(!accepts_language(b"", &want));
}

#[test]
fn offer_links_are_checked_and_picked_by_weight() {
    let linked = |links: &str| {
        BASE.replace(
            "url = \"https://b.example.com/?s={click_id}&x={source}\"",
            &format!("links = [ {links} ]"),
        )
    };
    let t = compile(&linked(
        "{ id = \"blog\", name = \"Blog\", url = \"https://b.example.com/blog?s={click_id}\", weight = 3 }, \
         { id = \"home\", url = \"https://b.example.com/?c={country}&k={keyword}\" }",
    ))
    .unwrap();
    let o2 = &t.offers[1];
    let ids: Vec<&str> = o2.links.items().iter().map(|l| &*l.id).collect();
    assert_eq!(ids, ["blog", "home"]);
    assert_eq!(&*o2.links.items()[0].name, "Blog");
    // One link's token is enough for the offer (and its campaigns) to need the lookup.
    assert!(o2.needs.country && !o2.needs.agent);
    assert!(t.campaigns[0].needs.country);
    // An unknown token warns, naming the link.
    assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
    assert!(
        t.warnings[0].starts_with("offer \"o2\" link \"home\": {keyword}"),
        "{:?}",
        t.warnings
    );
    let (mut blog, n) = (0, 4000u64);
    for i in 0..n {
        if &*o2.link(|| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).id == "blog" {
            blog += 1;
        }
    }
    assert!((2860..=3140).contains(&blog), "{blog}");
    // An offer with a url is one link without an id, and picks without a random number.
    let o1 = &t.offers[0];
    assert_eq!(&*o1.link(|| unreachable!()).id, "");

    for (links, err) in [
        ("", "offers[1].url: missing: an offer needs a url or links"),
        (
            "{ id = \"a\", url = \"https://x.example/\" }, { id = \"a\", url = \"https://y.example/\" }",
            "offers[1].links[1].id: \"a\" is another link's id in this offer",
        ),
        (
            "{ id = \"a b\", url = \"https://x.example/\" }",
            "offers[1].links[0].id:",
        ),
        (
            "{ id = \"a\", url = \"https://x.example/{click_id\" }",
            "offers[1].links[0].url:",
        ),
        (
            "{ id = \"a\", url = \"https://x.example/\", weight = 0 }",
            "offers[1].links: the weights add up to 0",
        ),
    ] {
        let e = compile(&linked(links)).unwrap_err();
        assert!(e.starts_with(err), "{links}: {e}");
    }
    let both = BASE.replace(
        "url = \"https://b.example.com/?s={click_id}&x={source}\"",
        "url = \"https://b.example.com/\"\nlinks = [ { id = \"a\", url = \"https://x.example/\" } ]",
    );
    let e = compile(&both).unwrap_err();
    assert!(
        e.starts_with("offers[1].links: an offer has a url or links, not both"),
        "{e}"
    );
    let many: Vec<String> = (0..=MAX_OFFER_LINKS)
        .map(|i| format!("{{ id = \"l{i}\", url = \"https://x.example/\" }}"))
        .collect();
    let e = compile(&linked(&many.join(", "))).unwrap_err();
    assert!(e.starts_with("offers[1].links: has 65 links"), "{e}");
}
