//! Catalog objects as the console answers and reads them: JSON with the config file's keys,
//! plus what the user pastes elsewhere, and a tag of each object's content for conditional
//! requests.

use axum::http::StatusCode;
use catalog::file::{CampaignConfig, NetworkConfig, Sections};
use catalog::store::{Kind, State};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{App, Failure};

/// An object's config as JSON, without what the console adds.
fn config(state: &State, kind: Kind, id: &str) -> Option<Value> {
    match kind {
        Kind::TrafficSources => serde_json::to_value(state.traffic_sources.get(id)?),
        Kind::AffiliateNetworks => serde_json::to_value(state.affiliate_networks.get(id)?),
        Kind::Offers => serde_json::to_value(state.offers.get(id)?),
        Kind::LandingPages => serde_json::to_value(state.landing_pages.get(id)?),
        Kind::Campaigns => serde_json::to_value(state.campaigns.get(id)?),
    }
    .ok()
}

/// The object's entity tag: a hash of its content, so a `PUT` with `If-Match` replaces only
/// the version the client read.
pub(super) fn tag(state: &State, kind: Kind, id: &str) -> Option<String> {
    use std::hash::{Hash, Hasher};
    let v = config(state, kind, id)?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    Some(format!("\"{:016x}\"", h.finish()))
}

/// An object as JSON, with what the user pastes elsewhere.
pub(super) fn object(app: &App, state: &State, kind: Kind, id: &str) -> Option<Value> {
    let mut v = config(state, kind, id)?;
    let edge = app.opts.edge_url.trim_end_matches('/');
    match kind {
        Kind::Campaigns => {
            let c = &state.campaigns[id];
            v["campaign_url"] = Value::String(campaign_url(edge, c, state));
        }
        Kind::AffiliateNetworks => {
            let n = &state.affiliate_networks[id];
            v["postback_url"] = Value::String(postback_url(edge, n));
        }
        _ => {}
    }
    Some(v)
}

/// The URL to paste into the traffic source: the campaign's, with the source's macros.
fn campaign_url(edge: &str, c: &CampaignConfig, state: &State) -> String {
    match state
        .traffic_sources
        .get(&c.traffic_source)
        .and_then(|ts| catalog::presets::resolve_source(ts, "").ok())
    {
        Some((ts, _)) => catalog::presets::campaign_url(edge, &c.id, &ts),
        None => format!("{edge}/c/{}", c.id),
    }
}

/// The URL to paste into the affiliate network: its macros, and its token.
fn postback_url(edge: &str, n: &NetworkConfig) -> String {
    let n = catalog::presets::resolve_network(n, "").unwrap_or_else(|_| n.clone());
    catalog::presets::network_postback_url(edge, &n)
}

/// Reads the body as an object of `kind` whose id is the path's.
pub(super) fn parse(kind: Kind, id: &str, body: &[u8]) -> Result<Sections, Failure> {
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, format!("not JSON: {e}")))?;
    let Some(obj) = v.as_object_mut() else {
        return Err(Failure::new(StatusCode::BAD_REQUEST, "not a JSON object"));
    };
    match obj.get("id") {
        Some(Value::String(s)) if s != id => {
            return Err(Failure {
                status: StatusCode::BAD_REQUEST,
                error: format!("id {s:?} is not the path's {id:?}"),
                field: Some("id".into()),
            });
        }
        _ => {
            obj.insert("id".into(), Value::String(id.to_owned()));
        }
    }
    // What the console adds to an object is not part of it (a traffic source's own
    // `postback_url` is).
    match kind {
        Kind::Campaigns => drop(obj.remove("campaign_url")),
        Kind::AffiliateNetworks => drop(obj.remove("postback_url")),
        _ => {}
    }
    let mut put = Sections::default();
    match kind {
        Kind::TrafficSources => put.traffic_sources.push(typed(kind, id, v)?),
        Kind::AffiliateNetworks => put.affiliate_networks.push(typed(kind, id, v)?),
        Kind::Offers => put.offers.push(typed(kind, id, v)?),
        Kind::LandingPages => put.landing_pages.push(typed(kind, id, v)?),
        Kind::Campaigns => put.campaigns.push(typed(kind, id, v)?),
    }
    Ok(put)
}

/// `v` as a `T`, or a 400 naming where it is wrong: `campaigns/c1.paths[0].weight`.
fn typed<T: DeserializeOwned>(kind: Kind, id: &str, v: Value) -> Result<T, Failure> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let mut msg = e.inner().to_string();
        let mut path = e.path().to_string();
        if path == "." {
            path.clear();
        }
        // A missing key is named in the message, not the path: "missing field `url`".
        if let Some(key) = msg
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
        {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
            msg = "missing, and required".into();
        }
        let at = if path.is_empty() {
            format!("{kind}/{id}")
        } else {
            format!("{kind}/{id}.{path}")
        };
        Failure {
            status: StatusCode::BAD_REQUEST,
            error: format!("{at}: {msg}"),
            field: (!path.is_empty()).then_some(at),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(kind: Kind, body: &str) -> (Option<String>, String) {
        let e = parse(kind, "x", body.as_bytes()).unwrap_err();
        (e.field, e.error)
    }

    #[test]
    fn a_refusal_names_the_field_where_it_is() {
        let cases = [
            (
                Kind::Offers,
                r#"{"url": "u", "payuot": 1}"#,
                "offers/x.payuot",
            ),
            (
                Kind::Offers,
                r#"{"links": [{"url": "https://x.example/"}]}"#,
                "offers/x.links[0].id",
            ),
            (
                Kind::Campaigns,
                r#"{"traffic_source": "t", "paths": [{"offers": [{"weight": 2}]}]}"#,
                "campaigns/x.paths[0].offers[0].offer",
            ),
            (
                Kind::Campaigns,
                r#"{"traffic_source": "t", "paths": [{}, {"weight": 1.5}]}"#,
                "campaigns/x.paths[1].weight",
            ),
            (
                Kind::Campaigns,
                r#"{"traffic_source": "t", "rules": [{"bot": "yes"}]}"#,
                "campaigns/x.rules[0].bot",
            ),
        ];
        for (kind, body, want) in cases {
            let (field, error) = field(kind, body);
            assert_eq!(field.as_deref(), Some(want), "{body}: {error}");
            assert!(error.starts_with(want), "{error}");
        }
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused_as_a_whole() {
        assert_eq!(field(Kind::Offers, "[1]").0, None);
        assert_eq!(field(Kind::Offers, "{").0, None);
    }
}
