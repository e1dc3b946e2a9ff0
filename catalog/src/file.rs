//! The config file as users write it (SPEC.md "Config"): the catalog's sections —
//! `[[traffic_sources]]`, `[[affiliate_networks]]`, `[[offers]]`, `[[landing_pages]]`,
//! `[[campaigns]]` — and a `[server]` table whose type is the reader's (the edge's settings;
//! ignored by a reader that only wants the catalog).
//!
//! These structs only mirror the file, with its defaults; [`crate::Catalog::compile`]
//! validates them. Unknown keys are rejected here, by serde, with the key's name.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// A config file: `[server]` read as `S`, and the catalog.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
#[serde(
    deny_unknown_fields,
    bound(serialize = "S: Serialize + Default + PartialEq")
)]
pub struct File<S = IgnoredAny> {
    #[serde(default, skip_serializing_if = "is_default")]
    pub server: S,
    #[serde(default, skip_serializing_if = "is_default")]
    pub traffic_sources: Vec<TrafficSourceConfig>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub affiliate_networks: Vec<NetworkConfig>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub offers: Vec<OfferConfig>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub landing_pages: Vec<LandingPageConfig>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub campaigns: Vec<CampaignConfig>,
}

/// The `[server]` of a catalog that has none: the store's catalog, an export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NoServer {}

/// The catalog's five sections alone: what the store's catalog holds, what
/// `query catalog export` writes and `import` reads (a `[server]` table is refused).
pub type Sections = File<NoServer>;

fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

impl<S> File<S> {
    /// The catalog's sections alone (what the store's catalog holds), its `[server]` left.
    pub fn into_sections(self) -> Sections {
        Sections {
            server: NoServer {},
            traffic_sources: self.traffic_sources,
            affiliate_networks: self.affiliate_networks,
            offers: self.offers,
            landing_pages: self.landing_pages,
            campaigns: self.campaigns,
        }
    }
}

impl<S: DeserializeOwned + Default> File<S> {
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string().trim_end().to_owned()))
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse(msg) => ConfigError::Parse(format!("{}: {msg}", path.display())),
            other => other,
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct TrafficSourceConfig {
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Remapped name (`source`, `var_2`, …) → the query parameter that carries it.
    #[serde(default, skip_serializing_if = "is_default")]
    pub params: BTreeMap<String, String>,
    /// Query parameter carrying the click's cost, overriding the campaign's CPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_param: Option<String>,
    /// A built-in preset (`zeropark`, `propellerads`, …: [`crate::presets`]) whose values the
    /// keys left out take; `params` adds to the preset's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The query parameter holding the source's own click id, which its postback needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id_param: Option<String>,
    /// The source's conversion postback, a URL template (`{external_id}`, `{payout}`, …:
    /// [`crate::postback`]). Without one, the source is told nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postback_url: Option<String>,
    /// Which canonical statuses fire the postback (default `["lead", "sale"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postback_statuses: Option<Vec<String>>,
    /// Which conversion types fire it (`type=`; empty: every type).
    #[serde(default, skip_serializing_if = "is_default")]
    pub postback_types: Vec<String>,
    /// The share of the payout the source is told (0..1, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postback_payout_share: Option<f64>,
    /// The share of conversions the source is told about (0..1, default 1), chosen by a hash
    /// of the conversion so a retry or a rerun chooses the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postback_send_share: Option<f64>,
    /// Tell the source about a click's first conversion only (no upsells).
    #[serde(default, skip_serializing_if = "is_default")]
    pub postback_first_only: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// When set, postbacks for this network must carry `?token=<value>` to count.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub postback_token: String,
    /// Whether pixel conversions of this network's clicks count: `off`, `default_payout`
    /// (they count with the offer's payout) or `payout` (with their own). Default: `off`
    /// for a network with a postback token, `payout` for one without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixels: Option<String>,
    /// How the network writes the click id it was given in its postback URL (its macro; the
    /// seed's networks: `{aff_sub}`). Only for the postback URL the console shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub click_id_macro: Option<String>,
    /// The network's macro for the payout (default `{payout}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payout_macro: Option<String>,
    /// What the network sends as `status` → a canonical status (`lead`, `sale`, `pending` or
    /// `hold`, `rejected`, `chargeback`, `rebill`), compared without case: `{ "1" = "sale" }`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub status_map: BTreeMap<String, String>,
    /// How repeated reports of one conversion count: `once`, `every`, `replace` (the
    /// default) or `add`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<String>,
    /// A built-in preset (`everflow`, `cake`, …: [`crate::presets`]) whose macros and status
    /// map the keys left out take; `status_map` adds to the preset's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The network's macro for its transaction id, and for its status (for the postback
    /// URL the console prints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txid_macro: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_macro: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OfferConfig {
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The offer's URL; or, instead, its `links`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// Used when a conversion carries no payout.
    #[serde(default)]
    pub payout: f64,
    /// Several URLs for one offer (its pages, or the network's tracking links), one chosen by
    /// weight for each visitor sent to the offer; instead of `url`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub links: Vec<OfferLinkConfig>,
}

/// One of an offer's links.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OfferLinkConfig {
    /// Unique within its offer; stored with each visit sent to the link.
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub url: String,
    #[serde(default = "one")]
    pub weight: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LandingPageConfig {
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub url: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CampaignConfig {
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub traffic_source: String,
    /// What the campaign pays, by `cost_model`: per visit (CPC, unless the traffic source's
    /// `cost_param` overrides it), per thousand visits (CPM), per conversion (CPA), or a
    /// share of the revenue (RevShare, 0..1).
    #[serde(default)]
    pub cost: f64,
    /// `cpc` (the default), `cpm`, `cpa` or `revshare`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_model: Option<String>,
    /// A label to group campaigns by (`REFERRAL`, `push`, …), shown in the conversion feed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub paths: Vec<PathConfig>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PathConfig {
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landing_page: Option<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub offers: Vec<OfferRefConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OfferRefConfig {
    pub offer: String,
    #[serde(default = "one")]
    pub weight: u32,
}

/// A routing rule: values within a condition are OR, conditions are AND.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(default, skip_serializing_if = "is_default")]
    pub countries: Vec<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub devices: Vec<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub os: Vec<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub browsers: Vec<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub languages: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot: Option<bool>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub paths: Vec<PathConfig>,
}

fn one() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let e =
            File::<IgnoredAny>::parse("[[offers]]\nid = \"o\"\nurl = \"http://a/\"\npayuot = 1\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("payuot"), "{e}");
        let e = File::<IgnoredAny>::parse("[[campaign]]\nid = \"c\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("campaign"), "{e}");
    }

    #[test]
    fn a_server_table_is_skipped_by_a_catalog_reader() {
        let f = File::<IgnoredAny>::parse(
            "[server]\nlisten = \"127.0.0.1:1\"\nanything = [1, 2]\n[[landing_pages]]\nid = \"lp\"\nurl = \"https://lp.example/\"\n",
        )
        .unwrap();
        assert_eq!(f.landing_pages.len(), 1);
        assert_eq!(f.landing_pages[0].id, "lp");
    }
}
