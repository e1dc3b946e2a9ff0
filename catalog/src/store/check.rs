//! A change checked against the catalog it applies to, without copying that catalog: every
//! object put is compiled (the same checks as a config file's) against the ids the catalog
//! will have once the change is made; ids deleted must exist and nothing that stays may use
//! them; a replacing change is compiled whole. Errors name the object as `kind/id` and its
//! field (`campaigns/c9.paths[0].offers[0].offer`).

use std::collections::HashSet;

use crate::compile::{self, Resolve};
use crate::file::{CampaignConfig, OfferConfig, PathConfig, Sections};
use crate::key::Key;
use crate::model::{Needs, Network};
use crate::template::ParamNames;
use crate::{Catalog, ConfigError};

use super::{CatalogError, Commit, Kind, State};

/// The ids of one kind a commit touches.
struct Touched<'a> {
    put: HashSet<&'a str>,
    deleted: HashSet<&'a str>,
}

impl<'a> Touched<'a> {
    fn new(c: &'a Commit, kind: Kind) -> Result<Self, CatalogError> {
        let ids: Vec<&str> = match kind {
            Kind::TrafficSources => c.put.traffic_sources.iter().map(|t| &*t.id).collect(),
            Kind::AffiliateNetworks => c.put.affiliate_networks.iter().map(|t| &*t.id).collect(),
            Kind::Offers => c.put.offers.iter().map(|t| &*t.id).collect(),
            Kind::LandingPages => c.put.landing_pages.iter().map(|t| &*t.id).collect(),
            Kind::Campaigns => c.put.campaigns.iter().map(|t| &*t.id).collect(),
        };
        let mut put = HashSet::with_capacity(ids.len());
        for id in ids {
            if !put.insert(id) {
                return Err(CatalogError::Invalid(ConfigError::invalid(
                    format!("{kind}/{id}"),
                    "put twice in one change",
                )));
            }
        }
        let deleted: HashSet<&str> = c.delete.of(kind).iter().map(String::as_str).collect();
        if let Some(id) = put.iter().find(|id| deleted.contains(*id)) {
            return Err(CatalogError::Invalid(ConfigError::invalid(
                format!("{kind}/{id}"),
                "both put and deleted in one change",
            )));
        }
        Ok(Touched { put, deleted })
    }

    /// Whether `id` is in the catalog after the commit, given whether it was before.
    fn after(&self, id: &str, before: bool) -> bool {
        self.put.contains(id) || (before && !self.deleted.contains(id))
    }

    /// Whether the state's object `id` stays untouched by the commit.
    fn untouched(&self, id: &str) -> bool {
        !self.put.contains(id) && !self.deleted.contains(id)
    }
}

/// The ids the catalog has once a commit is made (indexes do not matter here).
struct After<'a> {
    state: &'a State,
    touched: [Touched<'a>; 5],
}

impl After<'_> {
    fn has(&self, kind: Kind, id: &str) -> bool {
        let i = Kind::ALL.iter().position(|&k| k == kind).expect("a kind");
        self.touched[i].after(id, self.state.contains(kind, id))
    }

    fn touched(&self, kind: Kind) -> &Touched<'_> {
        let i = Kind::ALL.iter().position(|&k| k == kind).expect("a kind");
        &self.touched[i]
    }
}

impl Resolve for After<'_> {
    fn source(&self, id: &str) -> Option<u32> {
        self.has(Kind::TrafficSources, id).then_some(0)
    }
    fn network(&self, id: &str) -> Option<u32> {
        self.has(Kind::AffiliateNetworks, id).then_some(0)
    }
    fn offer(&self, id: &str) -> Option<u32> {
        self.has(Kind::Offers, id).then_some(0)
    }
    fn landing_page(&self, id: &str) -> Option<u32> {
        self.has(Kind::LandingPages, id).then_some(0)
    }
    fn offer_needs(&self, _: u32) -> Needs {
        Needs::default()
    }
    fn landing_page_needs(&self, _: u32) -> Needs {
        Needs::default()
    }
}

fn invalid(e: ConfigError) -> CatalogError {
    CatalogError::Invalid(e)
}

/// Checks `c`, the next version after `state`.
pub(super) fn commit(state: &State, c: &Commit) -> Result<(), CatalogError> {
    if c.replace {
        return Catalog::compile(&c.put)
            .map(drop)
            .map_err(|e| invalid(name_object(e, &c.put)));
    }
    let after = After {
        state,
        touched: [
            Touched::new(c, Kind::TrafficSources)?,
            Touched::new(c, Kind::AffiliateNetworks)?,
            Touched::new(c, Kind::Offers)?,
            Touched::new(c, Kind::LandingPages)?,
            Touched::new(c, Kind::Campaigns)?,
        ],
    };
    for kind in Kind::ALL {
        if let Some(id) = c
            .delete
            .of(kind)
            .iter()
            .find(|id| !state.contains(kind, id))
        {
            return Err(CatalogError::NotFound {
                kind,
                id: id.clone(),
            });
        }
    }
    let p = &c.put;
    let mut names = ParamNames::default();
    for s in &p.traffic_sources {
        compile::source(&format!("traffic_sources/{}", s.id), s, &mut names).map_err(invalid)?;
    }
    if !p.affiliate_networks.is_empty() {
        // Tokens are unique among the networks the catalog will have.
        let nets = after.touched(Kind::AffiliateNetworks);
        let mut others: Vec<Network> = Vec::new();
        for n in state.affiliate_networks.values() {
            if nets.untouched(&n.id) {
                others.push(compile::network("", n, &[]).map_err(invalid)?);
            }
        }
        for n in &p.affiliate_networks {
            let compiled = compile::network(&format!("affiliate_networks/{}", n.id), n, &others)
                .map_err(invalid)?;
            others.push(compiled);
        }
    }
    for o in &p.offers {
        compile::offer(&format!("offers/{}", o.id), o, &after, &mut names).map_err(invalid)?;
    }
    for l in &p.landing_pages {
        compile::landing_page(&format!("landing_pages/{}", l.id), l, &mut names)
            .map_err(invalid)?;
    }
    for camp in &p.campaigns {
        let root = format!("campaigns/{}", camp.id);
        compile::campaign(&Key::Root(&root), camp, &after).map_err(invalid)?;
    }
    // What is deleted must not be used by what stays.
    for kind in Kind::ALL {
        for id in c.delete.of(kind) {
            if let Some(by) = referrer(&after, kind, id, p) {
                return Err(CatalogError::Referenced {
                    kind,
                    id: id.clone(),
                    by,
                });
            }
        }
    }
    Ok(())
}

/// What uses `kind`/`id` once the commit is made, as `kind/id (field)`: the state's objects
/// the commit leaves alone, and the objects it puts.
fn referrer(after: &After<'_>, kind: Kind, id: &str, put: &Sections) -> Option<String> {
    let state = after.state;
    let campaigns = || {
        let kept = after.touched(Kind::Campaigns);
        state
            .campaigns
            .values()
            .filter(move |c| kept.untouched(&c.id))
            .chain(&put.campaigns)
    };
    let offers = || {
        let kept = after.touched(Kind::Offers);
        state
            .offers
            .values()
            .filter(move |o| kept.untouched(&o.id))
            .chain(&put.offers)
    };
    match kind {
        Kind::Campaigns => None,
        Kind::TrafficSources => campaigns()
            .find(|c| c.traffic_source == id)
            .map(|c| format!("campaigns/{} (traffic_source)", c.id)),
        Kind::AffiliateNetworks => offers()
            .find(|o: &&OfferConfig| o.network.as_deref() == Some(id))
            .map(|o| format!("offers/{} (network)", o.id)),
        Kind::Offers | Kind::LandingPages => campaigns().find_map(|c| uses(c, kind, id)),
    }
}

/// Where campaign `c` uses offer or landing page `id`, as `campaigns/ID (field)`.
fn uses(c: &CampaignConfig, kind: Kind, id: &str) -> Option<String> {
    let in_paths = |paths: &[PathConfig]| {
        paths.iter().enumerate().find_map(|(i, p)| match kind {
            Kind::LandingPages if p.landing_page.as_deref() == Some(id) => {
                Some(format!("[{i}].landing_page"))
            }
            Kind::Offers => p
                .offers
                .iter()
                .position(|o| o.offer == id)
                .map(|j| format!("[{i}].offers[{j}].offer")),
            _ => None,
        })
    };
    in_paths(&c.paths)
        .map(|f| format!("campaigns/{} (paths{f})", c.id))
        .or_else(|| {
            c.rules.iter().enumerate().find_map(|(r, rule)| {
                in_paths(&rule.paths).map(|f| format!("campaigns/{} (rules[{r}].paths{f})", c.id))
            })
        })
}

/// Rewrites a whole compile's `campaigns[12].paths[0]…` as `campaigns/ID.paths[0]…`: the
/// position in a change means nothing to the user; the id does.
fn name_object(e: ConfigError, s: &Sections) -> ConfigError {
    let ConfigError::Invalid { key, msg } = e else {
        return e;
    };
    let parsed = key.split_once(']').and_then(|(head, rest)| {
        let (section, index) = head.split_once('[')?;
        let i = index.parse::<usize>().ok()?;
        let id = match section {
            "traffic_sources" => s.traffic_sources.get(i).map(|t| &t.id),
            "affiliate_networks" => s.affiliate_networks.get(i).map(|t| &t.id),
            "offers" => s.offers.get(i).map(|t| &t.id),
            "landing_pages" => s.landing_pages.get(i).map(|t| &t.id),
            "campaigns" => s.campaigns.get(i).map(|t| &t.id),
            _ => None,
        }?;
        Some(format!("{section}/{id}{rest}"))
    });
    ConfigError::Invalid {
        key: parsed.unwrap_or(key),
        msg,
    }
}
