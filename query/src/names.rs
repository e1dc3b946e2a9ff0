//! What the store does not hold but a report reader wants: the names of campaigns, sources,
//! networks, offers and landing pages, the offers' default payouts and the remapped names,
//! taken from the edge's config file (`--config`). Without one, ids stand alone.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use edge::config::ConfigFile;

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
    /// Reads and checks `path` as the edge would (a file the edge refuses is refused here).
    pub fn load(path: &Path) -> Result<Self> {
        let cfg = ConfigFile::load(path)?;
        edge::table::Table::compile(&cfg)?;
        Ok(Self::from_config(&cfg))
    }

    pub fn from_config(cfg: &ConfigFile) -> Self {
        let pairs = |it: &mut dyn Iterator<Item = (&String, &String)>| {
            it.map(|(id, name)| (id.clone(), name.clone())).collect()
        };
        Names {
            campaigns: pairs(&mut cfg.campaigns.iter().map(|c| (&c.id, &c.name))),
            traffic_sources: pairs(&mut cfg.traffic_sources.iter().map(|t| (&t.id, &t.name))),
            networks: pairs(&mut cfg.affiliate_networks.iter().map(|n| (&n.id, &n.name))),
            offers: pairs(&mut cfg.offers.iter().map(|o| (&o.id, &o.name))),
            landing_pages: pairs(&mut cfg.landing_pages.iter().map(|l| (&l.id, &l.name))),
            default_payouts: cfg
                .offers
                .iter()
                .filter(|o| o.payout > 0.0)
                .map(|o| (o.id.clone(), (o.payout * 1e6).round() as i64))
                .collect(),
            remapped: cfg
                .traffic_sources
                .iter()
                .flat_map(|t| t.params.keys().cloned())
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
            // Offer ids are checked by the edge to be URL-safe characters only.
            s.push_str(&format!(" WHEN '{id}' THEN {micros}"));
        }
        s.push_str(" ELSE 0 END");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_config_gives_names_payouts_and_remapped_names() {
        let cfg = ConfigFile::parse(edge::config::DEMO_CONFIG).unwrap();
        let n = Names::from_config(&cfg);
        let c = &cfg.campaigns[0];
        assert_eq!(n.campaign(&c.id), Some(c.name.as_str()));
        assert!(!n.remapped.is_empty());
        assert_eq!(n.campaign("nope"), None);
        let sql = n.default_payout_sql("offer_id");
        assert!(
            sql == "0" || sql.starts_with("CASE offer_id WHEN '"),
            "{sql}"
        );
    }
}
