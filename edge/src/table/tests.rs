use catalog::model::Network;
use sink::event::{NetworkPolicy, Pixels};

use super::*;
use crate::config::DEMO_CONFIG;

fn compile(text: &str) -> Result<Table, String> {
    let cfg = ConfigFile::parse(text).map_err(|e| e.to_string())?;
    Table::compile(&cfg).map_err(|e| e.to_string())
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
