//! The request path's campaign table: the validated [`Catalog`] with what the edge adds —
//! campaigns indexed by id, `[server]`'s fallback URL and money limits, and the postback
//! token check. Immutable; the workers read it without locks, and a reload swaps it whole.

use ahash::AHashMap;
use catalog::model::{Campaign, LandingPage, Network, Offer, TrafficSource};
use catalog::money::micros;
use catalog::template::{ParamNames, Template};
use catalog::{Catalog, ConfigError};
use sink::event::Auth;

use crate::clicks::ct_eq;
use crate::config::ConfigFile;

/// Why a postback's token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    UnknownNetwork,
    BadToken,
}

/// The compiled, immutable campaign table.
#[derive(Debug)]
pub struct Table {
    pub campaigns: Vec<Campaign>,
    by_id: AHashMap<Box<[u8]>, u32>,
    pub sources: Vec<TrafficSource>,
    pub networks: Vec<Network>,
    pub offers: Vec<Offer>,
    pub landing_pages: Vec<LandingPage>,
    pub params: ParamNames,
    pub fallback: Option<Template>,
    /// Largest cost a visit's cost parameter may set (`server.max_cost`), micro-units.
    pub max_cost_micros: i64,
    /// Largest payout (either sign) a conversion may carry (`server.max_payout`).
    pub max_payout_micros: i64,
    /// Things that load but probably are not what the author meant.
    pub warnings: Vec<String>,
}

impl Table {
    /// Validates `cfg` (the catalog, then what `[server]` adds) and compiles it.
    pub fn compile(cfg: &ConfigFile) -> Result<Table, ConfigError> {
        let max_cost_micros = micros(cfg.server.max_cost, "server.max_cost")?;
        let max_payout_micros = micros(cfg.server.max_payout, "server.max_payout")?;
        let Catalog {
            campaigns,
            sources,
            networks,
            offers,
            landing_pages,
            mut params,
            warnings,
        } = Catalog::compile(cfg)?;
        if let Some((i, o)) = offers
            .iter()
            .enumerate()
            .find(|(_, o)| o.payout_micros > max_payout_micros)
        {
            return Err(ConfigError::invalid(
                format!("offers[{i}].payout"),
                format!(
                    "{} is above server.max_payout",
                    o.payout_micros as f64 / 1e6
                ),
            ));
        }
        if let Some((i, camp)) = campaigns
            .iter()
            .enumerate()
            .find(|(_, camp)| camp.cost_micros > max_cost_micros)
        {
            return Err(ConfigError::invalid(
                format!("campaigns[{i}].cost"),
                format!("{} is above server.max_cost", camp.cost_micros as f64 / 1e6),
            ));
        }
        let fallback = match cfg.server.fallback_url.as_str() {
            "" => None,
            url => Some(Template::parse(url, "server.fallback_url", &mut params)?),
        };
        let by_id = campaigns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.as_bytes().into(), i as u32))
            .collect();
        Ok(Table {
            campaigns,
            by_id,
            sources,
            networks,
            offers,
            landing_pages,
            params,
            fallback,
            max_cost_micros,
            max_payout_micros,
            warnings,
        })
    }

    pub fn campaign(&self, id: &[u8]) -> Option<&Campaign> {
        self.by_id.get(id).map(|&i| &self.campaigns[i as usize])
    }

    /// Whether some network requires a postback token.
    pub fn any_postback_token(&self) -> bool {
        self.networks.iter().any(|n| n.postback_token.is_some())
    }

    pub fn network_by_id(&self, id: &[u8]) -> Option<&Network> {
        self.networks.iter().find(|n| n.id.as_bytes() == id)
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
                for n in &self.networks {
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
