//! A whole config file's catalog compiled at once ([`Catalog::compile`]): ids indexed in
//! file order, duplicates refused, every object compiled against those indexes, and the
//! warnings for what loads but is probably not meant.

use ahash::AHashMap;

use super::{Resolve, campaign, check_id, landing_page, network, offer, source, unknown_params};
use crate::file::{CampaignConfig, File};
use crate::key::Key;
use crate::model::{Needs, Network, Offer};
use crate::template::ParamNames;
use crate::{Catalog, ConfigError};

/// Builds an id → index map, rejecting bad and duplicate ids.
pub(super) fn index_ids<'a>(
    ids: impl Iterator<Item = &'a str>,
    section: &str,
) -> Result<AHashMap<&'a str, u32>, ConfigError> {
    let mut map = AHashMap::new();
    for (i, id) in ids.enumerate() {
        let key = format!("{section}[{i}].id");
        check_id(id, &key)?;
        if map.insert(id, i as u32).is_some() {
            return Err(ConfigError::invalid(key, format!("duplicate id {id:?}")));
        }
    }
    Ok(map)
}

/// A file's own indexes, and its offers and landing pages once compiled.
pub(super) struct FileIds<'a> {
    pub(super) sources: AHashMap<&'a str, u32>,
    pub(super) networks: AHashMap<&'a str, u32>,
    pub(super) offers: AHashMap<&'a str, u32>,
    pub(super) landing_pages: AHashMap<&'a str, u32>,
    pub(super) offer_needs: Vec<Needs>,
    pub(super) landing_page_needs: Vec<Needs>,
}

impl Resolve for FileIds<'_> {
    fn source(&self, id: &str) -> Option<u32> {
        self.sources.get(id).copied()
    }
    fn network(&self, id: &str) -> Option<u32> {
        self.networks.get(id).copied()
    }
    fn offer(&self, id: &str) -> Option<u32> {
        self.offers.get(id).copied()
    }
    fn landing_page(&self, id: &str) -> Option<u32> {
        self.landing_pages.get(id).copied()
    }
    fn offer_needs(&self, i: u32) -> Needs {
        self.offer_needs[i as usize]
    }
    fn landing_page_needs(&self, i: u32) -> Needs {
        self.landing_page_needs[i as usize]
    }
}

impl Catalog {
    /// Validates the catalog of `cfg` and compiles it.
    pub fn compile<S>(cfg: &File<S>) -> Result<Catalog, ConfigError> {
        Catalog::compile_with(cfg, cfg.campaigns.iter())
    }

    /// As [`Catalog::compile`], taking the file: each campaign's config is let go as soon
    /// as it is compiled, so a catalog of a million campaigns is never held twice.
    pub fn compile_owned<S>(mut cfg: File<S>) -> Result<Catalog, ConfigError> {
        let campaigns = std::mem::take(&mut cfg.campaigns);
        Catalog::compile_with(&cfg, campaigns.into_iter())
    }

    fn compile_with<S, C: std::borrow::Borrow<CampaignConfig>>(
        cfg: &File<S>,
        campaigns: impl ExactSizeIterator<Item = C>,
    ) -> Result<Catalog, ConfigError> {
        let mut names = ParamNames::default();
        let mut ids = FileIds {
            sources: index_ids(
                cfg.traffic_sources.iter().map(|s| s.id.as_str()),
                "traffic_sources",
            )?,
            networks: index_ids(
                cfg.affiliate_networks.iter().map(|n| n.id.as_str()),
                "affiliate_networks",
            )?,
            offers: index_ids(cfg.offers.iter().map(|o| o.id.as_str()), "offers")?,
            landing_pages: index_ids(
                cfg.landing_pages.iter().map(|l| l.id.as_str()),
                "landing_pages",
            )?,
            offer_needs: Vec::new(),
            landing_page_needs: Vec::new(),
        };

        let sources = cfg
            .traffic_sources
            .iter()
            .enumerate()
            .map(|(i, s)| source(&format!("traffic_sources[{i}]"), s, &mut names))
            .collect::<Result<Vec<_>, _>>()?;
        let mut networks: Vec<Network> = Vec::with_capacity(cfg.affiliate_networks.len());
        for (i, n) in cfg.affiliate_networks.iter().enumerate() {
            let compiled = network(&format!("affiliate_networks[{i}]"), n, &networks)?;
            networks.push(compiled);
        }
        let offers = cfg
            .offers
            .iter()
            .enumerate()
            .map(|(i, o)| offer(&format!("offers[{i}]"), o, &ids, &mut names))
            .collect::<Result<Vec<_>, _>>()?;
        let landing_pages = cfg
            .landing_pages
            .iter()
            .enumerate()
            .map(|(i, l)| landing_page(&format!("landing_pages[{i}]"), l, &mut names))
            .collect::<Result<Vec<_>, _>>()?;
        ids.offer_needs = offers.iter().map(|o| o.needs).collect();
        ids.landing_page_needs = landing_pages
            .iter()
            .map(|l| Needs::of_template(&l.url))
            .collect();
        let mut compiled = Vec::with_capacity(campaigns.len());
        let section = Key::Root("campaigns");
        for (i, c) in campaigns.enumerate() {
            compiled.push(campaign(&section.index(i), c.borrow(), &ids)?);
        }
        index_ids(compiled.iter().map(|c| &*c.id), "campaigns")?;
        let campaigns = compiled;
        let mut catalog = Catalog {
            campaigns,
            sources,
            networks,
            offers,
            landing_pages,
            params: names,
            warnings: Vec::new(),
        };
        catalog.warnings = catalog.collect_warnings();
        Ok(catalog)
    }

    fn collect_warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let templates = self.offers.iter().flat_map(Offer::templates).chain(
            self.landing_pages
                .iter()
                .map(|l| (format!("landing page {:?}", l.id), &l.url)),
        );
        for (what, t) in templates {
            w.extend(unknown_params(&what, t, &self.params));
        }
        w.extend(self.sources.iter().filter_map(|s| s.postback_off.clone()));
        if self.campaigns.is_empty() {
            w.push("no campaigns: every /c/ request will be answered 404".into());
        }
        w
    }
}
