//! Validation: a config file's catalog compiled into [`Catalog`], every dangling reference
//! or bad value an error naming its key.

use ahash::AHashMap;
use sink::event::{NetworkPolicy, Pixels};

use crate::file::{CampaignConfig, File, PathConfig, RuleConfig, TrafficSourceConfig};
use crate::model::{
    Campaign, Device, LandingPage, Needs, Network, Offer, Path, Rule, TrafficSource, Weighted,
};
use crate::money::micros;
use crate::template::{ParamNames, Template, Token};
use crate::{Catalog, ConfigError};

/// Longest id: ids go into URLs, cookie names and click state.
const MAX_ID: usize = 128;

fn check_id(id: &str, key: &str) -> Result<(), ConfigError> {
    if id.len() > MAX_ID {
        return Err(ConfigError::invalid(
            key,
            format!("an id is at most {MAX_ID} characters"),
        ));
    }
    if id.is_empty()
        || !id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~'))
    {
        return Err(ConfigError::invalid(
            key,
            format!("{id:?} is not an id (letters, digits, '-', '_', '.', '~')"),
        ));
    }
    Ok(())
}

/// Builds an id → index map, rejecting bad and duplicate ids.
fn index_ids<'a>(
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

fn resolve(map: &AHashMap<&str, u32>, id: &str, key: &str, what: &str) -> Result<u32, ConfigError> {
    map.get(id)
        .copied()
        .ok_or_else(|| ConfigError::invalid(key, format!("no {what} with id {id:?}")))
}

struct Compiler<'a> {
    sources: AHashMap<&'a str, u32>,
    networks: AHashMap<&'a str, u32>,
    offers: AHashMap<&'a str, u32>,
    landing_pages: AHashMap<&'a str, u32>,
    paths_seen: u16,
}

impl Compiler<'_> {
    fn paths(&mut self, cfg: &[PathConfig], key: &str) -> Result<Weighted<Path>, ConfigError> {
        let mut paths = Vec::with_capacity(cfg.len());
        for (i, p) in cfg.iter().enumerate() {
            let pkey = format!("{key}[{i}]");
            let landing_page = p
                .landing_page
                .as_deref()
                .map(|lp| {
                    resolve(
                        &self.landing_pages,
                        lp,
                        &format!("{pkey}.landing_page"),
                        "landing page",
                    )
                })
                .transpose()?;
            let mut offers = Vec::with_capacity(p.offers.len());
            for (j, o) in p.offers.iter().enumerate() {
                let okey = format!("{pkey}.offers[{j}].offer");
                offers.push((resolve(&self.offers, &o.offer, &okey, "offer")?, o.weight));
            }
            let offers = Weighted::new(offers, &format!("{pkey}.offers"))?;
            let index = self.paths_seen;
            self.paths_seen = index
                .checked_add(1)
                .ok_or_else(|| ConfigError::invalid(&pkey, "a campaign has at most 65535 paths"))?;
            paths.push((
                Path {
                    index,
                    landing_page,
                    offers,
                },
                p.weight,
            ));
        }
        Weighted::new(paths, key)
    }

    fn rule(&mut self, r: &RuleConfig, key: &str) -> Result<Rule, ConfigError> {
        let countries = r
            .countries
            .iter()
            .enumerate()
            .map(|(i, c)| match c.as_bytes() {
                [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                    Ok([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
                }
                _ => Err(ConfigError::invalid(
                    format!("{key}.countries[{i}]"),
                    format!("{c:?} is not a two-letter ISO country code"),
                )),
            })
            .collect::<Result<_, _>>()?;
        let devices = r
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| match d.to_ascii_lowercase().as_str() {
                "desktop" => Ok(Device::Desktop),
                "mobile" => Ok(Device::Mobile),
                "tablet" => Ok(Device::Tablet),
                _ => Err(ConfigError::invalid(
                    format!("{key}.devices[{i}]"),
                    format!("{d:?} is not one of desktop, mobile, tablet"),
                )),
            })
            .collect::<Result<_, _>>()?;
        let languages = r
            .languages
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let ok = !l.is_empty()
                    && l.split('-').all(|p| {
                        (1..=8).contains(&p.len()) && p.bytes().all(|c| c.is_ascii_alphanumeric())
                    });
                if ok {
                    Ok(l.to_ascii_lowercase().into_boxed_str())
                } else {
                    Err(ConfigError::invalid(
                        format!("{key}.languages[{i}]"),
                        format!("{l:?} is not a language tag like \"en\" or \"pt-br\""),
                    ))
                }
            })
            .collect::<Result<_, _>>()?;
        let strings = |v: &[String]| v.iter().map(|s| s.as_str().into()).collect();
        Ok(Rule {
            countries,
            devices,
            os: strings(&r.os),
            browsers: strings(&r.browsers),
            languages,
            bot: r.bot,
            paths: self.paths(&r.paths, &format!("{key}.paths"))?,
        })
    }

    fn campaign(&mut self, i: usize, c: &CampaignConfig) -> Result<Campaign, ConfigError> {
        let key = format!("campaigns[{i}]");
        self.paths_seen = 0;
        let source = resolve(
            &self.sources,
            &c.traffic_source,
            &format!("{key}.traffic_source"),
            "traffic source",
        )?;
        let paths = self.paths(&c.paths, &format!("{key}.paths"))?;
        let rules = c
            .rules
            .iter()
            .enumerate()
            .map(|(j, r)| self.rule(r, &format!("{key}.rules[{j}]")))
            .collect::<Result<_, _>>()?;
        Ok(Campaign {
            id: c.id.as_str().into(),
            name: c.name.as_str().into(),
            source,
            cost_micros: micros(c.cost, &format!("{key}.cost"))?,
            paths,
            rules,
            needs: Needs::default(),
        })
    }
}

fn compile_source(
    i: usize,
    s: &TrafficSourceConfig,
    names: &mut ParamNames,
) -> Result<TrafficSource, ConfigError> {
    let mut params = Vec::with_capacity(s.params.len());
    for (name, query_key) in &s.params {
        let key = format!("traffic_sources[{i}].params.{name}");
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
        if !valid_name {
            return Err(ConfigError::invalid(
                key,
                "a remapped name is lowercase letters, digits and '_'",
            ));
        }
        if Token::builtin(name).is_some() {
            return Err(ConfigError::invalid(
                key,
                format!("{name:?} is a built-in token and cannot be remapped"),
            ));
        }
        if query_key.is_empty() {
            return Err(ConfigError::invalid(
                key,
                "the query parameter name is empty",
            ));
        }
        params.push((names.define(name), query_key.as_bytes().into()));
    }
    let cost_param = match s.cost_param.as_deref() {
        Some("") => {
            return Err(ConfigError::invalid(
                format!("traffic_sources[{i}].cost_param"),
                "is empty; leave it out instead",
            ));
        }
        other => other.map(|p| p.as_bytes().into()),
    };
    Ok(TrafficSource {
        id: s.id.as_str().into(),
        name: s.name.as_str().into(),
        params,
        cost_param,
    })
}

/// The affiliate networks, with their conversion policies. Postback tokens are unique: a
/// token names the network a postback authenticates as.
fn compile_networks<S>(cfg: &File<S>) -> Result<Vec<Network>, ConfigError> {
    let mut out: Vec<Network> = Vec::with_capacity(cfg.affiliate_networks.len());
    for (i, n) in cfg.affiliate_networks.iter().enumerate() {
        let key = format!("affiliate_networks[{i}]");
        let token = n.postback_token.as_bytes();
        if let Some(other) = out
            .iter()
            .find(|o| !token.is_empty() && o.postback_token.as_deref() == Some(token))
        {
            return Err(ConfigError::invalid(
                format!("{key}.postback_token"),
                format!(
                    "the same token as network {:?}; each network needs its own (a token names the network a postback comes from)",
                    other.id
                ),
            ));
        }
        let pixels = match n.pixels.as_deref() {
            None if token.is_empty() => Pixels::Payout,
            None => Pixels::Off,
            Some(p) => Pixels::parse(p).ok_or_else(|| {
                ConfigError::invalid(
                    format!("{key}.pixels"),
                    format!("{p:?} is not one of off, default_payout, payout"),
                )
            })?,
        };
        out.push(Network {
            id: n.id.as_str().into(),
            name: n.name.as_str().into(),
            postback_token: (!token.is_empty()).then(|| token.into()),
            policy: NetworkPolicy {
                token: !token.is_empty(),
                pixels,
            },
        });
    }
    Ok(out)
}

impl Catalog {
    /// Validates the catalog of `cfg` and compiles it.
    pub fn compile<S>(cfg: &File<S>) -> Result<Catalog, ConfigError> {
        let mut names = ParamNames::default();
        let mut c = Compiler {
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
            paths_seen: 0,
        };
        index_ids(cfg.campaigns.iter().map(|c| c.id.as_str()), "campaigns")?;

        let sources = cfg
            .traffic_sources
            .iter()
            .enumerate()
            .map(|(i, s)| compile_source(i, s, &mut names))
            .collect::<Result<Vec<_>, _>>()?;
        let networks = compile_networks(cfg)?;
        let mut offers = Vec::with_capacity(cfg.offers.len());
        for (i, o) in cfg.offers.iter().enumerate() {
            let key = format!("offers[{i}]");
            let network = o
                .network
                .as_deref()
                .map(|n| {
                    resolve(
                        &c.networks,
                        n,
                        &format!("{key}.network"),
                        "affiliate network",
                    )
                })
                .transpose()?;
            let url = Template::parse(&o.url, &format!("{key}.url"), &mut names)?;
            offers.push(Offer {
                id: o.id.as_str().into(),
                name: o.name.as_str().into(),
                network,
                needs: Needs::of_template(&url),
                url,
                payout_micros: micros(o.payout, &format!("{key}.payout"))?,
            });
        }
        let landing_pages = cfg
            .landing_pages
            .iter()
            .enumerate()
            .map(|(i, l)| {
                Ok(LandingPage {
                    id: l.id.as_str().into(),
                    name: l.name.as_str().into(),
                    url: Template::parse(&l.url, &format!("landing_pages[{i}].url"), &mut names)?,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let campaigns = cfg
            .campaigns
            .iter()
            .enumerate()
            .map(|(i, camp)| c.campaign(i, camp))
            .collect::<Result<Vec<_>, _>>()?;
        let mut catalog = Catalog {
            campaigns,
            sources,
            networks,
            offers,
            landing_pages,
            params: names,
            warnings: Vec::new(),
        };
        let needs: Vec<Needs> = catalog
            .campaigns
            .iter()
            .map(|c| catalog.campaign_needs(c))
            .collect();
        for (c, n) in catalog.campaigns.iter_mut().zip(needs) {
            c.needs = n;
        }
        catalog.warnings = catalog.collect_warnings();
        Ok(catalog)
    }

    fn campaign_needs(&self, c: &Campaign) -> Needs {
        let path_needs = |p: &Path| {
            let lp = p.landing_page.map_or(Needs::default(), |l| {
                Needs::of_template(&self.landing_pages[l as usize].url)
            });
            p.offers
                .items()
                .iter()
                .map(|&o| Needs::of_template(&self.offers[o as usize].url))
                .fold(lp, Needs::or)
        };
        std::iter::once(&c.paths)
            .chain(c.rules.iter().map(|r| &r.paths))
            .flat_map(|w| w.items())
            .map(path_needs)
            .chain(c.rules.iter().map(Rule::needs))
            .fold(Needs::default(), Needs::or)
    }

    fn collect_warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let templates = self
            .offers
            .iter()
            .map(|o| (format!("offer {:?}", o.id), &o.url))
            .chain(
                self.landing_pages
                    .iter()
                    .map(|l| (format!("landing page {:?}", l.id), &l.url)),
            );
        for (what, t) in templates {
            for tok in t.tokens() {
                if let Token::Param(p) = tok
                    && !self.params.is_defined(p)
                {
                    w.push(format!(
                        "{what}: {{{}}} is neither a built-in token nor remapped by any traffic source; it will be empty",
                        self.params.name(p)
                    ));
                }
            }
        }
        if self.campaigns.is_empty() {
            w.push("no campaigns: every /c/ request will be answered 404".into());
        }
        w
    }
}

#[cfg(test)]
mod tests;
