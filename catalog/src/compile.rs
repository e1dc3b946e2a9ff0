//! Validation: a config file's catalog compiled into [`Catalog`](crate::Catalog), every dangling reference
//! or bad value an error naming its key.

use sink::model::event::{NetworkPolicy, Pixels};

use crate::ConfigError;
use crate::file::{
    CampaignConfig, LandingPageConfig, NetworkConfig, OfferConfig, PathConfig, RuleConfig,
    TrafficSourceConfig,
};
use crate::key::Key;
use crate::lifecycle::Status;
use crate::model::{
    Campaign, ConversionCost, Device, LandingPage, Needs, Network, Offer, OfferLink, Path, Rule,
    TrafficSource, Weighted,
};
use crate::money::micros;
use crate::postback::{PostbackUrl, SourcePostback};
use crate::template::{ParamNames, Template, Token};

/// Longest id: ids go into URLs, cookie names and click state.
const MAX_ID: usize = 128;

fn check_id(id: &str, key: impl std::fmt::Display) -> Result<(), ConfigError> {
    if id.len() > MAX_ID {
        return Err(ConfigError::invalid(
            key.to_string(),
            format!("an id is at most {MAX_ID} characters"),
        ));
    }
    if id.is_empty()
        || id.bytes().all(|c| c == b'.')
        || !id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~'))
    {
        return Err(ConfigError::invalid(
            key.to_string(),
            format!("{id:?} is not an id (letters, digits, '-', '_', '.', '~')"),
        ));
    }
    Ok(())
}

/// Looks references up while compiling: the file's own indexes, or a running edge's.
pub trait Resolve {
    fn source(&self, id: &str) -> Option<u32>;
    fn network(&self, id: &str) -> Option<u32>;
    fn offer(&self, id: &str) -> Option<u32>;
    fn landing_page(&self, id: &str) -> Option<u32>;
    /// What offer `i`'s URL asks of the visitor.
    fn offer_needs(&self, i: u32) -> Needs;
    /// What landing page `i`'s URL asks of the visitor.
    fn landing_page_needs(&self, i: u32) -> Needs;
}

fn resolved(
    found: Option<u32>,
    id: &str,
    key: impl std::fmt::Display,
    what: &str,
) -> Result<u32, ConfigError> {
    found.ok_or_else(|| ConfigError::invalid(key.to_string(), format!("no {what} with id {id:?}")))
}

/// Compiles one campaign; `key` names it in errors (`campaigns[3]`, `campaigns/ID`).
pub fn campaign(
    key: &Key<'_>,
    c: &CampaignConfig,
    ids: &impl Resolve,
) -> Result<Campaign, ConfigError> {
    check_id(&c.id, key.field("id"))?;
    let mut paths_seen = 0;
    let source = resolved(
        ids.source(&c.traffic_source),
        &c.traffic_source,
        key.field("traffic_source"),
        "traffic source",
    )?;
    let paths = compile_paths(&c.paths, &key.field("paths"), ids, &mut paths_seen)?;
    let rules_key = key.field("rules");
    let rules = c
        .rules
        .iter()
        .enumerate()
        .map(|(j, r)| compile_rule(r, &rules_key.index(j), ids, &mut paths_seen))
        .collect::<Result<_, _>>()?;
    let (cost_micros, conversion_cost) =
        ConversionCost::of(c.cost_model.as_deref(), c.cost, &key.to_string())?;
    let mut campaign = Campaign {
        id: c.id.as_str().into(),
        name: c.name.as_str().into(),
        source,
        cost_micros,
        conversion_cost,
        category: c
            .category
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(Into::into),
        paths,
        rules,
        needs: Needs::default(),
    };
    campaign.needs = campaign_needs(&campaign, ids);
    Ok(campaign)
}

/// What a campaign's rules and the URLs of its paths ask of the visitor.
pub fn campaign_needs(c: &Campaign, ids: &impl Resolve) -> Needs {
    let path_needs = |p: &Path| {
        let lp = p
            .landing_page
            .map_or(Needs::default(), |l| ids.landing_page_needs(l));
        p.offers
            .items()
            .iter()
            .map(|&o| ids.offer_needs(o))
            .fold(lp, Needs::or)
    };
    std::iter::once(&c.paths)
        .chain(c.rules.iter().map(|r| &r.paths))
        .flat_map(|w| w.items())
        .map(path_needs)
        .chain(c.rules.iter().map(Rule::needs))
        .fold(Needs::default(), Needs::or)
}

fn compile_paths(
    cfg: &[PathConfig],
    key: &Key<'_>,
    ids: &impl Resolve,
    paths_seen: &mut u16,
) -> Result<Weighted<Path>, ConfigError> {
    let mut paths = Vec::with_capacity(cfg.len());
    for (i, p) in cfg.iter().enumerate() {
        let pkey = key.index(i);
        let landing_page = p
            .landing_page
            .as_deref()
            .map(|lp| {
                resolved(
                    ids.landing_page(lp),
                    lp,
                    pkey.field("landing_page"),
                    "landing page",
                )
            })
            .transpose()?;
        let okeys = pkey.field("offers");
        let mut offers = Vec::with_capacity(p.offers.len());
        for (j, o) in p.offers.iter().enumerate() {
            let okey = okeys.index(j);
            let found = resolved(ids.offer(&o.offer), &o.offer, okey.field("offer"), "offer")?;
            offers.push((found, o.weight));
        }
        let offers = Weighted::new(offers, okeys)?;
        let index = *paths_seen;
        *paths_seen = index.checked_add(1).ok_or_else(|| {
            ConfigError::invalid(pkey.to_string(), "a campaign has at most 65535 paths")
        })?;
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

fn compile_rule(
    r: &RuleConfig,
    key: &Key<'_>,
    ids: &impl Resolve,
    paths_seen: &mut u16,
) -> Result<Rule, ConfigError> {
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
        paths: compile_paths(&r.paths, &key.field("paths"), ids, paths_seen)?,
    })
}

/// Compiles one traffic source, defining its remapped names in `names`.
pub fn source(
    key: &str,
    s: &TrafficSourceConfig,
    names: &mut ParamNames,
) -> Result<TrafficSource, ConfigError> {
    check_id(&s.id, format_args!("{key}.id"))?;
    let own_postback_url = s.postback_url.is_some();
    let (s, _) = &crate::presets::resolve_source(s, key)?;
    let mut params = Vec::with_capacity(s.params.len());
    for (name, query_key) in &s.params {
        let key = format!("{key}.params.{name}");
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
        if names.full_for(name) {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "more than {} distinct remapped names",
                    crate::template::MAX_PARAM_NAMES
                ),
            ));
        }
        params.push((names.define(name), query_key.as_bytes().into()));
    }
    let cost_param = match s.cost_param.as_deref() {
        Some("") => {
            return Err(ConfigError::invalid(
                format!("{key}.cost_param"),
                "is empty; leave it out instead",
            ));
        }
        other => other.map(|p| p.as_bytes().into()),
    };
    let external_id_param = match s.external_id_param.as_deref() {
        Some("") => {
            return Err(ConfigError::invalid(
                format!("{key}.external_id_param"),
                "is empty; leave it out instead",
            ));
        }
        other => other.map(Box::<str>::from),
    };
    let (postback, postback_off) = source_postback(key, s, own_postback_url)?;
    Ok(TrafficSource {
        id: s.id.as_str().into(),
        name: s.name.as_str().into(),
        params,
        cost_param,
        external_id_param,
        postback,
        postback_off,
    })
}

/// A source's postback: `None` without a `postback_url`, or with a template's URL that still
/// needs a value of the user's account (then also why it is off).
fn source_postback(
    key: &str,
    s: &TrafficSourceConfig,
    own_url: bool,
) -> Result<(Option<SourcePostback>, Option<String>), ConfigError> {
    let Some(url) = s.postback_url.as_deref() else {
        return Ok((None, None));
    };
    if !own_url && let Some(p) = crate::postback::placeholder(url) {
        return Ok((
            None,
            Some(format!(
                "{key}: postbacks are off until postback_url is set: the template's URL needs {p}, a value of your account ({url})"
            )),
        ));
    }
    let remapped: Vec<&str> = s.params.keys().map(String::as_str).collect();
    let url = PostbackUrl::parse(url, &remapped, &format!("{key}.postback_url"))?;
    let statuses = match &s.postback_statuses {
        None => crate::postback::DEFAULT_STATUSES.to_vec(),
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for (i, name) in list.iter().enumerate() {
                let st = Status::parse(name).ok_or_else(|| {
                    ConfigError::invalid(
                        format!("{key}.postback_statuses[{i}]"),
                        format!(
                            "{name:?} is not a status: lead, sale, pending, rebill, rejected or chargeback"
                        ),
                    )
                })?;
                if !out.contains(&st) {
                    out.push(st);
                }
            }
            out
        }
    };
    if s.external_id_param.is_none()
        && url
            .tokens()
            .any(|t| *t == crate::postback::PostbackToken::ExternalId)
    {
        return Err(ConfigError::invalid(
            format!("{key}.postback_url"),
            "uses {external_id}, which needs external_id_param (the query parameter holding the source's click id)",
        ));
    }
    Ok((
        Some(SourcePostback {
            url,
            statuses,
            types: s
                .postback_types
                .iter()
                .map(|t| t.trim().to_ascii_lowercase().into())
                .collect(),
            payout_share_ppm: crate::postback::share(
                s.postback_payout_share,
                &format!("{key}.postback_payout_share"),
            )?,
            send_share_ppm: crate::postback::share(
                s.postback_send_share,
                &format!("{key}.postback_send_share"),
            )?,
            first_only: s.postback_first_only,
        }),
        None,
    ))
}

/// Compiles one affiliate network. Postback tokens are unique: a token names the network a
/// postback authenticates as, so one already used by a network in `others` is refused.
pub fn network<'a>(
    key: &str,
    n: &NetworkConfig,
    others: impl IntoIterator<Item = &'a Network>,
) -> Result<Network, ConfigError> {
    check_id(&n.id, format_args!("{key}.id"))?;
    let n = &crate::presets::resolve_network(n, key)?;
    let token = n.postback_token.as_bytes();
    if let Some(other) = others
        .into_iter()
        .find(|o| !token.is_empty() && o.postback_token.as_deref() == Some(token) && *o.id != *n.id)
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
    let lifecycle =
        crate::lifecycle::Lifecycle::compile(key, &n.status_map, n.duplicates.as_deref())?;
    Ok(Network {
        id: n.id.as_str().into(),
        name: n.name.as_str().into(),
        postback_token: (!token.is_empty()).then(|| token.into()),
        policy: NetworkPolicy {
            token: !token.is_empty(),
            pixels,
        },
        lifecycle,
    })
}

/// Compiles one offer, its network looked up in `ids`.
pub fn offer(
    key: &str,
    o: &OfferConfig,
    ids: &impl Resolve,
    names: &mut ParamNames,
) -> Result<Offer, ConfigError> {
    check_id(&o.id, format_args!("{key}.id"))?;
    let network = o
        .network
        .as_deref()
        .map(|n| {
            resolved(
                ids.network(n),
                n,
                format_args!("{key}.network"),
                "affiliate network",
            )
        })
        .transpose()?;
    let links = match (o.url.is_empty(), o.links.is_empty()) {
        (false, true) => vec![(
            OfferLink {
                id: "".into(),
                name: "".into(),
                url: Template::parse(&o.url, &format!("{key}.url"), names)?,
            },
            1,
        )],
        (true, false) => {
            if o.links.len() > MAX_OFFER_LINKS {
                return Err(ConfigError::invalid(
                    format!("{key}.links"),
                    format!("has {} links; at most {MAX_OFFER_LINKS}", o.links.len()),
                ));
            }
            let mut seen = std::collections::HashSet::new();
            let mut links = Vec::with_capacity(o.links.len());
            for (i, l) in o.links.iter().enumerate() {
                let lkey = format!("{key}.links[{i}]");
                check_id(&l.id, format_args!("{lkey}.id"))?;
                if !seen.insert(l.id.as_str()) {
                    return Err(ConfigError::invalid(
                        format!("{lkey}.id"),
                        format!("{:?} is another link's id in this offer", l.id),
                    ));
                }
                links.push((
                    OfferLink {
                        id: l.id.as_str().into(),
                        name: l.name.as_str().into(),
                        url: Template::parse(&l.url, &format!("{lkey}.url"), names)?,
                    },
                    l.weight,
                ));
            }
            links
        }
        (false, false) => {
            return Err(ConfigError::invalid(
                format!("{key}.links"),
                "an offer has a url or links, not both",
            ));
        }
        (true, true) => {
            return Err(ConfigError::invalid(
                format!("{key}.url"),
                "missing: an offer needs a url or links",
            ));
        }
    };
    let links = Weighted::new(links, format_args!("{key}.links"))?;
    let needs = links
        .items()
        .iter()
        .fold(Needs::default(), |n, l| n.or(Needs::of_template(&l.url)));
    Ok(Offer {
        id: o.id.as_str().into(),
        name: o.name.as_str().into(),
        network,
        needs,
        links,
        payout_micros: micros(o.payout, format_args!("{key}.payout"))?,
    })
}

/// Links an offer may have: each is a URL to fill, and a report dimension value.
pub const MAX_OFFER_LINKS: usize = 64;

/// Compiles one landing page.
pub fn landing_page(
    key: &str,
    l: &LandingPageConfig,
    names: &mut ParamNames,
) -> Result<LandingPage, ConfigError> {
    check_id(&l.id, format_args!("{key}.id"))?;
    Ok(LandingPage {
        id: l.id.as_str().into(),
        name: l.name.as_str().into(),
        url: Template::parse(&l.url, &format!("{key}.url"), names)?,
    })
}

/// Warnings for the tokens of `t` (in `what`) that are neither built in nor remapped by any
/// traffic source: they will be empty.
pub fn unknown_params<'a>(
    what: &'a str,
    t: &'a Template,
    names: &'a ParamNames,
) -> impl Iterator<Item = String> + 'a {
    t.tokens().filter_map(move |tok| match tok {
        Token::Param(p) if !names.is_defined(p) => Some(format!(
            "{what}: {{{}}} is neither a built-in token nor remapped by any traffic source; it will be empty",
            names.name(p)
        )),
        _ => None,
    })
}

mod whole;

#[cfg(test)]
mod tests;
