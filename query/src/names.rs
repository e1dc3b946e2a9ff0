//! What the store does not hold but a report reader wants: the names of campaigns, sources,
//! networks, offers and landing pages, the offers' default payouts and the remapped names,
//! taken from the edge's config file (`--config`). Without one, ids stand alone.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use catalog::{Catalog, File};
use serde::de::IgnoredAny;

use crate::Result;

/// Names and defaults from a config file.
#[derive(Debug, Default, Clone)]
pub struct Names {
    campaigns: HashMap<String, String>,
    traffic_sources: HashMap<String, String>,
    networks: HashMap<String, String>,
    offers: HashMap<String, String>,
    landing_pages: HashMap<String, String>,
    /// Offer id → payout in micro-units used when a conversion carries none.
    pub default_payouts: Vec<(String, i64)>,
    /// Every remapped name any traffic source defines.
    pub remapped: BTreeSet<String>,
}

impl Names {
    /// Reads and checks the catalog in the config file at `path` with the catalog's own
    /// validation (`[server]` is the edge's and is skipped, so are the checks that depend on
    /// it, such as an offer's payout above `server.max_payout`).
    pub fn load(path: &Path) -> Result<Self> {
        Ok(Self::from_catalog(&Catalog::compile(
            &File::<IgnoredAny>::load(path)?,
        )?))
    }

    /// As [`Names::load`], from the file's text.
    pub fn parse(text: &str) -> Result<Self> {
        Ok(Self::from_catalog(&Catalog::compile(
            &File::<IgnoredAny>::parse(text)?,
        )?))
    }

    pub fn from_catalog(cat: &Catalog) -> Self {
        let pairs = |it: &mut dyn Iterator<Item = (&str, &str)>| {
            it.map(|(id, name)| (id.to_owned(), name.to_owned()))
                .collect()
        };
        Names {
            campaigns: pairs(&mut cat.campaigns.iter().map(|c| (&*c.id, &*c.name))),
            traffic_sources: pairs(&mut cat.sources.iter().map(|t| (&*t.id, &*t.name))),
            networks: pairs(&mut cat.networks.iter().map(|n| (&*n.id, &*n.name))),
            offers: pairs(&mut cat.offers.iter().map(|o| (&*o.id, &*o.name))),
            landing_pages: pairs(&mut cat.landing_pages.iter().map(|l| (&*l.id, &*l.name))),
            default_payouts: cat
                .offers
                .iter()
                .filter(|o| o.payout_micros > 0)
                .map(|o| (o.id.to_string(), o.payout_micros))
                .collect(),
            remapped: cat
                .sources
                .iter()
                .flat_map(|t| {
                    t.params
                        .iter()
                        .map(|&(name, _)| cat.params.name(name).to_owned())
                })
                .collect(),
        }
    }

    pub fn campaign(&self, id: &str) -> Option<&str> {
        self.campaigns.get(id).map(String::as_str)
    }
    pub fn traffic_source(&self, id: &str) -> Option<&str> {
        self.traffic_sources.get(id).map(String::as_str)
    }
    pub fn network(&self, id: &str) -> Option<&str> {
        self.networks.get(id).map(String::as_str)
    }
    pub fn offer(&self, id: &str) -> Option<&str> {
        self.offers.get(id).map(String::as_str)
    }
    pub fn landing_page(&self, id: &str) -> Option<&str> {
        self.landing_pages.get(id).map(String::as_str)
    }

    /// SQL expression giving the default payout (micro-units) of the offer in `offer_column`.
    pub fn default_payout_sql(&self, offer_column: &str) -> String {
        if self.default_payouts.is_empty() {
            return "0".to_owned();
        }
        let mut s = format!("CASE {offer_column}");
        for (id, micros) in &self.default_payouts {
            s.push_str(&format!(" WHEN {} THEN {micros}", crate::sql_literal(id)));
        }
        s.push_str(" ELSE 0 END");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_gives_names_payouts_and_remapped_names() {
        let n = Names::parse(
            r#"
[server]
listen = "127.0.0.1:9"

[[traffic_sources]]
id = "ts"
name = "Push source"
params = { zone = "zoneid" }

[[offers]]
id = "o1"
name = "Offer one"
url = "https://offers.example/?s={click_id}"
payout = 2.5

[[campaigns]]
id = "c1"
name = "Campaign one"
traffic_source = "ts"
  [[campaigns.paths]]
  offers = [ { offer = "o1" } ]
"#,
        )
        .unwrap();
        assert_eq!(n.campaign("c1"), Some("Campaign one"));
        assert_eq!(n.traffic_source("ts"), Some("Push source"));
        assert_eq!(n.campaign("nope"), None);
        assert_eq!(n.remapped.iter().collect::<Vec<_>>(), ["zone"]);
        assert_eq!(
            n.default_payout_sql("offer_id"),
            "CASE offer_id WHEN 'o1' THEN 2500000 ELSE 0 END"
        );
        let e = Names::parse("[[campaigns]]\nid = \"c\"\ntraffic_source = \"nope\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("campaigns[0].traffic_source"), "{e}");
    }
}
