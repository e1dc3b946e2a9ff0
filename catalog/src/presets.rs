//! Built-in presets for traffic sources and affiliate networks (`template = "zeropark"`): each
//! source's parameter names and macros, cost macro, click-id parameter and postback URL; each
//! network's macros and status codes. The data is `presets.toml`, compiled into the binary;
//! `query templates` lists it.
//!
//! A preset fills the keys a config leaves out; `params` and `status_map` add to the preset's,
//! the config's entries winning. A postback URL that needs a value of the user's account with
//! the source (written `${ZEROPARK_KEY}`) turns the postback off, with a warning, until the
//! config gives the URL with that value in.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::ConfigError;
use crate::file::{NetworkConfig, TrafficSourceConfig};

/// A traffic source's preset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcePreset {
    pub template: String,
    pub name: String,
    /// Where its macros are documented.
    #[serde(default)]
    pub docs: String,
    /// Remapped name → the query parameter that carries it.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Query parameter → the source's macro for it, for the campaign URL to paste into the
    /// source (empty: the source appends the parameter by itself, like `gclid`).
    #[serde(default)]
    pub url_macros: BTreeMap<String, String>,
    pub cost_param: Option<String>,
    pub external_id_param: Option<String>,
    pub postback_url: Option<String>,
    pub postback_statuses: Option<Vec<String>>,
    #[serde(default)]
    pub notes: String,
}

/// An affiliate network's preset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkPreset {
    pub template: String,
    pub name: String,
    #[serde(default)]
    pub docs: String,
    /// How the network writes the sub id it was given, in its postback URL.
    pub click_id_macro: Option<String>,
    /// The offer link's query parameter that carries our click id to the network.
    pub sub_param: Option<String>,
    pub payout_macro: Option<String>,
    pub txid_macro: Option<String>,
    pub status_macro: Option<String>,
    #[serde(default)]
    pub status_map: BTreeMap<String, String>,
    #[serde(default)]
    pub notes: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Presets {
    traffic_sources: Vec<SourcePreset>,
    affiliate_networks: Vec<NetworkPreset>,
}

fn presets() -> &'static Presets {
    static PRESETS: OnceLock<Presets> = OnceLock::new();
    PRESETS.get_or_init(|| {
        // A unit test parses and compiles every preset, so this cannot fail in a release.
        toml::from_str(include_str!("presets.toml")).expect("presets.toml is valid")
    })
}

/// Every traffic-source preset, in the file's order.
pub fn sources() -> &'static [SourcePreset] {
    &presets().traffic_sources
}

/// Every affiliate-network preset.
pub fn networks() -> &'static [NetworkPreset] {
    &presets().affiliate_networks
}

pub fn source(name: &str) -> Option<&'static SourcePreset> {
    sources()
        .iter()
        .find(|p| p.template.eq_ignore_ascii_case(name.trim()))
}

pub fn network(name: &str) -> Option<&'static NetworkPreset> {
    networks()
        .iter()
        .find(|p| p.template.eq_ignore_ascii_case(name.trim()))
}

fn unknown(key: &str, name: &str, known: impl Iterator<Item = &'static str>) -> ConfigError {
    ConfigError::invalid(
        key,
        format!(
            "no template is called {name:?} (`query templates` lists them: {})",
            known.collect::<Vec<_>>().join(", ")
        ),
    )
}

/// `s` with its template's values in the keys it leaves out, and the preset; `key` names the
/// source in errors.
pub fn resolve_source(
    s: &TrafficSourceConfig,
    key: &str,
) -> Result<(TrafficSourceConfig, Option<&'static SourcePreset>), ConfigError> {
    let Some(name) = s.template.as_deref() else {
        return Ok((s.clone(), None));
    };
    let p = source(name).ok_or_else(|| {
        unknown(
            &format!("{key}.template"),
            name,
            sources().iter().map(|p| p.template.as_str()),
        )
    })?;
    let mut out = s.clone();
    if out.name.is_empty() {
        out.name = p.name.clone();
    }
    let mut params = p.params.clone();
    params.extend(s.params.clone());
    out.params = params;
    out.cost_param = s.cost_param.clone().or_else(|| p.cost_param.clone());
    out.external_id_param = s
        .external_id_param
        .clone()
        .or_else(|| p.external_id_param.clone());
    out.postback_url = s.postback_url.clone().or_else(|| p.postback_url.clone());
    out.postback_statuses = s
        .postback_statuses
        .clone()
        .or_else(|| p.postback_statuses.clone());
    Ok((out, Some(p)))
}

/// `n` with its template's values in the keys it leaves out.
pub fn resolve_network(n: &NetworkConfig, key: &str) -> Result<NetworkConfig, ConfigError> {
    let Some(name) = n.template.as_deref() else {
        return Ok(n.clone());
    };
    let p = network(name).ok_or_else(|| {
        unknown(
            &format!("{key}.template"),
            name,
            networks().iter().map(|p| p.template.as_str()),
        )
    })?;
    let mut out = n.clone();
    if out.name.is_empty() {
        out.name = p.name.clone();
    }
    out.click_id_macro = n
        .click_id_macro
        .clone()
        .or_else(|| p.click_id_macro.clone());
    out.payout_macro = n.payout_macro.clone().or_else(|| p.payout_macro.clone());
    out.txid_macro = n.txid_macro.clone().or_else(|| p.txid_macro.clone());
    out.status_macro = n.status_macro.clone().or_else(|| p.status_macro.clone());
    let mut map = p.status_map.clone();
    map.extend(n.status_map.clone());
    out.status_map = map;
    Ok(out)
}

/// The campaign URL to paste into the source: `{edge}/c/{campaign}` with each parameter the
/// source's macro asks for (its preset's; for a source without one, `{name}` stands for
/// whatever the source calls it), the cost and the source's click id included. `s` is resolved.
pub fn campaign_url<'a>(edge: &str, campaign: &str, s: &'a TrafficSourceConfig) -> String {
    let preset = s.template.as_deref().and_then(source);
    let mut wanted: Vec<(&str, String)> = Vec::new();
    let mut push = |param: &'a str, fallback: &str| {
        if wanted.iter().any(|(p, _)| *p == param) {
            return;
        }
        let mac = preset.and_then(|p| p.url_macros.get(param));
        match mac {
            // The source appends it by itself (gclid, fbclid, …).
            Some(m) if m.is_empty() => {}
            Some(m) => wanted.push((param, m.clone())),
            None => wanted.push((param, format!("{{{fallback}}}"))),
        }
    };
    for (name, param) in &s.params {
        push(param, name);
    }
    if let Some(p) = &s.cost_param {
        push(p, "cost");
    }
    if let Some(p) = &s.external_id_param {
        push(p, "external_id");
    }
    let mut url = format!("{}/c/{campaign}", edge.trim_end_matches('/'));
    for (i, (param, mac)) in wanted.iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str(param);
        url.push('=');
        url.push_str(mac);
    }
    url
}

/// The postback URL to paste into the network: its macros for our click id, the payout, the
/// transaction id and the status, and its token. `n` is resolved.
pub fn network_postback_url(edge: &str, n: &NetworkConfig) -> String {
    let click = n.click_id_macro.as_deref().unwrap_or("{aff_sub}");
    let payout = n.payout_macro.as_deref().unwrap_or("{payout}");
    let mut url = format!(
        "{}/postback?cid={click}&payout={payout}",
        edge.trim_end_matches('/')
    );
    if let Some(t) = &n.txid_macro {
        url.push_str(&format!("&txid={t}"));
    }
    if let Some(s) = &n.status_macro {
        url.push_str(&format!("&status={s}"));
    }
    url.push_str(&format!("&network={}", n.id));
    if !n.postback_token.is_empty() {
        url.push_str(&format!("&token={}", n.postback_token));
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::ParamNames;

    #[test]
    fn every_preset_compiles_and_names_its_macros() {
        assert!(sources().len() >= 20, "{}", sources().len());
        assert!(networks().len() >= 10, "{}", networks().len());
        let mut seen = std::collections::BTreeSet::new();
        for p in sources() {
            assert!(seen.insert(p.template.clone()), "{} twice", p.template);
            let cfg = TrafficSourceConfig {
                id: "s".into(),
                template: Some(p.template.clone()),
                ..Default::default()
            };
            let key = format!("template {}", p.template);
            let compiled = crate::compile::source(&key, &cfg, &mut ParamNames::default());
            let compiled = compiled.unwrap_or_else(|e| panic!("{key}: {e}"));
            // Every parameter the campaign URL carries has the source's macro.
            let params = p
                .params
                .values()
                .chain(&p.cost_param)
                .chain(&p.external_id_param);
            for q in params {
                assert!(p.url_macros.contains_key(q), "{key}: no macro for {q}");
            }
            if let Some(url) = &p.postback_url {
                let placeholder = crate::postback::placeholder(url).is_some();
                assert_eq!(compiled.postback.is_some(), !placeholder, "{key}");
                assert!(url.contains("{external_id}"), "{key}: {url}");
            }
            let link = campaign_url(
                "https://t.example",
                "c1",
                &resolve_source(&cfg, "k").unwrap().0,
            );
            assert!(link.starts_with("https://t.example/c/c1"), "{link}");
        }
        for p in networks() {
            let cfg = NetworkConfig {
                id: "n".into(),
                postback_token: "secret-token".into(),
                template: Some(p.template.clone()),
                ..Default::default()
            };
            let key = format!("template {}", p.template);
            crate::compile::network(&key, &cfg, []).unwrap_or_else(|e| panic!("{key}: {e}"));
            let url =
                network_postback_url("https://t.example", &resolve_network(&cfg, "k").unwrap());
            assert!(url.contains("token=secret-token"), "{url}");
        }
    }

    #[test]
    fn a_config_overrides_its_template() {
        let (s, p) = resolve_source(
            &TrafficSourceConfig {
                id: "zp".into(),
                params: BTreeMap::from([("mine".into(), "m".into())]),
                cost_param: Some("price".into()),
                template: Some("ZeroPark".into()),
                postback_url: Some("https://pb.example/?c={external_id}".into()),
                ..Default::default()
            },
            "traffic_sources[0]",
        )
        .unwrap();
        let p = p.unwrap();
        assert_eq!(s.name, p.name);
        assert_eq!(s.cost_param.as_deref(), Some("price"));
        assert_eq!(s.params.get("mine").map(String::as_str), Some("m"));
        assert!(p.params.keys().all(|k| s.params.contains_key(k)));
        assert_eq!(s.external_id_param, p.external_id_param);
        assert_eq!(
            s.postback_url.as_deref(),
            Some("https://pb.example/?c={external_id}")
        );
        let e = resolve_source(
            &TrafficSourceConfig {
                template: Some("nope".into()),
                ..s
            },
            "traffic_sources[0]",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("traffic_sources[0].template") && e.contains("zeropark"),
            "{e}"
        );
    }
}
