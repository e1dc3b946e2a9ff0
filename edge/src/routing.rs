//! The routing: what the request path looks campaigns, offers and networks up in — the
//! validated [`Catalog`] with what the edge adds: campaigns indexed by id, `[server]`'s
//! fallback URL and money limits, and the postback token check. Immutable; the workers read
//! it without locks, and a reload or a change of the store's catalog swaps it whole.
//!
//! A change ([`Routing::apply`], in `apply.rs`) compiles only the objects it names and
//! shares everything else with the routing it came from: objects keep their index for life
//! ([`Slots`]), and campaigns live in [`SHARDS`] maps of which a change copies only those it
//! touches. One campaign changed among a million costs the copy of one shard, not a rebuild.

use std::sync::Arc;

use ahash::AHashMap;
use catalog::model::{Campaign, LandingPage, Network, Offer, TrafficSource};
use catalog::money::micros;
use catalog::template::{ParamNames, Template};
use catalog::{Catalog, ConfigError};
use sink::model::event::Auth;

use crate::config::{ConfigFile, ServerConfig};
use sink::model::ct_eq;

mod apply;

/// Why a postback's token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    UnknownNetwork,
    BadToken,
}

/// Objects of one kind at stable indexes: an object keeps its index for as long as it
/// lives, so what refers to it by index (a campaign's offers, an offer's network) stays
/// valid when others change. A deleted object leaves the id map and its slot goes to the
/// next object created (the catalog refuses to delete what is still used, so nothing refers
/// to a free slot): however long an edge follows a churning catalog, it holds no more slots
/// than objects have lived at once.
#[derive(Debug)]
pub struct Slots<T> {
    items: Arc<Vec<Arc<T>>>,
    ids: Arc<AHashMap<Box<str>, u32>>,
    free: Arc<Vec<u32>>,
}

impl<T> Clone for Slots<T> {
    fn clone(&self) -> Self {
        Slots {
            items: Arc::clone(&self.items),
            ids: Arc::clone(&self.ids),
            free: Arc::clone(&self.free),
        }
    }
}

impl<T> std::ops::Index<usize> for Slots<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        &self.items[i]
    }
}

impl<T> Slots<T> {
    fn new(items: Vec<T>, id: impl Fn(&T) -> &str) -> Self {
        let ids = items
            .iter()
            .enumerate()
            .map(|(i, t)| (id(t).into(), i as u32))
            .collect();
        Slots {
            items: Arc::new(items.into_iter().map(Arc::new).collect()),
            ids: Arc::new(ids),
            free: Arc::new(Vec::new()),
        }
    }

    /// The index of the live object `id`.
    pub fn index_of(&self, id: &str) -> Option<u32> {
        self.ids.get(id).copied()
    }

    pub fn by_id(&self, id: &str) -> Option<&T> {
        self.index_of(id).map(|i| &*self.items[i as usize])
    }

    /// Live objects.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Live objects, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.ids.values().map(|&i| &*self.items[i as usize])
    }

    /// Puts `item` as `id`: in its slot when it lives, else in a free one or a new one.
    fn put(&mut self, id: &str, item: T) -> u32 {
        let items = Arc::make_mut(&mut self.items);
        match self.ids.get(id) {
            Some(&i) => {
                items[i as usize] = Arc::new(item);
                i
            }
            None => {
                let i = match Arc::make_mut(&mut self.free).pop() {
                    Some(i) => {
                        items[i as usize] = Arc::new(item);
                        i
                    }
                    None => {
                        items.push(Arc::new(item));
                        (items.len() - 1) as u32
                    }
                };
                Arc::make_mut(&mut self.ids).insert(id.into(), i);
                i
            }
        }
    }

    fn remove(&mut self, id: &str) {
        if let Some(i) = Arc::make_mut(&mut self.ids).remove(id) {
            Arc::make_mut(&mut self.free).push(i);
        }
    }

    /// Slots held, live or free.
    pub fn slots(&self) -> usize {
        self.items.len()
    }
}

/// Campaign maps: a campaign's shard is fixed by its id.
pub const SHARDS: usize = 256;

type Shard = AHashMap<Box<[u8]>, Arc<Campaign>>;

/// Fixed keys: a campaign stays in its shard from one routing to the next.
const SHARD_HASH: ahash::RandomState = ahash::RandomState::with_seeds(
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
);

fn shard_of(id: &[u8]) -> usize {
    (SHARD_HASH.hash_one(id) >> 56) as usize % SHARDS
}

/// The campaigns by id, in [`SHARDS`] maps shared between routings until changed.
#[derive(Debug, Clone)]
pub struct Campaigns {
    shards: Arc<Vec<Arc<Shard>>>,
    len: usize,
}

impl Campaigns {
    fn new(all: Vec<Campaign>) -> Self {
        let mut shards: Vec<Shard> = (0..SHARDS).map(|_| Shard::default()).collect();
        let len = all.len();
        for c in all {
            let id: Box<[u8]> = c.id.as_bytes().into();
            shards[shard_of(&id)].insert(id, Arc::new(c));
        }
        Campaigns {
            shards: Arc::new(shards.into_iter().map(Arc::new).collect()),
            len,
        }
    }

    pub fn get(&self, id: &[u8]) -> Option<&Campaign> {
        self.shards[shard_of(id)].get(id).map(|c| &**c)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &Campaign> {
        self.shards.iter().flat_map(|s| s.values().map(|c| &**c))
    }

    fn shard_mut(&mut self, id: &[u8]) -> &mut Shard {
        let shards = Arc::make_mut(&mut self.shards);
        Arc::make_mut(&mut shards[shard_of(id)])
    }

    fn put(&mut self, c: Campaign) {
        let id: Box<[u8]> = c.id.as_bytes().into();
        if self.shard_mut(&id).insert(id, Arc::new(c)).is_none() {
            self.len += 1;
        }
    }

    fn remove(&mut self, id: &[u8]) {
        if self.get(id).is_some() {
            self.shard_mut(id).remove(id);
            self.len -= 1;
        }
    }
}

/// What `[server]` adds to the catalog.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest cost a visit's cost parameter may set (`server.max_cost`), micro-units.
    pub max_cost_micros: i64,
    /// Largest payout (either sign) a conversion may carry (`server.max_payout`).
    pub max_payout_micros: i64,
    /// Where an unknown campaign or click goes (`server.fallback_url`).
    pub fallback_url: String,
}

impl Limits {
    /// A warning when offer `id`'s default payout is above `server.max_payout`.
    pub fn payout_warning(&self, id: &str, micros: i64) -> Option<String> {
        (micros > self.max_payout_micros).then(|| {
            format!(
                "offer {id:?}: its payout {} is above server.max_payout {}",
                micros as f64 / 1e6,
                self.max_payout_micros as f64 / 1e6
            )
        })
    }

    /// A warning when campaign `id`'s cost is above `server.max_cost`.
    pub fn cost_warning(&self, id: &str, micros: i64) -> Option<String> {
        (micros > self.max_cost_micros).then(|| {
            format!(
                "campaign {id:?}: its cost {} is above server.max_cost {}",
                micros as f64 / 1e6,
                self.max_cost_micros as f64 / 1e6
            )
        })
    }

    pub fn of(server: &ServerConfig) -> Result<Limits, ConfigError> {
        Ok(Limits {
            max_cost_micros: micros(server.max_cost, "server.max_cost")?,
            max_payout_micros: micros(server.max_payout, "server.max_payout")?,
            fallback_url: server.fallback_url.clone(),
        })
    }
}

/// The compiled, immutable routing: campaigns by id and everything they point to.
#[derive(Debug, Clone)]
pub struct Routing {
    pub campaigns: Campaigns,
    pub sources: Slots<TrafficSource>,
    pub networks: Slots<Network>,
    pub offers: Slots<Offer>,
    pub landing_pages: Slots<LandingPage>,
    pub params: Arc<ParamNames>,
    pub fallback: Option<Arc<Template>>,
    /// Largest cost a visit's cost parameter may set (`server.max_cost`), micro-units.
    pub max_cost_micros: i64,
    /// Largest payout (either sign) a conversion may carry (`server.max_payout`).
    pub max_payout_micros: i64,
    /// The version of the store's catalog this is (0 for a config file's).
    pub version: u64,
    /// Things that load but probably are not what the author meant.
    pub warnings: Vec<String>,
    /// Whether some network requires a postback token.
    any_token: bool,
}

impl Routing {
    /// Validates `cfg` (the catalog, then what `[server]` adds) and compiles it.
    pub fn compile(cfg: &ConfigFile) -> Result<Routing, ConfigError> {
        Routing::build(Catalog::compile(cfg)?, &Limits::of(&cfg.server)?, 0)
    }

    /// The routing of a compiled catalog under `limits`.
    ///
    /// An offer's payout above `server.max_payout` or a campaign's cost above
    /// `server.max_cost` refuses a config file (version 0), which its author fixes before
    /// starting; in the store's catalog (a version from 1) it is a warning instead, since the
    /// writer cannot know every edge's limits and an edge must never stop following the
    /// catalog for it (the limits still bound what requests may claim).
    pub fn build(cat: Catalog, limits: &Limits, version: u64) -> Result<Routing, ConfigError> {
        let Catalog {
            campaigns,
            sources,
            networks,
            offers,
            landing_pages,
            mut params,
            mut warnings,
        } = cat;
        if version > 0 {
            warnings.extend(
                offers
                    .iter()
                    .filter_map(|o| limits.payout_warning(&o.id, o.payout_micros))
                    .chain(
                        campaigns
                            .iter()
                            .filter_map(|c| limits.cost_warning(&c.id, c.cost_micros)),
                    )
                    .take(20),
            );
        } else if let Some((i, o)) = offers
            .iter()
            .enumerate()
            .find(|(_, o)| o.payout_micros > limits.max_payout_micros)
        {
            return Err(ConfigError::invalid(
                format!("offers[{i}].payout"),
                format!(
                    "{} ({}) is above server.max_payout",
                    o.payout_micros as f64 / 1e6,
                    o.id
                ),
            ));
        }
        if let Some((i, camp)) = campaigns
            .iter()
            .enumerate()
            .find(|(_, camp)| version == 0 && camp.cost_micros > limits.max_cost_micros)
        {
            return Err(ConfigError::invalid(
                format!("campaigns[{i}].cost"),
                format!(
                    "{} ({}) is above server.max_cost",
                    camp.cost_micros as f64 / 1e6,
                    camp.id
                ),
            ));
        }
        let fallback = match limits.fallback_url.as_str() {
            "" => None,
            url => Some(Arc::new(Template::parse(
                url,
                "server.fallback_url",
                &mut params,
            )?)),
        };
        let any_token = networks.iter().any(|n| n.postback_token.is_some());
        Ok(Routing {
            campaigns: Campaigns::new(campaigns),
            sources: Slots::new(sources, |s| &s.id),
            any_token,
            networks: Slots::new(networks, |n| &n.id),
            offers: Slots::new(offers, |o| &o.id),
            landing_pages: Slots::new(landing_pages, |l| &l.id),
            params: Arc::new(params),
            fallback,
            max_cost_micros: limits.max_cost_micros,
            max_payout_micros: limits.max_payout_micros,
            version,
            warnings,
        })
    }

    pub fn campaign(&self, id: &[u8]) -> Option<&Campaign> {
        self.campaigns.get(id)
    }

    /// Whether some network requires a postback token.
    pub fn any_postback_token(&self) -> bool {
        self.any_token
    }

    pub fn network_by_id(&self, id: &[u8]) -> Option<&Network> {
        std::str::from_utf8(id)
            .ok()
            .and_then(|id| self.networks.by_id(id))
    }

    /// Checks a postback's `token` and says what it proves. Naming its network
    /// (`network=ID`) checks that network's token; otherwise a token is looked up among all
    /// networks' (tokens are unique). A token that matches nothing is refused, and so is a
    /// postback without one when every network requires one (it could count nowhere).
    /// Whether an accepted postback counts is decided at query time against its click's
    /// network (docs/query.md "Trust"): `Auth::Token` with the network it authenticated as, else
    /// `Auth::Open` (no network requires a token) or `Auth::NoToken`.
    pub fn check_postback_token(
        &self,
        network: Option<&[u8]>,
        token: Option<&[u8]>,
    ) -> Result<(Auth, Option<&Network>), TokenError> {
        let token = token.unwrap_or_default();
        if !self.any_postback_token() {
            // Nothing to check against: any token is ignored, and the network named must
            // still exist.
            if let Some(id) = network {
                self.network_by_id(id).ok_or(TokenError::UnknownNetwork)?;
            }
            return Ok((Auth::Open, None));
        }
        let unauthenticated = Auth::NoToken;
        match network {
            Some(id) => {
                let n = self.network_by_id(id).ok_or(TokenError::UnknownNetwork)?;
                match &n.postback_token {
                    Some(t) if ct_eq(t, token) => Ok((Auth::Token, Some(n))),
                    Some(_) => Err(TokenError::BadToken),
                    None => Ok((unauthenticated, None)),
                }
            }
            None if token.is_empty() => {
                if !self.networks.is_empty()
                    && self.networks.iter().all(|n| n.postback_token.is_some())
                {
                    Err(TokenError::BadToken)
                } else {
                    Ok((unauthenticated, None))
                }
            }
            None => {
                // Every token is compared, so the time taken says nothing of which matched.
                let mut found = None;
                for n in self.networks.iter() {
                    if let Some(t) = &n.postback_token
                        && ct_eq(t, token)
                    {
                        found = Some(n);
                    }
                }
                found
                    .map(|n| (Auth::Token, Some(n)))
                    .ok_or(TokenError::BadToken)
            }
        }
    }
}

#[cfg(test)]
mod tests;
