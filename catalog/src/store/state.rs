//! The catalog as of a version, each kind by id: what a writer checks a change against and
//! what `query` reads names and payout histories from.

use std::collections::BTreeMap;

use crate::file::{
    CampaignConfig, LandingPageConfig, NetworkConfig, OfferConfig, Sections, TrafficSourceConfig,
};

use super::{CatalogError, Change, Checkpoint, Commit, Kind, PayoutSince, check};

/// The catalog as of a version, each kind by id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    pub version: u64,
    pub ts_ms: u64,
    pub traffic_sources: BTreeMap<String, TrafficSourceConfig>,
    pub affiliate_networks: BTreeMap<String, NetworkConfig>,
    pub offers: BTreeMap<String, OfferConfig>,
    pub landing_pages: BTreeMap<String, LandingPageConfig>,
    pub campaigns: BTreeMap<String, CampaignConfig>,
    pub payouts: BTreeMap<String, Vec<PayoutSince>>,
    /// The names of deleted objects, by `kind/id` (see [`Checkpoint::retired`]).
    pub retired: BTreeMap<String, String>,
}

fn by_id<T: Clone>(items: &[T], id: impl Fn(&T) -> &str) -> BTreeMap<String, T> {
    items
        .iter()
        .map(|t| (id(t).to_owned(), t.clone()))
        .collect()
}

impl State {
    pub fn from_checkpoint(cp: Checkpoint) -> State {
        let c = &cp.catalog;
        State {
            version: cp.version,
            ts_ms: cp.ts_ms,
            traffic_sources: by_id(&c.traffic_sources, |t| &t.id),
            affiliate_networks: by_id(&c.affiliate_networks, |t| &t.id),
            offers: by_id(&c.offers, |t| &t.id),
            landing_pages: by_id(&c.landing_pages, |t| &t.id),
            campaigns: by_id(&c.campaigns, |t| &t.id),
            payouts: cp.payouts,
            retired: cp.retired,
        }
    }

    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            version: self.version,
            ts_ms: self.ts_ms,
            catalog: self.sections(),
            payouts: self.payouts.clone(),
            retired: self.retired.clone(),
        }
    }

    /// The catalog as a config file's sections, each in id order.
    pub fn sections(&self) -> Sections {
        Sections {
            server: Default::default(),
            traffic_sources: self.traffic_sources.values().cloned().collect(),
            affiliate_networks: self.affiliate_networks.values().cloned().collect(),
            offers: self.offers.values().cloned().collect(),
            landing_pages: self.landing_pages.values().cloned().collect(),
            campaigns: self.campaigns.values().cloned().collect(),
        }
    }

    pub fn contains(&self, kind: Kind, id: &str) -> bool {
        match kind {
            Kind::TrafficSources => self.traffic_sources.contains_key(id),
            Kind::AffiliateNetworks => self.affiliate_networks.contains_key(id),
            Kind::Offers => self.offers.contains_key(id),
            Kind::LandingPages => self.landing_pages.contains_key(id),
            Kind::Campaigns => self.campaigns.contains_key(id),
        }
    }

    /// Up to `n` ids of `kind` after `after` (`""`: from the first), in id order.
    pub fn ids_after(&self, kind: Kind, after: &str, n: usize) -> Vec<&String> {
        fn page<'a, T>(m: &'a BTreeMap<String, T>, after: &str, n: usize) -> Vec<&'a String> {
            use std::ops::Bound::{Excluded, Unbounded};
            m.range::<str, _>((Excluded(after), Unbounded))
                .map(|(k, _)| k)
                .take(n)
                .collect()
        }
        match kind {
            Kind::TrafficSources => page(&self.traffic_sources, after, n),
            Kind::AffiliateNetworks => page(&self.affiliate_networks, after, n),
            Kind::Offers => page(&self.offers, after, n),
            Kind::LandingPages => page(&self.landing_pages, after, n),
            Kind::Campaigns => page(&self.campaigns, after, n),
        }
    }

    pub fn len(&self, kind: Kind) -> usize {
        match kind {
            Kind::TrafficSources => self.traffic_sources.len(),
            Kind::AffiliateNetworks => self.affiliate_networks.len(),
            Kind::Offers => self.offers.len(),
            Kind::LandingPages => self.landing_pages.len(),
            Kind::Campaigns => self.campaigns.len(),
        }
    }

    /// Applies `c`, the next version (the caller checks the number).
    pub fn apply(&mut self, c: &Commit) {
        fn retire<T>(
            retired: &mut BTreeMap<String, String>,
            kind: Kind,
            map: &mut BTreeMap<String, T>,
            id: &str,
            name: impl Fn(&T) -> &str,
        ) {
            if let Some(t) = map.remove(id) {
                retired.insert(format!("{kind}/{id}"), name(&t).to_owned());
            }
        }
        let p = &c.put;
        let put_ids = |kind: Kind| -> Vec<&str> {
            match kind {
                Kind::TrafficSources => p.traffic_sources.iter().map(|t| t.id.as_str()).collect(),
                Kind::AffiliateNetworks => {
                    p.affiliate_networks.iter().map(|t| t.id.as_str()).collect()
                }
                Kind::Offers => p.offers.iter().map(|t| t.id.as_str()).collect(),
                Kind::LandingPages => p.landing_pages.iter().map(|t| t.id.as_str()).collect(),
                Kind::Campaigns => p.campaigns.iter().map(|t| t.id.as_str()).collect(),
            }
        };
        // What goes: the ids deleted, or for a replacing commit every id it does not put.
        let mut deleted: Vec<(Kind, String)> = Vec::new();
        for kind in Kind::ALL {
            if c.replace {
                let kept: std::collections::HashSet<&str> = put_ids(kind).into_iter().collect();
                let live = self.ids_after(kind, "", usize::MAX);
                deleted.extend(
                    live.into_iter()
                        .filter(|id| !kept.contains(id.as_str()))
                        .map(|id| (kind, id.clone())),
                );
            } else {
                deleted.extend(c.delete.of(kind).iter().map(|id| (kind, id.clone())));
            }
        }
        let r = &mut self.retired;
        for (kind, id) in &deleted {
            match kind {
                Kind::TrafficSources => {
                    retire(r, *kind, &mut self.traffic_sources, id, |t| &t.name)
                }
                Kind::AffiliateNetworks => {
                    retire(r, *kind, &mut self.affiliate_networks, id, |t| &t.name)
                }
                Kind::Offers => retire(r, *kind, &mut self.offers, id, |t| &t.name),
                Kind::LandingPages => retire(r, *kind, &mut self.landing_pages, id, |t| &t.name),
                Kind::Campaigns => retire(r, *kind, &mut self.campaigns, id, |t| &t.name),
            }
        }
        if !self.retired.is_empty() {
            for kind in Kind::ALL {
                for id in put_ids(kind) {
                    self.retired.remove(&format!("{kind}/{id}"));
                }
            }
        }
        self.traffic_sources
            .extend(p.traffic_sources.iter().map(|t| (t.id.clone(), t.clone())));
        self.affiliate_networks.extend(
            p.affiliate_networks
                .iter()
                .map(|t| (t.id.clone(), t.clone())),
        );
        for o in &p.offers {
            let history = self.payouts.entry(o.id.clone()).or_default();
            if history.last().is_none_or(|h| h.payout != o.payout) {
                // Writers' clocks may disagree: the history stays in order whatever they say.
                let since_ms = history.last().map_or(c.ts_ms, |h| h.since_ms.max(c.ts_ms));
                history.push(PayoutSince {
                    since_ms,
                    payout: o.payout,
                });
            }
        }
        self.offers
            .extend(p.offers.iter().map(|t| (t.id.clone(), t.clone())));
        self.landing_pages
            .extend(p.landing_pages.iter().map(|t| (t.id.clone(), t.clone())));
        self.campaigns
            .extend(p.campaigns.iter().map(|t| (t.id.clone(), t.clone())));
        self.version = c.version;
        self.ts_ms = c.ts_ms;
    }

    /// Checks `change` against this state and returns the commit that makes it the next
    /// version: each object put is compiled against the ids the
    /// catalog will have, deleting something absent or still used is refused, and a
    /// replacing change is compiled whole. Nothing is copied: a change to one campaign among
    /// a million costs that campaign's compile and, for a delete, one scan of what could use
    /// the object deleted.
    pub fn prepare(&self, change: Change, by: &str, ts_ms: u64) -> Result<Commit, CatalogError> {
        let commit = Commit {
            version: self.version + 1,
            ts_ms,
            by: by.to_owned(),
            replace: change.replace,
            put: change.put,
            delete: change.delete,
        };
        check::commit(self, &commit)?;
        Ok(commit)
    }
}
