//! A commit of the store's catalog applied to a running routing: only the objects it names
//! are compiled; everything else is shared with the routing it came from.

use catalog::compile::{self, Resolve};
use catalog::model::Needs;
use catalog::store::Commit;
use catalog::{Catalog, ConfigError};

use super::{Limits, Routing};

/// Looks references up in the routing being built.
struct Ids<'a>(&'a Routing);

impl Resolve for Ids<'_> {
    fn source(&self, id: &str) -> Option<u32> {
        self.0.sources.index_of(id)
    }
    fn network(&self, id: &str) -> Option<u32> {
        self.0.networks.index_of(id)
    }
    fn offer(&self, id: &str) -> Option<u32> {
        self.0.offers.index_of(id)
    }
    fn landing_page(&self, id: &str) -> Option<u32> {
        self.0.landing_pages.index_of(id)
    }
    fn offer_needs(&self, i: u32) -> Needs {
        self.0.offers[i as usize].needs
    }
    fn landing_page_needs(&self, i: u32) -> Needs {
        Needs::of_template(&self.0.landing_pages[i as usize].url)
    }
}

impl Routing {
    /// The routing after `commit`, the next version of the store's catalog. A commit that
    /// replaces the catalog is compiled whole; any other compiles only what it puts. Errors
    /// name the object (`offers/ID.payout`); the running routing is left as it was.
    /// A replacing commit is compiled from the commit itself, each campaign let go as it is
    /// compiled (a re-import of a million campaigns must not hold them twice beside the
    /// running routing).
    pub fn apply(&self, commit: Commit) -> Result<Routing, ConfigError> {
        if commit.replace {
            // The fallback URL is parsed again: its tokens index the new parameter names.
            let limits = Limits {
                max_cost_micros: self.max_cost_micros,
                max_payout_micros: self.max_payout_micros,
                fallback_url: self
                    .fallback
                    .as_ref()
                    .map_or(String::new(), |t| t.as_str().to_owned()),
            };
            let version = commit.version;
            return Routing::build(Catalog::compile_owned(commit.put)?, &limits, version);
        }
        let limits = Limits {
            max_cost_micros: self.max_cost_micros,
            max_payout_micros: self.max_payout_micros,
            fallback_url: String::new(),
        };
        let mut next = self.clone();
        next.version = commit.version;
        next.warnings.clear();
        let (put, delete) = (&commit.put, &commit.delete);
        // Deletions first, then puts, kind by kind in reference order: what a put refers to
        // is in place before it is compiled.
        for id in &delete.campaigns {
            next.campaigns.remove(id.as_bytes());
        }
        for id in &delete.landing_pages {
            next.landing_pages.remove(id);
        }
        for id in &delete.offers {
            next.offers.remove(id);
        }
        for id in &delete.affiliate_networks {
            next.networks.remove(id);
        }
        for id in &delete.traffic_sources {
            next.sources.remove(id);
        }
        let mut names = if put.traffic_sources.is_empty()
            && put.offers.is_empty()
            && put.landing_pages.is_empty()
        {
            None
        } else {
            Some((*self.params).clone())
        };
        for s in &put.traffic_sources {
            let names = names.as_mut().expect("cloned for a put");
            let compiled = compile::source(&format!("traffic_sources/{}", s.id), s, names)?;
            next.sources.put(&s.id, compiled);
        }
        if !put.affiliate_networks.is_empty() {
            // Tokens are unique among the networks after the commit: the ones it leaves, and
            // those it puts (two may swap tokens in one commit).
            let putting: std::collections::HashSet<&str> = put
                .affiliate_networks
                .iter()
                .map(|n| n.id.as_str())
                .collect();
            let mut compiled = Vec::with_capacity(putting.len());
            for n in &put.affiliate_networks {
                let others = next
                    .networks
                    .iter()
                    .filter(|o| !putting.contains(&*o.id))
                    .chain(&compiled);
                let c = compile::network(&format!("affiliate_networks/{}", n.id), n, others)?;
                compiled.push(c);
            }
            for (n, c) in put.affiliate_networks.iter().zip(compiled) {
                next.networks.put(&n.id, c);
            }
        }
        // Offers and landing pages whose URLs ask other visitor facts than before: the
        // campaigns that use them look those facts up first, so their needs are redone.
        let mut needs_changed = (Vec::new(), Vec::new());
        for o in &put.offers {
            let key = format!("offers/{}", o.id);
            let names = names.as_mut().expect("cloned for a put");
            let compiled = compile::offer(&key, o, &Ids(&next), names)?;
            next.warnings
                .extend(limits.payout_warning(&o.id, compiled.payout_micros));
            let old = next.offers.by_id(&o.id).map(|old| old.needs);
            let needs = compiled.needs;
            let i = next.offers.put(&o.id, compiled);
            if old.is_some_and(|old| old != needs) {
                needs_changed.0.push(i);
            }
        }
        for l in &put.landing_pages {
            let names = names.as_mut().expect("cloned for a put");
            let compiled = compile::landing_page(&format!("landing_pages/{}", l.id), l, names)?;
            let needs = |lp: &catalog::model::LandingPage| Needs::of_template(&lp.url);
            let old = next.landing_pages.by_id(&l.id).map(needs);
            let new = needs(&compiled);
            let i = next.landing_pages.put(&l.id, compiled);
            if old.is_some_and(|old| old != new) {
                needs_changed.1.push(i);
            }
        }
        for c in &put.campaigns {
            let key = format!("campaigns/{}", c.id);
            let compiled = compile::campaign(&catalog::key::Key::Root(&key), c, &Ids(&next))?;
            next.warnings
                .extend(limits.cost_warning(&c.id, compiled.cost_micros));
            next.campaigns.put(compiled);
        }
        if !needs_changed.0.is_empty() || !needs_changed.1.is_empty() {
            next.refresh_needs(&needs_changed.0, &needs_changed.1);
        }
        if let Some(names) = names {
            for o in &put.offers {
                let offer = next.offers.by_id(&o.id).expect("just put");
                let warnings: Vec<String> = offer
                    .templates()
                    .flat_map(|(what, url)| {
                        catalog::compile::unknown_params(&what, url, &names).collect::<Vec<_>>()
                    })
                    .collect();
                next.warnings.extend(warnings);
            }
            for l in &put.landing_pages {
                let url = &next.landing_pages.by_id(&l.id).expect("just put").url;
                next.warnings.extend(catalog::compile::unknown_params(
                    &format!("landing page {:?}", l.id),
                    url,
                    &names,
                ));
            }
            next.params = std::sync::Arc::new(names);
        }
        next.any_token = next.networks.iter().any(|n| n.postback_token.is_some());
        Ok(next)
    }

    /// Redoes the needs of every campaign that uses one of `offers` or `landing_pages` (a
    /// scan of all campaigns: only a change of what a URL asks of the visitor calls it).
    fn refresh_needs(&mut self, offers: &[u32], landing_pages: &[u32]) {
        let uses = |c: &catalog::model::Campaign| {
            std::iter::once(&c.paths)
                .chain(c.rules.iter().map(|r| &r.paths))
                .flat_map(|w| w.items())
                .any(|p| {
                    p.landing_page.is_some_and(|l| landing_pages.contains(&l))
                        || p.offers.items().iter().any(|o| offers.contains(o))
                })
        };
        let stale: Vec<catalog::model::Campaign> =
            self.campaigns.iter().filter(|c| uses(c)).cloned().collect();
        for mut c in stale {
            c.needs = compile::campaign_needs(&c, &Ids(self));
            self.campaigns.put(c);
        }
    }
}
