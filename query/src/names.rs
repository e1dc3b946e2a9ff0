//! What the event tables do not hold but a report reader wants: the names of campaigns,
//! sources, networks, offers and landing pages, the offers' default payouts (as they were over
//! time) and the remapped names — from the catalog the store keeps, or from the edge's config
//! file (`--config`). Without either, ids stand alone.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use catalog::lifecycle::Lifecycle;
use catalog::model::ConversionCost;
use catalog::{Catalog, File};
use serde::de::IgnoredAny;

use crate::Result;
use crate::dims::Dimension;

/// Names and defaults from a config file.
#[derive(Debug, Default, Clone)]
pub struct Names {
    campaigns: HashMap<String, String>,
    traffic_sources: HashMap<String, String>,
    networks: HashMap<String, String>,
    offers: HashMap<String, String>,
    /// (offer id, link id) → the link's name, for links with one.
    offer_links: HashMap<(String, String), String>,
    landing_pages: HashMap<String, String>,
    /// Offer id → the payout in micro-units a conversion without one earns, from a time on
    /// (Unix ms; oldest first; a config file's has one, from 0).
    pub default_payouts: Vec<(String, Vec<(u64, i64)>)>,
    /// Every remapped name any traffic source defines.
    pub remapped: BTreeSet<String>,
    /// Each network's statuses and duplicate policy (those with the defaults left out).
    pub lifecycles: Vec<(String, Lifecycle)>,
    /// What campaigns with a CPA or RevShare cost model pay per conversion (as the catalog
    /// is now).
    pub conversion_costs: Vec<(String, ConversionCost)>,
    /// Each campaign's category, where it has one.
    categories: HashMap<String, String>,
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
            offer_links: cat
                .offers
                .iter()
                .flat_map(|o| {
                    o.links
                        .items()
                        .iter()
                        .filter(|l| !l.name.is_empty())
                        .map(|l| ((o.id.to_string(), l.id.to_string()), l.name.to_string()))
                })
                .collect(),
            landing_pages: pairs(&mut cat.landing_pages.iter().map(|l| (&*l.id, &*l.name))),
            default_payouts: cat
                .offers
                .iter()
                .filter(|o| o.payout_micros > 0)
                .map(|o| (o.id.to_string(), vec![(0, o.payout_micros)]))
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
            categories: cat
                .campaigns
                .iter()
                .filter_map(|c| Some((c.id.to_string(), c.category.as_deref()?.to_owned())))
                .collect(),
            conversion_costs: cat
                .campaigns
                .iter()
                .filter_map(|c| Some((c.id.to_string(), c.conversion_cost?)))
                .collect(),
            lifecycles: cat
                .networks
                .iter()
                .filter(|n| n.lifecycle != Lifecycle::default())
                .map(|n| (n.id.to_string(), n.lifecycle.clone()))
                .collect(),
        }
    }

    pub fn campaign(&self, id: &str) -> Option<&str> {
        self.campaigns.get(id).map(String::as_str)
    }
    /// The category of campaign `id`.
    pub fn category(&self, id: &str) -> Option<&str> {
        self.categories.get(id).map(String::as_str)
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
    /// The name of link `link` of offer `offer`.
    pub fn offer_link(&self, offer: &str, link: &str) -> Option<&str> {
        self.offer_links
            .get(&(offer.to_owned(), link.to_owned()))
            .map(String::as_str)
    }
    pub fn landing_page(&self, id: &str) -> Option<&str> {
        self.landing_pages.get(id).map(String::as_str)
    }

    /// Whether values of `d` are catalog ids with names.
    pub fn has_names(&self, d: &Dimension) -> bool {
        matches!(
            d,
            Dimension::Campaign
                | Dimension::TrafficSource
                | Dimension::Network
                | Dimension::Offer
                | Dimension::OfferLink
                | Dimension::LandingPage
        )
    }

    /// The name of `id`, a value of dimension `d`; none when it has none (or is empty).
    pub fn name_of(&self, d: &Dimension, id: &str) -> Option<&str> {
        match d {
            Dimension::Campaign => self.campaign(id),
            Dimension::TrafficSource => self.traffic_source(id),
            Dimension::Network => self.network(id),
            Dimension::Offer => self.offer(id),
            Dimension::OfferLink => id
                .split_once('/')
                .and_then(|(offer, link)| self.offer_link(offer, link)),
            Dimension::LandingPage => self.landing_page(id),
            _ => None,
        }
        .filter(|n| !n.is_empty())
    }

    /// SQL expression giving the default payout (micro-units) of the offer in `offer_column`
    /// for the conversion whose event id (24 hex digits) is `id_expr`: the payout in force when
    /// the conversion arrived (an id's first 12 hex digits are its time, so ids compare as
    /// times do).
    pub fn default_payout_sql(&self, offer_column: &str, id_expr: &str) -> String {
        if self.default_payouts.is_empty() {
            return "0".to_owned();
        }
        if self.default_payouts.iter().all(|(_, h)| h.len() == 1) {
            let mut s = format!("CASE {offer_column}");
            for (id, history) in &self.default_payouts {
                s.push_str(&format!(
                    " WHEN {} THEN {}",
                    crate::sql_literal(id),
                    history[0].1
                ));
            }
            s.push_str(" ELSE 0 END");
            return s;
        }
        let mut s = "CASE".to_owned();
        for (id, history) in &self.default_payouts {
            let offer = crate::sql_literal(id);
            for (i, &(since_ms, micros)) in history.iter().enumerate().rev() {
                if i == 0 {
                    s.push_str(&format!(" WHEN {offer_column} = {offer} THEN {micros}"));
                } else {
                    s.push_str(&format!(
                        " WHEN {offer_column} = {offer} AND {id_expr} >= '{since_ms:012x}' THEN {micros}"
                    ));
                }
            }
        }
        s.push_str(" ELSE 0 END");
        s
    }

    /// The default payout of `offer` for the conversion with event id `id` (hex).
    pub fn default_payout(&self, offer: &str, id: &str) -> i64 {
        let Some((_, history)) = self.default_payouts.iter().find(|(o, _)| o == offer) else {
            return 0;
        };
        history
            .iter()
            .rev()
            .find(|&&(since_ms, _)| since_ms == 0 || *id >= *format!("{since_ms:012x}"))
            .or(history.first())
            .map_or(0, |&(_, p)| p)
    }

    /// SQL for what a conversion costs its campaign (`campaign`, a column) beyond its visit,
    /// given its count `n` and revenue `revenue` (micro-units): CPA and RevShare campaigns'.
    pub fn conversion_cost_sql(&self, campaign: &str, n: &str, revenue: &str) -> String {
        if self.conversion_costs.is_empty() {
            return "0".to_owned();
        }
        let mut s = format!("CASE {campaign}");
        for (id, cost) in &self.conversion_costs {
            let then = match cost {
                ConversionCost::Cpa(micros) => format!("{n} * {micros}"),
                ConversionCost::RevShare(ppm) => format!("{revenue} * {ppm} / 1000000"),
            };
            s.push_str(&format!(" WHEN {} THEN {then}", crate::sql_literal(id)));
        }
        s.push_str(" ELSE 0 END");
        s
    }

    /// Names and payout histories from the catalog the store keeps; `None` when the store
    /// holds no catalog.
    pub fn from_store(state: &catalog::store::State) -> Result<Option<Self>> {
        if state.version == 0 {
            return Ok(None);
        }
        // Read straight from the state (its writers checked every object): a million
        // campaigns' names are a map insert each, not a compile.
        let pairs = |it: &mut dyn Iterator<Item = (&String, &String)>| {
            it.map(|(id, name)| (id.clone(), name.clone())).collect()
        };
        let mut names = Names {
            campaigns: pairs(&mut state.campaigns.iter().map(|(id, c)| (id, &c.name))),
            traffic_sources: pairs(&mut state.traffic_sources.iter().map(|(id, t)| (id, &t.name))),
            networks: pairs(&mut state.affiliate_networks.iter().map(|(id, n)| (id, &n.name))),
            offers: pairs(&mut state.offers.iter().map(|(id, o)| (id, &o.name))),
            offer_links: state
                .offers
                .iter()
                .flat_map(|(id, o)| {
                    o.links
                        .iter()
                        .filter(|l| !l.name.is_empty())
                        .map(|l| ((id.clone(), l.id.clone()), l.name.clone()))
                })
                .collect(),
            landing_pages: pairs(&mut state.landing_pages.iter().map(|(id, l)| (id, &l.name))),
            default_payouts: Vec::new(),
            remapped: state
                .traffic_sources
                .values()
                .flat_map(|t| t.params.keys().cloned())
                .collect(),
            lifecycles: Vec::new(),
            conversion_costs: Vec::new(),
            categories: state
                .campaigns
                .iter()
                .filter_map(|(id, c)| {
                    let cat = c.category.as_deref()?.trim();
                    (!cat.is_empty()).then(|| (id.clone(), cat.to_owned()))
                })
                .collect(),
        };
        for (id, c) in &state.campaigns {
            if c.cost_model.is_some() {
                let (_, cost) = ConversionCost::of(
                    c.cost_model.as_deref(),
                    c.cost,
                    &format!("campaigns/{id}"),
                )?;
                if let Some(cost) = cost {
                    names.conversion_costs.push((id.clone(), cost));
                }
            }
        }
        for (id, n) in &state.affiliate_networks {
            let l = Lifecycle::compile(
                &format!("affiliate_networks/{id}"),
                &n.status_map,
                n.duplicates.as_deref(),
            )?;
            if l != Lifecycle::default() {
                names.lifecycles.push((id.clone(), l));
            }
        }
        // Deleted objects keep their names for the events they left.
        for (key, name) in &state.retired {
            let Some((kind, id)) = key.split_once('/') else {
                continue;
            };
            let map = match kind {
                "campaigns" => &mut names.campaigns,
                "traffic_sources" => &mut names.traffic_sources,
                "affiliate_networks" => &mut names.networks,
                "offers" => &mut names.offers,
                "landing_pages" => &mut names.landing_pages,
                _ => continue,
            };
            map.entry(id.to_owned()).or_insert_with(|| name.clone());
        }
        names.default_payouts = state
            .payouts
            .iter()
            .map(|(id, history)| {
                let h = history
                    .iter()
                    .map(|p| {
                        Ok((
                            p.since_ms,
                            catalog::money::micros(p.payout, format_args!("offers/{id}.payout"))?,
                        ))
                    })
                    .collect::<std::result::Result<Vec<_>, catalog::ConfigError>>()?;
                Ok((id.clone(), h))
            })
            .collect::<Result<Vec<_>>>()?;
        names
            .default_payouts
            .retain(|(_, h)| h.iter().any(|&(_, p)| p != 0));
        Ok(Some(names))
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
            n.default_payout_sql("offer_id", "event_id"),
            "CASE offer_id WHEN 'o1' THEN 2500000 ELSE 0 END"
        );
        let e = Names::parse("[[campaigns]]\nid = \"c\"\ntraffic_source = \"nope\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("campaigns[0].traffic_source"), "{e}");
    }
}
