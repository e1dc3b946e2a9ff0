//! The campaign table: the config compiled into an immutable structure the workers read
//! without locks. Ids are resolved to indexes, URL templates pre-split, weighted choices
//! pre-summed; every dangling reference or bad value is an error here, at load time.

use ahash::AHashMap;
use sink::event::{Auth, NetworkPolicy, Pixels};

use crate::config::{
    CampaignConfig, ConfigError, ConfigFile, PathConfig, RuleConfig, TrafficSourceConfig,
};
use crate::template::{ParamNames, Template, Token};

/// The largest money amount a config may hold (in currency units).
const MAX_MONEY: f64 = 1e12;

#[derive(Debug)]
pub struct TrafficSource {
    pub id: Box<str>,
    pub name: Box<str>,
    /// The remapped names, in the order they are written to events: (name index, query key).
    pub params: Vec<(u16, Box<[u8]>)>,
    pub cost_param: Option<Box<[u8]>>,
}

#[derive(Debug)]
pub struct Network {
    pub id: Box<str>,
    pub name: Box<str>,
    pub postback_token: Option<Box<[u8]>>,
    /// How it takes conversions; stored with each visit sent to one of its offers.
    pub policy: NetworkPolicy,
}

#[derive(Debug)]
pub struct Offer {
    pub id: Box<str>,
    pub name: Box<str>,
    pub network: Option<u32>,
    pub url: Template,
    pub payout_micros: i64,
    /// What filling its URL needs to know of the visitor (at a click-through).
    pub needs: Needs,
}

#[derive(Debug)]
pub struct LandingPage {
    pub id: Box<str>,
    pub name: Box<str>,
    pub url: Template,
}

/// Items with integer weights; `pick` takes a uniform random number.
#[derive(Debug)]
pub struct Weighted<T> {
    items: Vec<T>,
    /// Running sums of the weights; the last is the total.
    ends: Vec<u64>,
}

impl<T> Weighted<T> {
    fn new(items: Vec<(T, u32)>, key: &str) -> Result<Self, ConfigError> {
        let mut ends = Vec::with_capacity(items.len());
        let mut total = 0u64;
        let mut out = Vec::with_capacity(items.len());
        for (item, w) in items {
            total += u64::from(w);
            ends.push(total);
            out.push(item);
        }
        if out.is_empty() {
            return Err(ConfigError::invalid(key, "needs at least one entry"));
        }
        if total == 0 {
            return Err(ConfigError::invalid(key, "the weights add up to 0"));
        }
        Ok(Weighted { items: out, ends })
    }

    /// The item that `rand` (uniform over u64) falls on.
    pub fn pick(&self, rand: u64) -> &T {
        let total = *self.ends.last().expect("a Weighted is never empty");
        let r = rand % total;
        let i = self.ends.partition_point(|&end| end <= r);
        &self.items[i]
    }

    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// Each item's share of the total weight.
    pub fn shares(&self) -> impl Iterator<Item = (&T, f64)> {
        let total = *self.ends.last().expect("a Weighted is never empty") as f64;
        let mut prev = 0;
        self.items.iter().zip(&self.ends).map(move |(item, &end)| {
            let w = end - prev;
            prev = end;
            (item, w as f64 / total)
        })
    }
}

#[derive(Debug)]
pub struct Path {
    /// Position among all the campaign's paths: the default paths first, then each rule's.
    pub index: u16,
    pub landing_page: Option<u32>,
    pub offers: Weighted<u32>,
}

/// Device classes: the sink's, so rules and stored rows agree.
pub use sink::agent::DeviceType as Device;

/// What is known of a visitor when a rule is matched. Facts not known yet are `None` and a
/// condition on them does not match.
#[derive(Debug, Default, Clone, Copy)]
pub struct Visitor<'a> {
    pub country: Option<[u8; 2]>,
    pub device: Option<Device>,
    pub os: Option<&'a str>,
    pub browser: Option<&'a str>,
    pub accept_language: &'a [u8],
    pub bot: Option<bool>,
}

#[derive(Debug)]
pub struct Rule {
    countries: Vec<[u8; 2]>,
    devices: Vec<Device>,
    os: Vec<Box<str>>,
    browsers: Vec<Box<str>>,
    languages: Vec<Box<str>>,
    bot: Option<bool>,
    pub paths: Weighted<Path>,
}

impl Rule {
    pub fn matches(&self, v: &Visitor<'_>) -> bool {
        let any_str = |want: &[Box<str>], have: Option<&str>| {
            want.is_empty() || have.is_some_and(|h| want.iter().any(|w| w.eq_ignore_ascii_case(h)))
        };
        (self.countries.is_empty() || v.country.is_some_and(|c| self.countries.contains(&c)))
            && (self.devices.is_empty() || v.device.is_some_and(|d| self.devices.contains(&d)))
            && any_str(&self.os, v.os)
            && any_str(&self.browsers, v.browser)
            && (self.languages.is_empty() || accepts_language(v.accept_language, &self.languages))
            && self.bot.is_none_or(|b| v.bot == Some(b))
    }

    /// What this rule needs to know of a visitor.
    fn needs(&self) -> Needs {
        Needs {
            country: !self.countries.is_empty(),
            agent: !self.devices.is_empty()
                || !self.os.is_empty()
                || !self.browsers.is_empty()
                || self.bot.is_some(),
            bot: self.bot.is_some(),
        }
    }
}

/// The visitor facts a request must find out (each costs a lookup): for rules, or for
/// tokens in the URLs a campaign can send a visitor to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// GeoIP: `countries` rules, `{country}`.
    pub country: bool,
    /// The parsed user agent: `devices`, `os`, `browsers` and `bot` rules; `{device}`,
    /// `{os}`, `{browser}`.
    pub agent: bool,
    /// The bot verdict (agent and data-centre ranges): `bot` rules.
    pub bot: bool,
}

impl Needs {
    fn or(self, o: Needs) -> Needs {
        Needs {
            country: self.country || o.country,
            agent: self.agent || o.agent,
            bot: self.bot || o.bot,
        }
    }

    /// What filling `t` needs.
    pub fn of_template(t: &Template) -> Needs {
        t.tokens().fold(Needs::default(), |n, tok| {
            n.or(Needs {
                country: tok == Token::Country,
                agent: matches!(tok, Token::Device | Token::Os | Token::Browser),
                bot: false,
            })
        })
    }
}

/// Whether an `Accept-Language` value lists (with q > 0) one of `wanted` (lowercase tags).
/// A wanted primary tag (`en`) matches its regional variants (`en-US`).
pub fn accepts_language(header: &[u8], wanted: &[Box<str>]) -> bool {
    header.split(|&c| c == b',').any(|item| {
        let mut parts = item.split(|&c| c == b';');
        let tag = parts.next().unwrap_or_default().trim_ascii();
        let refused = parts.any(|p| {
            let p = p.trim_ascii();
            p.strip_prefix(b"q=")
                .is_some_and(|q| q.iter().all(|&c| c == b'0' || c == b'.'))
        });
        !refused
            && !tag.is_empty()
            && wanted.iter().any(|w| {
                let w = w.as_bytes();
                tag.len() >= w.len()
                    && tag[..w.len()].eq_ignore_ascii_case(w)
                    && (tag.len() == w.len() || tag[w.len()] == b'-')
            })
    })
}

#[derive(Debug)]
pub struct Campaign {
    pub id: Box<str>,
    pub name: Box<str>,
    pub source: u32,
    pub cost_micros: i64,
    pub paths: Weighted<Path>,
    pub rules: Vec<Rule>,
    /// What a visit to it must find out about the visitor: for its rules, and for the URLs
    /// it can send the visitor to.
    pub needs: Needs,
}

impl Campaign {
    /// Whether a rule of this campaign matches on countries.
    pub fn has_country_rules(&self) -> bool {
        self.rules.iter().any(|r| !r.countries.is_empty())
    }

    /// Whether a rule of this campaign matches on devices, os, browsers or bot.
    pub fn has_agent_rules(&self) -> bool {
        self.rules.iter().any(|r| r.needs().agent)
    }

    /// The path with this index (see [`Path::index`]).
    pub fn path(&self, index: u16) -> Option<&Path> {
        std::iter::once(&self.paths)
            .chain(self.rules.iter().map(|r| &r.paths))
            .flat_map(|w| w.items())
            .find(|p| p.index == index)
    }

    /// The paths for this visitor: the first matching rule's, else the default ones.
    pub fn paths_for(&self, v: &Visitor<'_>) -> &Weighted<Path> {
        self.rules
            .iter()
            .find(|r| r.matches(v))
            .map_or(&self.paths, |r| &r.paths)
    }
}

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

fn money(value: f64, key: &str) -> Result<i64, ConfigError> {
    if !value.is_finite() || !(0.0..=MAX_MONEY).contains(&value) {
        return Err(ConfigError::invalid(
            key,
            format!("{value} is not an amount between 0 and {MAX_MONEY}"),
        ));
    }
    Ok((value * 1e6).round() as i64)
}

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
            cost_micros: money(c.cost, &format!("{key}.cost"))?,
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
fn compile_networks(cfg: &ConfigFile) -> Result<Vec<Network>, ConfigError> {
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

impl Table {
    /// Validates `cfg` and compiles it.
    pub fn compile(cfg: &ConfigFile) -> Result<Table, ConfigError> {
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
        let max_cost_micros = money(cfg.server.max_cost, "server.max_cost")?;
        let max_payout_micros = money(cfg.server.max_payout, "server.max_payout")?;
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
            let payout_micros = money(o.payout, &format!("{key}.payout"))?;
            if payout_micros > max_payout_micros {
                return Err(ConfigError::invalid(
                    format!("{key}.payout"),
                    format!("{} is above server.max_payout", o.payout),
                ));
            }
            offers.push(Offer {
                id: o.id.as_str().into(),
                name: o.name.as_str().into(),
                network,
                needs: Needs::of_template(&url),
                url,
                payout_micros,
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
        let fallback = match cfg.server.fallback_url.as_str() {
            "" => None,
            url => Some(Template::parse(url, "server.fallback_url", &mut names)?),
        };
        let campaigns = cfg
            .campaigns
            .iter()
            .enumerate()
            .map(|(i, camp)| c.campaign(i, camp))
            .collect::<Result<Vec<_>, _>>()?;
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

        let by_id = campaigns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.as_bytes().into(), i as u32))
            .collect();
        let mut table = Table {
            campaigns,
            by_id,
            sources,
            networks,
            offers,
            landing_pages,
            params: names,
            fallback,
            max_cost_micros,
            max_payout_micros,
            warnings: Vec::new(),
        };
        let needs: Vec<Needs> = table
            .campaigns
            .iter()
            .map(|c| table.campaign_needs(c))
            .collect();
        for (c, n) in table.campaigns.iter_mut().zip(needs) {
            c.needs = n;
        }
        table.warnings = table.collect_warnings(cfg);
        Ok(table)
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

    fn collect_warnings(&self, cfg: &ConfigFile) -> Vec<String> {
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
        if cfg.campaigns.is_empty() {
            w.push("no campaigns: every /c/ request will be answered 404".into());
        }
        w
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
    /// network (README "Trust"): `Auth::Token` with the network it authenticated as, else
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

/// Compares secrets in time that does not depend on where they differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
