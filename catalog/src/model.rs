//! The validated catalog, ids resolved to indexes: what a campaign sends a visitor to, by
//! which rules, with what weights; which network an offer belongs to and how that network
//! takes conversions. Built by [`crate::Catalog::compile`]; immutable afterwards, so the
//! edge's workers read it without locks.

use sink::model::event::NetworkPolicy;

use crate::ConfigError;
use crate::template::{Template, Token};

#[derive(Debug)]
pub struct TrafficSource {
    pub id: Box<str>,
    pub name: Box<str>,
    /// The remapped names, in the order they are written to events: (name index, query key).
    pub params: Vec<(u16, Box<[u8]>)>,
    pub cost_param: Option<Box<[u8]>>,
    /// The query parameter holding the source's own click id.
    pub external_id_param: Option<Box<str>>,
    /// Its conversion postback, when it has one.
    pub postback: Option<crate::postback::SourcePostback>,
    /// Why a template's postback is off (a warning), when it is.
    pub postback_off: Option<String>,
}

#[derive(Debug)]
pub struct Network {
    pub id: Box<str>,
    pub name: Box<str>,
    pub postback_token: Option<Box<[u8]>>,
    /// How it takes conversions; stored with each visit sent to one of its offers.
    pub policy: NetworkPolicy,
    /// Its statuses and duplicate policy, which reports apply.
    pub lifecycle: crate::lifecycle::Lifecycle,
}

#[derive(Debug)]
pub struct Offer {
    pub id: Box<str>,
    pub name: Box<str>,
    pub network: Option<u32>,
    /// Its URLs: one, with an empty id, for an offer with a `url`; else its `links`.
    pub links: Weighted<OfferLink>,
    pub payout_micros: i64,
    /// What filling its URLs needs to know of the visitor (at a click-through).
    pub needs: Needs,
}

impl Offer {
    /// The link a visitor goes to, for `rand` uniform over u64 (unused with one link).
    pub fn link(&self, rand: impl FnOnce() -> u64) -> &OfferLink {
        match self.links.items() {
            [only] => only,
            _ => self.links.pick(rand()),
        }
    }

    /// Its URL templates, each with what a warning calls it.
    pub fn templates(&self) -> impl Iterator<Item = (String, &Template)> {
        self.links.items().iter().map(move |l| {
            let what = match &*l.id {
                "" => format!("offer {:?}", self.id),
                link => format!("offer {:?} link {link:?}", self.id),
            };
            (what, &l.url)
        })
    }
}

/// One URL of an offer.
#[derive(Debug)]
pub struct OfferLink {
    /// Empty for an offer's `url`.
    pub id: Box<str>,
    pub name: Box<str>,
    pub url: Template,
}

#[derive(Debug)]
pub struct LandingPage {
    pub id: Box<str>,
    pub name: Box<str>,
    pub url: Template,
}

/// Items with integer weights; `pick` takes a uniform random number.
#[derive(Debug, Clone)]
pub struct Weighted<T> {
    items: Vec<T>,
    /// Running sums of the weights; the last is the total.
    ends: Vec<u64>,
}

impl<T> Weighted<T> {
    pub(crate) fn new(
        items: Vec<(T, u32)>,
        key: impl std::fmt::Display,
    ) -> Result<Self, ConfigError> {
        let mut ends = Vec::with_capacity(items.len());
        let mut total = 0u64;
        let mut out = Vec::with_capacity(items.len());
        for (item, w) in items {
            total += u64::from(w);
            ends.push(total);
            out.push(item);
        }
        if out.is_empty() {
            return Err(ConfigError::invalid(
                key.to_string(),
                "needs at least one entry",
            ));
        }
        if total == 0 {
            return Err(ConfigError::invalid(
                key.to_string(),
                "the weights add up to 0",
            ));
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

#[derive(Debug, Clone)]
pub struct Path {
    /// Position among all the campaign's paths: the default paths first, then each rule's.
    pub index: u16,
    pub landing_page: Option<u32>,
    pub offers: Weighted<u32>,
}

/// Device classes: the sink's, so rules and stored rows agree.
pub use sink::model::event::DeviceType as Device;

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

#[derive(Debug, Clone)]
pub struct Rule {
    pub(crate) countries: Vec<[u8; 2]>,
    pub(crate) devices: Vec<Device>,
    pub(crate) os: Vec<Box<str>>,
    pub(crate) browsers: Vec<Box<str>>,
    pub(crate) languages: Vec<Box<str>>,
    pub(crate) bot: Option<bool>,
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
    pub(crate) fn needs(&self) -> Needs {
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
    pub fn or(self, o: Needs) -> Needs {
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

/// What a campaign pays for besides its visits: a conversion (CPA) or a share of the
/// revenue (RevShare). Reports add it to the visits' cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConversionCost {
    /// Micro-units per conversion that counts.
    Cpa(i64),
    /// Millionths of the revenue.
    RevShare(i64),
}

impl ConversionCost {
    /// The cost model (`cost_model`) and amount (`cost`) of a campaign: its cost per visit in
    /// micro-units and what it pays per conversion; `key` names the campaign in errors.
    pub fn of(
        model: Option<&str>,
        cost: f64,
        key: &str,
    ) -> Result<(i64, Option<ConversionCost>), ConfigError> {
        let amount = crate::money::micros(cost, format_args!("{key}.cost"))?;
        match model.map(str::trim).map(str::to_ascii_lowercase).as_deref() {
            None | Some("cpc") => Ok((amount, None)),
            // Per visit: a thousandth, rounded to the micro-unit.
            Some("cpm") => Ok(((amount + 500) / 1000, None)),
            Some("cpa") => Ok((0, Some(ConversionCost::Cpa(amount)))),
            Some("revshare") if (0..=1_000_000).contains(&amount) => {
                Ok((0, Some(ConversionCost::RevShare(amount))))
            }
            Some("revshare") => Err(ConfigError::invalid(
                format!("{key}.cost"),
                format!("{cost} is not a revenue share between 0 and 1 (0.3 = 30 %)"),
            )),
            Some(other) => Err(ConfigError::invalid(
                format!("{key}.cost_model"),
                format!("{other:?} is not a cost model: cpc, cpm, cpa or revshare"),
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Campaign {
    pub id: Box<str>,
    pub name: Box<str>,
    pub source: u32,
    /// The cost of a visit (CPC, or CPM ÷ 1000; 0 for CPA and RevShare).
    pub cost_micros: i64,
    /// What it pays per conversion (CPA) or of the revenue (RevShare).
    pub conversion_cost: Option<ConversionCost>,
    /// Its category, a label (`category`).
    pub category: Option<Box<str>>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_models_price_visits_and_conversions() {
        let of = |m: Option<&str>, c: f64| ConversionCost::of(m, c, "campaigns[0]");
        assert_eq!(of(None, 0.05).unwrap(), (50_000, None));
        assert_eq!(of(Some("CPC"), 0.05).unwrap(), (50_000, None));
        assert_eq!(of(Some("cpm"), 2.5).unwrap(), (2_500, None));
        assert_eq!(
            of(Some("cpa"), 4.0).unwrap(),
            (0, Some(ConversionCost::Cpa(4_000_000)))
        );
        assert_eq!(
            of(Some("revshare"), 0.3).unwrap(),
            (0, Some(ConversionCost::RevShare(300_000)))
        );
        let e = of(Some("revshare"), 30.0).unwrap_err().to_string();
        assert!(e.contains("campaigns[0].cost"), "{e}");
        let e = of(Some("cpv"), 1.0).unwrap_err().to_string();
        assert!(e.contains("campaigns[0].cost_model"), "{e}");
    }
}
